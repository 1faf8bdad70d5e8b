//! Reused decisions, for filters that declare what `on-request` decides
//! on (`portcullis_policy_sdk::inputs`).
//!
//! A filter built with the SDK carries a `portcullis:decides-on` custom
//! section: either nothing declared, or a bit set of the call's parts its
//! decision depends on, with its configuration. For a declaring filter the
//! host:
//!
//! - shows `on-request` only the declared parts (`convert::call` builds
//!   nothing else, [`DecidesOn::shows`]), in a warm instance of its own
//!   ([`DecidesOn::instance_key`]), so the filter cannot read what the
//!   key leaves out;
//! - keeps each decision under a key made of exactly those parts and the
//!   caller's key ([`DecidesOn::key`], every byte of them, not a hash), and
//!   answers a call with the same key from it: a decision never serves
//!   another caller, whatever was declared;
//! - keeps nothing from an evaluation that called the host (log, clock,
//!   counters, store, WASI's random seeds): such a filter keeps state or
//!   draws chance, whatever it declared.
//!
//! A full cache is emptied, not trimmed: any client can make a filter
//! decide 4096 distinct calls (tool names are its to choose) and so keep
//! the cache cold, which costs evaluations and nothing else.
//!
//! The cache belongs to one loaded filter, so a reload (new component, new
//! configuration or configuration file) starts empty. What the host cannot
//! check is a filter's own memory between calls; the SDK's contract
//! already forbids relying on it (an instance may be fresh for any call),
//! and the declaration is the author's promise that the decision uses it
//! for nothing.

use std::{collections::HashMap, sync::Mutex};

// The section's name, layout and bits are the SDK's, so the two cannot
// drift apart.
use portcullis_policy_sdk::inputs::{Input, KNOWN, SECTION, SECTION_VERSION};

use super::{bindings::types, wasm::InstanceKey};

const METHOD: u16 = Input::Method as u16;
const ID: u16 = Input::Id as u16;
const TARGET: u16 = Input::Target as u16;
const ARGUMENTS: u16 = Input::Arguments as u16;
const PRINCIPAL: u16 = Input::Principal as u16;
const SESSION: u16 = Input::Session as u16;
const INSTANCE: u16 = Input::Instance as u16;
const ERA: u16 = Input::Era as u16;
const HEADERS: u16 = Input::Headers as u16;
const ANNOTATIONS: u16 = Input::Annotations as u16;

/// A key longer than this is not kept (large arguments, say): the call is
/// evaluated as if nothing were declared.
const MAX_KEY: usize = 16 << 10;
/// Bytes of keys and decisions one filter keeps; past this, or past
/// [`MAX_ENTRIES`], the cache is emptied and refills from what is asked.
const MAX_BYTES: usize = 1 << 20;
const MAX_ENTRIES: usize = 4096;

/// A filter's declaration: the parts of a call its decision depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecidesOn(u16);

impl DecidesOn {
    /// Reads the declaration from a component's bytes, at any depth (the
    /// section is in the core module the SDK's code was linked into).
    /// `Ok(None)`: no section, or one that declares nothing. A section the
    /// host cannot read with certainty (unknown version or bits, wrong
    /// size, more than one) refuses the load.
    pub fn read(component: &[u8]) -> Result<Option<Self>, String> {
        let mut found: Option<Vec<u8>> = None;
        for payload in wasmparser::Parser::new(0).parse_all(component) {
            let payload = payload.map_err(|e| format!("cannot read the component: {e}"))?;
            if let wasmparser::Payload::CustomSection(s) = payload {
                if s.name() != SECTION {
                    continue;
                }
                if found.is_some() {
                    return Err(format!("more than one {SECTION} section"));
                }
                found = Some(s.data().to_vec());
            }
        }
        match found.as_deref() {
            None | Some([SECTION_VERSION, 0, 0, 0]) => Ok(None),
            Some(&[SECTION_VERSION, 1, lo, hi]) => {
                let bits = u16::from_le_bytes([lo, hi]);
                if bits & !KNOWN != 0 {
                    return Err(format!(
                        "{SECTION} declares inputs this host does not know ({bits:#x})"
                    ));
                }
                Ok(Some(Self(bits)))
            }
            Some(other) => Err(format!(
                "{SECTION} section is not one this host reads ({} bytes, version {:?})",
                other.len(),
                other.first()
            )),
        }
    }

