// Destructive tools need a change ticket: a call to a tool the server
// marks `destructiveHint` must carry a `ticket` argument like `CHG-1234`.
//
// The JavaScript twin of examples/policy-author (Rust), decision for
// decision. Built with componentize-js against policy-sdk/wit,
// `portcullis:policy@0.3.0` (world `filter`); see
// policy-sdk/guides/javascript.md.

import { log } from 'portcullis:policy/host@0.3.0';

// The ticket prefix, set by `configure`. The host configures every instance
// once, before any hook, and never hooks an instance whose configure failed.
let prefix = null;

/** The ticket prefix; throws a string (the load's refusal reason). */
function loadConfig(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw `config is not JSON: ${e.message}`;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw 'config must be a JSON object';
  }
  if (typeof value.prefix !== 'string') {
    throw 'config needs `prefix`, a string';
  }
  return value.prefix;
}

/** A boolean tool annotation such as `destructiveHint`, or undefined. */
function annotation(call, name) {
  if (call.annotations === undefined) return undefined;
  let value;
  try {
    value = JSON.parse(call.annotations);
  } catch {
    return undefined;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined;
  const flag = Object.hasOwn(value, name) ? value[name] : undefined;
  return typeof flag === 'boolean' ? flag : undefined;
}

/** The `ticket` argument if it is a string, else undefined. */
function ticketOf(call) {
  let args;
  try {
    args = JSON.parse(call.arguments ?? '{}');
  } catch {
    return undefined;
  }
  let t;
  if (Array.isArray(args)) {
    // serde, in the Rust twin, also reads a struct from a JSON array of its
    // fields in order: `["CHG-1"]` is `{"ticket": "CHG-1"}`. Kept so that
    // every language decides alike.
    t = args.length === 1 ? args[0] : undefined;
  } else if (args !== null && typeof args === 'object') {
    t = Object.hasOwn(args, 'ticket') ? args.ticket : undefined;
  }
  return typeof t === 'string' ? t : undefined;
}

function toolName(call) {
  const t = call.target;
  return call.method === 'tools/call' && t !== undefined && t.kind === 'tool' ? t.name : undefined;
}

// code 0: the host's default JSON-RPC code (-32051).
const deny = (message) => ({ tag: 'deny', val: { code: 0, message } });

// result<_, string>: return normally for ok, throw a string for err.
export function configure(config) {
  prefix = loadConfig(config);
}

export function onRequest(call) {
  // Not reached: the host configures an instance before any hook.
  if (prefix === null) return deny('not configured');
  if (annotation(call, 'destructiveHint') !== true) return { tag: 'allow' };
  const ticket = ticketOf(call);
  if (ticket !== undefined && ticket.startsWith(prefix) && ticket.length > prefix.length) {
    const name = toolName(call);
    const shown = name === undefined ? 'None' : `Some(${JSON.stringify(name)})`;
    log('info', `${ticket} authorizes ${shown}`);
    return { tag: 'allow' };
  }
  return deny(`destructive tools need a ticket argument starting with ${prefix}`);
}

export function onResult(_call, _result) {
  return { tag: 'allow' };
}

export function onList(_principal, _kind, items) {
  return items.map(() => true);
}
