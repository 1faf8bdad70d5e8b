// The parity policy "team-tools", in JavaScript. Every language's build of
// it must give the same decisions on examples/parity/calls.
//
// - Only `tools/call` is policed; every other method is allowed.
// - The admin agent may call any tool; any other agent of the
//   `spiffe://demo.local/ns/agents/sa/` namespace may call `echo` and the
//   `get_*` tools; everyone else (anonymous, other namespaces or trust
//   domains) may call no tool.
// - A tools list shows exactly the tools the caller may call; prompts and
//   resources lists are not filtered.
// - The caller is the verified mTLS peer (`principal.peer`), never a token.
//
// No configuration: any config text is accepted.
//
// Built against policy-sdk/wit-0.2 (`portcullis:policy@0.2.0`, frozen),
// unlike require_ticket.js (0.3): the host still loads 0.2 filters, and
// this keeps that path tested with a real JavaScript toolchain.

const ADMIN = 'spiffe://demo.local/ns/agents/sa/admin';
const AGENTS = 'spiffe://demo.local/ns/agents/sa/';

function mayCall(peer, tool) {
  if (peer === undefined) return false;
  if (peer === ADMIN) return true;
  if (peer.startsWith(AGENTS)) return tool === 'echo' || tool.startsWith('get_');
  return false;
}

export function validateConfig(_config) {}

export function onRequest(_config, call) {
  if (call.method !== 'tools/call') return { tag: 'allow' };
  const t = call.target;
  const tool = t !== undefined && t.kind === 'tool' ? t.name : '';
  const peer = call.principal.peer;
  if (mayCall(peer, tool)) return { tag: 'allow' };
  const who = peer ?? 'anonymous';
  return { tag: 'deny', val: { code: 0, message: `team-tools: ${who} may not call ${tool}` } };
}

export function onResult(_config, _call, _result) {
  return { tag: 'allow' };
}

export function onList(_config, principal, kind, items) {
  if (kind !== 'tools') return items.map(() => true);
  return items.map((item) => mayCall(principal.peer, item.name));
}
