#!/usr/bin/env python3
"""Cross-checks the cedar and rego filters against independent engines.

For every fixture (the `policy test` format, proxy/src/policy_test.rs), this
script builds the Cedar request and entities, and the Rego input document,
itself, in Python, from the documented mappings (filters/cedar/README.md and
mcp.cedarschema; filters/rego/README.md), and asks:

- cedarpy (PyPI; the Cedar engine of cedar-policy 4.12, Cedar's own Rust
  crate but an older release than the filter's 4.14.1), with the published
  schema: the policies are validated against it (strict) and every request
  and entity set is schema-checked;
- regopy (PyPI; Microsoft's rego-cpp, a C++ Rego interpreter independent of
  the regorus crate the filter embeds), with OPA's non-strict builtin errors
  as the filter uses them;

and then runs the same fixtures through OUR filters in the real host
(`portcullis policy test`). Per fixture it checks that the engine, our
filter and the fixture's `expect` / `expect_visible` agree, and that the
denial message our filter gives is the one the mapping derives from the
engine's answer (which Cedar policies decided; Rego's `reason`).

Suites:
- parity: examples/parity/calls with team-tools.cedar / team-tools.rego;
- engines: examples/parity/engines/calls with engines/ticket.cedar /
  ticket.rego (arguments as tags incl. non-string ones, call-only forbids
  vs lists, entity escapes in arguments);
- engines/engine-only: fixtures with a `token` (an access token's user, a
  JWT-SVID), which `policy test` cannot carry (it has `caller` only): they
  are checked against both engines, not against our host.

Exit status: 0 when everything agrees, 1 on any disagreement, 2 when it
could not run. Needs `.tools/venv` with cedarpy and regopy
(scripts/install-peers.sh).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SCHEMA_PATH = ROOT / "filters" / "cedar" / "mcp.cedarschema"
# What `policy test` passes as the call's instance and era
# (proxy/src/policy_test.rs: `instance: "policy-test"`, era 2025-11-25).
INSTANCE = "policy-test"
ERA = "2025-11-25"
ANONYMOUS = "anonymous"

try:
    import cedarpy
    import regopy
    from regopy.node import Node as RegoNode
    from regopy.rego_shared import (
        rego_free_output,
        rego_output_binding_at_index,
        rego_output_ok,
        rego_output_string,
        rego_query,
    )
except ImportError as e:  # pragma: no cover
    sys.exit(
        f"crosscheck: {e}; run `bash scripts/install-peers.sh` and use .tools/venv/bin/python"
    )


# ---------------------------------------------------------------------------
# Suites and fixtures


@dataclass
class Suite:
    name: str
    fixtures: Path
    cedar_policy: Path
    cedar_config: Path
    rego_policy: Path
    rego_config: Path
    # Fixtures with a token: engines only.
    engine_only: Optional[Path] = None


SUITES = [
    Suite(
        "parity",
        HERE / "calls",
        HERE / "team-tools.cedar",
        HERE / "cedar.json",
        HERE / "team-tools.rego",
        HERE / "rego.json",
    ),
    Suite(
        "engines",
        HERE / "engines" / "calls",
        HERE / "engines" / "ticket.cedar",
        HERE / "engines" / "cedar.json",
        HERE / "engines" / "ticket.rego",
        HERE / "engines" / "rego.json",
        engine_only=HERE / "engines" / "engine-only",
    ),
]

FIXTURE_KEYS = {"message", "caller", "annotations", "result", "list", "expect", "expect_visible"}
# Engine-only fixtures may also carry the verified token.
ENGINE_ONLY_KEYS = FIXTURE_KEYS | {"token"}
TOKEN_KEYS = {"kind", "subject", "issuer", "scopes", "actor", "claims"}


@dataclass
class Token:
    kind: str  # "access-token" | "jwt-svid"
    subject: str
    issuer: str
    scopes: list[str]
    actor: Optional[str] = None
    claims: Any = field(default_factory=dict)


@dataclass
class Principal:
    """The principal as the filters see it (policy-sdk Principal)."""

    peer: Optional[str]  # the mTLS peer's SPIFFE ID
    token: Optional[Token]

    def spiffe_id(self) -> Optional[str]:
        if self.peer:
            return self.peer
        if self.token and self.token.kind == "jwt-svid":
            return self.token.subject
        return None

    def access_token(self) -> Optional[Token]:
        return self.token if self.token and self.token.kind == "access-token" else None

    def key(self) -> str:
        # proxy/src/identity/principal.rs: peer, then " token:<iss>#<sub>".
        k = self.peer or ANONYMOUS
        if self.token:
            k += f" token:{self.token.issuer}#{self.token.subject}"
        return k

    def describe(self) -> str:
        # policy-sdk/src/call.rs `Principal::describe`.
        sid, tok = self.spiffe_id(), self.token
        if sid and tok and tok.kind == "access-token":
            return f"{tok.subject} via {sid}"
        if sid:
            return sid
        if tok:
            return tok.subject
        return "an anonymous caller"


@dataclass
class Fixture:
    suite: str
    name: str  # file name
    host: bool  # also run through our filters
    raw: dict

    @property
    def expect(self) -> Optional[str]:
        return self.raw.get("expect")

    @property
    def expect_visible(self) -> Optional[list[str]]:
        return self.raw.get("expect_visible")

    def principal(self) -> Principal:
        t = self.raw.get("token")
        token = None
        if t is not None:
            token = Token(
                kind=t["kind"],
                subject=t["subject"],
                issuer=t["issuer"],
                scopes=list(t.get("scopes", [])),
                actor=t.get("actor"),
                claims=t.get("claims", {}),
            )
        return Principal(self.raw.get("caller"), token)


def load_fixtures(suite: Suite) -> list[Fixture]:
    out = []
    for d, host, keys in ((suite.fixtures, True, FIXTURE_KEYS), (suite.engine_only, False, ENGINE_ONLY_KEYS)):
        if d is None:
            continue
        for p in sorted(d.glob("*.json")):
            raw = json.loads(p.read_text())
            if "jsonrpc" in raw:  # a bare message
                raw = {"message": raw}
            extra = set(raw) - keys
            if extra:
                raise SystemExit(f"crosscheck: {p}: unknown fields {sorted(extra)}")
            if "token" in raw and set(raw["token"]) - TOKEN_KEYS:
                raise SystemExit(f"crosscheck: {p}: unknown token fields")
            if "result" in raw:
                raise SystemExit(f"crosscheck: {p}: result hooks are not cross-checked")
            out.append(Fixture(suite.name, p.name, host, raw))
    return out


# ---------------------------------------------------------------------------
# The call as a filter sees it (proxy/src/mcp/message.rs `target_of`,
# proxy/src/filter/convert.rs), and the questions a filter asks its engine.


@dataclass
class Question:
    """One engine question: the fields both filters build their input from."""

    kind: str  # "call" | "list" | "related"
    method: str
    target_kind: str  # "tool" | "prompt" | "resource"
    name: str
    arguments: Optional[str]  # JSON text, as the client sent it
    annotations: Optional[str]  # JSON text
    principal: Principal
    era: str
    instance: str
    headers: list[tuple[str, str]]


OWN_CALL = {
    ("tool", "tools/call"),
    ("prompt", "prompts/get"),
    ("resource", "resources/read"),
    ("resource", "resources/subscribe"),
    ("resource", "resources/unsubscribe"),
}


def call_question(fx: Fixture) -> Optional[Question]:
    """The call's question, or None for a message without a target (the
    filters allow those without asking: initialize, ping, lists...)."""
    msg = fx.raw["message"]
    method = msg.get("method", "")
    params = msg.get("params") or {}
    if method == "tools/call":
        target = ("tool", params["name"])
    elif method == "prompts/get":
        target = ("prompt", params["name"])
    elif method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
        target = ("resource", params["uri"])
    else:
        # Task methods name a task; `policy test` knows no task's tool, so
        # they have no target either.
        return None
    own = (target[0], method) in OWN_CALL
    args = params.get("arguments")
    ann = fx.raw.get("annotations")
    return Question(
        kind="call" if own else "related",
        method=method,
        target_kind=target[0],
        name=target[1],
        arguments=json.dumps(args, ensure_ascii=False) if own and "arguments" in params else None,
        annotations=json.dumps(ann) if ann is not None else None,
        principal=fx.principal(),
        era=ERA,
        instance=INSTANCE,
        headers=[],
    )


LIST_TARGET = {"tools": "tool", "prompts": "prompt", "resources": "resource"}


def list_questions(fx: Fixture, engine: str) -> list[Question]:
    """One question per listed item: kind "list", no arguments. `policy
    test` gives items no annotations. The cedar filter sends method "" and
    no era/instance for items; the rego filter the target's call method."""
    lst = fx.raw["list"]
    tk = LIST_TARGET[lst["kind"]]
    method = {"tool": "tools/call", "prompt": "prompts/get", "resource": "resources/read"}[tk]
    return [
        Question(
            kind="list",
            method="" if engine == "cedar" else method,
            target_kind=tk,
            name=item,
            arguments=None,
            annotations=None,
            principal=fx.principal(),
            era="",
            instance="",
            headers=[],
        )
        for item in lst["items"]
    ]