    /// A declaration of `inputs`, for tests elsewhere in the host.
    #[cfg(test)]
    pub(crate) fn of(inputs: &[Input]) -> Self {
        Self(inputs.iter().fold(0, |bits, i| bits | *i as u16))
    }

    fn has(self, part: u16) -> bool {
        self.0 & part != 0
    }

    /// Whether the filter is shown `input` (see [`super::convert::call`]).
    pub fn shows(self, input: Input) -> bool {
        self.has(input as u16)
    }

    /// The warm instance a narrowed evaluation runs in. Never the caller's
    /// own, which also serves the result and list hooks with the whole
    /// call: an instance that only ever saw declared parts cannot carry
    /// anything else into a decision that is then reused. Per caller when
    /// the principal is declared, so callers still share no instance; one
    /// for everyone otherwise, as nothing of the caller is shown. (A caller
    /// key starts with `anonymous` or a SPIFFE ID, never with a NUL.)
    pub fn instance_key(self, caller: &str) -> InstanceKey<'_> {
        if self.has(PRINCIPAL) {
            InstanceKey::prefixed("\0narrowed ", caller)
        } else {
            InstanceKey::prefixed("\0narrowed", "")
        }
    }

    /// Every byte of the declared parts of `call` (as the filter is shown
    /// it), each length-prefixed, and `caller` (the caller's key) when the
    /// principal is not declared (the whole principal is when it is), so
    /// that two calls get the same key exactly when they come from the
    /// same caller and the filter would see the same call.
    /// Anonymous callers all share the key `anonymous`: with no identity
    /// there is no caller to keep apart. `None` when the key would be longer
    /// than [`MAX_KEY`], found before anything is copied.
    pub fn key(self, call: &types::Call<'_>, caller: &str) -> Option<Vec<u8>> {
        let big =
            |part: u16, s: Option<&str>| self.has(part) && s.is_some_and(|s| s.len() > MAX_KEY);
        if big(ARGUMENTS, call.arguments)
            || big(ANNOTATIONS, call.annotations)
            || big(
                PRINCIPAL,
                call.principal
                    .as_ref()
                    .and_then(|p| p.token.as_ref())
                    .map(|t| t.claims),
            )
        {
            return None;
        }
        let mut k = Key(Vec::with_capacity(128));
        k.byte(call.kind as u8);
        if self.has(METHOD) {
            k.text(call.method);
        }
        if self.has(ID) {
            k.opt(call.id);
        }
        if self.has(TARGET) {
            match &call.target {
                Some(t) => {
                    k.byte(1);
                    k.byte(t.kind as u8);
                    k.text(t.name);
                }
                None => k.byte(0),
            }
        }
        if self.has(ARGUMENTS) {
            k.opt(call.arguments);
        }
        if self.has(PRINCIPAL) {
            k.opt_principal(call.principal.as_ref(), caller);
        } else {
            // Decisions are never shared between callers, even by a filter
            // that cannot tell them apart: a shared cache would tell one
            // caller, by how fast it is answered, that another recently
            // sent the same call (arguments included).
            k.text(caller);
        }
        if self.has(SESSION) {
            k.opt(call.session);
        }
        if self.has(INSTANCE) {
            k.opt(call.instance);
        }
        if self.has(ERA) {
            k.opt(call.era);
        }
        if self.has(HEADERS) {
            k.headers(call.headers);
        }
        if self.has(ANNOTATIONS) {
            k.opt(call.annotations);
        }
        (k.0.len() <= MAX_KEY).then_some(k.0)
    }
}

