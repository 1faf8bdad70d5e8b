//! Structure-aware message decoding: envelopes with duplicate and
//! case-variant keys, raw escapes, case-fold characters and deep nesting,
//! read in every era. Never a panic; anything accepted is strict JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::mcp::{json, parse_body};
use portcullis_fuzz::{envelope::Doc, era, MAX_DEPTH};

fuzz_target!(|input: (u8, Doc)| {
    let (pick, doc) = input;
    let bytes = doc.to_bytes();
    if parse_body(&bytes, MAX_DEPTH, &era(pick)).is_ok() {
        assert!(json::validate(&bytes, MAX_DEPTH).is_ok());
    }
});
