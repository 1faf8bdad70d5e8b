// The official TypeScript SDK client (@modelcontextprotocol/sdk) driving the
// reference server through Portcullis, whose policy denies one tool.
//
// Usage: node scenarios.mjs <proxied-url> <direct-url> <denied-tool>
// Prints PASS/FAIL per scenario and `N passed, M failed`; exits 1 on failure.
// A scenario marked EXPECTED-FAIL documents a known Portcullis defect: it is
// counted like any other, so the suite stays red until the defect is fixed.
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const sdk = path.resolve(here, "../../../../.tools/node/node_modules/@modelcontextprotocol/sdk/dist/esm");
const load = (p) => import(pathToFileURL(path.join(sdk, p)).href);
const { Client } = await load("client/index.js");
const { StreamableHTTPClientTransport } = await load("client/streamableHttp.js");
const { CallToolResultSchema, LoggingMessageNotificationSchema } = await load("types.js");

const [proxied, direct, denied] = process.argv.slice(2);
if (!proxied || !direct || !denied) {
  console.error("usage: scenarios.mjs <proxied-url> <direct-url> <denied-tool>");
  process.exit(2);
}
const allowed = "test_simple_text";
const fastRetry = { initialReconnectionDelay: 100, maxReconnectionDelay: 500, reconnectionDelayGrowFactor: 1.5, maxRetries: 3 };

async function connect(url, sessionId) {
  const client = new Client({ name: "portcullis-ts-interop", version: "1.0.0" }, { capabilities: {} });
  const transport = new StreamableHTTPClientTransport(new URL(url), { sessionId, reconnectionOptions: fastRetry });
  await client.connect(transport);
  return { client, transport };
}

function textOf(result) {
  return (result?.content ?? []).filter((c) => c.type === "text").map((c) => c.text).join("");
}

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

function withTimeout(promise, ms, what) {
  let timer;
  const limit = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms); });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

const scenarios = [];
const scenario = (name, fn, note = "") => scenarios.push({ name, fn, note, control: false });
// A control runs the same steps against the server alone. It says whether
// the peers can do it at all; it is not a Portcullis result, so a control
// that fails is reported but does not fail the run. The scenario through
// Portcullis still must pass.
const control = (name, fn) => scenarios.push({ name, fn, note: "", control: true });

scenario("tools/list hides the denied tool", async () => {
  const { client } = await connect(proxied);
  try {
    const names = (await client.listTools()).tools.map((t) => t.name);
    check(!names.includes(denied), `denied tool ${denied} is listed`);
    check(names.includes(allowed), `allowed tool ${allowed} is missing from ${names.length} tools`);
    return `${names.length} tools, ${denied} hidden`;
  } finally { await client.close(); }
});

scenario("allowed tools/call answers", async () => {
  const { client } = await connect(proxied);
  try {
    const text = textOf(await client.callTool({ name: allowed, arguments: {} }));
    check(text === "This is a simple text response for testing.", `unexpected text ${JSON.stringify(text)}`);
    return text;
  } finally { await client.close(); }
});

scenario("denied tools/call is refused with -32051", async () => {
  const { client } = await connect(proxied);
  try {
    await client.callTool({ name: denied, arguments: {} });
    throw new Error("the denied call succeeded");
  } catch (err) {
    check(err?.code === -32051, `expected -32051, got ${err?.code}: ${err?.message}`);
    return `code ${err.code}: ${err.message}`;
  } finally { await client.close(); }
});

scenario("progress and logging notifications arrive", async () => {
  const { client } = await connect(proxied);
  const logs = [];
  client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => { logs.push(n.params.data); });
  try {
    const progress = [];
    await client.callTool({ name: "test_tool_with_progress", arguments: {} }, CallToolResultSchema, {
      onprogress: (p) => progress.push(p.progress),
    });
    check(JSON.stringify(progress) === "[0,50,100]", `progress ${JSON.stringify(progress)}`);
    await client.callTool({ name: "test_tool_with_logging", arguments: {} });
    check(logs.length === 3, `expected 3 log messages, got ${JSON.stringify(logs)}`);
    return `progress ${progress.join("/")}; ${logs.length} log messages`;
  } finally { await client.close(); }
});

