//! The config loader on arbitrary text: an error, never a panic; a config
//! that loads also validates, and its upstream is a URI.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| portcullis::fuzzing::targets::config_load::run(data));
