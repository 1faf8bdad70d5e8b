#!/usr/bin/env python3
"""Independent check of the webhook's answers.

For every fixture under tests/fixtures/<case>/ it reads the request and the
raw answer the real server gave (written by `cargo test -p portcullis-inject
--test webhook_fixtures` to <target>/inject-responses/<case>.json) and:

* checks the AdmissionReview envelope (uid echo, patchType iff patch, patch
  a strict base64 string, never an array of numbers);
* checks the outcome against expect.json (inject / skip / deny + message);
* applies the patch with python `jsonpatch` (an RFC 6902 implementation
  independent of the Rust one);
* validates the patched pod with `kubernetes-validate --strict` against
  Kubernetes 1.29, 1.33 and the newest version the package ships;
* checks what the schema does not: unique DNS-1123 container names across
  init and app containers, port names (IANA_SVC_NAME, <= 15 chars, unique per
  container), volumeMounts of existing volumes, unique volume names,
  restartPolicy only on init containers and only Always, no probes on plain
  init containers, nothing the user wrote lost, and the Portcullis layout
  (capture init, then the native sidecar, then user init containers).

A self-test feeds deliberately broken answers and demands that each is
caught, so the checker is shown to be able to fail.

Prints `N passed, M failed`; exits 1 if anything failed.
"""
import argparse
import base64
import binascii
import copy
import json
import os
import re
import sys

import jsonpatch
import kubernetes_validate

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
K8S_VERSIONS = ["1.29.0", "1.33.0", kubernetes_validate.latest_version()]


class Report:
    def __init__(self):
        self.passed = 0
        self.failures = []

    def check(self, case, name, errors):
        if errors:
            self.failures.append((case, name, errors))
        else:
            self.passed += 1


# ---------------------------------------------------------------- envelope
def envelope_errors(answer, uid):
    errs = []
    if answer.get("apiVersion") != "admission.k8s.io/v1" or answer.get("kind") != "AdmissionReview":
        errs.append("apiVersion/kind must be admission.k8s.io/v1 AdmissionReview")
    r = answer.get("response") or {}
    if r.get("uid") != uid:
        errs.append(f"uid {r.get('uid')!r} does not echo the request's {uid!r}")
    if ("patch" in r) != ("patchType" in r):
        errs.append("patchType must be present iff patch is")
    if "patch" in r:
        if r.get("patchType") != "JSONPatch":
            errs.append(f"patchType {r.get('patchType')!r} is not JSONPatch")
        p = r["patch"]
        if not isinstance(p, str):
            errs.append(f"patch is a {type(p).__name__}, not a base64 string")
        else:
            try:
                ops = json.loads(base64.b64decode(p, validate=True))
                if not isinstance(ops, list):
                    errs.append("decoded patch is not a JSON array")
            except (binascii.Error, ValueError) as e:
                errs.append(f"patch is not strict base64 JSON: {e}")
    return errs


def decoded_patch(answer):
    return json.loads(base64.b64decode(answer["response"]["patch"], validate=True))


def outcome_errors(answer, expect):
    r = answer.get("response") or {}
    want, msg = expect["outcome"], expect.get("message")
    if want == "inject":
        ok, text = r.get("allowed") is True and "patch" in r, json.dumps(r.get("warnings", []))
    elif want == "skip":
        ok, text = r.get("allowed") is True and "patch" not in r, json.dumps(r.get("warnings", []))
    else:
        ok, text = r.get("allowed") is False and "patch" not in r, (r.get("status") or {}).get("message", "")
    errs = [] if ok else [f"expected outcome {want}, got allowed={r.get('allowed')} patch={'patch' in r}"]
    if msg and msg not in text:
        errs.append(f"expected {msg!r} in {text!r}")
    return errs


# ----------------------------------------------------------------- schema
def strip_future(obj):
    """The unknown-future-fields fixture adds fields no schema knows; they
    must survive the patch (checked elsewhere) but are not Kubernetes."""
    if isinstance(obj, dict):
        return {k: strip_future(v) for k, v in obj.items() if not k.startswith("future")}
    if isinstance(obj, list):
        return [strip_future(v) for v in obj]
    return obj


def schema_errors(pod, version):
    pod = strip_future(copy.deepcopy(pod))
    meta = pod.setdefault("metadata", {})
    # kubernetes-validate crashes reporting errors on a generateName-only pod.
    meta.setdefault("name", (meta.get("generateName") or "pod-") + "placeholder")
    try:
        kubernetes_validate.validate(pod, version, strict=True)
        return []
    except kubernetes_validate.ValidationError as e:
        return [f"k8s {version}: {e.message} at {'/'.join(map(str, e.path))}"]
    except Exception as e:  # noqa: BLE001 - a crash is a failed check, not a pass
        return [f"k8s {version}: validator error {type(e).__name__}: {e}"]


