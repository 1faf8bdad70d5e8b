"""Compares MCP conformance results run directly against a server and
through Portcullis, check by check. A transparent proxy must give the same
result everywhere, except that DNS-rebinding protection must pass through
Portcullis (which adds it) even when the server alone fails it."""

import json
import pathlib
import re
import sys

PROXY_FIXES = {"dns-rebinding-protection"}


def load(out_dir):
    results = {}
    for checks in pathlib.Path(out_dir).glob("server-*/checks.json"):
        # Directory names are server-<scenario>-<timestamp>.
        scenario = re.sub(r"^server-|-\d{4}-\d\d-\d\dT.*$", "", checks.parent.name)
        for c in json.loads(checks.read_text()):
            results[(scenario, c["id"])] = c["status"]
    return results


def main(direct_dir, proxy_dir):
    direct, proxied = load(direct_dir), load(proxy_dir)
    passed = failed = 0
    if not direct or not proxied:
        print("FAIL no conformance results found")
        print("0 passed, 1 failed")
        return 1
    for key in sorted(set(direct) | set(proxied)):
        d, p = direct.get(key, "MISSING"), proxied.get(key, "MISSING")
        scenario, check = key
        if scenario in PROXY_FIXES:
            ok = p == "SUCCESS"
            why = f"through portcullis {p} (direct {d})"
        else:
            ok = d == p
            why = f"direct {d}, through portcullis {p}"
        passed += ok
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'} {scenario}/{check}: {why}")
    rebinding_direct = [s for (sc, _), s in direct.items() if sc == "dns-rebinding-protection"]
    print(f"# dns-rebinding-protection direct: {rebinding_direct} (the server alone does not check Host/Origin)")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
