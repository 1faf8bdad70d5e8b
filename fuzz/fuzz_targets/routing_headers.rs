//! Routing headers (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`, the version)
//! against a body: never a panic, and headers that pass say what the body
//! says.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| portcullis::fuzzing::targets::routing_headers::run(data));