# -------------------------------------------------------------- semantics
def semantic_errors(pod):
    spec = pod.get("spec", {})
    inits, apps = spec.get("initContainers", []), spec.get("containers", [])
    errs = []
    names = [c.get("name") for c in inits + apps]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        errs.append(f"duplicate container names {sorted(dup)}")
    errs += [f"container name {n!r} is not DNS-1123" for n in names if not DNS1123_LABEL.match(n or "")]
    vols = [v.get("name") for v in spec.get("volumes", [])]
    if len(vols) != len(set(vols)):
        errs.append(f"duplicate volume names in {vols}")
    used_ports = {}
    for c in inits + apps:
        errs += container_errors(c, set(vols), c in inits, used_ports)
    return errs


def container_errors(c, volumes, is_init, used_ports):
    errs, name = [], c.get("name")
    if not c.get("image"):
        errs.append(f"{name}: no image")
    pnames = []
    for p in c.get("ports", []):
        pn = p.get("name")
        if pn is not None:
            if len(pn) > 15 or not IANA_SVC_NAME.match(pn) or "--" in pn or not re.search("[a-z]", pn):
                errs.append(f"{name}: port name {pn!r} is not an IANA_SVC_NAME of <= 15 chars")
            pnames.append(pn)
        key = (p.get("containerPort"), p.get("protocol", "TCP"))
        if key in used_ports:
            errs.append(f"{name}: port {key} also declared by {used_ports[key]}")
        used_ports[key] = name
    if len(pnames) != len(set(pnames)):
        errs.append(f"{name}: duplicate port names {pnames}")
    for m in c.get("volumeMounts", []):
        if m.get("name") not in volumes:
            errs.append(f"{name}: volumeMount {m.get('name')!r} has no volume")
    rp = c.get("restartPolicy")
    if rp is not None and (not is_init or rp != "Always"):
        errs.append(f"{name}: restartPolicy {rp!r}: allowed only on init containers, and only as Always")
    if is_init and rp != "Always":
        errs += [f"{name}: plain init container has a {p}" for p in PROBES if p in c]
    return errs


def layout_errors(orig, pod):
    """Portcullis's own invariants on an injected pod."""
    spec = pod["spec"]
    inits = spec.get("initContainers", [])
    names = [c["name"] for c in inits]
    errs = []
    if [c["name"] for c in inits + spec["containers"]].count("portcullis-proxy") != 1:
        return ["portcullis-proxy must appear exactly once"]
    status = json.loads(pod["metadata"]["annotations"].get("portcullis.dev/status", "null") or "null")
    if not isinstance(status, dict):
        return ["portcullis.dev/status missing or not JSON"]
    ours = ["portcullis-proxy"] if status.get("captureMode") == "none" else ["portcullis-init", "portcullis-proxy"]
    if names[: len(ours)] != ours:
        errs.append(f"init containers must start with {ours}, got {names}")
    user = [c["name"] for c in orig["spec"].get("initContainers", [])]
    if names[len(ours):] != user:
        errs.append(f"user init containers {user} must follow ours unchanged, got {names[len(ours):]}")
    proxy = inits[names.index("portcullis-proxy")]
    sc = proxy.get("securityContext", {})
    if proxy.get("restartPolicy") != "Always" or "startupProbe" not in proxy:
        errs.append("portcullis-proxy must be a native sidecar with a startupProbe")
    if sc.get("runAsUser") != 1338 or sc.get("runAsNonRoot") is not True:
        errs.append("portcullis-proxy must run as uid 1338, non-root")
    if "portcullis-init" in names:
        caps = inits[names.index("portcullis-init")].get("securityContext", {}).get("capabilities", {})
        if sorted(caps.get("add", [])) != ["NET_ADMIN", "NET_RAW"]:
            errs.append("portcullis-init must add exactly NET_ADMIN and NET_RAW")
    return errs


def subset_errors(a, b, at=""):
    if isinstance(a, dict) and isinstance(b, dict):
        errs = []
        for k, v in a.items():
            errs += subset_errors(v, b[k], f"{at}/{k}") if k in b else [f"{at}/{k} was lost"]
        return errs
    if isinstance(a, list) and isinstance(b, list) and len(a) <= len(b):
        return [e for i, (x, y) in enumerate(zip(a, b)) for e in subset_errors(x, y, f"{at}/{i}")]
    return [] if a == b else [f"{at} changed"]


def preserved_errors(orig, pod, ops):
    """Everything the user wrote is still there; only probes are replaced."""
    errs = []
    orig, pod = copy.deepcopy(orig), copy.deepcopy(pod)
    for op in ops:
        if op["op"] not in ("add", "replace"):
            errs.append(f"unexpected op {op['op']} {op['path']}")
        if op["op"] == "replace":
            if not re.fullmatch(r"/spec/containers/\d+/(livenessProbe|readinessProbe|startupProbe)", op["path"]):
                errs.append(f"replace outside an app probe: {op['path']}")
                continue
            _, _, _, i, field = op["path"].split("/")
            orig["spec"]["containers"][int(i)].pop(field, None)
            pod["spec"]["containers"][int(i)].pop(field, None)
    user_inits = orig["spec"].pop("initContainers", [])
    new_inits = pod["spec"].pop("initContainers", [])
    errs += subset_errors(user_inits, new_inits[len(new_inits) - len(user_inits):], "/spec/initContainers")
    return errs + subset_errors(orig, pod)


