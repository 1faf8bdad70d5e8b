//! `*` wildcards for names, URIs and SPIFFE IDs.

/// Matches `text` against `pattern`, where `*` stands for any run of
/// characters (including none) and every other character is literal.
pub fn matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*` at all: the whole text must have been the prefix.
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

#[cfg(test)]
mod tests {
    use super::matches;

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
    }
}
