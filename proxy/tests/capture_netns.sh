#!/usr/bin/env bash
# The REAL sidecar behind transparent capture, in network namespaces, with
# the iptables (nf_tables flavour) and nft backends.
#
#   netns "client"  eth0 10.250.0.1/30  fd00:250::1/64
#       remote MCP backend :9000 (for the outbound-mode checks)
#   netns "pod"     eth0 10.250.0.2/30  fd00:250::2/64
#       MCP server :8080, excluded app :9090, unconfigured app :7070
#         (tests/capture_netns/mcp.py, uid 1000; each logs every message)
#       `portcullis run` as uid 1338: capture [::]:15106 (MCP port 8080 via
#         PORTCULLIS_INBOUND_PORTS, canary 15122), admin 0.0.0.0:15120,
#         explicit listener 127.0.0.1:15001 -> http://10.250.0.1:9000;
#         policy: tools/call delete_* denied
#       rules installed by `portcullis capture` (the init container's command)
#
# The server's own log is the witness: a denied call must not appear in it.
# Two controls must fail, and the script asserts that they do: with no rules
# the denied call reaches the server; with the owner exemption removed
# (inbound+outbound mode) the sidecar's upstream connection loops into the
# pod's outbound capture port (15101, held by a logging stand-in: the
# sidecar has no outbound listener yet).
#
# Needs root; installs iptables/nftables with apt-get if missing; never skips.
# Usage: proxy/tests/capture_netns.sh [iptables|nft]...   (default: both)
# Env:   PORTCULLIS_BIN  the portcullis binary (default: cargo build it)
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
MCP_PY=$HERE/capture_netns/mcp.py
PY=/usr/bin/python3
BACKENDS=("$@")
[ ${#BACKENDS[@]} -eq 0 ] && BACKENDS=(iptables nft)

PROXY_UID=1338
APP_UID=1000
POD_V4=10.250.0.2
CLI_V4=10.250.0.1
POD_V6=fd00:250::2
CLI_V6=fd00:250::1
TAG=pcw$$
POD=$TAG-pod
CLI=$TAG-cli
PASS=0
FAIL=0
STARTED=$(date +%s.%N)
WORK=$(mktemp -d)
chmod 755 "$WORK"

die() { echo "capture_netns.sh: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

# ---------------------------------------------------------------- preflight
[ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces and nat rules); refusing to skip"
need_tools() {
    local t
    for t in ip setpriv ss iptables-restore ip6tables-restore iptables-save nft; do
        command -v "$t" >/dev/null || return 1
    done
}
if ! need_tools; then
    echo "# installing iptables and nftables"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables nftables iproute2 util-linux; } >/dev/null 2>&1
    need_tools || die "iptables/nftables/iproute2/setpriv still missing after apt-get install"
fi
[ -x "$PY" ] || die "$PY not found"

if [ -n "${PORTCULLIS_BIN:-}" ]; then
    PC=$PORTCULLIS_BIN
else
    (cd "$REPO" && nice -n 10 cargo build -q -p portcullis --bin portcullis) || die "cargo build failed"
    PC=${CARGO_TARGET_DIR:-$REPO/target}/debug/portcullis
fi
[ -x "$PC" ] || die "portcullis binary not found at $PC"

# ---------------------------------------------------------------- helpers
ok()  { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }

in_pod() { ip netns exec "$POD" "$@"; }
in_cli() { ip netns exec "$CLI" "$@"; }

# expect NAME REGEX CMD...: the command's output must match REGEX.
expect() {
    local name=$1 want=$2 got
    shift 2
    got=$("$@" 2>&1)
    if [[ $got =~ $want ]]; then ok "$name"; else bad "$name: wanted /$want/, got: $got"; fi
}

# control NAME CHECK_REGEX ACTUAL_REGEX CMD...: a check that must fail. It
# passes only if the output does NOT match the check and DOES match
# ACTUAL_REGEX, so a control cannot "fail" for an unrelated reason.
control() {
    local name=$1 check=$2 actual=$3 got
    shift 3
    got=$("$@" 2>&1)
    if [[ ! $got =~ $check && $got =~ $actual ]]; then
        ok "control: $name (the check failed, as it must; got: ${got:0:160})"
    else
        bad "control: $name: expected /$actual/ and not /$check/, got: $got"
    fi
}

call_from_client() { in_cli "$PY" "$MCP_PY" call "http://$1/mcp" "$2"; }
get_from_client() { in_cli "$PY" "$MCP_PY" get "http://$1"; }
# How many messages for TOOL a server's log holds.
seen() { grep -c " tools/call $2\$" "$WORK/$1.log" 2>/dev/null; true; }
metric() { in_pod "$PY" "$MCP_PY" get "http://127.0.0.1:15120/metrics" | tr ' ' '\n' | grep -A1 -F "$1" | tail -n1; }

# check_reach NAME LOG TOOL DELTA CMD...: CMD runs, and LOG must then have
# exactly DELTA more calls of TOOL.
reach() {
    local name=$1 log=$2 tool=$3 delta=$4 want=$5 before after got
    shift 5
    before=$(seen "$log" "$tool")
    got=$("$@" 2>&1)
    after=$(seen "$log" "$tool")
    if [[ $got =~ $want ]] && [ $((after - before)) -eq "$delta" ]; then
        ok "$name"
    else
        bad "$name: wanted /$want/ and $delta new '$tool' in $log.log ($before -> $after), got: $got"
    fi
}

PIDS=()
bg() { # NETNS UID CMD...: bounded by `timeout`, killed on exit.
    local ns=$1 uid=$2
    shift 2
    ip netns exec "$ns" setpriv --reuid "$uid" --regid "$uid" --clear-groups \
        timeout 300 "$@" >>"$WORK/bg.log" 2>&1 &
    PIDS+=($!)
}

wait_listening() { # NETNS PORT...
    local ns=$1 port
    shift
    for port in "$@"; do
        for _ in $(seq 1 250); do
            ip netns exec "$ns" ss -Hltn "sport = :$port" | grep -q . && continue 2
            sleep 0.02
        done
        die "nothing listening on :$port in $ns ($(tail -n 20 "$WORK/bg.log"))"
    done
}

write_config() {
    cat >"$WORK/config.yaml" <<YAML
listener: {addr: '127.0.0.1:15001'}
admin: {addr: '0.0.0.0:15120'}
upstream: {url: 'http://$CLI_V4:9000', request_timeout: 5s, connect_timeout: 2s}
security: {allowed_hosts: ['$POD_V4', '$POD_V6']}
capture: {addr: '[::]:15106'}
policy:
  default: allow
  rules:
    - name: no-delete
      action: deny
      methods: [tools/call]
      names: [delete_*]
      reason: destructive tools are off limits
YAML
    chmod 644 "$WORK/config.yaml"
}

start_sidecar() {
    local config=${1:-$WORK/config.yaml}
    bg "$POD" $PROXY_UID env PORTCULLIS_CAPTURE_MODE=inbound PORTCULLIS_INBOUND_PORTS=8080 \
        PORTCULLIS_APP_PROBES='{"/app-health/server/readyz":{"httpGet":{"path":"/healthz","port":8080,"scheme":"HTTP"},"timeoutSeconds":1}}' \
        RUST_LOG=warn "$PC" run --config "$config"
    SIDECAR=${PIDS[-1]}
    wait_listening "$POD" 15106 15120 15001
}

# A trust domain, the sidecar's SVID and a client's, with the dev CA.
make_pki() {
    [ -f "$WORK/pki/ca.pem" ] && return
    mkdir -p "$WORK/pki"
    "$PC" ca init --dir "$WORK/pki" --trust-domain netns.test >/dev/null &&
        "$PC" ca issue --dir "$WORK/pki" --id spiffe://netns.test/ns/pod/sa/server --out "$WORK/pki/server" >/dev/null &&
        "$PC" ca issue --dir "$WORK/pki" --id spiffe://netns.test/ns/agents/sa/planner --out "$WORK/pki/client" >/dev/null ||
        die "cannot make the test PKI"
    chmod -R a+rX "$WORK/pki"
    { cat "$WORK/config.yaml"; cat <<YAML
identity:
  mode: strict
  trust_domains: [netns.test]
  source: {files: {cert: '$WORK/pki/server.pem', key: '$WORK/pki/server.key', bundle: '$WORK/pki/ca.pem'}}
YAML
    } >"$WORK/config-mtls.yaml"
    chmod 644 "$WORK/config-mtls.yaml"
}

setup() {
    ip netns add "$POD" && ip netns add "$CLI" || die "cannot create namespaces"
    ip link add "${TAG}c" type veth peer name "${TAG}p" || die "cannot create veth"
    ip link set "${TAG}c" netns "$CLI"
    ip link set "${TAG}p" netns "$POD"
    in_cli ip link set "${TAG}c" name eth0
    in_pod ip link set "${TAG}p" name eth0
    in_cli ip addr add $CLI_V4/30 dev eth0
    in_pod ip addr add $POD_V4/30 dev eth0
    in_cli ip -6 addr add $CLI_V6/64 dev eth0 nodad
    in_pod ip -6 addr add $POD_V6/64 dev eth0 nodad
    for ns in "$POD" "$CLI"; do
        ip netns exec "$ns" ip link set lo up
        ip netns exec "$ns" ip link set eth0 up
    done
    rm -f "$WORK"/*.log
    touch "$WORK"/{server,excluded,other,remote,outbound}.log
    chmod 666 "$WORK"/*.log
    bg "$POD" $APP_UID "$PY" "$MCP_PY" serve :: 8080 "$WORK/server.log"
    bg "$POD" $APP_UID "$PY" "$MCP_PY" serve :: 9090 "$WORK/excluded.log"
    bg "$POD" $APP_UID "$PY" "$MCP_PY" serve :: 7070 "$WORK/other.log"
    bg "$CLI" $APP_UID "$PY" "$MCP_PY" serve :: 9000 "$WORK/remote.log"
    wait_listening "$POD" 8080 9090 7070
    wait_listening "$CLI" 9000
    write_config
    start_sidecar
}

teardown() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    PIDS=()
    ip netns del "$POD" 2>/dev/null
    ip netns del "$CLI" 2>/dev/null
}
trap 'teardown; rm -rf "$WORK"' EXIT
SIDECAR=

capture() { in_pod "$PC" capture --backend "$B" --ipv6 on "$@"; }
# The captured port under strict mTLS: the explicit listener's handshake.
mtls_checks() {
    make_pki
    kill "$SIDECAR" && wait "$SIDECAR" 2>/dev/null
    start_sidecar "$WORK/config-mtls.yaml"
    local https="env MCP_CA=$WORK/pki/ca.pem"
    expect "$B: mTLS strict: a client without a certificate is refused on podIP:8080" \
        "^ERR .*\[$NOTHING\]" counted in_cli $https "$PY" "$MCP_PY" call "https://$POD_V4:8080/mcp" echo
    expect "$B: mTLS strict: a plaintext client is refused on podIP:8080" \
        "^ERR .*\[$NOTHING\]" client_call $POD_V4:8080 echo
    expect "$B: mTLS strict: a client with an SVID reaches the server (allowed call)" \
        "called echo.*\[server\+1 excluded\+0" counted in_cli $https MCP_SVID="$WORK/pki/client" \
        "$PY" "$MCP_PY" call "https://$POD_V4:8080/mcp" echo
    expect "$B: mTLS strict: the same client's denied call never reaches the server" \
        "$DENIED.*\[$NOTHING\]" counted in_cli $https MCP_SVID="$WORK/pki/client" \
        "$PY" "$MCP_PY" call "https://$POD_V4:8080/mcp" delete_file
    expect "$B: mTLS strict: the canary (a kubelet probe) still answers in plain HTTP" \
        "^status=200 capture-ok$" get_from_client $POD_V4:15122/
}

capture4() { in_pod "$PC" capture --backend "$B" --ipv6 off "$@"; }

LOGS=(server excluded other remote outbound)
# counted CMD...: CMD's output, then how many new tools/call messages each
# server logged meanwhile, as "[server+N excluded+N other+N remote+N outbound+N]".
counted() {
    local before=() out i n tally=""
    for i in "${!LOGS[@]}"; do before[i]=$(wc -l <"$WORK/${LOGS[i]}.log"); done
    # (A TLS alert read as HTTP may hold NUL bytes.)
    out=$("$@" 2>&1 | tr -d '\0')
    for i in "${!LOGS[@]}"; do
        n=$(($(wc -l <"$WORK/${LOGS[i]}.log") - before[i]))
        tally+=" ${LOGS[i]}+$n"
    done
    echo "$out [${tally# }]"
}
client_call() { counted in_cli "$PY" "$MCP_PY" call "http://$1/mcp" "$2"; }
pod_call() { # UID HOSTPORT TOOL: a caller inside the pod
    counted in_pod setpriv --reuid "$1" --regid "$1" --clear-groups "$PY" "$MCP_PY" call "http://$2/mcp" "$3"
}
metric() { # the value of one sample from the sidecar's /metrics
    in_pod "$PY" "$MCP_PY" get "http://127.0.0.1:15120/metrics" | grep -F "$1 " | awk '{print $NF}'
}

DENIED='destructive tools are off limits'
NOTHING='server\+0 excluded\+0 other\+0 remote\+0 outbound\+0'

inbound_checks() {
    expect "$B: denied tools/call to podIP:8080 is answered by the sidecar and never reaches the server" \
        "$DENIED.*\[$NOTHING\]" client_call $POD_V4:8080 delete_file
    expect "$B: allowed tools/call to podIP:8080 reaches the server" \
        "called echo.*\[server\+1 excluded\+0" client_call $POD_V4:8080 echo
    expect "$B: IPv6: denied tools/call to [podIP]:8080 never reaches the server" \
        "$DENIED.*\[$NOTHING\]" client_call "[$POD_V6]:8080" delete_file
    expect "$B: IPv6: allowed tools/call to [podIP]:8080 reaches the server" \
        "called echo.*\[server\+1 excluded\+0" client_call "[$POD_V6]:8080" echo
    expect "$B: the server's peer for captured calls is the sidecar on 127.0.0.1" \
        "^127\.0\.0\.1 tools/call echo$" tail -n1 "$WORK/server.log"
    expect "$B: the sidecar's upstream leg is not re-captured: 4 client calls, 4 captured MCP connections" \
        "^4$" metric 'portcullis_capture_connections_total{route="mcp"}'
    expect "$B: the canary port answers through the redirect" \
        "^status=200 capture-ok$" get_from_client $POD_V4:15122/
    expect "$B: the canary port does not answer without the redirect (inside the pod, 127.0.0.1:15122)" \
        "^ERR " in_pod "$PY" "$MCP_PY" get http://127.0.0.1:15122/
    expect "$B: excluded port 9090 bypasses the sidecar (the app there is reached directly)" \
        "called delete_file.*\[server\+0 excluded\+1 other\+0" client_call $POD_V4:9090 delete_file
    expect "$B: captured port 7070, not an MCP port, is refused by the sidecar" \
        "^ERR .*\[$NOTHING\]" client_call $POD_V4:7070 echo
    expect "$B: ... and counted as reason=port" "^1$" metric 'portcullis_capture_refused_total{reason="port"}'
    expect "$B: a direct dial of the capture port 15106 is refused" \
        "^ERR .*\[$NOTHING\]" client_call $POD_V4:15106 echo
    expect "$B: ... and counted as reason=not_redirected" "^1$" \
        metric 'portcullis_capture_refused_total{reason="not_redirected"}'
    expect "$B: /app-health/server/readyz on the admin port runs the app's httpGet on 127.0.0.1:8080" \
        "^status=200 app answered 200" get_from_client $POD_V4:15120/app-health/server/readyz
}

outbound_checks() {
    bg "$POD" $PROXY_UID "$PY" "$MCP_PY" serve :: 15101 "$WORK/outbound.log"
    wait_listening "$POD" 15101
    expect "$B: rules for inbound+outbound mode applied" "applied Portcullis rules" \
        capture --mode inbound+outbound --exclude-inbound-ports 9090
    expect "$B: outbound: the sidecar's upstream (uid $PROXY_UID -> $CLI_V4:9000) is not captured" \
        "called echo.*\[server\+0 excluded\+0 other\+0 remote\+1 outbound\+0\]" pod_call $APP_UID 127.0.0.1:15001 echo
    expect "$B: outbound: the app's own egress (uid $APP_UID -> $CLI_V4:9000) is captured" \
        "\[server\+0 excluded\+0 other\+0 remote\+0 outbound\+1\]" pod_call $APP_UID $CLI_V4:9000 echo
    expect "$B: outbound: a denied call to podIP:8080 is still policed" \
        "$DENIED.*\[$NOTHING\]" client_call $POD_V4:8080 delete_file
}

# Outbound rules minus the uid/gid owner exemption, applied with the tool.
without_owner_exemption() {
    local text stripped
    text=$(capture4 --mode inbound+outbound --exclude-inbound-ports 9090 --dry-run) || return 1
    stripped=$(grep -vE -- '--(uid|gid)-owner|meta sk(uid|gid)' <<<"$text")
    [ "$(wc -l <<<"$text")" -eq $(($(wc -l <<<"$stripped") + 2)) ] || { echo "owner lines not found"; return 1; }
    capture --clean >/dev/null || return 1
    case $B in
        iptables) in_pod iptables-restore --noflush <<<"$stripped" ;;
        nft) in_pod nft -f - <<<"$stripped" ;;
    esac
}

run_backend() {
    B=$1
    echo "# ---- backend $B"
    setup
    control "$B: no rules: the denied call is not policed (it reaches the server)" \
        "$DENIED.*\[$NOTHING\]" "called delete_file.*\[server\+1 " client_call $POD_V4:8080 delete_file
    expect "$B: no rules: the canary port is refused" "^ERR " get_from_client $POD_V4:15122/

    expect "$B: portcullis capture installs the inbound rules" "applied Portcullis rules" \
        capture --mode inbound --exclude-inbound-ports 9090
    inbound_checks
    outbound_checks

    if out=$(without_owner_exemption 2>&1); then
        control "$B: owner exemption removed: the sidecar's upstream connection loops into :15101" \
            "remote\+1" "\[server\+0 excluded\+0 other\+0 remote\+0 outbound\+1\]" pod_call $APP_UID 127.0.0.1:15001 echo
    else
        bad "$B: could not install the rules without the owner exemption: $out"
    fi
    expect "$B: inbound rules back for the mTLS checks" "applied Portcullis rules" \
        capture --mode inbound --exclude-inbound-ports 9090
    mtls_checks
    capture --clean >/dev/null || bad "$B: --clean failed"
    expect "$B: after --clean the client reaches the server directly again" \
        "called delete_file.*\[server\+1 " client_call $POD_V4:8080 delete_file
    teardown
}

for b in "${BACKENDS[@]}"; do
    case $b in
        iptables | nft) run_backend "$b" ;;
        *) die "unknown backend $b" ;;
    esac
done

echo "# versions: $(iptables --version), $(nft --version); portcullis: $PC"
echo "# took $(awk -v a="$STARTED" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }') s"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
