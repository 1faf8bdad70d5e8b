//! The filter host's decoding of what a guest returns: a rewrite it
//! accepts is a strict JSON object, a replacement strict JSON, a denial
//! code 0 means "none", and short list verdicts hide the rest.

use crate::fuzzing::MAX_DEPTH;
use crate::fuzzing::{decode_replace, decode_request, merge_verdicts, Decoded, GuestDecision};
use crate::mcp::json;
use arbitrary::Arbitrary;

#[derive(Arbitrary, Debug)]
enum Guest {
    Allow,
    Deny(i32, String),
    Rewrite(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    decision: Guest,
    replace: String,
    shown: Vec<bool>,
    verdicts: Vec<bool>,
}

/// One fuzz input.
pub fn run(data: &[u8]) {
    let Ok(input) = <Input as arbitrary::Arbitrary<'_>>::arbitrary_take_rest(
        arbitrary::Unstructured::new(data),
    ) else {
        return;
    };
    let guest = match input.decision {
        Guest::Allow => GuestDecision::Allow,
        Guest::Deny(code, message) => GuestDecision::Deny { code, message },
        Guest::Rewrite(text) => GuestDecision::Rewrite(text),
    };
    let sent = guest.clone();
    match (decode_request(guest, MAX_DEPTH), sent) {
        (Ok(Decoded::Allow), GuestDecision::Allow) => {}
        (Ok(Decoded::Deny { code, reason }), GuestDecision::Deny { code: c, message }) => {
            assert_eq!(reason, message);
            assert_eq!(code, (c != 0).then_some(i64::from(c)));
        }
        (Ok(Decoded::Rewrite(out)), GuestDecision::Rewrite(text)) => {
            // Byte for byte, but for JSON whitespace around the value, which
            // is no part of it (found by libFuzzer: the oracle wanted the
            // surrounding newline kept; `fuzz_regression_rewrite_whitespace`).
            let value = text.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
            assert_eq!(out, value, "a rewrite passes byte for byte");
            assert!(json::validate(out.as_bytes(), MAX_DEPTH).is_ok());
            let v: serde_json::Value = serde_json::from_str(&out).expect("strict JSON");
            assert!(v.is_object(), "rewritten arguments must be an object");
        }
        (Err(_), GuestDecision::Rewrite(_)) => {}
        (out, sent) => panic!("{sent:?} decoded as {out:?}"),
    }
    if let Ok(out) = decode_replace(&input.replace, MAX_DEPTH) {
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok());
    }
    let before = input.shown.clone();
    let mut shown = input.shown;
    merge_verdicts(&mut shown, &input.verdicts);
    for (i, s) in shown.iter().enumerate() {
        assert_eq!(
            *s,
            before[i] && input.verdicts.get(i).copied().unwrap_or(false)
        );
    }
}
