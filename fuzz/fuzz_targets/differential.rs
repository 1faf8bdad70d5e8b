//! Differential: what Portcullis reads of a message it accepts (method,
//! target name, arguments) is what a plain JSON reader (serde_json into a
//! `Value`) reads of the same bytes. A policy judges Portcullis's reading;
//! the server acts on the other one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| portcullis::fuzzing::targets::differential::run(data));
