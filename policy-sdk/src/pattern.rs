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
    fn literal_and_wildcards() {
        assert!(matches("echo", "echo"));
        assert!(!matches("echo", "echo2"));
        assert!(matches("delete_*", "delete_file"));
        assert!(!matches("delete_*", "undelete_file"));
        assert!(matches("*", ""));
        assert!(matches("*_file", "read_file"));
        assert!(matches(
            "spiffe://td/ns/*/sa/agent",
            "spiffe://td/ns/x/sa/agent"
        ));
        assert!(!matches(
            "spiffe://td/ns/*/sa/agent",
            "spiffe://td/ns/x/sa/other"
        ));
        assert!(matches("a*b*c", "aXbYc"));
        assert!(!matches("a*b*c", "aXcYb"));
        assert!(!matches("ab*ba", "aba"));
        assert!(any(&["x".into(), "y*".into()], "yes"));
    }
}
