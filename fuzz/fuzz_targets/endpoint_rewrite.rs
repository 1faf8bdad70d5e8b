//! The legacy (2024-11-05) `endpoint` event rewrite: the result is a path
//! on the proxy's own host, or the endpoint is refused.
#![no_main]

use http::Uri;
use libfuzzer_sys::fuzz_target;
use portcullis::fuzzing::rewrite_endpoint;

const PROXY: &str = "proxy.portcullis.test";

fuzz_target!(|data: &str| {
    let Ok(out) = rewrite_endpoint(data.trim()) else {
        return;
    };
    assert!(out.starts_with('/') && !out.starts_with("//"), "{data:?} → {out:?}");
    assert!(
        !out.chars().any(|c| c == '\\' || c.is_control() || c.is_whitespace()),
        "{data:?} → {out:?}"
    );
    // Resolved against the proxy's address, it stays on the proxy.
    let joined = format!("http://{PROXY}{out}");
    let uri: Uri = joined
        .parse()
        .unwrap_or_else(|e| panic!("{data:?} → {out:?} does not resolve: {e}"));
    assert_eq!(uri.host(), Some(PROXY), "{data:?} → {out:?}");
    assert_eq!(uri.port_u16(), None, "{data:?} → {out:?}");
});
