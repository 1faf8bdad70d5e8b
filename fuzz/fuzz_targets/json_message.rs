//! Strict JSON and JSON-RPC message decoding, every era, single and batch:
//! never a panic, and the three entry points agree with each other.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::mcp::{json, message, parse_body, Body};
use portcullis_fuzz::{era, MAX_DEPTH};

fuzz_target!(|input: &[u8]| {
    let Some((&pick, bytes)) = input.split_first() else {
        return;
    };
    let era = era(pick);
    let valid = json::validate(bytes, MAX_DEPTH).is_ok();
    let _ = json::validate_answer(bytes, MAX_DEPTH);
    let _ = portcullis::mcp::answer::read_answer(bytes, MAX_DEPTH);
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
});
