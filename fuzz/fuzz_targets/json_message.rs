//! Strict JSON and JSON-RPC message decoding, every era, single and batch:
//! never a panic, and the three entry points agree with each other.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| portcullis::fuzzing::targets::json_message::run(data));
