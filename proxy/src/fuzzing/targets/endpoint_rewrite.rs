//! The legacy (2024-11-05) `endpoint` event rewrite: the result is a path
//! on the proxy's own host, or the endpoint is refused.

use crate::fuzzing::rewrite_endpoint;
use http::Uri;

const PROXY: &str = "proxy.portcullis.test";

/// One fuzz input.
pub fn run(data: &[u8]) {
    let Ok(data) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(out) = rewrite_endpoint(data.trim()) else {
        return;
    };
    assert!(
        out.starts_with('/') && !out.starts_with("//"),
        "{data:?} → {out:?}"
    );
    assert!(
        !out.chars()
            .any(|c| c == '\\' || c.is_control() || c.is_whitespace()),
        "{data:?} → {out:?}"
    );
    // Resolved against the proxy's address, it stays on the proxy.
    let joined = format!("http://{PROXY}{out}");
    let uri: Uri = joined
        .parse()
        .unwrap_or_else(|e| panic!("{data:?} → {out:?} does not resolve: {e}"));
    assert_eq!(uri.host(), Some(PROXY), "{data:?} → {out:?}");
    assert_eq!(uri.port_u16(), None, "{data:?} → {out:?}");
}
