//! List filtering of upstream answers, as a JSON body or an SSE stream,
//! with a policy that hides every name containing "secret": whatever the
//! filter lets through (rewritten or original) shows no such item to a
//! client reading it with a plain JSON reader.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| portcullis::fuzzing::targets::list_filter::run(data));
