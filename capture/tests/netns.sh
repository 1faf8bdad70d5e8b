#!/usr/bin/env bash
# Transparent capture in real network namespaces, with both backends.
#
# Topology (made here, deleted on exit; nothing is routed out of it):
#   netns "client"  eth0 10.250.0.1/30  fd00:250::1/64   tool server :9000
#   netns "pod"     eth0 10.250.0.2/30  fd00:250::2/64
#       server :8080 and excluded app :9090 (uid 1000, the "app")
#       sidecar stand-in, uid 1338: capture listeners :15106 (in) :15101 (out),
#       and its own health port :15121
# The stand-in is capture/examples/origdst_echo.rs: it answers every
# connection with "tag=<who> orig=<SO_ORIGINAL_DST or none> ...". A later
# step swaps start_sidecar() for `portcullis run` and the patterns with it.
#
# Two controls must fail, and the script asserts that they do: with no rules
# the client reaches the server directly; with the owner exemption removed
# (outbound mode) the sidecar's own connection loops into its capture port.
#
# Needs root. Installs iptables/nftables with apt-get if missing; never skips.
# Usage: capture/tests/netns.sh [goldens|iptables|nft|iptables-legacy]...
#        (default: all four; iptables-legacy runs the iptables backend with
#        the x_tables flavour of the tools)
# Env:   PCX_BIN_DIR  directory holding portcullis-capture and origdst_echo
#                     (default: build them with cargo)
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BACKENDS=("$@")
[ ${#BACKENDS[@]} -eq 0 ] && BACKENDS=(goldens iptables nft iptables-legacy)

PROXY_UID=1338
APP_UID=1000
POD_V4=10.250.0.2
CLI_V4=10.250.0.1
POD_V6=fd00:250::2
CLI_V6=fd00:250::1
TAG=pcx$$
POD=$TAG-pod
CLI=$TAG-cli
PASS=0
FAIL=0
STARTED=$(date +%s.%N)

die() { echo "netns.sh: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

# ---------------------------------------------------------------- preflight
[ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces and nat rules); refusing to skip"
need_tools() {
    local missing=0
    for t in ip setpriv ss iptables-restore ip6tables-restore iptables-save ip6tables-save nft; do
        command -v "$t" >/dev/null || missing=1
    done
    return $missing
}
if ! need_tools; then
    echo "# installing iptables and nftables"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables nftables; } >/dev/null 2>&1
    need_tools || die "iptables/nftables/iproute2/setpriv still missing after apt-get install"
fi

if [ -n "${PCX_BIN_DIR:-}" ]; then
    BIN=$PCX_BIN_DIR
else
    (cd "$REPO" && nice -n 10 cargo build -q -p portcullis-capture --bin portcullis-capture --example origdst_echo) \
        || die "cargo build failed"
    BIN=${CARGO_TARGET_DIR:-$REPO/target}/debug
fi
CAP=$BIN/portcullis-capture
ECHO=$BIN/examples/origdst_echo
[ -x "$CAP" ] && [ -x "$ECHO" ] || die "binaries not found in $BIN"

# ---------------------------------------------------------------- helpers
ok()   { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad()  { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }

in_pod() { ip netns exec "$POD" "$@"; }
in_cli() { ip netns exec "$CLI" "$@"; }
as_uid() { local uid=$1; shift; setpriv --reuid "$uid" --regid "$uid" --clear-groups "$@"; }

# expect NAME REGEX CMD...: the command's output must match REGEX.
expect() {
    local name=$1 want=$2 got
    shift 2
    got=$("$@" 2>&1)
    if [[ $got =~ $want ]]; then ok "$name"; else bad "$name: wanted /$want/, got: $got"; fi
}

# control NAME FAILING_REGEX ACTUAL_REGEX CMD...: a check that must fail.
# It passes only if the output does NOT match the check's pattern and DOES
# match ACTUAL_REGEX, so a control cannot "fail" for an unrelated reason.
control() {
    local name=$1 check=$2 actual=$3 got
    shift 3
    got=$("$@" 2>&1)
    if [[ ! $got =~ $check && $got =~ $actual ]]; then
        ok "control: $name (check failed as it must; got: $got)"
    else
        bad "control: $name: expected /$actual/ and not /$check/, got: $got"
    fi
}

from_client() { in_cli "$ECHO" connect "$1"; }
from_pod_as() { local uid=$1; in_pod setpriv --reuid "$uid" --regid "$uid" --clear-groups "$ECHO" connect "$2"; }

# Background listeners; each is bounded by `timeout` and killed on exit.
PIDS=()
start() { # NETNS UID TAG ADDR...
    local ns=$1 uid=$2 tag=$3
    shift 3
    ip netns exec "$ns" setpriv --reuid "$uid" --regid "$uid" --clear-groups \
        timeout 120 "$ECHO" listen "$tag" "$@" >/dev/null 2>&1 &
    PIDS+=($!)
}

wait_listening() { # NETNS PORT...
    local ns=$1 port
    shift
    for port in "$@"; do
        for _ in $(seq 1 100); do
            ip netns exec "$ns" ss -Hltn "sport = :$port" | grep -q . && continue 2
            sleep 0.02
        done
        die "nothing listening on :$port in $ns"
    done
}

start_servers() {
    start "$POD" $APP_UID server "[::]:8080"
    start "$POD" $APP_UID excluded "[::]:9090"
    start "$CLI" $APP_UID tool "[::]:9000"
    wait_listening "$POD" 8080 9090
    wait_listening "$CLI" 9000
}

start_sidecar() {
    start "$POD" $PROXY_UID sidecar-in "[::]:15106"
    start "$POD" $PROXY_UID sidecar-out "[::]:15101"
    start "$POD" $PROXY_UID health "[::]:15121"
    wait_listening "$POD" 15106 15101 15121
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
    start_servers
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
trap teardown EXIT

# The rule state of the pod netns as the backend's own tool shows it,
# counters stripped. (For the iptables backend, `nft list ruleset` is not
# compared: iptables-nft may list its base chains in another order after a
# re-apply, with the same rules.)
dump_tool() { case $B in iptables*) echo "iptables-save/ip6tables-save" ;; *) echo "nft list ruleset" ;; esac; }
dump() {
    case $B in
        iptables*) { in_pod iptables-save -t nat; in_pod ip6tables-save -t nat; } ;;
        nft) in_pod nft list ruleset ;;
    esac 2>/dev/null | grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]/[c]/; s/counter packets [0-9]+ bytes [0-9]+/counter/'
}

