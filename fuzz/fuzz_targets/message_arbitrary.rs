//! Structure-aware message decoding: envelopes with duplicate and
//! case-variant keys, raw escapes, case-fold characters and deep nesting,
//! read in every era. Never a panic; anything accepted is strict JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| portcullis::fuzzing::targets::message_arbitrary::run(data));