// The client drops the POST stream mid-call and resumes with GET + Last-Event-ID.
async function clientDropsAndResumes(url) {
  const first = await connect(url);
  const sessionId = first.transport.sessionId;
  check(sessionId, "no session id");
  let token;
  const gotToken = new Promise((resolve) => {
    first.client.callTool({ name: "slow_progress", arguments: { steps: 5, delay_ms: 300 } }, CallToolResultSchema, {
      onresumptiontoken: (t) => { token = t; resolve(); },
      onprogress: () => {},
    }).catch(() => {}); // the call is cut off on purpose
  });
  await withTimeout(gotToken, 5000, "resumption token");
  await new Promise((r) => setTimeout(r, 400)); // let an event with an id go by
  await first.transport.close(); // drop the stream, keep the session
  const second = await connect(url, sessionId);
  try {
    const result = await withTimeout(
      second.client.request({ method: "tools/call", params: { name: "slow_progress", arguments: {} } }, CallToolResultSchema, {
        resumptionToken: token,
        onresumptiontoken: (t) => { token = t; },
      }), 10000, "resumed call");
    check(textOf(result) === "counted to 5", `unexpected result ${JSON.stringify(result)}`);
    return `resumed after event ${token}: ${textOf(result)}`;
  } finally { await second.client.close(); }
}

control("control: client drops the stream and resumes (direct, no Portcullis)", () => clientDropsAndResumes(direct));
scenario("resumption after the client drops the stream (Last-Event-ID)", () => clientDropsAndResumes(proxied));

// SEP-1699: test_reconnection ends the POST stream on purpose after a priming
// event with an id; the client must reconnect with GET + Last-Event-ID.
async function serverEndsAndClientResumes(url) {
  const { client } = await connect(url);
  try {
    const result = await withTimeout(client.callTool({ name: "test_reconnection", arguments: {} }), 10000, "test_reconnection");
    check(textOf(result) === "Reconnection test completed", `unexpected result ${JSON.stringify(result)}`);
    return textOf(result);
  } finally { await client.close(); }
}

control("control: server ends the stream, client resumes (direct, no Portcullis)", () => serverEndsAndClientResumes(direct));
scenario("resumption after the server ends the stream (SEP-1699 polling)", () => serverEndsAndClientResumes(proxied));

let passed = 0, failed = 0, controlsFailed = 0;
// The resumption scenarios race a 300 ms tool against stream drops; on a
// loaded 2-core CI machine the direct control itself was seen to miss, once
// twice in a row (clean-clone run, 2026-11-30), and all three tries in two
// clean-clone runs on 2026-12-01 while the scenario through Portcullis
// passed. A scenario gets up to three tries, and a pass on a retry says so:
// a Portcullis defect fails them all.
for (const { name, fn, note, control: isControl } of scenarios) {
  const tag = note ? ` [${note}]` : "";
  let lastErr;
  for (const attempt of [1, 2, 3]) {
    try {
      const detail = await withTimeout(fn(), 20000, name);
      passed++;
      console.log(`PASS ${name}${tag}${attempt > 1 ? " (on retry)" : ""}: ${detail}`);
      lastErr = undefined;
      break;
    } catch (err) {
      lastErr = err;
      if (attempt < 3) console.log(`retry ${name}: ${err?.message ?? err}`);
    }
  }
  if (lastErr !== undefined && isControl) {
    controlsFailed++;
    console.log(`CONTROL FAILED (the peers alone, not Portcullis) ${name}: ${lastErr?.message ?? lastErr}`);
  } else if (lastErr !== undefined) {
    failed++;
    console.log(`FAIL ${name}${tag}: ${lastErr?.message ?? lastErr}`);
  }
}
console.log(`${passed} passed, ${failed} failed${controlsFailed ? `, ${controlsFailed} control(s) failed` : ""}`);
process.exit(failed ? 1 : 0);
