// The session-survival scenarios of driver.py, with the unmodified
// TypeScript SDK client (@modelcontextprotocol/sdk). The driver owns the
// backend (server.py): it kills it (SIGKILL) and starts it again on the same
// port, proves each kill (new PID; the new process answers 404 to a session
// id the old one issued), and counts every client-visible failure.
//
// Usage: node ts_driver.mjs <url> <backend-port> <ledger> <label> <restarts> <mid-call> <mid-stream> <python> <log>
// Prints one JSON object.
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const sdk = path.resolve(here, "../../../.tools/node/node_modules/@modelcontextprotocol/sdk/dist/esm");
const load = (p) => import(pathToFileURL(path.join(sdk, p)).href);
const { Client } = await load("client/index.js");
const { StreamableHTTPClientTransport } = await load("client/streamableHttp.js");

const [url, portText, ledger, label, restartsText, midCallText, midStreamText, python, log] = process.argv.slice(2);
const port = Number(portText);
const direct = `http://127.0.0.1:${port}/mcp`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let proc;
async function start() {
  const out = fs.openSync(log, "a");
  proc = spawn(python, [path.join(here, "server.py"), String(port), ledger], { stdio: ["ignore", out, out] });
  for (let i = 0; i < 600; i++) {
    const up = await new Promise((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => { s.destroy(); resolve(true); });
      s.on("error", () => resolve(false));
    });
    if (up) return proc.pid;
    await sleep(50);
  }
  throw new Error("backend did not start");
}
async function kill() {
  const exited = new Promise((r) => proc.once("exit", r));
  proc.kill("SIGKILL");
  await exited;
}

const INIT = { jsonrpc: "2.0", id: 0, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "probe", version: "1" } } };
async function post(body, sid) {
  const headers = { "content-type": "application/json", accept: "application/json, text/event-stream" };
  if (sid) Object.assign(headers, { "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18" });
  const resp = await fetch(direct, { method: "POST", headers, body: JSON.stringify(body) });
  await resp.text();
  return { status: resp.status, sid: resp.headers.get("mcp-session-id") };
}

const r = { label, restarts: 0, calls: 0, errors: 0, error_samples: [], pids_changed: 0, old_ids_404: 0,
  first_after_restart_ms: [], steady_ms: [], mid_call_kills: 0, mid_call_errors: 0, mid_call_samples: [],
  mid_stream_kills: 0, mid_stream_errors: 0 };
const appended = [];
const error = (what, e) => {
  r.errors++;
  if (r.error_samples.length < 5) r.error_samples.push(`${what}: ${e?.message ?? e}`.slice(0, 300));
};
const textOf = (res) => (res?.content ?? []).filter((c) => c.type === "text").map((c) => c.text).join("");

async function call(client, name, args, expect, bucket) {
  r.calls++;
  const t = performance.now();
  let res;
  try {
    res = await client.callTool({ name, arguments: args });
  } catch (e) {
    error(name, e);
    return null;
  }
  if (bucket) bucket.push(performance.now() - t);
  if (res.isError || (expect !== undefined && textOf(res) !== expect)) {
    error(name, new Error(textOf(res)));
    return null;
  }
  return textOf(res);
}

async function proveKill() {
  const probe = (await post(INIT)).sid;
  const old = proc.pid;
  await kill();
  const fresh = await start();
  r.restarts++;
  if (old !== fresh) r.pids_changed++;
  if (probe && (await post({ jsonrpc: "2.0", id: 1, method: "tools/list" }, probe)).status === 404) r.old_ids_404++;
}

await start();
const client = new Client({ name: "portcullis-sessions-ts", version: "1.0.0" }, { capabilities: {} });
const transport = new StreamableHTTPClientTransport(new URL(url), {
  reconnectionOptions: { initialReconnectionDelay: 200, maxReconnectionDelay: 1000, reconnectionDelayGrowFactor: 1.5, maxRetries: 10 },
});
client.onerror = (e) => error("transport", e);
await client.connect(transport);
await client.listTools();
let n = 0;
for (let i = 0; i < Number(restartsText); i++) {
  let entry = `${label}-${n++}`;
  if (await call(client, "append", { entry }, `appended ${entry}`, r.steady_ms)) appended.push(entry);
  await call(client, "count", {}, undefined, r.steady_ms);
  await proveKill();
  entry = `${label}-${n++}`;
  if (await call(client, "append", { entry }, `appended ${entry}`, r.first_after_restart_ms)) appended.push(entry);
  const pid = await call(client, "pid", {});
  if (pid !== null && pid !== String(proc.pid)) error("pid", new Error(`answered by ${pid}, backend is ${proc.pid}`));
}
for (let i = 0; i < Number(midCallText); i++) {
  const entry = `${label}-slow-${i}`;
  const pending = client.callTool({ name: "append", arguments: { entry, delay: 1.5 } }).then(
    (res) => ({ res }), (e) => ({ e }));
  await sleep(500);
  await proveKill();
  r.mid_call_kills++;
  const { res, e } = await pending;
  if (e || res.isError) {
    r.mid_call_errors++;
    r.mid_call_samples.push((e?.message ?? textOf(res)).slice(0, 200));
  } else appended.push(entry);
  await call(client, "count", {});
}
for (let i = 0; i < Number(midStreamText); i++) {
  const pending = client.callTool({ name: "progress", arguments: { steps: 8 } }).then((res) => ({ res }), (e) => ({ e }));
  await sleep(500);
  await proveKill();
  r.mid_stream_kills++;
  const { res, e } = await pending;
  if (e || res.isError || textOf(res) !== "counted to 8") r.mid_stream_errors++;
  await call(client, "count", {});
}
client.onerror = () => {};
await client.close();
await kill();

const lines = fs.readFileSync(ledger, "utf8").split("\n").filter((l) => l.startsWith(`${label}-`));
r.ledger_entries = lines.length;
r.duplicates = lines.length - new Set(lines).size;
r.lost = appended.filter((e) => !lines.includes(e)).length;
for (const k of ["first_after_restart_ms", "steady_ms"]) {
  const v = r[k].sort((a, b) => a - b);
  const at = (q) => (v.length ? Math.round(v[Math.min(v.length - 1, Math.floor(v.length * q))] * 10) / 10 : null);
  r[k] = { n: v.length, p50: at(0.5), p99: at(0.99) };
}
console.log(JSON.stringify(r));
process.exit(0);