# ---------------------------------------------------------------------------
# Cedar, with cedarpy


ACTION = {
    ("tool", "*"): "tools/call",
    ("prompt", "*"): "prompts/get",
    ("resource", "resources/subscribe"): "resources/subscribe",
    ("resource", "resources/unsubscribe"): "resources/unsubscribe",
    ("resource", "*"): "resources/read",
}
HINTS = ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")


def cedar_action(q: Question) -> str:
    return ACTION.get((q.target_kind, q.method)) or ACTION[(q.target_kind, "*")]


def cedar_tag(v: Any) -> str:
    """A string argument is itself; any other value its JSON text (compact;
    the filter's serde_json keeps the client's key order)."""
    if isinstance(v, str):
        return v
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


@dataclass
class EngineAnswer:
    allowed: bool
    message: Optional[str]  # the denial message our filter should give
    detail: str  # what the engine said, for the table


class CedarEngine:
    def __init__(self, policy_text: str, config: dict, schema_text: str):
        self.policies = policy_text
        self.schema = schema_text
        self.pset = cedarpy.PolicySet.from_str(policy_text)
        v = cedarpy.validate_policies(policy_text, schema_text)
        self.validation_errors = [str(e) for e in v.errors] if not v.validation_passed else []
        js = json.loads(cedarpy.policies_to_json_str(policy_text))
        self.annotations = {pid: p.get("annotations", {}) for pid, p in js["staticPolicies"].items()}
        self.config_entities = config.get("entities") or []

    def _principal(self, p: Principal) -> dict:
        sid = p.spiffe_id()
        if sid:
            rest = sid.removeprefix("spiffe://")
            i = rest.find("/")
            td, path = (rest, "") if i < 0 else (rest[:i], rest[i:])
            uid = {"type": "Mcp::Agent", "id": sid}
            attrs = {"trust_domain": td, "path": path}
        elif p.token:
            uid, attrs = {"type": "Mcp::User", "id": p.token.subject}, {}
        else:
            uid, attrs = {"type": "Mcp::Anonymous", "id": ANONYMOUS}, {}
        parents = []
        for e in self.config_entities:
            if e.get("uid") == uid:
                parents = e.get("parents", [])
        return {"uid": uid, "attrs": attrs, "parents": parents}

    @staticmethod
    def _resource(q: Question) -> dict:
        tags = {}
        if q.arguments is not None:
            args = json.loads(q.arguments)
            if isinstance(args, dict):
                tags = {k: cedar_tag(v) for k, v in args.items()}
            elif args is not None:
                raise ValueError(f"arguments must be an object, not {q.arguments}")
        if q.target_kind == "tool":
            ann = json.loads(q.annotations) if q.annotations else None
            hints = {h: ann[h] for h in HINTS if isinstance(ann, dict) and isinstance(ann.get(h), bool)}
            return {
                "uid": {"type": "Mcp::Tool", "id": q.name},
                "attrs": {"name": q.name, "annotations": hints},
                "parents": [],
                "tags": tags,
            }
        if q.target_kind == "prompt":
            return {"uid": {"type": "Mcp::Prompt", "id": q.name}, "attrs": {"name": q.name}, "parents": [], "tags": tags}
        return {"uid": {"type": "Mcp::Resource", "id": q.name}, "attrs": {"uri": q.name}, "parents": []}

    @staticmethod
    def _context(q: Question) -> dict:
        ctx: dict[str, Any] = {"kind": q.kind, "method": q.method, "era": q.era, "instance": q.instance}
        t = q.principal.access_token()
        if t:
            user: dict[str, Any] = {"subject": t.subject, "issuer": t.issuer, "scopes": list(t.scopes)}
            if t.actor is not None:
                user["actor"] = t.actor
            ctx["user"] = user
        ctx["headers"] = [{"name": n, "value": v} for n, v in q.headers]
        return ctx

    def entities(self, principal: dict, resources: list[dict]) -> list[dict]:
        mine = {json.dumps(principal["uid"], sort_keys=True)} | {json.dumps(r["uid"], sort_keys=True) for r in resources}
        base = [e for e in self.config_entities if json.dumps(e.get("uid"), sort_keys=True) not in mine]
        return base + [principal] + resources

    def ask(self, questions: list[Question]) -> list[EngineAnswer]:
        """Asks every question against one entity set, as the filter does
        for a list (for a call there is one question)."""
        if not questions:
            return []
        principal = self._principal(questions[0].principal)
        try:
            resources = {json.dumps(r["uid"], sort_keys=True): r for r in (self._resource(q) for q in questions)}
        except ValueError as e:  # the filter refuses to build the request: deny
            return [EngineAnswer(False, None, f"mapping refuses: {e}") for _ in questions]
        ents = self.entities(principal, list(resources.values()))
        out = []
        for q in questions:
            rtype = {"tool": "Mcp::Tool", "prompt": "Mcp::Prompt", "resource": "Mcp::Resource"}[q.target_kind]
            request = {
                "principal": principal["uid"],
                "action": {"type": "Mcp::Action", "id": cedar_action(q)},
                "resource": {"type": rtype, "id": q.name},
                "context": self._context(q),
            }
            r = cedarpy.is_authorized(request, self.pset, ents, schema=self.schema)
            out.append(self._answer(q, r))
        return out

    def _answer(self, q: Question, r) -> EngineAnswer:
        errors = [str(e) for e in r.diagnostics.errors]
        reasons = list(r.diagnostics.reasons)
        dec = r.decision.name if hasattr(r.decision, "name") else str(r.decision)
        detail = f"{dec}" + (f" by {','.join(self._ids(reasons))}" if reasons else "")
        if errors:
            # NoDecision (a request or entity set the schema refuses) or a
            # policy in error: the filter denies either way.
            return EngineAnswer(False, None, f"{dec} errors: {'; '.join(errors)[:200]}")
        if dec == "Allow":
            return EngineAnswer(True, None, detail)
        if reasons:
            msgs = [self.annotations.get(pid, {}).get("reason") or f"forbidden by policy {pid}" for pid in reasons]
            return EngineAnswer(False, "; ".join(msgs), detail)
        return EngineAnswer(
            False,
            f"no Cedar policy permits {q.principal.describe()} to {cedar_action(q)} {q.name}",
            detail + " (default)",
        )

    def _ids(self, pids: list[str]) -> list[str]:
        return [self.annotations.get(p, {}).get("id", p) for p in pids]


