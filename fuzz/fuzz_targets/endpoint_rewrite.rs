//! The legacy (2024-11-05) `endpoint` event rewrite: the result is a path
//! on the proxy's own host, or the endpoint is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| portcullis::fuzzing::targets::endpoint_rewrite::run(data));
