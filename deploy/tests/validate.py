#!/usr/bin/env python3
"""Renders every kustomization under deploy/ and checks what comes out.

No API server is reachable here, so this proves what can be proved offline:
  * every kustomization renders (`kubectl kustomize`);
  * every rendered object validates against the Kubernetes OpenAPI schemas
    of 1.29, 1.33 and the newest kubernetes-validate ships, strictly
    (unknown fields are errors); CRD objects against hand-written subset
    schemas in schemas/;
  * the things a schema cannot see: references resolve, the webhook
    configuration has the settings a fail-closed injector needs, the RBAC is
    exactly what the self-made-CA mode calls, the dashboard's PromQL names
    only metrics Portcullis exports, ...;
  * with the binaries (optional; SKIP is printed without them): the sidecar
    config passes `portcullis validate`, and the example Deployment, run
    through the real injector with each overlay's settings, still validates;
  * a self-test: known-broken variants must each be caught.
Prints `deploy: N passed, M failed, K skipped` and exits 1 on any failure.
"""

import argparse
import copy
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import yaml
from kubernetes_validate import utils as kv

HERE = Path(__file__).resolve().parent
DEPLOY = HERE.parent
SCHEMAS = HERE / "schemas"

# What each kustomization is for. Every non-Component kustomization under
# deploy/ must be listed (a check enforces it), so none goes unrendered.
TARGETS = {
    "base": "base",
    "overlays/cert-manager": "install",
    "overlays/self-signed": "install",
    "overlays/spire": "install",
    "examples/mcp-server": "app",
    "sidecar-config/plain": "sidecar-config",
    "sidecar-config/spiffe": "sidecar-config",
}
EXAMPLE = "examples/mcp-server"
WEBHOOK_NS = "portcullis-system"
MWC_NAME = "portcullis-injector"
SYSTEM_NAMESPACES = ["kube-system", "kube-public", "kube-node-lease"]
OPT_IN = ("portcullis.dev/inject", "enabled")
OPT_OUT = ("portcullis.dev/inject", "false")

# The injector's settings keys (inject/src/settings.rs, deny_unknown_fields).
SETTINGS_KEYS = {
    "proxyImage", "initImage", "imagePullPolicy", "proxyUid", "proxyGid",
    "capturePort", "outboundCapturePort", "canaryPort", "adminPort",
    "explicitPort", "captureMode", "excludeInboundPorts",
    "excludeOutboundPorts", "excludeOutboundCidrs", "policyConfigMap",
    "logLevel", "rewriteProbes", "svid", "proxyWorkers", "proxyResources",
    "initResources",
    "namespaceDefaults",
}
# Top-level keys of the sidecar config (README.md, configuration reference).
SIDECAR_KEYS = {
    "instance", "listener", "identity", "admin", "upstream", "limits",
    "security", "policy", "shutdown", "filters", "filter_engine",
}
ADMIN_PORT = 15120
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration",
                  "ValidatingWebhookConfiguration", "CustomResourceDefinition", "CSIDriver"}

# Metrics Portcullis exports: name -> (type, labels).
METRICS = {
    "portcullis_requests_total": ("counter", {"method", "tool", "decision"}),
    "portcullis_request_duration_seconds": ("histogram", {"method"}),
    "portcullis_upstream_errors_total": ("counter", {"kind"}),
    "portcullis_rejected_total": ("counter", {"reason"}),
    "portcullis_list_items_hidden_total": ("counter", {"kind"}),
    "portcullis_denials_total": ("counter", {"by"}),
    "portcullis_inflight_requests": ("gauge", set()),
    "portcullis_filter_evaluations_total": ("counter", {"filter", "hook", "outcome"}),
    "portcullis_filter_duration_seconds": ("histogram", {"filter"}),
    "portcullis_filter_faults_total": ("counter", {"filter", "kind"}),
    "portcullis_filter_reloads_total": ("counter", {"result"}),
    "portcullis_connections_total": ("counter", {"mode", "outcome"}),
    "portcullis_svid_expiry_seconds": ("gauge", set()),
    "portcullis_injector_requests_total": ("counter", {"result"}),
}
# Labels Prometheus adds to every scraped series (pod/PodMonitor discovery).
TARGET_LABELS = {"namespace", "pod", "container", "job", "instance", "endpoint", "service"}
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "by", "without",
    "rate", "irate", "increase", "histogram_quantile", "on", "ignoring",
    "group_left", "group_right", "and", "or", "unless", "clamp_min", "vector",
}
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range"}


class Results:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0

    def record(self, name, problems):
        if problems:
            self.failed += 1
            print(f"FAIL {name}")
            for p in problems:
                print(f"       {p}")
        else:
            self.passed += 1
            print(f"ok   {name}")

    def skip(self, name, why):
        self.skipped += 1
        print(f"SKIP {name}: {why}")


# ---------------------------------------------------------------- rendering

def render(path):
    """`kubectl kustomize` offline. KUBECONFIG=/dev/null: kubectl must never
    fall back to localhost:8080."""
    env = dict(os.environ, KUBECONFIG="/dev/null")
    p = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True,
                       text=True, env=env, timeout=60)
    if p.returncode != 0:
        return None, p.stderr.strip().splitlines()[-1:] or ["kubectl kustomize failed"]
    return [d for d in yaml.safe_load_all(p.stdout) if d], []


def kustomization_kind(d):
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        f = d / name
        if f.exists():
            return (yaml.safe_load(f.read_text()) or {}).get("kind", "Kustomization")
    return None


# ------------------------------------------------------------------ schemas

@functools.lru_cache(maxsize=None)
def _schema_contents(filename, version):
    return _ORIGINAL_SCHEMA_CONTENTS(filename, version)


_ORIGINAL_SCHEMA_CONTENTS = kv.schema_contents
kv.schema_contents = _schema_contents  # the definitions file is big: parse it once


def versions():
    return ["1.29.0", "1.33.0", kv.latest_version()]


@functools.lru_cache(maxsize=None)
def crd_schema(kind, api_version):
    f = SCHEMAS / f"{kind.lower()}-{api_version.replace('/', '-')}.json"
    return json.loads(f.read_text()) if f.exists() else None


def schema_problems(obj):
    problems = []
    for v in versions():
        try:
            kv.validate(obj, v, strict=True)
        except kv.ValidationError as e:
            path = ".".join(str(x) for x in e.path)
            problems.append(f"{v}: {path}: {e.message}")
        except kv.SchemaNotFoundError:
            schema = crd_schema(obj["kind"], obj["apiVersion"])
            if schema is None:
                return [f"no schema for {obj['apiVersion']} {obj['kind']} (add one to {SCHEMAS.name}/)"]
            errors = list(jsonschema.Draft202012Validator(schema).iter_errors(obj))
            return [f"subset schema: {'.'.join(map(str, e.path))}: {e.message}" for e in errors]
    return problems


