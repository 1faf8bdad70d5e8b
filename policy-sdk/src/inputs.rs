//! What an `on_request` decision depends on, declared by the filter.
//!
//! A filter whose decision is a function of a few parts of the call and of
//! its configuration alone (no counters, no key-value store, no clock, no
//! memory of earlier calls) says which parts, with
//! [`crate::Filter::DECIDES_ON`]. The host then:
//!
//! - shows `on_request` only those parts (every other field is empty, as
//!   [`Call::narrowed`] makes it), in an instance that sees nothing else,
//!   so the declaration cannot be wrong about what the call shows;
//! - may answer a later call that is equal in those parts with the
//!   decision already made, without running the filter. A decision is
//!   reused only if its evaluation called no host function (WASI's random
//!   seeds included), and never after the filter or its configuration is
//!   reloaded. A filter that remembers earlier calls in its own memory
//!   must not declare: the host cannot see that.
//!
//! The declaration travels in the component as a custom section
//! ([`SECTION`]), so it needs no change to the WIT contract: a host that
//! does not know it ignores it, and a component without it is run for
//! every call, as before.

use crate::{Call, Principal};

/// The custom section's name.
pub const SECTION: &str = "portcullis:decides-on";

/// The section's layout version (its first byte).
pub const SECTION_VERSION: u8 = 1;

/// A part of a call. The message kind (request, notification, response)
/// is always shown and always part of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Input {
    Method = 1 << 0,
    Id = 1 << 1,
    Target = 1 << 2,
    Arguments = 1 << 3,
    /// The whole principal: peer, token (every field, claims and expiry
    /// included) and key.
    Principal = 1 << 4,
    Session = 1 << 5,
    Instance = 1 << 6,
    Era = 1 << 7,
    Headers = 1 << 8,
    Annotations = 1 << 9,
}

/// Every bit the host knows; a section with any other bit set is refused.
pub const KNOWN: u16 = (1 << 10) - 1;

/// The declaration as a bit set.
pub const fn mask(inputs: &[Input]) -> u16 {
    let mut m = 0;
    let mut i = 0;
    while i < inputs.len() {
        m |= inputs[i] as u16;
        i += 1;
    }
    m
}

/// The section's bytes: version, whether anything is declared, and the bit
/// set (little-endian).
pub const fn section(decides_on: Option<&[Input]>) -> [u8; 4] {
    match decides_on {
        Some(inputs) => {
            let m = mask(inputs).to_le_bytes();
            [SECTION_VERSION, 1, m[0], m[1]]
        }
        None => [SECTION_VERSION, 0, 0, 0],
    }
}

impl Call {
    /// This call as a filter that declared `inputs` sees it: every part not
    /// declared is empty.
    pub fn narrowed(&self, inputs: &[Input]) -> Call {
        let m = mask(inputs);
        let has = |i: Input| m & i as u16 != 0;
        Call {
            kind: self.kind,
            method: pick(has(Input::Method), &self.method),
            id: self.id.clone().filter(|_| has(Input::Id)),
            target: self.target.clone().filter(|_| has(Input::Target)),
            arguments: self.arguments.clone().filter(|_| has(Input::Arguments)),
            principal: if has(Input::Principal) {
                self.principal.clone()
            } else {
                Principal {
                    peer: None,
                    token: None,
                    key: String::new(),
                }
            },
            session: self.session.clone().filter(|_| has(Input::Session)),
            instance: pick(has(Input::Instance), &self.instance),
            era: pick(has(Input::Era), &self.era),
            headers: if has(Input::Headers) {
                self.headers.clone()
            } else {
                Vec::new()
            },
            annotations: self.annotations.clone().filter(|_| has(Input::Annotations)),
        }
    }
}

fn pick(keep: bool, s: &str) -> String {
    if keep {
        s.to_string()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::CallBuilder;

    #[test]
    fn the_section_carries_the_bit_set() {
        assert_eq!(section(None), [1, 0, 0, 0]);
        let s = section(Some(&[Input::Principal, Input::Target]));
        assert_eq!(s, [1, 1, 0b0001_0100, 0]);
        assert_eq!(section(Some(&[Input::Annotations])), [1, 1, 0, 0b10]);
        assert_eq!(mask(&[Input::Annotations, Input::Method]) & !KNOWN, 0);
    }

    #[test]
    fn a_narrowed_call_shows_only_what_was_declared() {
        let call = CallBuilder::tool("echo")
            .spiffe("spiffe://td/ns/a/sa/b")
            .args(serde_json::json!({"x": 1}))
            .build();
        let seen = call.narrowed(&[Input::Target]);
        assert_eq!(seen.target, call.target);
        assert_eq!(seen.method, "");
        assert_eq!(seen.arguments, None);
        assert_eq!(seen.principal.peer, None);
        assert_eq!(seen.principal.key, "");
        assert_eq!(seen.instance, "");
        let all = call.narrowed(&[
            Input::Method,
            Input::Id,
            Input::Target,
            Input::Arguments,
            Input::Principal,
            Input::Session,
            Input::Instance,
            Input::Era,
            Input::Headers,
            Input::Annotations,
        ]);
        assert_eq!(all, call);
    }
}
