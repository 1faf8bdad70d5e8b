//! The SSE framer over random chunkings: the events of a stream do not
//! depend on how it was cut into chunks, and `encode` frames back to the data it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| portcullis::fuzzing::targets::sse_framer::run(data));
