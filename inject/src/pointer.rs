//! JSON Pointer (RFC 6901) paths for the patch.

use json_patch::jsonptr::PointerBuf;

/// Escapes one reference token: `~` becomes `~0` and `/` becomes `~1`, in
/// that order, so `a/b~c` is `a~1b~0c` (reversing the order would turn the
/// `~` introduced for `/` into `~01`).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Builds a pointer from raw (unescaped) tokens.
pub fn path(tokens: &[&str]) -> PointerBuf {
    let mut s = String::new();
    for t in tokens {
        s.push('/');
        s.push_str(&escape(t));
    }
    // Every token was escaped above, so the string is always a valid pointer.
    PointerBuf::parse(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_tilde_before_slash() {
        assert_eq!(escape("portcullis.dev/status"), "portcullis.dev~1status");
        assert_eq!(escape("a/b~c"), "a~1b~0c");
        assert_eq!(escape("~1"), "~01");
    }

    #[test]
    fn path_round_trips_through_a_document() {
        let p = path(&["metadata", "annotations", "x.io/a~b"]);
        assert_eq!(p.as_str(), "/metadata/annotations/x.io~1a~0b");
        let doc = serde_json::json!({"metadata": {"annotations": {"x.io/a~b": "v"}}});
        assert_eq!(p.resolve(&doc).unwrap(), "v");
    }
}