# ------------------------------------------------------------ object helpers

def find(objs, kind, name=None, prefix=None):
    out = [o for o in objs if o["kind"] == kind]
    if name is not None:
        out = [o for o in out if o["metadata"]["name"] == name]
    if prefix is not None:
        out = [o for o in out if o["metadata"]["name"].startswith(prefix)]
    return out


def one(objs, kind, name=None, prefix=None):
    found = find(objs, kind, name, prefix)
    return found[0] if len(found) == 1 else None


def pod_spec(o):
    return o.get("spec", {}).get("template", {}).get("spec", {})


def webhook_deployment(objs):
    return one(objs, "Deployment", "portcullis-webhook")


def arg_value(args, flag):
    return args[args.index(flag) + 1] if flag in args and args.index(flag) + 1 < len(args) else None


def settings_of(objs):
    cm = one(objs, "ConfigMap", prefix="portcullis-injector-config")
    return yaml.safe_load(cm["data"]["config.yaml"]) if cm else None


def labels_match(selector, labels):
    """A LabelSelector evaluated as the apiserver does."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        k, op, vals = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and k in labels and labels[k] in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


# ------------------------------------------------------------------- checks
# Each check takes the rendered objects and returns a list of problems.

def check_references(objs):
    """Mounts, ConfigMaps, Secrets, ServiceAccounts, probe ports, Service
    and PDB selectors resolve inside the render."""
    problems = []
    cms = {o["metadata"]["name"] for o in find(objs, "ConfigMap")}
    secrets = {o["metadata"]["name"] for o in find(objs, "Secret")}
    secrets |= {c["spec"]["secretName"] for c in find(objs, "Certificate")}
    sas = {o["metadata"]["name"] for o in find(objs, "ServiceAccount")}
    for d in find(objs, "Deployment"):
        name, spec = d["metadata"]["name"], pod_spec(d)
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        sa = spec.get("serviceAccountName")
        if sa and sa not in sas:
            problems.append(f"{name}: serviceAccountName {sa} is not in the render")
        for v in vols.values():
            sources = [v] + v.get("projected", {}).get("sources", [])
            for s in sources:
                if "configMap" in s and s["configMap"]["name"] not in cms:
                    problems.append(f"{name}: volume {v['name']} needs ConfigMap {s['configMap']['name']}")
                ref = s.get("secret", {}).get("secretName") or s.get("secret", {}).get("name")
                if ref and ref not in secrets:
                    problems.append(f"{name}: volume {v['name']} needs Secret {ref}")
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            for m in c.get("volumeMounts", []):
                if m["name"] not in vols:
                    problems.append(f"{name}/{c['name']}: mount of missing volume {m['name']}")
            ports = {p.get("name") for p in c.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                handler = c.get(probe, {}).get("httpGet") or c.get(probe, {}).get("tcpSocket") or {}
                port = handler.get("port")
                if isinstance(port, str) and port not in ports:
                    problems.append(f"{name}/{c['name']}: {probe} names port {port}, not declared")
    for o in objs:
        if o["kind"] not in CLUSTER_SCOPED and not o["metadata"].get("namespace"):
            problems.append(f"{o['kind']} {o['metadata']['name']}: namespaced but no namespace")
    templates = [(d, pod_spec(d), d["spec"]["template"]["metadata"].get("labels", {}))
                 for d in find(objs, "Deployment")]
    for s in find(objs, "Service"):
        sel = s["spec"].get("selector", {})
        hits = [(d, spec) for d, spec, labels in templates if labels_match({"matchLabels": sel}, labels)]
        if not hits:
            problems.append(f"Service {s['metadata']['name']}: selector {sel} matches no pod template")
            continue
        names = {p.get("name") for _, spec in hits for c in spec["containers"] for p in c.get("ports", [])}
        for p in s["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in names:
                problems.append(f"Service {s['metadata']['name']}: targetPort {p['targetPort']} not declared")
    for pdb in find(objs, "PodDisruptionBudget"):
        if not any(labels_match(pdb["spec"]["selector"], lab) for _, _, lab in templates):
            problems.append(f"PDB {pdb['metadata']['name']}: selector matches no pod template")
    return problems


def check_webhook_configuration(objs):
    """The MutatingWebhookConfiguration is fail-closed, narrow and aimed at
    the Service that fronts the webhook."""
    mwc = one(objs, "MutatingWebhookConfiguration", MWC_NAME)
    if mwc is None:
        return [f"no MutatingWebhookConfiguration {MWC_NAME}"]
    svc = one(objs, "Service", "portcullis-webhook")
    own_ns = svc["metadata"].get("namespace") if svc else None
    problems = []
    for w in mwc["webhooks"]:
        def want(cond, text):
            if not cond:
                problems.append(f"{w['name']}: {text}")
        want(w.get("failurePolicy") == "Fail", "failurePolicy must be Fail (fail closed)")
        want(w.get("sideEffects") == "None", "sideEffects must be None")
        want(w.get("admissionReviewVersions") == ["v1"], "admissionReviewVersions must be [v1]")
        want(0 < w.get("timeoutSeconds", 10) <= 10, "timeoutSeconds must be set and short (<= 10)")
        want(w.get("rules") == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                 "resources": ["pods"], "scope": "Namespaced"}],
             "rules must be pods CREATE only")
        cc = w.get("clientConfig", {})
        want("url" not in cc, "clientConfig must name the Service, not a URL")
        s = cc.get("service", {})
        want(svc is not None and s.get("name") == "portcullis-webhook" and s.get("namespace") == own_ns,
             f"clientConfig.service {s} is not the rendered Service")
        want(s.get("path") == "/inject", "clientConfig.service.path must be /inject")
        if svc:
            ports = {p["port"]: p for p in svc["spec"]["ports"]}
            want(s.get("port", 443) in ports, f"Service has no port {s.get('port', 443)}")
        ns_sel, obj_sel = w.get("namespaceSelector", {}), w.get("objectSelector", {})
        want(labels_match(ns_sel, {OPT_IN[0]: OPT_IN[1], "kubernetes.io/metadata.name": "some-team"}),
             "namespaceSelector must select a namespace labelled portcullis.dev/inject=enabled")
        want(not labels_match(ns_sel, {"kubernetes.io/metadata.name": "some-team"}),
             "namespaceSelector must not select unlabelled namespaces")
        for ns in SYSTEM_NAMESPACES + ([own_ns] if own_ns else []):
            want(not labels_match(ns_sel, {OPT_IN[0]: OPT_IN[1], "kubernetes.io/metadata.name": ns}),
                 f"namespaceSelector must exclude {ns} even when labelled")
        want(labels_match(obj_sel, {"app": "x"}), "objectSelector must select ordinary pods")
        want(not labels_match(obj_sel, {OPT_OUT[0]: OPT_OUT[1]}),
             "objectSelector must skip pods labelled portcullis.dev/inject=false")
        exprs = " ".join(c.get("expression", "") for c in w.get("matchConditions", []))
        want("object.spec.hostNetwork" in exprs, "matchConditions must skip hostNetwork pods")
    return problems


def check_webhook_deployment(objs):
    """Hardened, highly available, probed on 9090, serving 9443 behind 443."""
    d = webhook_deployment(objs)
    if d is None:
        return ["no Deployment portcullis-webhook"]
    spec, problems = pod_spec(d), []
    c = spec["containers"][0]
    sc, psc = c.get("securityContext", {}), spec.get("securityContext", {})
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    args = c.get("args", [])
    checks = [
        (d["spec"].get("replicas", 1) >= 2, "replicas must be >= 2 (failurePolicy Fail)"),
        (psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0, "must run as non-root"),
        (sc.get("readOnlyRootFilesystem") is True, "root filesystem must be read-only"),
        (sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false"),
        (sc.get("capabilities", {}).get("drop") == ["ALL"], "must drop ALL capabilities"),
        ("requests" in c.get("resources", {}) and "limits" in c.get("resources", {}), "needs resources"),
        (args[:1] == ["serve"], "args must start with serve"),
        (arg_value(args, "--probe-listen") == "0.0.0.0:9090", "--probe-listen must be 0.0.0.0:9090"),
        (arg_value(args, "--listen") in (None, "0.0.0.0:9443"), "--listen must be 0.0.0.0:9443"),
        (ports.get("https") == 9443 and ports.get("metrics") == 9090, "ports https=9443, metrics=9090"),
    ]
    for probe in ("readinessProbe", "livenessProbe"):
        port = c.get(probe, {}).get("httpGet", {}).get("port")
        checks.append((ports.get(port, port) == 9090, f"{probe} must target 9090"))
    problems += [text for ok, text in checks if not ok]
    svc = one(objs, "Service", "portcullis-webhook")
    if svc:
        https = [p for p in svc["spec"]["ports"] if p["port"] == 443]
        if not https or ports.get(https[0].get("targetPort"), https[0].get("targetPort")) != 9443:
            problems.append("Service port 443 must reach container port 9443")
    config = arg_value(args, "--config")
    if config and config not in mounted_files(spec, c):
        problems.append(f"--config {config} is not a mounted file")
    return problems


def mounted_files(spec, container):
    """Files a container sees from ConfigMap/Secret items (enough for our
    projected volume; directory mounts of whole ConfigMaps count by key)."""
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    files = set()
    for m in container.get("volumeMounts", []):
        v = vols.get(m["name"], {})
        for s in [v] + v.get("projected", {}).get("sources", []):
            for key in ("configMap", "secret"):
                for item in s.get(key, {}).get("items", []):
                    files.add(f"{m['mountPath'].rstrip('/')}/{item['path']}")
    return files


def check_tls_mode(objs):
    """Exactly one TLS mode, and its pieces agree with each other."""
    d = webhook_deployment(objs)
    if d is None:
        return ["no Deployment portcullis-webhook"]
    spec = pod_spec(d)
    c = spec["containers"][0]
    args = c.get("args", [])
    cert_manager = "--tls-cert" in args or "--tls-key" in args
    self_signed = "--self-signed-ca" in args
    if cert_manager == self_signed:
        return ["exactly one of --tls-cert/--tls-key (cert-manager) or --self-signed-ca is needed"]
    return (tls_cert_manager if cert_manager else tls_self_signed)(objs, spec, c, args)


def tls_cert_manager(objs, spec, c, args):
    problems = []
    mwc = one(objs, "MutatingWebhookConfiguration", MWC_NAME) or {"metadata": {}}
    ref = mwc["metadata"].get("annotations", {}).get("cert-manager.io/inject-ca-from", "")
    ns, _, name = ref.partition("/")
    cert = one(objs, "Certificate", name)
    if cert is None or cert["metadata"].get("namespace") != ns:
        return [f"inject-ca-from {ref!r} names no rendered Certificate"]
    files = mounted_files(spec, c)
    for flag in ("--tls-cert", "--tls-key"):
        if arg_value(args, flag) not in files:
            problems.append(f"{flag} {arg_value(args, flag)} is not a mounted file")
    secrets = {s.get("secret", {}).get("name") for v in spec.get("volumes", [])
               for s in v.get("projected", {}).get("sources", [])}
    if cert["spec"]["secretName"] not in secrets:
        problems.append(f"the Certificate's Secret {cert['spec']['secretName']} is not mounted")
    svc = one(objs, "Service", "portcullis-webhook")
    want = f"portcullis-webhook.{svc['metadata']['namespace']}.svc" if svc else "?"
    if want not in cert["spec"].get("dnsNames", []):
        problems.append(f"Certificate dnsNames must include {want} (the name the apiserver dials)")
    if find(objs, "Role") or find(objs, "ClusterRole"):
        problems.append("cert-manager mode makes no API call: no Role/ClusterRole expected")
    if one(objs, "ServiceAccount", "portcullis-webhook").get("automountServiceAccountToken") is not False:
        problems.append("cert-manager mode: the ServiceAccount token must not be mounted")
    return problems


def tls_self_signed(objs, spec, c, args):
    problems = []
    ns = webhook_deployment(objs)["metadata"]["namespace"]
    if spec.get("automountServiceAccountToken") is not True:
        problems.append("self-signed mode calls the API: the token must be mounted")
    env = {e["name"]: e for e in c.get("env", [])}
    if env.get("POD_NAMESPACE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.namespace":
        problems.append("POD_NAMESPACE must come from the downward API")
    if arg_value(args, "--webhook-config") != MWC_NAME:
        problems.append(f"--webhook-config must be {MWC_NAME}")
    ca = arg_value(args, "--ca-secret") or "portcullis-webhook-ca"
    expected_role = [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [ca], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    ]
    expected_cluster = [{"apiGroups": ["admissionregistration.k8s.io"],
                         "resources": ["mutatingwebhookconfigurations"],
                         "resourceNames": [MWC_NAME], "verbs": ["get", "patch"]}]
    granted = rules_for_sa(objs, "portcullis-webhook", ns)
    if granted.get("Role") != expected_role:
        problems.append(f"namespaced rules must be exactly {expected_role}, got {granted.get('Role')}")
    if granted.get("ClusterRole") != expected_cluster:
        problems.append(f"cluster rules must be exactly {expected_cluster}, got {granted.get('ClusterRole')}")
    return problems


def rules_for_sa(objs, sa, ns):
    """Rules bound to a ServiceAccount, by role kind."""
    out = {}
    for kind, bkind in (("Role", "RoleBinding"), ("ClusterRole", "ClusterRoleBinding")):
        for b in find(objs, bkind):
            if any(s.get("kind") == "ServiceAccount" and s["name"] == sa and s.get("namespace", b["metadata"].get("namespace")) == ns
                   for s in b.get("subjects", [])):
                role = one(objs, b["roleRef"]["kind"], b["roleRef"]["name"])
                if role is None:
                    out.setdefault("dangling", []).append(b["roleRef"]["name"])
                else:
                    out.setdefault(b["roleRef"]["kind"], []).extend(role.get("rules", []))
    return out


def check_match_conditions(objs, example_pod):
    """The CEL matchConditions, evaluated with cel-python (not the
    apiserver's CEL, but the same language for these plain expressions):
    an ordinary pod is sent to the webhook, hostNetwork and mirror pods
    are not."""
    import celpy
    mwc = one(objs, "MutatingWebhookConfiguration", MWC_NAME)
    if mwc is None:
        return [f"no MutatingWebhookConfiguration {MWC_NAME}"]
    host = copy.deepcopy(example_pod)
    host["spec"]["hostNetwork"] = True
    mirror = copy.deepcopy(example_pod)
    mirror["metadata"].setdefault("annotations", {})["kubernetes.io/config.mirror"] = "abc"
    cases = [("an ordinary pod", example_pod, True), ("a hostNetwork pod", host, False),
             ("a mirror pod", mirror, False)]
    env, problems = celpy.Environment(), []
    for w in mwc["webhooks"]:
        try:
            programs = [env.program(env.compile(c["expression"])) for c in w.get("matchConditions", [])]
        except celpy.CELParseError as e:
            return [f"{w['name']}: CEL does not parse: {e}"]
        for what, pod, sent in cases:
            try:
                got = all(bool(p.evaluate({"object": celpy.json_to_cel(pod)})) for p in programs)
            except celpy.CELEvalError as e:
                problems.append(f"{w['name']}: evaluating on {what}: {e}")
                continue
            if got != sent:
                problems.append(f"{w['name']}: {what} would {'not ' if sent else ''}be sent to the webhook")
    return problems


def example_pod(renders):
    d = one(renders.get(EXAMPLE) or [], "Deployment", "mcp-server")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": copy.deepcopy(d["spec"]["template"]["metadata"]),
            "spec": copy.deepcopy(pod_spec(d))}


def check_rbac_least_privilege(objs):
    """No wildcards, no cluster-wide Secrets, no dangling bindings."""
    problems = []
    for r in find(objs, "Role") + find(objs, "ClusterRole"):
        for rule in r.get("rules", []):
            for field in ("verbs", "resources", "apiGroups"):
                if "*" in rule.get(field, []):
                    problems.append(f"{r['kind']} {r['metadata']['name']}: wildcard in {field}")
            if r["kind"] == "ClusterRole" and "secrets" in rule.get("resources", []):
                problems.append(f"ClusterRole {r['metadata']['name']}: cluster-wide Secrets")
    for b in find(objs, "RoleBinding") + find(objs, "ClusterRoleBinding"):
        if one(objs, b["roleRef"]["kind"], b["roleRef"]["name"]) is None:
            problems.append(f"{b['kind']} {b['metadata']['name']}: role {b['roleRef']['name']} not rendered")
        for s in b.get("subjects", []):
            if s.get("kind") == "ServiceAccount" and one(objs, "ServiceAccount", s["name"]) is None:
                problems.append(f"{b['kind']} {b['metadata']['name']}: ServiceAccount {s['name']} not rendered")
    return problems


def check_injector_settings(objs):
    """The settings parse, use only known keys, and agree with the sidecar
    config's ConfigMap name; the spiffe-csi copy differs only in `svid`."""
    s = settings_of(objs)
    if s is None:
        return ["no ConfigMap portcullis-injector-config with config.yaml"]
    problems = [f"unknown settings key {k}" for k in sorted(set(s) - SETTINGS_KEYS)]
    if s.get("policyConfigMap", "portcullis-config") != "portcullis-config":
        problems.append("policyConfigMap must be the rendered portcullis-config")
    if s.get("adminPort", ADMIN_PORT) != ADMIN_PORT:
        problems.append("adminPort differs from the sidecar config's admin port")
    svid = s.get("svid", {"kind": "csi"})
    if svid.get("kind") not in ("csi", "secret"):
        problems.append(f"svid.kind {svid.get('kind')} is neither csi nor secret")
    if svid.get("kind") == "secret" and not svid.get("secretName"):
        problems.append("svid kind secret needs secretName")
    base = yaml.safe_load((DEPLOY / "base/injector-config.yaml").read_text())
    for k in set(s) | set(base):
        if k != "svid" and s.get(k) != base.get(k):
            problems.append(f"settings key {k} differs from deploy/base/injector-config.yaml")
    return problems


def check_sidecar_config(objs):
    """portcullis-config holds a sidecar config the injector's contract can
    run: admin on 15120 reachable by the kubelet, a destructive-tools deny."""
    cm = one(objs, "ConfigMap", "portcullis-config")
    if cm is None:
        return ["no ConfigMap portcullis-config"]
    try:
        cfg = yaml.safe_load(cm["data"]["config.yaml"])
    except (KeyError, yaml.YAMLError) as e:
        return [f"config.yaml: {e}"]
    problems = [f"unknown top-level key {k}" for k in sorted(set(cfg) - SIDECAR_KEYS)]
    admin = cfg.get("admin", {}).get("addr", "")
    if admin != f"0.0.0.0:{ADMIN_PORT}":
        problems.append(f"admin.addr {admin!r}: the kubelet probes the pod IP on {ADMIN_PORT}")
    if "url" not in cfg.get("upstream", {}):
        problems.append("upstream.url is required")
    rules = cfg.get("policy", {}).get("rules", [])
    if not any(r.get("action") == "deny" and "tools/call" in r.get("methods", []) and
               any(n.startswith("delete") for n in r.get("names", [])) for r in rules):
        problems.append("no deny rule for destructive tools (tools/call delete*)")
    ident = cfg.get("identity")
    if ident and "workload_api" not in ident.get("source", {}) and "files" not in ident.get("source", {}):
        problems.append("identity.source must be workload_api or files")
    return problems


def check_dashboards(objs):
    """Dashboard ConfigMaps: discoverable label, JSON parses, one data
    source variable, PromQL names only exported metrics and their labels."""
    cms = [o for o in find(objs, "ConfigMap") if "dashboard" in o["metadata"]["name"]]
    if not cms:
        return ["no dashboard ConfigMap"]
    problems = []
    for cm in cms:
        if cm["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
            problems.append(f"{cm['metadata']['name']}: needs label grafana_dashboard: \"1\"")
        for key, text in cm.get("data", {}).items():
            try:
                dash = json.loads(text)
            except json.JSONDecodeError as e:
                problems.append(f"{key}: not JSON: {e}")
                continue
            problems += [f"{key}: {p}" for p in dashboard_problems(dash)]
    return problems


def all_panels(dash):
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])


