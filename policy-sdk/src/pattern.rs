//! Wildcard patterns for names, URIs and SPIFFE IDs in policies and filter
//! configs. This is the one matcher: static rules, every filter and
//! `upstream.server_ids` use it, so a pattern means the same everywhere.
//!
//! - `*` matches any run of characters (including none) **except `/`**: it
//!   stays within one path segment. `spiffe://td/ns/*/sa/reader` matches
//!   `spiffe://td/ns/a/sa/reader` but not `spiffe://td/ns/a/b/sa/reader`.
//! - `**` (two or more stars in a row) matches any run of characters,
//!   `/` included: `spiffe://td/ns/a/**` matches every ID under `ns/a/`.
//! - A pattern that is just `*` matches everything, as `**` does: "any
//!   tool", "any caller". Tool names may contain `/` (the SEP-986 drafts
//!   allowed it), and a deny rule on `*` must not miss them.
//! - Every other character is literal; matching is case-sensitive.
//!
//! Callers: the static rules match an unauthenticated caller as the text
//! `anonymous`, so `*` (like an empty `callers` list) includes it, and
//! `spiffe://**` means "any authenticated caller". A filter matching
//! [`crate::Principal::spiffe_id`] has no ID to match for such a caller.
//!
//! The rule is the same for every field, because `/` is the hierarchy
//! separator in all of them (SPIFFE IDs, URIs, MCP methods such as
//! `notifications/tools/list_changed`, namespaced tool names).
//!
//! Matching runs in `O(pattern × text)` time with no backtracking, so a
//! hostile name cannot make a pattern with many stars slow.

/// One step of a compiled pattern.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Token {
    Byte(u8),
    /// `*`: any bytes but `/`.
    Segment,
    /// `**`: any bytes.
    Any,
}

fn compile(pattern: &str) -> Vec<Token> {
    let bytes = pattern.as_bytes();
    let mut tokens = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'*' {
            tokens.push(Token::Byte(bytes[i]));
            i += 1;
            continue;
        }
        let run = bytes[i..].iter().take_while(|&&b| b == b'*').count();
        tokens.push(if run == 1 { Token::Segment } else { Token::Any });
        i += run;
    }
    tokens
}

/// Marks the states reachable without reading a byte: a wildcard may match
/// nothing. Edges only go forward, so one pass in order suffices.
fn close(tokens: &[Token], states: &mut [bool]) {
    for (i, t) in tokens.iter().enumerate() {
        if states[i] && !matches!(t, Token::Byte(_)) {
            states[i + 1] = true;
        }
    }
}

/// Matches `text` against `pattern` (see the module docs for the rules).
pub fn matches(pattern: &str, text: &str) -> bool {
    let Some(first) = pattern.find('*') else {
        return pattern == text;
    };
    if pattern == "*" {
        return true;
    }
    // The literal text before the first star and after the last must be
    // the text's own ends; most patterns have one wildcard run
    // (`delete_*`, `spiffe://td/ns/a/**`), and then what lies between the
    // ends decides at once. Filters match these on every call, so this is
    // the hot path (the automaton below cost half of a warm evaluation).
    let last = pattern.rfind('*').unwrap_or(first) + 1;
    let (prefix, suffix) = (&pattern[..first], &pattern[last..]);
    if text.len() < prefix.len() + suffix.len()
        || !text.starts_with(prefix)
        || !text.ends_with(suffix)
    {
        return false;
    }
    let stars = &pattern[first..last];
    if !stars.bytes().all(|b| b == b'*') {
        return matches_automaton(pattern, text);
    }
    let middle = &text.as_bytes()[prefix.len()..text.len() - suffix.len()];
    stars.len() > 1 || !middle.contains(&b'/')
}

/// The general case: several wildcard runs with literal text between
/// them.
fn matches_automaton(pattern: &str, text: &str) -> bool {
    let tokens = compile(pattern);
    // states[i]: the first i tokens can match the text read so far.
    let mut states = vec![false; tokens.len() + 1];
    let mut next = states.clone();
    states[0] = true;
    close(&tokens, &mut states);
    for &b in text.as_bytes() {
        next.fill(false);
        for (i, t) in tokens.iter().enumerate() {
            if !states[i] {
                continue;
            }
            match *t {
                Token::Byte(want) if want == b => next[i + 1] = true,
                Token::Segment if b != b'/' => next[i] = true,
                Token::Any => next[i] = true,
                _ => {}
            }
        }
        close(&tokens, &mut next);
        if !next.contains(&true) {
            return false;
        }
        std::mem::swap(&mut states, &mut next);
    }
    states[tokens.len()]
}