capture() { in_pod "$CAP" --backend "${B%-legacy}" --ipv6 "${IPV6:-on}" "$@"; }

# ---------------------------------------------------------------- scenarios
CAPTURED_8080="^tag=sidecar-in orig=$POD_V4:8080 "

inbound_checks() {
    expect "$B: client -> pod:8080 arrives at the capture listener, original destination recovered" \
        "$CAPTURED_8080" from_client $POD_V4:8080
    expect "$B: IPv6 client -> [pod]:8080 captured, original destination recovered" \
        "^tag=sidecar-in orig=\[$POD_V6\]:8080 " from_client "[$POD_V6]:8080"
    expect "$B: canary port 15122 answers only through the redirect" \
        "^tag=sidecar-in orig=$POD_V4:15122 " from_client $POD_V4:15122
    expect "$B: excluded port 9090 bypasses the sidecar" \
        "^tag=excluded orig=none " from_client $POD_V4:9090
    expect "$B: the sidecar's own port 15121 is not captured" \
        "^tag=health orig=none " from_client $POD_V4:15121
    expect "$B: dialling the capture port directly is not a redirected connection (the sidecar refuses it)" \
        "^tag=sidecar-in orig=none " from_client $POD_V4:15106
    expect "$B: sidecar -> 127.0.0.1:8080 (its upstream leg) is not captured" \
        "^tag=server orig=none " from_pod_as $PROXY_UID 127.0.0.1:8080
}

idempotent() { # NAME ARGS...
    local name=$1 one two
    shift
    capture "$@" >/dev/null || { bad "$B: $name: apply failed"; return; }
    one=$(dump)
    capture "$@" >/dev/null || { bad "$B: $name: second apply failed"; return; }
    two=$(dump)
    if [ "$one" = "$two" ] && grep -qi portcullis <<<"$one"; then
        ok "$B: $name: re-apply gives identical $(dump_tool) output"
    else
        bad "$B: $name: re-apply changed the rules:"$'\n'"$(diff <(echo "$one") <(echo "$two"))"
    fi
}

outbound_checks() {
    expect "$B: outbound: app (uid $APP_UID) -> client:9000 is captured" \
        "^tag=sidecar-out orig=$CLI_V4:9000 " from_pod_as $APP_UID $CLI_V4:9000
    expect "$B: outbound: app IPv6 -> [client]:9000 is captured" \
        "^tag=sidecar-out orig=\[$CLI_V6\]:9000 " from_pod_as $APP_UID "[$CLI_V6]:9000"
    expect "$B: outbound: sidecar (uid $PROXY_UID) -> client:9000 is not re-captured (no loop)" \
        "^tag=tool orig=none " from_pod_as $PROXY_UID $CLI_V4:9000
    expect "$B: outbound: app -> 127.0.0.1:8080 (loopback) is not captured" \
        "^tag=server orig=none " from_pod_as $APP_UID 127.0.0.1:8080
    expect "$B: outbound: inbound capture still works" "$CAPTURED_8080" from_client $POD_V4:8080
}