def dashboard_problems(dash):
    problems = []
    if not dash.get("uid") or dash.get("id") is not None:
        problems.append("needs a stable uid and id: null")
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource":
        problems.append("needs a `datasource` variable of type datasource")
    ids = [p.get("id") for p in all_panels(dash)]
    if len(ids) != len(set(ids)):
        problems.append("panel ids are not unique")
    exprs = []
    for p in all_panels(dash):
        if p.get("type") == "row":
            continue
        for t in [p] + p.get("targets", []):
            if t.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"panel {p.get('title')!r}: datasource must be ${{datasource}}")
        if not p.get("targets"):
            problems.append(f"panel {p.get('title')!r} has no query")
        exprs += [(p.get("title"), t.get("expr", "")) for t in p.get("targets", [])]
    for v in variables.values():
        q = v.get("definition", "")
        m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", q)
        if v.get("type") == "query" and not m:
            problems.append(f"variable {v['name']}: expected label_values(metric, label), got {q!r}")
        elif m:
            exprs.append((f"variable {v['name']}", f"sum by ({m.group(2)}) ({m.group(1)})"))
    for title, e in exprs:
        problems += [f"panel {title!r}: {p}" for p in promql_problems(e, set(variables) | GRAFANA_BUILTINS)]
    return problems