/// Whether any of `patterns` matches `text`.
pub fn any(patterns: &[String], text: &str) -> bool {
    patterns.iter().any(|p| matches(p, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-run shortcut and the automaton agree on every pattern and
    /// text up to four bytes over an alphabet that has the separator and
    /// the star.
    #[test]
    fn the_shortcut_agrees_with_the_automaton() {
        let alphabet = [b'a', b'b', b'/', b'*'];
        let all = |max: usize| {
            let mut out = vec![String::new()];
            let mut frontier = vec![String::new()];
            for _ in 0..max {
                let mut grown = Vec::new();
                for s in &frontier {
                    for &c in &alphabet {
                        grown.push(format!("{s}{}", c as char));
                    }
                }
                out.extend(grown.iter().cloned());
                frontier = grown;
            }
            out
        };
        let patterns = all(4);
        let texts: Vec<String> = all(4).into_iter().filter(|t| !t.contains('*')).collect();
        for p in &patterns {
            if p == "*" {
                continue;
            }
            for t in &texts {
                let want = if p.contains('*') {
                    matches_automaton(p, t)
                } else {
                    p == t
                };
                assert_eq!(matches(p, t), want, "pattern {p:?} text {t:?}");
            }
        }
    }

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

    /// The hole of issue 13: `*` crossed `/`, so a pattern for one
    /// namespace matched IDs with extra path segments.
    #[test]
    fn star_stays_within_one_segment() {
        let p = "spiffe://td/ns/*/sa/reader";
        assert!(matches(p, "spiffe://td/ns/a/sa/reader"));
        assert!(!matches(p, "spiffe://td/ns/a/b/sa/reader"));
        assert!(!matches(p, "spiffe://td/ns/evil/sa/x/sa/reader"));
        assert!(!matches(p, "spiffe://td/ns//sa/x/../sa/reader"));
        assert!(!matches("spiffe://td/ns/a/*", "spiffe://td/ns/a/sa/x"));
        assert!(!matches("file:///public/*", "file:///public/../secret/key"));
        assert!(!matches("*_file", "a/read_file"));
        assert!(!matches("tools/*", "tools/x/call"));
        assert!(!matches("spiffe://td/*", "spiffe://td/a/b"));
        // Two stars in one segment still cannot reach past it.
        assert!(!matches("spiffe://td/*-*/x", "spiffe://td/a/b-c/x"));
        assert!(matches("spiffe://td/*-*/x", "spiffe://td/a-b/x"));
    }

    #[test]
    fn double_star_spans_segments() {
        assert!(matches("spiffe://td/ns/a/**", "spiffe://td/ns/a/sa/x"));
        assert!(matches(
            "spiffe://td/**/sa/reader",
            "spiffe://td/ns/a/b/sa/reader"
        ));
        assert!(!matches(
            "spiffe://td/**/sa/reader",
            "spiffe://td/ns/a/sa/writer"
        ));
        assert!(matches("spiffe://**", "spiffe://other/x"));
        assert!(matches(
            "notifications/**",
            "notifications/tools/list_changed"
        ));
        assert!(matches("a/**/*.txt", "a/b/c/d.txt"));
        assert!(!matches("a/**/*.txt", "a/b/c/d.txt/e"));
        assert!(!matches("spiffe://td/**", "spiffe://tdx/a"));
    }

    /// `*` alone is "everything": tool names may contain `/` (SEP-986
    /// drafts allowed it), and a deny rule on `*` must not miss them.
    #[test]
    fn lone_star_matches_everything() {
        assert!(matches("*", "github/create_issue"));
        assert!(matches("*", "spiffe://td/ns/a/sa/b"));
        assert!(matches("*", "anonymous"));
        assert!(matches("**", "anonymous"));
        assert!(matches("*", ""));
    }

    #[test]
    fn anonymous_is_plain_text() {
        assert!(matches("anonymous", "anonymous"));
        assert!(!matches("spiffe://**", "anonymous"));
        assert!(!matches("spiffe://td/*", "anonymous"));
    }

    #[test]
    fn long_hostile_inputs_stay_linear() {
        // Backtracking matchers go exponential on many stars; this one
        // must not (the text comes from the network).
        let pattern = "**a**a**a**a**a**a**a**a**a**a**b";
        let text = "a".repeat(5000);
        let start = std::time::Instant::now();
        assert!(!matches(pattern, &text));
        let slashy = "a/".repeat(2500);
        assert!(!matches("*/*/*/*/*/*/*/*/*/*/*/b", &slashy));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }
}
