//! `*` wildcards, for names, URIs and SPIFFE IDs in filter configs.

/// Matches `text` against `pattern`, where `*` stands for any run of
/// characters (including none) and every other character is literal.
pub fn matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether any of `patterns` matches `text`.
pub fn any(patterns: &[String], text: &str) -> bool {
    patterns.iter().any(|p| matches(p, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("read_*", "read_file"));
        assert!(!matches("read_*", "unread"));
        assert!(matches("spiffe://td/ns/*/sa/*", "spiffe://td/ns/a/sa/b"));
        assert!(matches("*", "anything"));
        assert!(!matches("a", "ab"));
        assert!(any(&["x".into(), "y*".into()], "yes"));
    }
}