def metric_base(name):
    """portcullis_x_bucket -> (portcullis_x, True) for histograms."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base in METRICS and METRICS[base][0] == "histogram":
            return base, suffix == "_bucket"
    return (name, False) if name in METRICS else (None, False)


def promql_problems(expr, variables):
    """A small PromQL reader: enough for the shapes the dashboard uses
    (selectors, by(), functions). Anything it does not know is a problem."""
    if not expr.strip():
        return ["empty query"]
    problems = []
    for v in re.findall(r"\$\{?(\w+)", expr):
        if v not in variables:
            problems.append(f"undefined variable ${v}")
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)      # string literals
    text = re.sub(r"\[[^\]]*\]", "", text)                # range selectors
    metrics, used_labels = [], set()
    for m in re.finditer(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", text):
        metrics.append(m.group(1))
        used_labels |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", m.group(2)))
    grouping = set()
    for g in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", text):
        grouping |= {x.strip() for x in g.split(",") if x.strip()}
    text = re.sub(r"\b(by|without)\s*\([^)]*\)", r"\1", text)
    text = re.sub(r"\{[^}]*\}", "", text)
    for word in re.findall(r"[a-zA-Z_:][\w:]*", text):
        if word in PROMQL_WORDS or word in metrics:
            continue
        metrics.append(word)                             # a bare metric name
    allowed, has_bucket = set(TARGET_LABELS), False
    for name in metrics:
        base, bucket = metric_base(name)
        if base is None:
            problems.append(f"unknown metric or function {name!r}")
            continue
        allowed |= METRICS[base][1]
        has_bucket |= bucket
    if has_bucket:
        allowed.add("le")
    for label in sorted((used_labels | grouping) - allowed):
        problems.append(f"label {label!r} is not on {sorted(set(metrics))}")
    if "histogram_quantile" in expr and "le" not in grouping:
        problems.append("histogram_quantile needs `by (le, ...)`")
    if not metrics:
        problems.append("names no metric")
    return problems


def check_example(objs, installs):
    """The example namespace is selected by every install's webhook, its
    pods are not opted out, and it has what injected pods mount."""
    problems = []
    nss = find(objs, "Namespace")
    if len(nss) != 1:
        return ["the example must create exactly one Namespace"]
    ns = nss[0]
    labels = dict(ns["metadata"].get("labels", {}), **{"kubernetes.io/metadata.name": ns["metadata"]["name"]})
    for name, inst in installs.items():
        mwc = one(inst, "MutatingWebhookConfiguration", MWC_NAME)
        settings = settings_of(inst) or {}
        for w in (mwc or {}).get("webhooks", []):
            if not labels_match(w.get("namespaceSelector", {}), labels):
                problems.append(f"{name}: webhook {w['name']} would not select namespace {labels['kubernetes.io/metadata.name']}")
            for d in find(objs, "Deployment"):
                if not labels_match(w.get("objectSelector", {}), d["spec"]["template"]["metadata"].get("labels", {})):
                    problems.append(f"{name}: pods of {d['metadata']['name']} are opted out")
        svid = settings.get("svid", {})
        if svid.get("kind") == "secret" and not one(objs, "Secret", svid.get("secretName")):
            problems.append(f"{name}: injected pods mount Secret {svid.get('secretName')}, not in the example")
    if one(objs, "ConfigMap", "portcullis-config") is None:
        problems.append("no portcullis-config in the example namespace")
    for o in objs:
        if o["kind"] != "Namespace" and o["metadata"].get("namespace") != ns["metadata"]["name"]:
            problems.append(f"{o['kind']} {o['metadata']['name']} is outside the example namespace")
    return problems


# ------------------------------------------------- checks with the binaries

def binary(env_name, name):
    explicit = os.environ.get(env_name)
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    root = Path(os.environ.get("CARGO_TARGET_DIR", DEPLOY.parent / "target"))
    for profile in ("debug", "release"):
        p = root / profile / name
        if os.access(p, os.X_OK):
            return str(p)
    return None


def portcullis_validate(exe, text):
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "config.yaml"
        f.write_text(text)
        p = subprocess.run([exe, "validate", "--config", str(f)], capture_output=True, text=True,
                           timeout=60, env=dict(os.environ, RUST_BACKTRACE="0"))
    return [] if p.returncode == 0 else [(p.stderr.strip() or p.stdout.strip()).splitlines()[0]]


def inject_render(exe, settings_text, workload):
    """The real injector, offline, on the example Deployment."""
    with tempfile.TemporaryDirectory() as d:
        s, w = Path(d) / "settings.yaml", Path(d) / "workload.yaml"
        s.write_text(settings_text)
        w.write_text(yaml.safe_dump(workload))
        p = subprocess.run([exe, "render", "-f", str(w), "--config", str(s)],
                           capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        return None, [p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "render failed"]
    return [o for o in yaml.safe_load_all(p.stdout) if o], []


def injected_problems(injected, example, install):
    problems = []
    for o in injected:
        problems += schema_problems(o)
        spec = pod_spec(o)
        names = [c["name"] for c in spec.get("initContainers", [])]
        if names[:2] != ["portcullis-init", "portcullis-proxy"]:
            problems.append(f"init containers {names}: expected portcullis-init, portcullis-proxy first")
        for v in spec.get("volumes", []):
            if "configMap" in v and one(example, "ConfigMap", v["configMap"]["name"]) is None:
                problems.append(f"mounts ConfigMap {v['configMap']['name']}, not in the example")
            if "secret" in v and one(example, "Secret", v["secret"]["secretName"]) is None:
                problems.append(f"mounts Secret {v['secret']['secretName']}, not in the example")
        svid = (settings_of(install) or {}).get("svid", {})
        want = "csi" if svid.get("kind") == "csi" else "secret"
        if not any(v["name"] == "portcullis-svid" and want in v for v in spec.get("volumes", [])):
            problems.append(f"no portcullis-svid {want} volume")
    return problems


def serve_smoke(exe, install):
    """Start the webhook with the Deployment's own args (paths moved to a
    temp dir, listeners to loopback) and ask /readyz on the probe port."""
    d = webhook_deployment(install)
    args = list(pod_spec(d)["containers"][0]["args"])
    if "--tls-cert" not in args:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "tls").mkdir()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "1", "-subj", "/CN=portcullis-webhook.portcullis-system.svc",
                        "-keyout", str(t / "tls/tls.key"), "-out", str(t / "tls/tls.crt")],
                       check=True, capture_output=True, timeout=30)
        (t / "config.yaml").write_text(one(install, "ConfigMap", prefix="portcullis-injector-config")["data"]["config.yaml"])
        args = [a.replace("/etc/portcullis-inject", tmp) for a in args]
        probe, listen = free_port(), free_port()
        args[args.index("--probe-listen") + 1] = f"127.0.0.1:{probe}"
        args[args.index("--listen") + 1] = f"127.0.0.1:{listen}"
        proc = subprocess.Popen([exe] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            return wait_ready(probe, proc)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, proc):
    import time
    import urllib.request
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return [f"webhook exited {proc.returncode}: {proc.stderr.read().strip()[-300:]}"]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
                bad = [] if "portcullis_injector_requests_total" in metrics else ["/metrics lacks portcullis_injector_requests_total"]
                return [] if r.status == 200 else [f"/readyz answered {r.status}"] + bad
        except OSError:
            time.sleep(0.2)
    return [f"nothing answered http://127.0.0.1:{port}/readyz within 15 s: is --probe-listen served?"]


# --------------------------------------------------------------------- main

CHECKS = {
    "base": [check_references, check_webhook_configuration, check_webhook_deployment,
             check_rbac_least_privilege, check_injector_settings, check_sidecar_config],
    "install": [check_references, check_webhook_configuration, check_webhook_deployment,
                check_rbac_least_privilege, check_injector_settings, check_sidecar_config,
                check_tls_mode, check_dashboards],
    "app": [check_references, check_sidecar_config],
    "sidecar-config": [check_sidecar_config],
}


def containerfile_stages(text):
    """Stage name -> its lines, in order (a FROM line starts a stage)."""
    stages, current = {}, None
    for line in text.splitlines():
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            current = m.group(2) or m.group(1)
            stages[current] = []
        elif current:
            stages[current].append(line)
    return stages


def check_containerfile(renders, text=None):
    """Every image the manifests name has a Containerfile target, and the
    runtime stages run as the uid the manifests expect."""
    f = DEPLOY.parent / "Containerfile"
    if text is None and not f.exists():
        return ["no Containerfile at the repo root"]
    stages = containerfile_stages(text if text is not None else f.read_text())
    problems = []
    if list(stages)[-1:] != ["proxy"]:
        problems.append("the last stage (the default target) must be proxy")
    settings = settings_of(renders.get("overlays/cert-manager") or []) or {}
    images = {
        "proxy": settings.get("proxyImage"), "init": settings.get("initImage"),
        "inject": _webhook_container(renders.get("overlays/cert-manager") or [])["image"],
        "example-server": pod_spec(one(renders.get(EXAMPLE) or [], "Deployment", "mcp-server"))["containers"][0]["image"],
    }
    repo = {"proxy": "portcullis", "init": "portcullis-init", "inject": "portcullis-inject",
            "example-server": "example-mcp-server"}
    for stage, image in images.items():
        if stage not in stages:
            problems.append(f"no Containerfile target {stage} for {image}")
        elif f"/{repo[stage]}:" not in (image or ""):
            problems.append(f"{image} does not look like the {stage} target's image ({repo[stage]})")
    for stage, uid in (("proxy", "1338:1338"), ("inject", "1338:1338")):
        if f"USER {uid}" not in stages.get(stage, []):
            problems.append(f"stage {stage} must run as USER {uid}")
    if not any("iptables" in l and "nftables" in l for l in stages.get("init", [])):
        problems.append("the init stage must install iptables and nftables")
    return problems


def check_metric_sources():
    """The metric list above still matches the code that registers them."""
    src = DEPLOY.parent
    text = "".join(f.read_text(errors="replace") for d in ("proxy/src", "inject/src")
                   for f in (src / d).rglob("*.rs"))
    return [f"{m} is registered nowhere in proxy/src or inject/src" for m in METRICS
            if f'"{m}"' not in text and f'"{m[len("portcullis_"):]}"' not in text
            and f"{m}{{" not in text and f"{m} " not in text]


def check_coverage():
    """Every kustomization is rendered, every component is used."""
    problems, used = [], set()
    for f in sorted(DEPLOY.rglob("kustomization.yaml")):
        d = f.parent
        rel = str(d.relative_to(DEPLOY))
        k = yaml.safe_load(f.read_text()) or {}
        if k.get("kind") == "Component":
            continue
        if rel not in TARGETS and not rel.startswith("tests"):
            problems.append(f"kustomization {rel} is not in TARGETS")
        used |= {str((d / c).resolve().relative_to(DEPLOY)) for c in k.get("components", [])}
    for f in sorted((DEPLOY / "components").glob("*/kustomization.yaml")):
        rel = str(f.parent.relative_to(DEPLOY))
        if rel not in used:
            problems.append(f"component {rel} is used by no rendered overlay")
    return problems


def run_target_checks(res, name, role, objs, installs):
    res.record(f"{name}: schemas ({len(objs)} objects x {', '.join(versions())}, strict)",
               [f"{o['kind']}/{o['metadata']['name']}: {p}" for o in objs for p in schema_problems(o)])
    for check in CHECKS[role]:
        res.record(f"{name}: {check.__name__[6:]}", check(objs))
    if role == "app":
        res.record(f"{name}: example", check_example(objs, installs))


def run_binary_checks(res, renders, installs):
    exe = binary("PORTCULLIS_BIN", "portcullis")
    configs = {}
    for name, objs in renders.items():
        cm = one(objs or [], "ConfigMap", "portcullis-config")
        if cm:
            configs.setdefault(cm["data"]["config.yaml"], name)
    for text, name in configs.items():
        label = f"{name}: portcullis validate (sidecar config)"
        if exe is None:
            res.skip(label, "no portcullis binary (build it, or set PORTCULLIS_BIN)")
        else:
            res.record(label, portcullis_validate(exe, text))
    exe = binary("PORTCULLIS_INJECT_BIN", "portcullis-inject")
    example = renders.get(EXAMPLE) or []
    for name, inst in installs.items():
        label = f"{name}: portcullis-inject render of the example + schemas"
        if exe is None:
            res.skip(label, "no portcullis-inject binary (build it, or set PORTCULLIS_INJECT_BIN)")
            continue
        injected, problems = inject_render(exe, one(inst, "ConfigMap", prefix="portcullis-injector-config")["data"]["config.yaml"],
                                           one(example, "Deployment", "mcp-server"))
        res.record(label, problems or injected_problems(injected, example, inst))
        smoke = serve_smoke(exe, inst)
        if smoke is not None:
            res.record(f"{name}: portcullis-inject serve with the Deployment's args answers /readyz", smoke)


def main_checks(res):
    res.record("every kustomization rendered, every component used", check_coverage())
    res.record("the dashboard's metric list matches proxy/src and inject/src", check_metric_sources())
    renders = {}
    for rel in TARGETS:
        objs, problems = render(DEPLOY / rel)
        res.record(f"{rel}: kubectl kustomize", problems)
        renders[rel] = objs
    installs = {k: v for k, v in renders.items() if TARGETS[k] == "install" and v}
    for rel, role in TARGETS.items():
        if renders[rel]:
            run_target_checks(res, rel, role, renders[rel], installs)
    for name, inst in installs.items():
        res.record(f"{name}: matchConditions (CEL, cel-python)", check_match_conditions(inst, example_pod(renders)))
    run_binary_checks(res, renders, installs)
    res.record("Containerfile: a target for every image, non-root uids", check_containerfile(renders))
    hadolint = Path(sys.executable).parent / "hadolint"
    if hadolint.exists():
        p = subprocess.run([str(hadolint), str(DEPLOY.parent / "Containerfile")],
                           capture_output=True, text=True, timeout=60)
        res.record("Containerfile: hadolint", (p.stdout + p.stderr).strip().splitlines())
    else:
        res.skip("Containerfile: hadolint", f"not installed in {Path(sys.executable).parent}")
    return renders, installs


# ---------------------------------------------------------------- self-test
# Each broken variant must be caught by the check named, or the checks above
# prove nothing.

def _mwc(objs):
    return one(objs, "MutatingWebhookConfiguration", MWC_NAME)["webhooks"][0]


def _webhook_container(objs):
    return pod_spec(webhook_deployment(objs))["containers"][0]


def _dash(objs, edit):
    cm = one(objs, "ConfigMap", "portcullis-grafana-dashboard")
    dash = json.loads(cm["data"]["portcullis.json"])
    edit(dash)
    cm["data"]["portcullis.json"] = json.dumps(dash)


def _first_expr(dash, new):
    [p for p in all_panels(dash) if p.get("targets")][0]["targets"][0]["expr"] = new


def _sidecar(objs, edit):
    cm = one(objs, "ConfigMap", "portcullis-config")
    cfg = yaml.safe_load(cm["data"]["config.yaml"])
    edit(cfg)
    cm["data"]["config.yaml"] = yaml.safe_dump(cfg)


CM, SS = "overlays/cert-manager", "overlays/self-signed"
MUTANTS = [
    ("failurePolicy Ignore", CM, check_webhook_configuration, lambda o: _mwc(o).update(failurePolicy="Ignore")),
    ("sideEffects Some", CM, check_webhook_configuration, lambda o: _mwc(o).update(sideEffects="Some")),
    ("timeout 30 s", CM, check_webhook_configuration, lambda o: _mwc(o).update(timeoutSeconds=30)),
    ("kube-system not excluded", CM, check_webhook_configuration,
     lambda o: _mwc(o)["namespaceSelector"]["matchExpressions"][1]["values"].remove("kube-system")),
    ("own namespace not excluded", CM, check_webhook_configuration,
     lambda o: _mwc(o)["namespaceSelector"]["matchExpressions"][1]["values"].remove("portcullis-system")),
    ("no opt-in label", CM, check_webhook_configuration,
     lambda o: _mwc(o)["namespaceSelector"]["matchExpressions"].pop(0)),
    ("no per-pod opt-out", CM, check_webhook_configuration, lambda o: _mwc(o).pop("objectSelector")),
    ("no hostNetwork matchCondition", CM, check_webhook_configuration,
     lambda o: _mwc(o)["matchConditions"].pop(0)),
    ("matchConditions always true", CM, "cel",
     lambda o: [c.update(expression="true") for c in _mwc(o)["matchConditions"]]),
    ("matchConditions skip every pod", CM, "cel",
     lambda o: _mwc(o)["matchConditions"].append({"name": "never", "expression": "false"})),
    ("UPDATE too", CM, check_webhook_configuration,
     lambda o: _mwc(o)["rules"][0].update(operations=["CREATE", "UPDATE"])),
    ("wrong Service", CM, check_webhook_configuration,
     lambda o: _mwc(o)["clientConfig"]["service"].update(name="other")),
    ("one replica", CM, check_webhook_deployment, lambda o: webhook_deployment(o)["spec"].update(replicas=1)),
    ("writable root", CM, check_webhook_deployment,
     lambda o: _webhook_container(o)["securityContext"].update(readOnlyRootFilesystem=False)),
    ("probe on 9443", CM, check_webhook_deployment,
     lambda o: _webhook_container(o)["readinessProbe"]["httpGet"].update(port="https")),
    ("config not mounted", CM, check_webhook_deployment,
     lambda o: _webhook_container(o)["args"].__setitem__(2, "/etc/elsewhere.yaml")),
    ("Service selector off", CM, check_references,
     lambda o: one(o, "Service", "portcullis-webhook")["spec"]["selector"].update({"app.kubernetes.io/name": "x"})),
    ("mount of a missing volume", CM, check_references,
     lambda o: _webhook_container(o)["volumeMounts"][0].update(name="gone")),
    ("Certificate without namespace", CM, check_references,
     lambda o: one(o, "Certificate", "portcullis-webhook")["metadata"].pop("namespace")),
    ("both TLS modes", CM, check_tls_mode, lambda o: _webhook_container(o)["args"].append("--self-signed-ca")),
    ("inject-ca-from names no Certificate", CM, check_tls_mode,
     lambda o: one(o, "MutatingWebhookConfiguration", MWC_NAME)["metadata"]["annotations"].update(
         {"cert-manager.io/inject-ca-from": "portcullis-system/nope"})),
    ("cert without the service DNS name", CM, check_tls_mode,
     lambda o: one(o, "Certificate", "portcullis-webhook")["spec"].update(dnsNames=["example.com"])),
    ("self-signed: token off", SS, check_tls_mode,
     lambda o: pod_spec(webhook_deployment(o)).update(automountServiceAccountToken=False)),
    ("self-signed: list secrets too", SS, check_tls_mode,
     lambda o: one(o, "Role", "portcullis-webhook-ca")["rules"][1]["verbs"].append("list")),
    ("self-signed: any webhook config", SS, check_tls_mode,
     lambda o: one(o, "ClusterRole", "portcullis-webhook-cabundle")["rules"][0].pop("resourceNames")),
    ("wildcard verbs", SS, check_rbac_least_privilege,
     lambda o: one(o, "ClusterRole", "portcullis-webhook-cabundle")["rules"][0].update(verbs=["*"])),
    ("unknown settings key", CM, check_injector_settings,
     lambda o: one(o, "ConfigMap", prefix="portcullis-injector-config")["data"].update(
         {"config.yaml": "captureMod: inbound\n"})),
    ("admin on loopback", CM, check_sidecar_config,
     lambda o: _sidecar(o, lambda c: c["admin"].update(addr="127.0.0.1:15120"))),
    ("no destructive-tools rule", CM, check_sidecar_config,
     lambda o: _sidecar(o, lambda c: c["policy"].update(rules=[]))),
    ("dashboard unlabelled", CM, check_dashboards,
     lambda o: one(o, "ConfigMap", "portcullis-grafana-dashboard")["metadata"]["labels"].clear()),
    ("dashboard metric typo", CM, check_dashboards,
     lambda o: _dash(o, lambda d: _first_expr(d, "sum(rate(portcullis_request_total[5m]))"))),
    ("dashboard foreign metric", CM, check_dashboards,
     lambda o: _dash(o, lambda d: _first_expr(d, "sum(rate(http_requests_total[5m]))"))),
    ("dashboard label not on metric", CM, check_dashboards,
     lambda o: _dash(o, lambda d: _first_expr(d, "sum by (rule) (rate(portcullis_requests_total[5m]))"))),
    ("dashboard undefined variable", CM, check_dashboards,
     lambda o: _dash(o, lambda d: _first_expr(d, 'sum(rate(portcullis_requests_total{pod=~"$pod"}[5m]))'))),
    ("dashboard not JSON", CM, check_dashboards,
     lambda o: one(o, "ConfigMap", "portcullis-grafana-dashboard")["data"].update({"portcullis.json": "{"})),
    ("schema: unknown field", CM, "schema",
     lambda o: _webhook_container(o).update(imagee="x")),
    ("schema: replicas as text", CM, "schema", lambda o: webhook_deployment(o)["spec"].update(replicas="two")),
    ("schema: CRD field typo", CM, "schema",
     lambda o: one(o, "Certificate", "portcullis-webhook")["spec"].update(dnsName=["x"])),
]


def example_mutants():
    def unlabel(o):
        find(o, "Namespace")[0]["metadata"]["labels"].pop("portcullis.dev/inject")

    def opt_out(o):
        find(o, "Deployment")[0]["spec"]["template"]["metadata"]["labels"]["portcullis.dev/inject"] = "false"

    def no_secret(o):
        o.remove(one(o, "Secret", "portcullis-svid"))
    return [("example namespace not labelled", unlabel), ("example pods opted out", opt_out),
            ("example without the SVID Secret", no_secret)]


def self_test(res, renders, installs):
    for name, target, check, mutate in MUTANTS:
        objs = copy.deepcopy(renders[target])
        try:
            mutate(objs)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            res.record(f"self-test: {name} is caught", [f"the broken variant could not be made: {e!r}"])
            continue
        if check == "schema":
            caught = [p for o in objs for p in schema_problems(o)]
        elif check == "cel":
            caught = check_match_conditions(objs, example_pod(renders))
        else:
            caught = check(objs)
        res.record(f"self-test: {name} is caught", [] if caught else ["NOT caught"])
    for name, mutate in example_mutants():
        objs = copy.deepcopy(renders[EXAMPLE])
        mutate(objs)
        res.record(f"self-test: {name} is caught", [] if check_example(objs, installs) else ["NOT caught"])
    text = (DEPLOY.parent / "Containerfile").read_text()
    for name, broken in (("Containerfile without the init target", text.replace(" AS init", " AS initial")),
                         ("Containerfile proxy as root", "USER 0".join(text.rsplit("USER 1338:1338", 1)))):
        res.record(f"self-test: {name} is caught", [] if check_containerfile(renders, broken) else ["NOT caught"])
    METRICS["portcullis_not_exported_total"] = ("counter", set())
    try:
        drift = check_metric_sources()
    finally:
        del METRICS["portcullis_not_exported_total"]
    res.record("self-test: a metric the code does not register is caught", [] if drift else ["NOT caught"])
    with tempfile.TemporaryDirectory() as d:
        Path(d, "kustomization.yaml").write_text("resources: [missing.yaml]\n")
        _, problems = render(Path(d))
        res.record("self-test: a broken kustomization fails to render", [] if problems else ["NOT caught"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-self-test", action="store_true")
    opts = ap.parse_args()
    res = Results()
    renders, installs = main_checks(res)
    if not opts.no_self_test:
        if all(renders.get(t) for t in (CM, SS, EXAMPLE)):
            self_test(res, renders, installs)
        else:
            res.record("self-test", ["cannot run: an overlay did not render"])
    print(f"deploy: {res.passed} passed, {res.failed} failed, {res.skipped} skipped")
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
