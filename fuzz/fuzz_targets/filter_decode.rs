//! The filter host's decoding of what a guest returns: a rewrite it
//! accepts is a strict JSON object, a replacement strict JSON, a denial
//! code 0 means "none", and short list verdicts hide the rest.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| portcullis::fuzzing::targets::filter_decode::run(data));
