//! Structure-aware message decoding: envelopes with duplicate and
//! case-variant keys, raw escapes, case-fold characters and deep nesting,
//! read in every era. Never a panic; anything accepted is strict JSON.

use crate::fuzzing::{envelope::Doc, era, MAX_DEPTH};
use crate::mcp::{json, parse_body};

/// One fuzz input.
pub fn run(data: &[u8]) {
    let Ok(input) = <(u8, Doc) as arbitrary::Arbitrary<'_>>::arbitrary_take_rest(
        arbitrary::Unstructured::new(data),
    ) else {
        return;
    };
    let (pick, doc) = input;
    let bytes = doc.to_bytes();
    if parse_body(&bytes, MAX_DEPTH, &era(pick)).is_ok() {
        assert!(json::validate(&bytes, MAX_DEPTH).is_ok());
    }
}