struct Key(Vec<u8>);

impl Key {
    fn byte(&mut self, b: u8) {
        self.0.push(b);
    }

    fn len(&mut self, n: usize) {
        self.0.extend_from_slice(&(n as u64).to_le_bytes());
    }

    fn text(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn opt(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.byte(1);
                self.text(s);
            }
            None => self.byte(0),
        }
    }

    /// A declared principal is always shown; were it ever not, the key
    /// still names the caller, so decisions stay per caller.
    fn opt_principal(&mut self, p: Option<&types::Principal<'_>>, caller: &str) {
        match p {
            Some(p) => {
                self.byte(1);
                self.principal(p);
            }
            None => {
                self.byte(0);
                self.text(caller);
            }
        }
    }

    fn headers(&mut self, headers: Option<&[types::Header<'_>]>) {
        let Some(headers) = headers else {
            self.byte(0);
            return;
        };
        self.byte(1);
        self.len(headers.len());
        for h in headers {
            self.text(h.name);
            self.text(h.value);
        }
    }

    fn principal(&mut self, p: &types::Principal<'_>) {
        self.opt(p.peer);
        self.text(p.key);
        let Some(t) = &p.token else {
            self.byte(0);
            return;
        };
        self.byte(1);
        self.byte(t.kind as u8);
        self.text(t.issuer);
        self.text(t.subject);
        self.len(t.scopes.len());
        for s in t.scopes {
            self.text(s);
        }
        self.opt(t.actor);
        self.0.extend_from_slice(&t.expires_at_ms.to_le_bytes());
        self.text(t.claims);
    }
}

/// One filter's decisions, by key.
#[derive(Default)]
pub struct DecisionCache {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<Vec<u8>, types::Decision>,
    bytes: usize,
}

fn size(key: &[u8], d: &types::Decision) -> usize {
    key.len()
        + match d {
            types::Decision::Allow => 0,
            types::Decision::Deny(d) => d.message.len(),
            types::Decision::RewriteArguments(a) => a.len(),
        }
}

impl DecisionCache {
    pub fn get(&self, key: &[u8]) -> Option<types::Decision> {
        self.inner.lock().ok()?.map.get(key).cloned()
    }

    pub fn put(&self, key: Vec<u8>, decision: &types::Decision) {
        let Ok(mut e) = self.inner.lock() else {
            return;
        };
        let added = size(&key, decision);
        if e.bytes + added > MAX_BYTES || e.map.len() >= MAX_ENTRIES {
            e.map.clear();
            e.bytes = 0;
        }
        if added <= MAX_BYTES && e.map.insert(key, decision.clone()).is_none() {
            e.bytes += added;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|e| e.map.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> types::Call<'static> {
        types::Call {
            kind: types::MessageKind::Request,
            method: "tools/call",
            id: Some("1"),
            target: Some(types::Target {
                kind: types::TargetKind::Tool,
                name: "echo",
            }),
            arguments: Some(r#"{"text":"hi"}"#),
            principal: Some(types::Principal {
                peer: Some("spiffe://td/ns/a/sa/b"),
                token: Some(types::Token {
                    kind: types::TokenKind::AccessToken,
                    issuer: "idp",
                    subject: "alice",
                    scopes: &["read"],
                    actor: None,
                    expires_at_ms: 1000,
                    claims: r#"{"groups":["a"]}"#,
                }),
                key: "spiffe://td/ns/a/sa/b token:idp#alice",
            }),
            session: Some("s"),
            instance: Some("i"),
            era: Some("2025-06-18"),
            headers: Some(&[types::Header {
                name: "mcp-method",
                value: "tools/call",
            }]),
            annotations: None,
        }
    }

    const RBAC: DecidesOn = DecidesOn(PRINCIPAL | TARGET);

    /// The key of `c` from the caller `c` names.
    fn key(on: DecidesOn, c: &types::Call<'_>) -> Option<Vec<u8>> {
        let caller = c.principal.as_ref().map_or("", |p| p.key);
        on.key(c, caller)
    }

    /// The test call's principal, to change.
    fn p<'c>(c: &'c mut types::Call<'static>) -> &'c mut types::Principal<'static> {
        c.principal.as_mut().unwrap()
    }

    /// A named change to a call.
    type Change = (&'static str, fn(&mut types::Call<'static>));

