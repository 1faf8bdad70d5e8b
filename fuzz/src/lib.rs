//! Shared pieces of the Portcullis fuzz targets.

pub mod envelope;

use portcullis::mcp::Era;

/// Every era a message can be read in, picked by one byte.
pub fn era(pick: u8) -> Era {
    match pick % 5 {
        0 => Era::HttpSse2024,
        1 => Era::Streamable2025("2025-03-26".into()),
        2 => Era::Streamable2025("2025-06-18".into()),
        3 => Era::Streamable2025("2025-11-25".into()),
        _ => Era::Sessionless2026,
    }
}

/// The depth bound the proxy uses by default.
pub const MAX_DEPTH: usize = 64;