# ---------------------------------------------------------------------------
# Rego, with regopy


class RegoEngine:
    def __init__(self, policy_text: str, config: dict):
        if config.get("rego_v0"):
            raise SystemExit("crosscheck: rego_v0 configs are not cross-checked")
        self.it = regopy.Interpreter()
        pol = config["policies"]
        modules = {"policy.rego": pol} if isinstance(pol, str) else dict(pol)
        for name, text in modules.items():
            self.it.add_module(name, text)
        if config.get("data") is not None:
            self.it.add_data_json(json.dumps(config["data"]))
        # OPA's non-strict builtin errors, as the filter sets them.
        self.it.strict_built_in_errors = False
        self.policy_text = policy_text

    def _eval(self, rule: str) -> tuple[str, Any]:
        """("ok", value) | ("undefined", None) | ("error", text). Bound to
        a variable: rego-cpp makes a query whose value is `false` undefined,
        where OPA (and regorus's eval_rule) give `false`."""
        impl = rego_query(self.it._impl, f"x := {rule}")
        try:
            if not rego_output_ok(impl):
                return "error", rego_output_string(impl)
            if rego_output_string(impl) == "undefined":
                return "undefined", None
            node = RegoNode(rego_output_binding_at_index(impl, 0, "x"))
            text = node.json()
            if text.startswith('"'):
                # rego-cpp's JSON does not escape quotes inside strings: take
                # the raw value instead.
                return "ok", node.value
            return "ok", json.loads(text)
        finally:
            rego_free_output(impl)

    @staticmethod
    def input_doc(q: Question) -> dict:
        p = q.principal
        principal: dict[str, Any] = {}
        sid = p.spiffe_id()
        if sid:
            rest = sid.removeprefix("spiffe://")
            i = rest.find("/")
            td, path = (rest, "") if i < 0 else (rest[:i], rest[i:])
            principal["agent"] = {"spiffe_id": sid, "trust_domain": td, "path": path}
        t = p.access_token()
        if t:
            principal["user"] = {
                "subject": t.subject,
                "issuer": t.issuer,
                "scopes": list(t.scopes),
                "actor": t.actor,
                "claims": t.claims,
            }
        principal["key"] = p.key()
        return {
            "kind": q.kind,
            "method": q.method,
            "target": {"kind": q.target_kind, "name": q.name},
            "arguments": json.loads(q.arguments) if q.arguments is not None else None,
            "annotations": json.loads(q.annotations) if q.annotations is not None else None,
            "principal": principal,
            "era": q.era,
            "instance": q.instance,
            "headers": {n: v for n, v in q.headers},
        }

    def ask(self, questions: list[Question]) -> list[EngineAnswer]:
        out = []
        for q in questions:
            self.it.set_input(self.input_doc(q))
            status, allow = self._eval("data.portcullis.allow")
            if status == "error":
                out.append(EngineAnswer(False, None, f"error: {allow[:200]}"))
                continue
            if status == "ok" and allow is True:
                out.append(EngineAnswer(True, None, "allow=true"))
                continue
            detail = f"allow={json.dumps(allow) if status == 'ok' else 'undefined'}"
            rs, reason = self._eval("data.portcullis.reason")
            if rs == "ok" and isinstance(reason, str):
                msg = reason
            else:
                msg = f"data.portcullis.allow is not true for {q.principal.describe()} on {q.method} {q.name}"
            out.append(EngineAnswer(False, msg, detail))
        return out