    /// Each change the filter could see must change the key; each it
    /// cannot see must not.
    #[test]
    fn the_key_is_every_declared_part_and_nothing_else() {
        let base = key(RBAC, &call()).unwrap();
        let seen: Vec<Change> = vec![
            ("target name", |c| c.target.as_mut().unwrap().name = "echo2"),
            ("target kind", |c| {
                c.target.as_mut().unwrap().kind = types::TargetKind::Prompt
            }),
            ("no target", |c| c.target = None),
            ("peer", |c| p(c).peer = Some("spiffe://td/ns/a/sa/c")),
            ("key", |c| p(c).key = "other"),
            ("scopes", |c| {
                p(c).token.as_mut().unwrap().scopes = &["read", "write"]
            }),
            ("claims", |c| {
                p(c).token.as_mut().unwrap().claims = r#"{"groups":["b"]}"#
            }),
            ("expiry", |c| {
                p(c).token.as_mut().unwrap().expires_at_ms = 2000
            }),
            ("actor", |c| {
                p(c).token.as_mut().unwrap().actor = Some("bot")
            }),
            ("token kind", |c| {
                p(c).token.as_mut().unwrap().kind = types::TokenKind::JwtSvid
            }),
            ("no token", |c| p(c).token = None),
            ("kind", |c| c.kind = types::MessageKind::Notification),
        ];
        for (what, change) in seen {
            let mut c = call();
            change(&mut c);
            assert_ne!(key(RBAC, &c).unwrap(), base, "{what} must change the key");
        }
        let unseen: Vec<Change> = vec![
            ("method", |c| c.method = "prompts/get"),
            ("arguments", |c| c.arguments = Some("{}")),
            ("id", |c| c.id = None),
            ("session", |c| c.session = None),
            ("headers", |c| c.headers = Some(&[])),
        ];
        for (what, change) in unseen {
            let mut c = call();
            change(&mut c);
            assert_eq!(key(RBAC, &c).unwrap(), base, "{what} is not declared");
        }
    }

    /// Under a declaration of one part, changing that part changes the key
    /// and changing any other part does not: for every part.
    #[test]
    fn each_part_is_keyed_exactly_when_declared() {
        let parts: Vec<(u16, Change)> = vec![
            (METHOD, ("method", |c| c.method = "prompts/get")),
            (ID, ("id", |c| c.id = Some("2"))),
            (TARGET, ("target", |c| c.target = None)),
            (ARGUMENTS, ("arguments", |c| c.arguments = Some("{}"))),
            (PRINCIPAL, ("principal", |c| p(c).peer = None)),
            (SESSION, ("session", |c| c.session = Some("t"))),
            (INSTANCE, ("instance", |c| c.instance = Some("j"))),
            (ERA, ("era", |c| c.era = Some("2026-07-28"))),
            (
                HEADERS,
                ("headers", |c| {
                    c.headers = Some(&[types::Header {
                        name: "mcp-method",
                        value: "x",
                    }])
                }),
            ),
            (ANNOTATIONS, ("annotations", |c| c.annotations = Some("{}"))),
        ];
        let all = parts.iter().fold(0, |m, (bit, _)| m | bit);
        assert_eq!(all, KNOWN, "every part the SDK knows is tested");
        for (declared, _) in &parts {
            let on = DecidesOn(*declared);
            let base = key(on, &call()).unwrap();
            for (bit, (what, change)) in &parts {
                let mut c = call();
                change(&mut c);
                let changed = key(on, &c).unwrap() != base;
                assert_eq!(changed, bit == declared, "{what} under {declared:#x}");
            }
        }
    }

