"""The parity policy "team-tools", in Python. Every language's build of it
must give the same decisions on examples/parity/calls.

- Only `tools/call` is policed; every other method is allowed.
- The admin agent may call any tool; any other agent of the
  `spiffe://demo.local/ns/agents/sa/` namespace may call `echo` and the
  `get_*` tools; everyone else (anonymous, other namespaces or trust
  domains) may call no tool.
- A tools list shows exactly the tools the caller may call; prompts and
  resources lists are not filtered.
- The caller is the verified mTLS peer (`principal.peer`), never a token.

No configuration: any config text is accepted.

Built against policy-sdk/wit-0.2 (`portcullis:policy@0.2.0`, frozen), unlike
require_ticket.py (0.3): the host still loads 0.2 filters, and this keeps
that path tested with a real Python toolchain.
"""

import wit_world
from wit_world.imports import types

ADMIN = "spiffe://demo.local/ns/agents/sa/admin"
AGENTS = "spiffe://demo.local/ns/agents/sa/"


def may_call(peer, tool: str) -> bool:
    if peer is None:
        return False
    if peer == ADMIN:
        return True
    if peer.startswith(AGENTS):
        return tool == "echo" or tool.startswith("get_")
    return False


class WitWorld(wit_world.WitWorld):
    def validate_config(self, config: str) -> None:
        return None

    def on_request(self, config: str, call: types.Call) -> types.Decision:
        if call.method != "tools/call":
            return types.Decision_Allow()
        target = call.target
        tool = target.name if target is not None and target.kind == types.TargetKind.TOOL else ""
        peer = call.principal.peer
        if may_call(peer, tool):
            return types.Decision_Allow()
        who = peer if peer is not None else "anonymous"
        message = f"team-tools: {who} may not call {tool}"
        return types.Decision_Deny(types.Denial(code=0, message=message))

    def on_result(self, config: str, call: types.Call, result: str) -> types.ResultDecision:
        return types.ResultDecision_Allow()

    def on_list(self, config, principal, kind, items):
        if kind != types.ListKind.TOOLS:
            return [True] * len(items)
        return [may_call(principal.peer, item.name) for item in items]
