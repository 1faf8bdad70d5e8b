//! The bodies of the cargo-fuzz targets in `fuzz/fuzz_targets/` (each a
//! one-line wrapper), here so that the stable build compiles them and
//! `proxy/tests/fuzz_corpus.rs` replays the committed corpora through them
//! in `make test`.

pub mod config_load;
pub mod differential;
pub mod endpoint_rewrite;
pub mod filter_decode;
pub mod json_message;
pub mod list_filter;
pub mod message_arbitrary;
pub mod routing_headers;
pub mod session_token;
pub mod sse_framer;

/// Every target, by its cargo-fuzz name.
/// A target's entry point.
pub type Run = fn(&[u8]);

pub const ALL: &[(&str, Run)] = &[
    ("config_load", config_load::run),
    ("differential", differential::run),
    ("endpoint_rewrite", endpoint_rewrite::run),
    ("filter_decode", filter_decode::run),
    ("json_message", json_message::run),
    ("list_filter", list_filter::run),
    ("message_arbitrary", message_arbitrary::run),
    ("routing_headers", routing_headers::run),
    ("session_token", session_token::run),
    ("sse_framer", sse_framer::run),
];