# ------------------------------------------------------------------- cases
def check_case(rep, case, request, expect, answer):
    uid = request["request"]["uid"]
    rep.check(case, "envelope", envelope_errors(answer, uid))
    rep.check(case, "outcome", outcome_errors(answer, expect))
    if "patch" not in (answer.get("response") or {}):
        return
    try:
        ops = decoded_patch(answer)
        orig = request["request"]["object"]
        pod = jsonpatch.apply_patch(orig, ops)
    except Exception as e:  # noqa: BLE001 - any failure to apply is a finding
        rep.check(case, "apply", [f"patch does not apply: {type(e).__name__}: {e}"])
        return
    rep.check(case, "apply", [])
    for v in K8S_VERSIONS:
        rep.check(case, f"schema {v}", schema_errors(pod, v))
    rep.check(case, "semantics", semantic_errors(pod))
    rep.check(case, "nothing lost", preserved_errors(orig, pod, ops))
    rep.check(case, "layout", layout_errors(orig, pod))


def load(path):
    with open(path) as f:
        return json.load(f)


def run_fixtures(rep, responses):
    cases = sorted(d for d in os.listdir(FIXTURES) if os.path.isdir(os.path.join(FIXTURES, d)))
    for case in cases:
        d = os.path.join(FIXTURES, case)
        path = os.path.join(responses, case + ".json")
        if not os.path.exists(path):
            rep.check(case, "answer", [f"no answer at {path}: run the Rust fixture test first"])
            continue
        check_case(rep, case, load(os.path.join(d, "request.json")), load(os.path.join(d, "expect.json")), load(path))
    return len(cases)


def encode(ops):
    return base64.b64encode(json.dumps(ops).encode()).decode()


def broken_answers(answer, request):
    """(label, answer) pairs, each wrong in one way the checker must catch."""
    good = decoded_patch(answer)
    pod = request["request"]["object"]
    out = []

    def with_patch(label, ops=None, **resp):
        a = copy.deepcopy(answer)
        if ops is not None:
            a["response"]["patch"] = encode(ops)
        a["response"].update(resp)
        out.append((label, a))

    # Replaces the user's volumes instead of appending: loses 'data' and
    # leaves its mount dangling.
    with_patch("volumes replaced", [op for op in good if not op["path"].startswith("/spec/volumes")]
               + [{"op": "add", "path": "/spec/volumes", "value": [{"name": "portcullis-config", "configMap": {"name": "x"}},
                                                                   {"name": "portcullis-svid", "emptyDir": {}},
                                                                   {"name": "portcullis-xtables", "emptyDir": {}}]}])
    with_patch("patch as numbers (kube-rs#1781)", patch=list(json.dumps(good).encode()))
    with_patch("patchType without patch")
    out[-1][1]["response"].pop("patch")
    with_patch("duplicate container name", good + [{"op": "add", "path": "/spec/containers/-",
                                                    "value": {"name": "server", "image": "x"}}])
    with_patch("restartPolicy on an app container", good + [{"op": "add", "path": "/spec/containers/0/restartPolicy",
                                                             "value": "Always"}])
    with_patch("port name too long", good + [{"op": "add", "path": "/spec/containers/0/ports/-",
                                              "value": {"name": "portcullis-metrics", "containerPort": 15190}}])
    with_patch("unknown field (schema)", good + [{"op": "add", "path": "/spec/containers/0/imagePullPolicyy",
                                                  "value": "Always"}])
    with_patch("uid not echoed", uid="other")
    assert pod  # the request is used by the caller
    return out


def self_test(rep, responses):
    """Each broken answer must produce at least one failure."""
    case = "plain-deployment-pod"
    d = os.path.join(FIXTURES, case)
    request, expect = load(os.path.join(d, "request.json")), load(os.path.join(d, "expect.json"))
    answer = load(os.path.join(responses, case + ".json"))
    for label, broken in broken_answers(answer, request):
        probe = Report()
        check_case(probe, case, request, expect, broken)
        caught = [f"{n}: {e[0]}" for _, n, e in probe.failures]
        rep.check("self-test", label, [] if caught else ["a broken answer passed every check"])
        if caught and os.environ.get("VERBOSE"):
            print(f"  self-test {label!r} caught by {caught[0]}")


def main():
    default = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(HERE, "..", "..", "target"),
                           "inject-responses")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--responses", default=default, help="directory of raw answers (default: %(default)s)")
    args = ap.parse_args()
    rep = Report()
    n = run_fixtures(rep, args.responses)
    self_test(rep, args.responses)
    for case, name, errs in rep.failures:
        for e in errs:
            print(f"FAIL {case}: {name}: {e}")
    print(f"check_patches: {n} cases, k8s {', '.join(K8S_VERSIONS)}")
    print(f"{rep.passed} passed, {len(rep.failures)} failed")
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