# Outbound rules minus the owner exemption, applied straight with the tool.
without_owner_exemption() {
    local text stripped
    text=$(IPV6=off capture --mode inbound+outbound --dry-run) || return 1
    stripped=$(grep -vE -- '--(uid|gid)-owner|meta sk(uid|gid)' <<<"$text")
    [ "$(wc -l <<<"$text")" -eq $(($(wc -l <<<"$stripped") + 2)) ] || { echo "owner lines not found"; return 1; }
    capture --clean >/dev/null || return 1
    case $B in
        iptables*) in_pod iptables-restore --noflush <<<"$stripped" ;;
        nft) in_pod nft -f - <<<"$stripped" ;;
    esac
}

run_backend() {
    B=$1
    echo "# ---- backend $B"
    setup

    control "$B: no rules: client -> pod:8080 is not captured (reaches the server directly)" \
        "$CAPTURED_8080" "^tag=server orig=none " from_client $POD_V4:8080
    expect "$B: no rules: the canary port is refused" "^ERR " from_client $POD_V4:15122

    local before after
    before=$(dump)
    expect "$B: --dry-run prints the rules" "redirect|REDIRECT" capture --exclude-inbound-ports 9090 --dry-run
    after=$(dump)
    [ "$before" = "$after" ] && ok "$B: --dry-run changed nothing" || bad "$B: --dry-run changed the rules"

    idempotent "inbound" --exclude-inbound-ports 9090
    inbound_checks
    # Detection follows the namespace: legacy x_tables rules now exist in the
    # legacy run, so auto must stay with iptables; elsewhere nft works here.
    local auto=nft
    [ "$B" = iptables-legacy ] && auto=iptables
    expect "$B: --backend auto picks $auto here" "^# backend: $auto" in_pod "$CAP" --backend auto --dry-run

    idempotent "inbound+outbound" --mode inbound+outbound --exclude-inbound-ports 9090
    outbound_checks

    if out=$(without_owner_exemption 2>&1); then
        control "$B: owner exemption removed: sidecar -> client:9000 is re-captured (loops into :15101)" \
            "^tag=tool orig=none " "^tag=sidecar-out orig=$CLI_V4:9000 " from_pod_as $PROXY_UID $CLI_V4:9000
    else
        bad "$B: could not install the rules without the owner exemption: $out"
    fi

    capture --clean >/dev/null || bad "$B: --clean failed"
    local left
    left=$({ dump; in_pod nft list ruleset; } 2>/dev/null | grep -i portcullis)
    if [ -n "$left" ]; then
        bad "$B: --clean left rules behind: $left"
    else
        ok "$B: --clean removes every Portcullis chain/table"
    fi
    expect "$B: after --clean the client reaches the server directly" \
        "^tag=server orig=none " from_client $POD_V4:8080

    teardown
}

# Every golden file must load with its own tool: the scenarios above use a
# few specs, the goldens cover every mode (CIDR sets, split multiports, ...).
goldens_load() {
    local ns=$TAG-gold f tool
    ip netns add "$ns" || die "cannot create $ns"
    for f in "$HERE"/golden/*; do
        case $f in
            *.iptables) tool=(iptables-restore --noflush) ;;
            *.ip6tables) tool=(ip6tables-restore --noflush) ;;
            *.nft) tool=(nft -f -) ;;
            *) bad "unknown golden $f"; continue ;;
        esac
        if out=$(ip netns exec "$ns" "${tool[@]}" <"$f" 2>&1); then
            ok "golden $(basename "$f") loads with ${tool[0]}"
        else
            bad "golden $(basename "$f") does not load with ${tool[0]}: $out"
        fi
        # Start each file from empty tables.
        ip netns exec "$ns" nft flush ruleset
    done
    ip netns del "$ns"
}

# The legacy (x_tables) flavour of iptables, selected by PATH so that the
# capture binary runs the same `iptables-restore` name.
use_legacy() {
    LEGACY_DIR=$(mktemp -d)
    local t
    for t in iptables ip6tables iptables-save ip6tables-save iptables-restore ip6tables-restore; do
        local target
        target=$(command -v "${t/tables/tables-legacy}") || die "no ${t/tables/tables-legacy}"
        ln -s "$target" "$LEGACY_DIR/$t"
    done
    export PATH="$LEGACY_DIR:$PATH"
}

for b in "${BACKENDS[@]}"; do
    case $b in
        iptables | nft) run_backend "$b" ;;
        iptables-legacy)
            SAVED_PATH=$PATH
            use_legacy
            run_backend "$b"
            PATH=$SAVED_PATH
            rm -rf "$LEGACY_DIR"
            ;;
        goldens) goldens_load ;;
        *) die "unknown backend $b" ;;
    esac
done

echo "# versions: $(iptables --version), $(nft --version)"
echo "# took $(awk -v a="$STARTED" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }') s"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