    #[test]
    fn narrowed_evaluations_never_share_the_callers_instance() {
        let caller = "spiffe://td/ns/a/sa/b";
        assert_eq!(
            RBAC.instance_key(caller).to_key(),
            "\0narrowed spiffe://td/ns/a/sa/b"
        );
        assert_eq!(
            DecidesOn(TARGET).instance_key(caller).to_key(),
            "\0narrowed"
        );
        assert_ne!(RBAC.instance_key(caller).to_key(), caller);
    }

    /// A filter that does not declare the principal cannot tell callers
    /// apart, but its decisions are still kept per caller: one caller must
    /// not learn from the cache's timing what another sent.
    #[test]
    fn decisions_are_kept_per_caller_even_when_the_principal_is_undeclared() {
        let args = DecidesOn(METHOD | TARGET | ARGUMENTS);
        // The call as such a filter is shown it: no principal.
        let mut shown = call();
        shown.principal = None;
        let base = args.key(&shown, "spiffe://td/ns/a/sa/b").unwrap();
        let other = args.key(&shown, "spiffe://td/ns/a/sa/other").unwrap();
        assert_ne!(other, base);
    }

    /// Length prefixes keep adjacent texts apart: ("ab", "c") is not
    /// ("a", "bc").
    #[test]
    fn texts_cannot_run_into_each_other() {
        let mut a = call();
        p(&mut a).token.as_mut().unwrap().issuer = "ab";
        p(&mut a).token.as_mut().unwrap().subject = "c";
        let mut b = call();
        p(&mut b).token.as_mut().unwrap().issuer = "a";
        p(&mut b).token.as_mut().unwrap().subject = "bc";
        assert_ne!(key(RBAC, &a), key(RBAC, &b));
    }

    #[test]
    fn long_keys_are_not_kept() {
        let args = DecidesOn(ARGUMENTS);
        let long = "x".repeat(MAX_KEY);
        let mut c: types::Call<'_> = call();
        c.arguments = Some(&long);
        assert_eq!(key(args, &c), None);
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = DecisionCache::default();
        for i in 0..MAX_ENTRIES + 10 {
            cache.put(i.to_le_bytes().to_vec(), &types::Decision::Allow);
        }
        assert!(cache.len() <= MAX_ENTRIES);
        let deny = types::Decision::Deny(types::Denial {
            code: 0,
            message: "x".repeat(MAX_BYTES / 2),
        });
        cache.put(b"a".to_vec(), &deny);
        cache.put(b"b".to_vec(), &deny);
        assert_eq!(cache.len(), 1, "the second half megabyte empties the cache");
        assert!(cache.get(b"b").is_some());
    }

    fn section(bytes: &[u8]) -> Vec<u8> {
        // A core module with one custom section.
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        let name = SECTION.as_bytes();
        let mut body = vec![u8::try_from(name.len()).unwrap()];
        body.extend_from_slice(name);
        body.extend_from_slice(bytes);
        m.push(0);
        m.push(u8::try_from(body.len()).unwrap());
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn the_declaration_is_read_strictly() {
        assert_eq!(DecidesOn::read(b"\0asm\x01\0\0\0").unwrap(), None);
        assert_eq!(DecidesOn::read(&section(&[1, 0, 0, 0])).unwrap(), None);
        assert_eq!(
            DecidesOn::read(&section(&[1, 1, 0x14, 0])).unwrap(),
            Some(RBAC)
        );
        for bad in [
            &[1u8, 1, 0, 0x80][..],
            &[2, 1, 0x14, 0],
            &[1, 1, 0x14],
            &[1, 2, 0, 0],
        ] {
            assert!(DecidesOn::read(&section(bad)).is_err(), "{bad:?}");
        }
        let mut twice = section(&[1, 1, 0x14, 0]);
        twice.extend_from_slice(&section(&[1, 1, 0x14, 0])[8..]);
        assert!(DecidesOn::read(&twice).is_err());
    }
}