def regopy_quotes_sprintf_literals() -> bool:
    """rego-cpp 1.5.2 bug probe: `sprintf("%s", [x])` where x is a string
    literal (e.g. object.get's default) renders it quoted, `"x"`, where OPA
    (and regorus) render `x`. Affects denial *messages* only."""
    it = regopy.Interpreter()
    it.add_module("probe.rego", 'package probe\nr := sprintf("%s", [object.get({}, "k", "lit")])\n')
    impl = rego_query(it._impl, "x := data.probe.r")
    try:
        return '"lit"' in rego_output_string(impl)
    finally:
        rego_free_output(impl)


# ---------------------------------------------------------------------------
# Our filters, through the real host


@dataclass
class HostOutcome:
    label: str  # allow | deny | rewrite
    message: Optional[str]
    visible: Optional[list[str]]
    line: str


LINE = re.compile(r"^(PASS|FAIL|    ) (\S+\.json): (.*)$")


def parse_host_output(text: str, filter_name: str) -> dict[str, HostOutcome]:
    out = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        name, rest = m.group(2), m.group(3)
        visible = None
        i = rest.rfind("; visible: ")
        if i >= 0:
            visible = json.loads(rest[i + len("; visible: ") :])
            rest = rest[:i]
        label = re.split(r"[ ;]", rest, maxsplit=1)[0]
        message = None
        prefix = f"deny by filter:{filter_name}: "
        if rest.startswith(prefix):
            message = rest[len(prefix) :]
        elif label == "deny":
            message = rest  # denied by something else: shown whole
        out[name] = HostOutcome(label, message, visible, line)
    return out


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def precompile(portcullis: Path, wasm: Path, cache: Path, memory: int, bin_hash: str) -> Path:
    """`portcullis filter compile` once per (binary, component): compiling
    the 6 MB Cedar component is most of the host's time, and the parity and
    engines suites share it."""
    key = hashlib.sha256(f"{bin_hash}:{sha256_file(wasm)}:{memory}".encode()).hexdigest()[:16]
    out = cache / f"{key}" / f"{wasm.stem}.cwasm"  # same stem: same filter name
    if out.exists():
        os.utime(out.parent)  # most recently used
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    r = subprocess.run(
        [str(portcullis), "filter", "compile", str(wasm), "--out", str(tmp), "--max-memory", str(memory)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise RuntimeError(f"filter compile {wasm.name}: {r.stderr.strip()[-500:]}")
    tmp.rename(out)
    return out


def prune_cache(cache: Path, keep: int = 4) -> None:
    """Keeps the `keep` most recently used artifacts (about 30 MB for both
    filters per build of portcullis)."""
    if not cache.is_dir():
        return
    dirs = sorted((d for d in cache.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True)
    for d in dirs[keep:]:
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


def run_host(portcullis: Path, component: Path, config: Path, fixtures: Path, memory: int) -> tuple[str, int]:
    r = subprocess.run(
        [
            str(portcullis), "policy", "test",
            "--filter", str(component),
            "--config", str(config),
            "--fixtures", str(fixtures),
            "--memory", str(memory),
            "--timeout", "200ms",
        ],
        capture_output=True,
        text=True,
    )
    return r.stdout + r.stderr, r.returncode


# ---------------------------------------------------------------------------
# The check


@dataclass
class Row:
    fixture: Fixture
    engine: str  # cedar | rego
    expect: str
    engine_says: str
    host_says: str
    ok: bool
    notes: list[str]
    known: list[str]  # disagreements explained by a probed engine bug


def verdict_of(fx: Fixture, call: Optional[EngineAnswer], visible: Optional[list[str]]) -> str:
    s = "allow" if call is None or call.allowed else "deny"
    if visible is not None:
        s += f" vis={','.join(visible) or '-'}"
    return s


def check_fixture(fx: Fixture, engine_name: str, engine, host: Optional[HostOutcome], sprintf_bug: bool) -> Row:
    notes: list[str] = []
    known: list[str] = []
    ok = True
    q = call_question(fx)
    ans = engine.ask([q])[0] if q else None  # None: no target, the filters allow
    vis = None
    if "list" in fx.raw:
        qs = list_questions(fx, engine_name)
        answers = engine.ask(qs)
        vis = [qq.name for qq, a in zip(qs, answers) if a.allowed]
    engine_label = "allow" if ans is None or ans.allowed else "deny"
    want = fx.expect
    if want is not None and engine_label != want:
        ok = False
        notes.append(f"engine {engine_label} != expect {want} ({ans.detail if ans else 'no target'})")
    if fx.expect_visible is not None and vis != fx.expect_visible:
        ok = False
        notes.append(f"engine visible {vis} != expect_visible {fx.expect_visible}")
    host_s = "-"
    if fx.host:
        if host is None:
            ok = False
            notes.append("no host result for this fixture")
        else:
            host_s = host.label + (f" vis={','.join(host.visible) or '-'}" if host.visible is not None else "")
            if host.label != engine_label:
                ok = False
                notes.append(f"DECISION: our filter {host.label}, engine {engine_label} ({ans.detail if ans else 'no target'}): {host.line}")
            if vis is not None and host.visible != vis:
                ok = False
                notes.append(f"LIST: our filter shows {host.visible}, engine {vis}")
            if ans is not None and not ans.allowed and host.label == "deny" and ans.message is not None:
                same = host.message == ans.message or (
                    engine_name == "cedar"
                    and set((host.message or "").split("; ")) == set(ans.message.split("; "))
                )
                if not same:
                    if engine_name == "rego" and sprintf_bug and host.message == ans.message.replace('"', ""):
                        known.append(
                            f"message: regopy {ans.message!r}, ours {host.message!r} "
                            "(rego-cpp quotes string literals in sprintf %s; OPA and regorus do not)"
                        )
                    else:
                        ok = False
                        notes.append(f"MESSAGE: ours {host.message!r}, mapping from engine {ans.message!r}")
    return Row(
        fx,
        engine_name,
        (want or "-") + (f" vis={','.join(fx.expect_visible) or '-'}" if fx.expect_visible is not None else ""),
        verdict_of(fx, ans, vis) + (f" [{ans.detail}]" if ans else " [no target]"),
        host_s,
        ok,
        notes,
        known,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--portcullis", type=Path, help="the portcullis binary (default: target/release, else target/debug)")
    ap.add_argument("--wasm-dir", type=Path, default=ROOT / "target" / "wasm32-wasip2" / "release")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / "target" / "parity-crosscheck",
                    help="where precompiled components are kept, keyed by binary and component hashes")
    ap.add_argument("--no-precompile", action="store_true", help="let every `policy test` compile the .wasm itself")
    ap.add_argument("--engines-only", action="store_true", help="skip our filters (no host runs)")
    ap.add_argument("--memory", type=int, default=32 << 20, help="the filters' memory limit in `policy test` (its default)")
    ap.add_argument("--write-configs", action="store_true",
                    help="copy the policy files into the suites' cedar.json/rego.json `policies`, then check")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every row's engine detail")
    args = ap.parse_args()
    t0 = time.monotonic()

    schema = SCHEMA_PATH.read_text()
    failures: list[str] = []

    # Configs must carry exactly the policy files the engines are given.
    for s in SUITES:
        for pol, cfg in ((s.cedar_policy, s.cedar_config), (s.rego_policy, s.rego_config)):
            text = pol.read_text()
            if args.write_configs:
                c = json.loads(cfg.read_text()) if cfg.exists() else {}
                c["policies"] = text  # other keys (entities, data) kept
                cfg.write_text(json.dumps(c) + "\n")
            c = json.loads(cfg.read_text())
            if c.get("policies") != text:
                failures.append(f"{cfg.relative_to(ROOT)}: policies differ from {pol.name} (run with --write-configs)")

    # Our filters, in the background while the engines run.
    host_out: dict[tuple[str, str], dict[str, HostOutcome]] = {}
    host_jobs = {}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    portcullis = None
    if not args.engines_only:
        portcullis = args.portcullis
        if portcullis is None:
            for c in ("release", "debug"):
                if (ROOT / "target" / c / "portcullis").exists():
                    portcullis = ROOT / "target" / c / "portcullis"
                    break
        if portcullis is None or not portcullis.exists():
            print("crosscheck: no portcullis binary (cargo build -p portcullis --bin portcullis)", file=sys.stderr)
            return 2
        bin_hash = sha256_file(portcullis)

        def component(engine: str) -> Path:
            wasm = args.wasm_dir / f"{engine}_filter.wasm"
            if not wasm.exists():
                raise RuntimeError(f"{wasm} missing (make filters)")
            if args.no_precompile:
                return wasm
            try:
                return precompile(portcullis, wasm, args.cache_dir, args.memory, bin_hash)
            except Exception as e:  # fall back to compiling in each run
                print(f"crosscheck: precompile failed, using {wasm.name}: {e}", file=sys.stderr)
                return wasm

        def host_engine(engine: str):
            comp = component(engine)
            res = {}
            for s in SUITES:
                cfg = s.cedar_config if engine == "cedar" else s.rego_config
                text, rc = run_host(portcullis, comp, cfg, s.fixtures, args.memory)
                res[s.name] = (text, rc)
            return res

        for engine in ("cedar", "rego"):
            host_jobs[engine] = pool.submit(host_engine, engine)

    # The engines.
    sprintf_bug = regopy_quotes_sprintf_literals()
    rows: list[Row] = []
    engines: dict[str, tuple[CedarEngine, RegoEngine]] = {}
    print(f"engines: cedarpy {getattr(cedarpy, '__version__', '4.12.2')} (Cedar 4.12), regopy {regopy.__version__} (rego-cpp)")
    for s in SUITES:
        cedar_cfg = json.loads(s.cedar_config.read_text())
        rego_cfg = json.loads(s.rego_config.read_text())
        ced = CedarEngine(s.cedar_policy.read_text(), cedar_cfg, schema)
        if ced.validation_errors:
            failures.append(f"{s.cedar_policy.name} does not validate against mcp.cedarschema: {ced.validation_errors}")
        else:
            print(f"cedarpy: {s.cedar_policy.relative_to(ROOT)} validates against mcp.cedarschema (strict)")
        reg = RegoEngine(s.rego_policy.read_text(), rego_cfg)
        # The filter's load check: `allow` must be defined on an empty input.
        reg.it.set_input({})
        st, v = reg._eval("data.portcullis.allow")
        if st != "ok":
            failures.append(f"{s.rego_policy.name}: data.portcullis.allow on an empty input is {st} in regopy")
        engines[s.name] = (ced, reg)

    for engine in ("cedar", "rego"):
        if engine in host_jobs:
            try:
                res = host_jobs[engine].result()
            except Exception as e:
                failures.append(f"host {engine}: {e}")
                res = {}
            for sname, (text, rc) in res.items():
                parsed = parse_host_output(text, f"{engine}_filter")
                host_out[(engine, sname)] = parsed
                if not parsed:
                    failures.append(f"host {engine}/{sname}: no fixture lines (rc={rc}): {text.strip()[-400:]}")
    pool.shutdown()
    if host_jobs and not args.no_precompile:
        prune_cache(args.cache_dir)

    for s in SUITES:
        ced, reg = engines[s.name]
        for fx in load_fixtures(s):
            for engine_name, engine in (("cedar", ced), ("rego", reg)):
                host = host_out.get((engine_name, s.name), {}).get(fx.name) if fx.host and not args.engines_only else None
                if args.engines_only:
                    fx_local = Fixture(fx.suite, fx.name, False, fx.raw)
                    rows.append(check_fixture(fx_local, engine_name, engine, None, sprintf_bug))
                else:
                    rows.append(check_fixture(fx, engine_name, engine, host, sprintf_bug))

    # The table.
    w_name = max(len(f"{r.fixture.suite}/{r.fixture.name}") for r in rows)
    def cut(s: str, n: int) -> str:
        return s if len(s) <= n else s[: n - 1] + "…"
    print()
    hdr = f"{'fixture':<{w_name}}  {'engine':<6}  {'expect':<28}  {'engine says':<44}  {'our filter':<28}  ok"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        mark = "ok" if r.ok and not r.known else ("KNOWN" if r.ok else "FAIL")
        es = r.engine_says if args.verbose else cut(r.engine_says, 44)
        print(
            f"{r.fixture.suite + '/' + r.fixture.name:<{w_name}}  {r.engine:<6}  {cut(r.expect, 28):<28}  "
            f"{es:<44}  {cut(r.host_says, 28):<28}  {mark}"
        )
        for n in r.notes:
            print(f"    ! {n}")
        for k in r.known:
            print(f"    ~ {k}")
    bad = [r for r in rows if not r.ok]
    known = [r for r in rows if r.ok and r.known]
    host_checked = sum(1 for r in rows if r.host_says != "-")
    print()
    print(
        f"{len(rows)} checks ({len({(r.fixture.suite, r.fixture.name) for r in rows})} fixtures x cedar/rego; "
        f"{host_checked} also through our filters in the host), "
        f"{len(known)} with a known engine-bug difference in a message only"
    )
    if sprintf_bug:
        print("note: regopy (rego-cpp) quotes string literals in sprintf %s (probe confirmed); messages compared without quotes")
    for f in failures:
        print(f"FAIL {f}")
    print(f"took {time.monotonic() - t0:.1f} s")
    print(f"crosscheck: {len(rows) - len(bad)} passed, {len(bad) + len(failures)} failed")
    return 1 if bad or failures else 0


if __name__ == "__main__":
    sys.exit(main())
