//! Strict JSON and JSON-RPC message decoding, every era, single and batch:
//! never a panic, and the three entry points agree with each other.

use crate::fuzzing::{era, MAX_DEPTH};
use crate::mcp::{json, message, parse_body, Body};

/// One fuzz input.
pub fn run(data: &[u8]) {
    let input = data;
    let Some((&pick, bytes)) = input.split_first() else {
        return;
    };
    let era = era(pick);
    let valid = json::validate(bytes, MAX_DEPTH).is_ok();
    let _ = json::validate_answer(bytes, MAX_DEPTH);
    let _ = crate::mcp::answer::read_answer(bytes, MAX_DEPTH);
    let _ = message::parse_message(bytes, &era);
    match parse_body(bytes, MAX_DEPTH, &era) {
        Ok(body) => {
            // Nothing the validator refused may be accepted.
            assert!(valid, "parse_body accepted what validate refused");
            if let Body::Batch(entries) = body {
                assert!(!entries.is_empty());
                for (raw, call) in entries {
                    // Each entry re-read alone gives the same call.
                    let again = message::parse_message(raw.get().as_bytes(), &era)
                        .expect("a batch entry accepted in the batch is accepted alone");
                    assert_eq!(again.method, call.method);
                    assert_eq!(again.target, call.target);
                }
            }
        }
        Err(e) => {
            let _ = e.code();
        }
    }
}
