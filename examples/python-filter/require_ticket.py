"""Destructive tools need a change ticket: a call to a tool the server
marks `destructiveHint` must carry a `ticket` argument like `CHG-1234`.

The Python twin of examples/policy-author (Rust), decision for decision.
Built with componentize-py against policy-sdk/wit, `portcullis:policy@0.3.0`
(world `filter`); see policy-sdk/guides/python.md.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

# The ticket prefix, set by `configure`. The host configures every instance
# once, before any hook, and never hooks an instance whose configure failed.
_prefix = None


class ConfigError(Exception):
    pass


def _load_config(text: str) -> str:
    """The ticket prefix, or ConfigError. Same rules as serde's
    `struct Config { prefix: String }`: an object whose `prefix` is a
    string; other fields are ignored."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"config is not JSON: {e}")
    if not isinstance(value, dict):
        raise ConfigError("config must be a JSON object")
    prefix = value.get("prefix")
    if not isinstance(prefix, str):
        raise ConfigError("config needs `prefix`, a string")
    return prefix


def _annotation(call: types.Call, name: str):
    """A boolean tool annotation such as `destructiveHint`, or None."""
    if call.annotations is None:
        return None
    try:
        value = json.loads(call.annotations)
    except ValueError:
        return None
    flag = value.get(name) if isinstance(value, dict) else None
    return flag if isinstance(flag, bool) else None


def _ticket(call: types.Call):
    """The `ticket` argument if it is a string, else None (absent, null,
    another type, or arguments that do not parse)."""
    try:
        # No duplicate keys to worry about: the host refuses them in every
        # message, so `json` (last wins) and serde (error) never disagree.
        args = json.loads(call.arguments or "{}")
    except ValueError:
        return None
    if isinstance(args, dict):
        ticket = args.get("ticket")
    elif isinstance(args, list) and len(args) == 1:
        # serde, in the Rust twin, also reads a struct from a JSON array of
        # its fields in order: `["CHG-1"]` is `{"ticket": "CHG-1"}`. Kept so
        # that every language decides alike.
        ticket = args[0]
    else:
        ticket = None
    return ticket if isinstance(ticket, str) else None


def _tool_name(call: types.Call):
    t = call.target
    if call.method == "tools/call" and t is not None and t.kind == types.TargetKind.TOOL:
        return t.name
    return None


def _deny(message: str) -> types.Decision:
    # code 0: the host's default JSON-RPC code (-32051).
    return types.Decision_Deny(types.Denial(code=0, message=message))


class WitWorld(wit_world.WitWorld):
    def configure(self, config: str) -> None:
        global _prefix
        try:
            _prefix = _load_config(config)
        except ConfigError as e:
            raise Err(str(e))  # result<_, string>: the load is refused

    def on_request(self, call: types.Call) -> types.Decision:
        prefix = _prefix
        if prefix is None:
            # Not reached: the host configures an instance before any hook.
            return _deny("not configured")
        if _annotation(call, "destructiveHint") is not True:
            return types.Decision_Allow()
        ticket = _ticket(call)
        if ticket is not None and ticket.startswith(prefix) and len(ticket) > len(prefix):
            name = _tool_name(call)
            shown = "None" if name is None else f"Some({json.dumps(name, ensure_ascii=False)})"
            host.log(host.Level.INFO, f"{ticket} authorizes {shown}")
            return types.Decision_Allow()
        return _deny(f"destructive tools need a ticket argument starting with {prefix}")

    def on_result(self, call: types.Call, result: str) -> types.ResultDecision:
        return types.ResultDecision_Allow()

    def on_list(self, principal, kind, items):
        return [True] * len(items)
