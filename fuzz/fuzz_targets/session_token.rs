//! The sealed session id: opening never panics; a token opens only
//! unchanged, under its keys, for its caller.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| portcullis::fuzzing::targets::session_token::run(data));
