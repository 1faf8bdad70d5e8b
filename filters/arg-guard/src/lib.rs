//! `arg-guard`: constraints on tool arguments, addressed by JSON pointer.
//!
//! Each constraint names the tools it covers (wildcards allowed) and a JSON
//! pointer into the arguments, then any of: an allowed regex, a denied
//! regex, confinement to a path prefix (after resolving `.` and `..`), a
//! maximum length, and an enum of allowed values. With `normalize`, a
//! confined path is rewritten to its resolved form, so the server receives
//! exactly the path that was checked.

mod lookup;

use portcullis_policy_sdk::{pattern, prelude::*};
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

pub use lookup::Pointer;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraint {
    /// Tool name patterns.
    pub tools: Vec<String>,
    /// A JSON pointer into the arguments, e.g. `/path` or `/options/mode`.
    pub pointer: Pointer,
    /// Deny when the argument is absent.
    #[serde(default)]
    pub required: bool,
    /// The (string) value must match this regex.
    #[serde(default)]
    pub allow_regex: Option<Pattern>,
    /// The (string) value must not match this regex.
    #[serde(default)]
    pub deny_regex: Option<Pattern>,
    /// The value is a path that must stay under this absolute prefix.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Rewrite a confined path to its resolved form.
    #[serde(default)]
    pub normalize: bool,
    /// Longest value, in characters (strings) or JSON bytes (others).
    #[serde(default)]
    pub max_length: Option<usize>,
    /// The value must equal one of these.
    #[serde(rename = "enum", default)]
    pub one_of: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub constraints: Vec<Constraint>,
}

/// Resolves `.` and `..` in an absolute path. `None` if it is relative,
/// climbs above the root, or contains a NUL. A path already in resolved
/// form (most are) is returned as it is, without a copy.
pub fn resolve(path: &str) -> Option<Cow<'_, str>> {
    if !path.starts_with('/') || path.contains('\0') {
        return None;
    }
    let resolved_already = path == "/"
        || path
            .split('/')
            .skip(1)
            .all(|seg| !matches!(seg, "" | "." | ".."));
    if resolved_already {
        return Some(Cow::Borrowed(path));
    }
    resolve_by_segments(path).map(Cow::Owned)
}

/// What `resolve` means, segment by segment, for any path.
fn resolve_by_segments(path: &str) -> Option<String> {
    if !path.starts_with('/') || path.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Whether the resolved `path` is `prefix` or below it.
fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether `regex` in ASCII mode (`unicode(false)`) can be trusted to read
/// `src` as regex-lite does, judged from the pattern's syntax tree (not
/// its text: in `(?x)` mode `( ?u)` is a flag group too). No to:
/// - any flag group that names `u` (`(?u)`, `(?iu:...)`, `(?-u)`): with
///   Unicode on, `regex` reads classes and case folding differently, and
///   whether it can at all depends on whether cargo unified its Unicode
///   tables into this build (cedar's filter turns them on);
/// - a bracketed class whose items together cover all of `Z` to `a`
///   (`[Z-a]`, ``[XYZ[\\\]^_`a]``, `[[:upper:][:punct:][:lower:]]`):
///   regex-lite merges a class's items into ranges and then, under `(?i)`,
///   folds only one letter case of a range that holds both, so
///   `(?i)[Z-a]` does not match `z` there and does in `regex`. A range
///   holds both cases only if it holds all of `Z` to `a`, so a class that
///   does not cover them is read alike;
/// - a pattern the syntax tree parser refuses.
///
/// What it would read differently otherwise (`.`, negated classes, `\xNN`
/// and non-ASCII in classes match bytes there) can match invalid UTF-8,
/// which the UTF-8 check of `regex` and of [`Required::of`] refuses.
fn ascii_mode_reads_alike(src: &str) -> bool {
    use regex_syntax::ast::{self, Ast, Flag, Flags, FlagsItemKind, GroupKind};

    struct Alike;
    fn names_unicode(flags: &Flags) -> bool {
        flags
            .items
            .iter()
            .any(|i| matches!(i.kind, FlagsItemKind::Flag(Flag::Unicode)))
    }
    impl ast::Visitor for Alike {
        type Output = ();
        type Err = ();
        fn finish(self) -> Result<(), ()> {
            Ok(())
        }
        fn visit_pre(&mut self, ast: &Ast) -> Result<(), ()> {
            let unlike = match ast {
                Ast::Flags(f) => names_unicode(&f.flags),
                Ast::Group(g) => matches!(&g.kind, GroupKind::NonCapturing(f) if names_unicode(f)),
                Ast::ClassBracketed(c) => {
                    let covered = ascii_cover(&c.kind);
                    (b'Z'..=b'a').all(|b| covered & (1 << b) != 0)
                }
                _ => false,
            };
            if unlike {
                Err(())
            } else {
                Ok(())
            }
        }
    }
    ast::parse::Parser::new()
        .parse(src)
        .is_ok_and(|tree| ast::visit(&tree, Alike).is_ok())
}

/// The ASCII characters a bracketed class's items name, as a bit set,
/// counted generously: a letter in both cases (regex-lite folds an
/// escaped letter before it merges), and all of ASCII for anything
/// negated, nested or combined (which regex-lite refuses anyway).
fn ascii_cover(set: &regex_syntax::ast::ClassSet) -> u128 {
    match set {
        regex_syntax::ast::ClassSet::Item(i) => item_cover(i),
        regex_syntax::ast::ClassSet::BinaryOp(_) => u128::MAX,
    }
}

fn item_cover(item: &regex_syntax::ast::ClassSetItem) -> u128 {
    use regex_syntax::ast::{ClassAsciiKind as A, ClassPerlKind as P, ClassSetItem as I};

    fn span(lo: u8, hi: u8) -> u128 {
        (lo..=hi).fold(0, |m, b| m | 1 << b)
    }
    /// `lo..=hi`'s ASCII part, each letter in both cases.
    fn chars(lo: char, hi: char) -> u128 {
        (u32::from(lo)..=u32::from(hi).min(0x7f))
            .filter_map(|c| u8::try_from(c).ok())
            .fold(0, |m, c| {
                m | 1 << c | 1 << c.to_ascii_lowercase() | 1 << c.to_ascii_uppercase()
            })
    }
    let word = span(b'0', b'9') | span(b'A', b'Z') | span(b'a', b'z') | 1 << b'_';
    let space = span(b'\t', b'\r') | 1 << b' ';
    match item {
        I::Empty(_) => 0,
        I::Literal(l) => chars(l.c, l.c),
        I::Range(r) => chars(r.start.c, r.end.c),
        I::Ascii(a) if a.negated => u128::MAX,
        I::Ascii(a) => match a.kind {
            A::Alnum => span(b'0', b'9') | span(b'A', b'Z') | span(b'a', b'z'),
            A::Alpha => span(b'A', b'Z') | span(b'a', b'z'),
            A::Ascii => u128::MAX,
            A::Blank => 1 << b'\t' | 1 << b' ',
            A::Cntrl => span(0, 0x1f) | 1 << 0x7f,
            A::Digit => span(b'0', b'9'),
            A::Graph => span(b'!', b'~'),
            A::Lower => span(b'a', b'z'),
            A::Print => span(b' ', b'~'),
            A::Punct => span(b'!', b'/') | span(b':', b'@') | span(b'[', b'`') | span(b'{', b'~'),
            A::Space => space,
            A::Upper => span(b'A', b'Z'),
            A::Word => word,
            A::Xdigit => span(b'0', b'9') | span(b'A', b'F') | span(b'a', b'f'),
        },
        I::Perl(p) if p.negated => u128::MAX,
        I::Perl(p) => match p.kind {
            P::Digit => span(b'0', b'9'),
            P::Space => space,
            P::Word => word,
        },
        I::Unicode(_) | I::Bracketed(_) => u128::MAX,
        I::Union(u) => u.items.iter().fold(0, |m, i| m | item_cover(i)),
    }
}

/// A regex compiled when the configuration is parsed, so that a warm
/// instance (which parses its configuration once) never compiles it again.
///
/// Its meaning is regex-lite's: codepoint by codepoint, with ASCII-only
/// `\d`, `\s`, `\w`, `\b` and case folding. regex-lite decides whether a
/// pattern is valid and searches short texts, but it searches with a
/// PikeVM that costs about 40 ns per byte in the guest (40 µs per KB of
/// argument for `(?i)drop\s+table`). For a long text the pattern is also
/// compiled with `regex` in ASCII mode (`unicode(false)`), which searches
/// with a lazy DFA at about 2.5 ns per byte. In that mode `regex` has
/// regex-lite's classes and case folding, except where
/// [`ascii_mode_reads_alike`] says otherwise (a `u` flag, a class covering
/// `Z` to `a`): those patterns stay with regex-lite, whether or not
/// `regex` happens to have its Unicode tables (cargo unifies features, and
/// a build beside another crate that enables them would otherwise change
/// the meaning). What else it would read differently (`.`, negated
/// classes, `\xNN` and non-ASCII in classes match bytes there) can match
/// invalid UTF-8, which `regex::Regex` refuses to compile, so those
/// patterns stay with regex-lite too.
/// Before either engine, a [`Required`] prefilter answers short texts that
/// hold none of the literals every match starts with.
#[derive(Debug)]
pub struct Pattern {
    src: String,
    /// [`ascii_mode_reads_alike`] for `src`, decided once: it gates both
    /// the prefilter and the DFA.
    alike: bool,
    /// Literals one of which every match contains, if the pattern has
    /// few enough (`None`: every text is searched).
    required: Option<Required>,
    lite: regex_lite::Regex,
    /// `regex`'s compile of `src`, made once regex-lite has scanned
    /// [`LONG_TEXT`] bytes (`None`: it does not compile, regex-lite
    /// searches everything).
    dfa: std::sync::OnceLock<Option<regex::Regex>>,
    /// Bytes regex-lite has scanned for this pattern so far.
    scanned: std::sync::atomic::AtomicUsize,
}

impl Clone for Pattern {
    fn clone(&self) -> Self {
        Self {
            src: self.src.clone(),
            alike: self.alike,
            required: self.required.clone(),
            lite: self.lite.clone(),
            dfa: self.dfa.clone(),
            scanned: std::sync::atomic::AtomicUsize::new(
                self.scanned.load(std::sync::atomic::Ordering::Relaxed),
            ),
        }
    }
}

/// Compiling the DFA costs about 70 µs in the guest, what regex-lite
/// takes for about 2 KB. It is compiled when regex-lite has scanned that
/// much for the pattern, in one text or over many calls of a warm
/// instance (the rent-or-buy rule): a fresh instance checking one short
/// argument never pays for it, and a warm one stops paying 40 ns a byte
/// after a few dozen calls.
const LONG_TEXT: usize = 2048;

/// The prefilter keeps literals of at most this many bytes: a shorter
/// literal is still one every match contains, and truncating merges the
/// variants a class or case folding multiplies (`(?i)drop\s+table` has
/// 96 five-byte prefixes and one four-byte one once lowercased).
const REQUIRED_LEN: usize = 4;
/// More literals than this and the prefilter is not kept: each is a scan.
const REQUIRED_MAX: usize = 4;
/// The prefilter is skipped when text bytes × literals exceed this: a long
/// text goes to the regex engines, whose cost per byte is lower than a
/// naive scan's for every literal (and the DFA's is lower still).
const REQUIRED_SCAN: usize = 4096;

/// A prefilter: literals one of which every match of a pattern contains,
/// so that a text containing none of them is answered without running
/// either regex engine. In the sidecar's cache-cold evaluations the lazy
/// DFA's code and state are about 0.8 µs of an arg-guard evaluation
/// (criterion, L2 evicted); a scan of a short argument for one literal is
/// a few dozen instructions over bytes already in the cache.
///
/// Sound by construction, not by tuning: the literals are the prefixes
/// `regex-syntax` extracts (every match starts with one of them), read
/// with `regex`'s ASCII mode, which means what regex-lite means for every
/// pattern it accepts (see [`Pattern`]; a pattern it refuses or that turns
/// Unicode on gets no prefilter). Truncating a literal and folding its
/// ASCII case only widen what passes. A text that passes is searched as
/// before, so the prefilter can only turn a search into "no match" when
/// the search would have said so.
#[derive(Debug, Clone, PartialEq)]
struct Required {
    /// ASCII-lowercased, at most [`REQUIRED_LEN`] bytes, none empty,
    /// deduplicated.
    literals: Vec<Vec<u8>>,
}

/// Whether `text` contains `lower` (ASCII-lowercased), ASCII case aside.
/// Candidates are found by the first byte alone before the rest is
/// compared, eight start positions at a time: a word of the text that
/// holds neither spelling of the first byte is passed over with a few
/// 64-bit operations (the guest has no wider SIMD), instead of two
/// compares per byte. That scan was about a sixth of arg-guard's guest
/// time in a warm evaluation (criterion, a 55-byte argument).
fn contains_folded(text: &[u8], lower: &[u8]) -> bool {
    let Some((&first, rest)) = lower.split_first() else {
        return true;
    };
    let upper = first.to_ascii_uppercase();
    let Some(last_start) = text.len().checked_sub(lower.len()) else {
        return false;
    };
    let at = |i: usize| {
        let b = text[i];
        (b == first || b == upper) && text[i + 1..i + lower.len()].eq_ignore_ascii_case(rest)
    };
    let (first_8, upper_8) = (splat(first), splat(upper));
    let starts = last_start + 1;
    let mut i = 0;
    while i + 8 <= starts {
        let mut word = [0u8; 8];
        word.copy_from_slice(&text[i..i + 8]);
        let word = u64::from_le_bytes(word);
        // Only the flagged start positions are compared: byte k of the
        // word is bit 8k + 7 of the mask. (Comparing all eight of a
        // flagged word was most of the scan on prose, where the first
        // letter of `drop` or `table` is in most words.) A spurious flag
        // costs one comparison; a true one is never missing.
        let mut flagged = zero_byte(word ^ first_8) | zero_byte(word ^ upper_8);
        while flagged != 0 {
            if at(i + (flagged.trailing_zeros() / 8) as usize) {
                return true;
            }
            flagged &= flagged - 1;
        }
        i += 8;
    }
    (i..starts).any(at)
}

/// `b` in every byte of a word.
const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

/// Non-zero exactly when some byte of `x` is zero. (The bit it sets for a
/// byte above a zero one may be wrong, which is why a word it flags is
/// checked byte by byte; it never misses a zero byte.)
const fn zero_byte(x: u64) -> u64 {
    x.wrapping_sub(splat(0x01)) & !x & splat(0x80)
}

impl Required {
    /// The literals of a pattern [`ascii_mode_reads_alike`] passed (only
    /// then are they regex-lite's too).
    fn of(src: &str) -> Option<Self> {
        let hir = regex_syntax::ParserBuilder::new()
            .unicode(false)
            .utf8(true)
            .build()
            .parse(src)
            .ok()?;
        // Prefix extraction: finite only if every match starts with one of
        // the literals.
        let seq = regex_syntax::hir::literal::Extractor::new().extract(&hir);
        let found = seq.literals()?;
        let len = found.iter().map(|l| l.as_bytes().len()).min()?;
        // An empty literal is one every text contains.
        if len == 0 {
            return None;
        }
        // The longest truncation that leaves few enough literals: a class
        // after a short literal (`(?i)dr\s`) multiplies the variants,
        // which its shorter prefix does not have.
        (1..=len.min(REQUIRED_LEN)).rev().find_map(|len| {
            let mut literals: Vec<Vec<u8>> = found
                .iter()
                .map(|l| l.as_bytes()[..len].to_ascii_lowercase())
                .collect();
            literals.sort_unstable();
            literals.dedup();
            (literals.len() <= REQUIRED_MAX).then_some(Self { literals })
        })
    }

    /// Whether `text` is worth searching: `false` only if it contains none
    /// of the literals, ASCII case aside.
    fn may_match(&self, text: &[u8]) -> bool {
        self.literals.iter().any(|l| contains_folded(text, l))
    }
}

impl Pattern {
    pub fn new(src: &str) -> Result<Self, String> {
        let lite = regex_lite::Regex::new(src).map_err(|e| format!("bad regex {src:?}: {e}"))?;
        let alike = ascii_mode_reads_alike(src);
        Ok(Self {
            src: src.to_string(),
            alike,
            required: alike.then(|| Required::of(src)).flatten(),
            lite,
            dfa: std::sync::OnceLock::new(),
            scanned: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn dfa(&self) -> Option<&regex::Regex> {
        self.dfa
            .get_or_init(|| {
                if !self.alike {
                    return None;
                }
                regex::RegexBuilder::new(&self.src)
                    .unicode(false)
                    .build()
                    .ok()
            })
            .as_ref()
    }

    pub fn is_match(&self, text: &str) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(required) = &self.required {
            // Not counted as scanned: neither engine ran, so a warm
            // instance whose arguments rarely come near a match never pays
            // for the DFA.
            if text.len().saturating_mul(required.literals.len()) <= REQUIRED_SCAN
                && !required.may_match(text.as_bytes())
            {
                return false;
            }
        }
        // The guest is single-threaded; the atomic only keeps `Pattern`
        // `Sync` for the OnceLock beside it.
        let scanned = self.scanned.load(Relaxed).saturating_add(text.len());
        let dfa = if scanned >= LONG_TEXT {
            self.dfa()
        } else {
            self.scanned.store(scanned, Relaxed);
            None
        };
        match dfa {
            Some(re) => re.is_match(text),
            None => self.lite.is_match(text),
        }
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let src = String::deserialize(d)?;
        Self::new(&src).map_err(serde::de::Error::custom)
    }
}

/// The outcome of one constraint on one value.
enum Check {
    Pass,
    Fail(String),
    Rewrite(String),
}

impl Constraint {
    fn check(&self, value: &Value) -> Check {
        let text = value.as_str();
        if let Some(max) = self.max_length {
            // A text no longer in bytes than the limit is no longer in
            // characters: its characters are counted only when it might
            // be over (the count was 4 % of a passing evaluation).
            let len = match text {
                Some(t) if t.len() <= max => t.len(),
                Some(t) => t.chars().count(),
                None => value.to_string().len(),
            };
            if len > max {
                return Check::Fail(format!("is {len} long, more than {max}"));
            }
        }
        if let Some(allowed) = &self.one_of {
            if !allowed.contains(value) {
                return Check::Fail(format!("{value} is not one of the allowed values"));
            }
        }
        let needs_text =
            self.allow_regex.is_some() || self.deny_regex.is_some() || self.path_prefix.is_some();
        let Some(text) = text else {
            return if needs_text {
                Check::Fail("must be a string".into())
            } else {
                Check::Pass
            };
        };
        if let Some(p) = &self.allow_regex {
            if !p.is_match(text) {
                return Check::Fail(format!("{text:?} does not match {:?}", p.src));
            }
        }
        if let Some(p) = &self.deny_regex {
            if p.is_match(text) {
                return Check::Fail(format!("{text:?} matches denied pattern {:?}", p.src));
            }
        }
        match &self.path_prefix {
            None => Check::Pass,
            Some(prefix) => match resolve(text) {
                Some(resolved)
                    if under(&resolved, prefix) && self.normalize && resolved != text =>
                {
                    Check::Rewrite(resolved.into_owned())
                }
                Some(resolved) if under(&resolved, prefix) => Check::Pass,
                Some(resolved) => Check::Fail(format!(
                    "{text:?} resolves to {resolved:?}, outside {prefix:?}"
                )),
                None => Check::Fail(format!(
                    "{text:?} is not an absolute path inside {prefix:?}"
                )),
            },
        }
    }
}

pub struct ArgGuard;

impl Filter for ArgGuard {
    type Config = Config;

    /// The decision is a function of the method, the tool, the arguments
    /// and the configuration. The host then lowers only these into the
    /// guest (a third of an evaluation went to the rest: principal,
    /// headers, era, each string a guest allocation), and may answer an
    /// equal call from its cache. What a `Pattern` keeps between calls
    /// (bytes scanned, the DFA) changes how fast it answers, never what:
    /// both engines give the same answer (`patterns_mean_what_regex_lite_means`).
    const DECIDES_ON: Option<&'static [Input]> =
        Some(&[Input::Method, Input::Target, Input::Arguments]);

    fn validate(config: &Config) -> Result<(), String> {
        for c in &config.constraints {
            let p = c.pointer.as_str();
            if !(p.is_empty() || p.starts_with('/')) {
                return Err(format!("pointer {p:?} must start with '/'"));
            }
            if let Some(p) = &c.path_prefix {
                resolve(p).ok_or_else(|| format!("path_prefix {p:?} must be an absolute path"))?;
            }
        }
        Ok(())
    }

    fn on_request(config: &Config, call: &Call) -> Decision {
        let Some(tool) = call.tool_name() else {
            return Decision::Allow;
        };
        // Absent arguments read as JSON `null`, as an empty call does.
        let args = call.arguments.as_deref().unwrap_or("null");
        // Built only if a constraint rewrites a path.
        let mut tree: Option<Value> = None;
        for c in config
            .constraints
            .iter()
            .filter(|c| pattern::any(&c.tools, tool))
        {
            // After a rewrite, later constraints read the rewritten tree.
            let found = match &tree {
                Some(root) => Ok(c.pointer.find_in(root).cloned()),
                None => c.pointer.find(args),
            };
            let found = match found {
                Ok(found) => found,
                Err(e) => return unreadable(tool, &e),
            };
            let Some(value) = found else {
                if c.required {
                    return Decision::deny(format!("{tool}: argument {} is required", c.pointer));
                }
                continue;
            };
            match c.check(&value) {
                Check::Pass => {}
                Check::Fail(why) => {
                    return Decision::deny(format!("{tool}: argument {} {why}", c.pointer))
                }
                Check::Rewrite(resolved) => {
                    let root = match tree.as_mut() {
                        Some(root) => root,
                        None => match serde_json::from_str(args) {
                            Ok(root) => tree.insert(root),
                            Err(e) => return unreadable(tool, &e),
                        },
                    };
                    if let Some(slot) = c.pointer.find_mut(root) {
                        *slot = Value::String(resolved);
                    }
                }
            }
        }
        match tree {
            Some(rewritten) => Decision::RewriteArguments(rewritten),
            None => Decision::Allow,
        }
    }
}

/// The host forwards only JSON it has read strictly, so this is a host
/// that did not: refuse rather than skip the check.
fn unreadable(tool: &str, e: &serde_json::Error) -> Decision {
    Decision::deny(format!("{tool}: arguments are not readable JSON: {e}"))
}

export_filter!(ArgGuard);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn h() -> Harness<ArgGuard> {
        Harness::new(
            &json!({"constraints": [
                {"tools": ["read_file", "write_*"], "pointer": "/path", "required": true,
                 "path_prefix": "/srv/data", "normalize": true},
                {"tools": ["*"], "pointer": "/query", "max_length": 12, "deny_regex": "(?i)drop\\s+table"},
                {"tools": ["set_mode"], "pointer": "/mode", "enum": ["ro", "rw"]},
                {"tools": ["fetch"], "pointer": "/url", "allow_regex": "^https://[a-z.]+\\.example\\.com/"}
            ]})
            .to_string(),
        )
        .unwrap()
    }

    fn call(tool: &str, args: Value) -> Call {
        CallBuilder::tool(tool).args(args).build()
    }

    #[test]
    fn paths_are_confined_after_resolution() {
        let h = h();
        h.request(&call("read_file", json!({"path": "/srv/data/a.txt"})))
            .assert_allowed();
        h.request(&call(
            "read_file",
            json!({"path": "/srv/data/../../etc/passwd"}),
        ))
        .assert_denied("outside");
        h.request(&call("read_file", json!({"path": "/srv/database"})))
            .assert_denied("outside");
        h.request(&call("read_file", json!({"path": "data/a"})))
            .assert_denied("not an absolute path");
        h.request(&call("read_file", json!({"path": "/../../"})))
            .assert_denied("not an absolute path");
        h.request(&call("read_file", json!({})))
            .assert_denied("required");
        h.request(&call("read_file", json!({"path": 7})))
            .assert_denied("must be a string");
    }

    #[test]
    fn normalize_rewrites_to_the_checked_path() {
        let d = h().request(&call(
            "write_file",
            json!({"path": "/srv/data/x/./../y", "body": "b"}),
        ));
        let args = d.assert_rewritten();
        assert_eq!(args["path"], "/srv/data/y");
        assert_eq!(args["body"], "b");
    }

    #[test]
    fn length_regex_and_enum() {
        let h = h();
        h.request(&call("search", json!({"query": "short"})))
            .assert_allowed();
        h.request(&call("search", json!({"query": "much too long a query"})))
            .assert_denied("more than 12");
        // The length is in characters: 12 of them in 24 bytes pass, 13
        // are refused, and the refusal counts characters, not bytes.
        h.request(&call("search", json!({"query": "é".repeat(12)})))
            .assert_allowed();
        h.request(&call("search", json!({"query": "é".repeat(13)})))
            .assert_denied("is 13 long, more than 12");
        h.request(&call("search", json!({"query": "DROP TABLE"})))
            .assert_denied("denied pattern");
        h.request(&call("set_mode", json!({"mode": "rw"})))
            .assert_allowed();
        h.request(&call("set_mode", json!({"mode": "root"})))
            .assert_denied("not one of");
        h.request(&call("fetch", json!({"url": "https://api.example.com/x"})))
            .assert_allowed();
        h.request(&call(
            "fetch",
            json!({"url": "https://evil.test/?a.example.com/"}),
        ))
        .assert_denied("does not match");
    }

    /// The host forwards only arguments it read strictly; a host that did
    /// not, or a replayed call, gets a refusal, never a skipped check.
    /// (Before, unreadable arguments read as `null`: `/query` was absent
    /// and the call was allowed.)
    #[test]
    fn unreadable_arguments_are_refused() {
        let h = h();
        for raw in [
            r#"{"query":"DROP TABLE","x":1e400}"#,
            r#"{"query":"DROP TABLE"} {}"#,
            r#"{"query":"DROP TABLE","x":"\ud800"}"#,
        ] {
            let mut c = call("search", json!({}));
            c.arguments = Some(raw.to_string());
            h.request(&c).assert_denied("not readable JSON");
        }
    }

    /// A member under serde_json's reserved name reads one way as a `Value`
    /// (the string's contents) and another way as written. A check that
    /// read it one way and a rewrite that re-encoded it the other would
    /// forward what no constraint checked: here `mode: 777` inside the
    /// string, which the rewrite of `/path` would have made real. Refused.
    #[test]
    fn serde_json_reserved_keys_are_refused() {
        let h = Harness::<ArgGuard>::new(
            &json!({"constraints": [
                {"tools": ["write_file"], "pointer": "/options/mode", "enum": ["ro", "rw"]},
                {"tools": ["write_file"], "pointer": "/path", "path_prefix": "/srv", "normalize": true}
            ]})
            .to_string(),
        )
        .unwrap();
        let mut c = call("write_file", json!({}));
        c.arguments = Some(
            r#"{"path":"/srv/./x","options":{"$serde_json::private::RawValue":"{\"mode\":\"777\"}"}}"#
                .to_string(),
        );
        h.request(&c).assert_denied("reserved");
    }

    /// A constraint after a rewrite reads the rewritten path, as a later
    /// filter in the chain would.
    #[test]
    fn later_constraints_read_the_rewritten_arguments() {
        let h = Harness::<ArgGuard>::new(
            &json!({"constraints": [
                {"tools": ["read_file"], "pointer": "/path", "path_prefix": "/srv", "normalize": true},
                {"tools": ["read_file"], "pointer": "/path", "deny_regex": "^/srv/secret$"}
            ]})
            .to_string(),
        )
        .unwrap();
        h.request(&call("read_file", json!({"path": "/srv/x/../secret"})))
            .assert_denied("denied pattern");
        let d = h.request(&call("read_file", json!({"path": "/srv/x/../open"})));
        let args = d.assert_rewritten();
        assert_eq!(args["path"], "/srv/open");
    }

    #[test]
    fn other_tools_and_methods_pass() {
        let h = h();
        h.request(&call("echo", json!({"text": "hi"})))
            .assert_allowed();
        h.request(&CallBuilder::method("tools/list").build())
            .assert_allowed();
    }

    #[test]
    fn resolve_handles_edge_cases() {
        assert_eq!(resolve("/a/./b/../c").as_deref(), Some("/a/c"));
        assert_eq!(resolve("/a//b/").as_deref(), Some("/a/b"));
        assert_eq!(resolve("/.."), None);
        assert_eq!(resolve("/a\0b"), None);
        assert!(under("/srv/data", "/srv/data/"));
        assert!(!under("/srv/data2", "/srv/data"));
    }

    /// The copy-free paths of `resolve` and `under` against their plain
    /// definitions, over every path of up to four segments
    /// drawn from the segments that matter.
    #[test]
    fn resolve_and_under_agree_with_their_definitions() {
        fn under_plainly(path: &str, prefix: &str) -> bool {
            let prefix = prefix.trim_end_matches('/');
            prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/"))
        }
        let segs = ["", ".", "..", "srv", "data", "data2", "...", ".x", "a\0"];
        let mut paths = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for p in &paths {
                for s in segs {
                    next.push(format!("{p}/{s}"));
                }
            }
            paths.extend(next);
        }
        paths.push("relative/path".into());
        let prefixes = ["/", "/srv", "/srv/", "/srv/data", "/srv/data/", "/srv/dat"];
        for p in &paths {
            let fast = resolve(p);
            assert_eq!(fast.as_deref(), resolve_by_segments(p).as_deref(), "{p:?}");
            for prefix in prefixes {
                if let Some(r) = &fast {
                    assert_eq!(
                        under(r, prefix),
                        under_plainly(r, prefix),
                        "{r:?} {prefix:?}"
                    );
                }
            }
        }
    }

    /// Patterns and texts where `regex`'s ASCII mode and regex-lite could
    /// disagree: Unicode whitespace and case folding, multi-byte text
    /// under `.` and negated classes, word boundaries next to non-ASCII.
    #[test]
    fn patterns_mean_what_regex_lite_means() {
        let patterns = [
            r"(?i)drop\s+table",
            r"^https://[a-z.]+\.example\.com/",
            r"(?i)k",
            r"(?i)s",
            r"(?i)é",
            r"\bword\b",
            r"\w+",
            r"^\d{3}$",
            r"^.$",
            r"^[^a]$",
            r"a\Sb",
            r"\x{e9}",
            r"[é-ü]",
            r"(?u:.)x",
            r"(?u)\s",
            r"é",
            r"(?x) d r o p",
            r"^$",
            // regex-lite folds one part of a range spanning both cases,
            // also one it merged from a class's items.
            r"(?i)[Z-a]",
            r"(?i)[Z-\x60a]",
            r"(?i)[XYZ\[\\\]^_`a]",
            r"(?i)[B-`a]",
            r"(?i)[[:xdigit:][:upper:][:punct:]]",
            r"(?i)[\x41Z[:punct:]]",
            // A `u` flag the pattern's text hides: (?x) skips the space.
            r"(?x)( ?u)[^\w\x00-\x{E8}\x{EA}-\x{10FFFF}]|zz",
            r"(?x)( ?u)(?i)[^k\x00-\x{2129}\x{212B}-\x{10FFFF}]|zz",
        ];
        let texts = [
            "drop table",
            "DROP\tTABLE",
            "drop\u{a0}table",
            "drop\u{2003}table",
            "\u{212a}",
            "K",
            "\u{17f}",
            "S",
            "é",
            "É",
            "éwordé",
            "a word",
            "١٢٣",
            "123",
            "x",
            "ü",
            "a\u{a0}b",
            "aéb",
            "éx",
            "",
            "https://api.example.com/x",
            "https://évil.example.com/",
            "z",
            "Z",
            "a",
            "k",
            "s",
        ];
        for p in patterns {
            let ours = Pattern::new(p).unwrap();
            let lite = regex_lite::Regex::new(p).unwrap();
            for t in texts {
                // Both engines on the same text: padded past LONG_TEXT with
                // a newline (so `^`, `$` and `.` see a line end) or not.
                let long = format!("{t}\n{}", "-".repeat(LONG_TEXT));
                for t in [t, long.as_str()] {
                    assert_eq!(ours.is_match(t), lite.is_match(t), "{p:?} on {t:?}");
                }
            }
        }
    }

    /// The fast engine is the one that serves the usual patterns; a
    /// pattern only regex-lite reads the same way stays with it.
    #[test]
    fn common_patterns_get_the_dfa() {
        let dfa = |p: &str| Pattern::new(p).unwrap().dfa().is_some();
        assert!(dfa(r"(?i)drop\s+table"));
        assert!(dfa(r"^https://[a-z.]+\.example\.com/"));
        assert!(!dfa(r"^.$"));
        assert!(!dfa(r"[^a]"));
        assert!(!dfa(r"(?u)\s"));
        assert!(!dfa(r"(?iu:k)"));
        assert!(!dfa(r"a(?i-u:b)"));
        assert!(dfa(r"(?i)k"));
        assert!(dfa(r"(?:ab)+"));
        assert!(dfa(r"(?i)[A-Za-z]"));
        // The flag group's `(` and `?` apart, as (?x) allows.
        assert!(!dfa(r"(?x)( ?u)k"));
        assert!(!dfa("(?x)(\n?u)k"));
        assert!(!dfa("(?x)(#c\n?u)k"));
        assert!(!dfa(r"(?i)[Z-a]"));
        assert!(!dfa(r"[A-z]"));
        // Items that regex-lite merges into a range from Z to a.
        assert!(!dfa(r"(?i)[XYZ\[\\\]^_`a]"));
        assert!(!dfa(r"(?i)[[:xdigit:][:upper:][:punct:]]"));
        assert!(!dfa(r"(?i)[\x41Z[:punct:]]"));
        assert!(dfa(r"(?i)^[a-z0-9_]+$"));
        assert!(dfa(r"(?i)[[:upper:][:punct:]]"));
    }

    /// Short texts stay with regex-lite until it has scanned what the
    /// DFA's compile costs; then the DFA serves them, with the same answers.
    #[test]
    fn a_warm_pattern_moves_to_the_dfa() {
        let p = Pattern::new(r"(?i)drop\s+table").unwrap();
        // "drop" passes the prefilter, so regex-lite searches it.
        let (clean, bad) = (
            "Drop the quick brown fox over the lazy dog",
            "x; DROP\tTable y",
        );
        for _ in 0..(LONG_TEXT / clean.len()) {
            assert!(p.dfa.get().is_none());
            assert!(!p.is_match(clean));
        }
        assert!(!p.is_match(clean));
        assert!(p.dfa.get().is_some_and(Option::is_some));
        assert!(p.is_match(bad));
        assert!(!p.is_match(clean));
    }

    /// The word-at-a-time scan finds what a byte-by-byte one does, on
    /// texts of every length around the word size, with bytes that test
    /// the zero-byte trick's borrows (0x00, 0x01, 0x80, 0xFF) and both
    /// cases of letters, for literals that start with a letter or not.
    #[test]
    fn the_word_scan_agrees_with_a_byte_scan() {
        fn naive(text: &[u8], lower: &[u8]) -> bool {
            lower.is_empty()
                || text
                    .windows(lower.len())
                    .any(|w| w.eq_ignore_ascii_case(lower))
        }
        let alphabet = b"dDrRoOpP\x00\x01\x80\xff ;_";
        let literals: [&[u8]; 6] = [b"drop", b"d", b"dr", b";dr", b"\x01o", b"\xffd"];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const TEXTS: usize = 200_000;
        let mut found_each = [0usize; 6];
        for _ in 0..TEXTS {
            let len = (next() % 40) as usize;
            let text: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            for (n, lower) in literals.into_iter().enumerate() {
                let want = naive(&text, lower);
                assert_eq!(contains_folded(&text, lower), want, "{text:?} {lower:?}");
                found_each[n] += usize::from(want);
            }
        }
        // Both answers are common, so both were checked, and every
        // literal was found (`drop` too: four bytes to compare after the
        // flagged one).
        let found: usize = found_each.iter().sum();
        let checked = TEXTS * literals.len();
        assert!(
            found > 100_000 && checked - found > 100_000,
            "{found} of {checked}"
        );
        assert!(found_each.iter().all(|&n| n > 100), "{found_each:?}");
    }

    /// The literals a match must contain, for the patterns the prefilter
    /// serves, and none where it cannot be sure.
    #[test]
    fn prefilters_are_sound_literals() {
        let lits = |p: &str| {
            Pattern::new(p).unwrap().required.map(|r| {
                r.literals
                    .into_iter()
                    .map(|l| String::from_utf8(l).unwrap())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(lits(r"(?i)drop\s+table").unwrap(), ["drop"]);
        assert_eq!(lits(r"^https://[a-z.]+\.example\.com/").unwrap(), ["http"]);
        assert_eq!(lits(r"\bword\b").unwrap(), ["word"]);
        assert_eq!(lits(r"foo|BAR").unwrap(), ["bar", "foo"]);
        assert_eq!(lits(r"a*b").unwrap(), ["a", "b"]);
        assert_eq!(lits(r"(?i)dr\s+t").unwrap(), ["dr"]);
        assert_eq!(lits(r"é").unwrap(), ["é"]);
        // A braced escape is the code point in both readings; `\xE9` below
        // is a byte to `regex` in ASCII mode.
        assert_eq!(lits(r"\x{e9}").unwrap(), ["é"]);
        // An empty match, any character first, too many literals.
        for none in [r"^$", r"a*", r".x", r"\w+", r"[a-f]x", r"a|b|c|d|e"] {
            assert_eq!(lits(none), None, "{none:?}");
        }
        // What only regex-lite reads that way: Unicode on, a byte escape.
        for lite_only in [
            r"(?x)( ?u)drop",
            r"(?i)[Z-a]x",
            r"(?u)drop",
            r"(?iu:k)x",
            r"\xE9",
            r"a(?i-u:b)",
            r"[éü]x",
            r"[^a]x",
        ] {
            assert_eq!(lits(lite_only), None, "{lite_only:?}");
        }
    }

    /// A text without the literal is answered without either engine: a
    /// warm instance whose arguments never come near a match neither
    /// scans nor compiles the DFA.
    #[test]
    fn a_text_without_the_literal_is_not_searched() {
        let p = Pattern::new(r"(?i)drop\s+table").unwrap();
        for _ in 0..(4 * LONG_TEXT) {
            assert!(!p.is_match("The quick brown fox jumps over the lazy dog"));
        }
        assert_eq!(p.scanned.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert!(p.dfa.get().is_none());
        assert!(p.is_match("1; dRoP \t TaBlE users"));
        assert!(!p.is_match("dropped tables"));
    }

    /// Against regex-lite on every text of a small alphabet up to length
    /// six, for patterns the prefilter serves: the prefilter may only
    /// skip a search that would have found nothing.
    #[test]
    fn prefiltered_patterns_agree_with_regex_lite_everywhere() {
        let patterns = [
            r"(?i)dr\s+t",
            r"(?i)ab|Cd",
            r"^aé",
            r"(?i)\bab\b",
            r"a[bc]d",
            r"(?i)ab(?-i)C",
            r"\x{e9}A",
            r"éx|üx",
        ];
        let alphabet = [
            'a', 'A', 'b', 'B', 'c', 'C', 'd', 'D', 'r', 'R', 't', ' ', '\t', 'é', 'ü', 'x',
            '\u{a0}',
        ];
        let mut texts = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..6 {
            last = last
                .iter()
                .flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}")))
                .collect();
            // Every text up to three characters, a sample beyond.
            let keep = if texts.len() < 4000 { 1 } else { 97 };
            texts.extend(last.iter().step_by(keep).cloned());
        }
        for p in patterns {
            let ours = Pattern::new(p).unwrap();
            assert!(ours.required.is_some(), "{p:?} has no prefilter");
            let lite = regex_lite::Regex::new(p).unwrap();
            for t in &texts {
                assert_eq!(ours.is_match(t), lite.is_match(t), "{p:?} on {t:?}");
            }
        }
    }

    #[test]
    fn a_long_argument_is_checked_whole() {
        let h = h();
        let mut long = "x".repeat(100_000);
        h.request(&call("echo", json!({"query": long.clone()})))
            .assert_denied("more than 12");
        long.push_str(" drop  table");
        let only_regex = Harness::<ArgGuard>::new(
            &json!({"constraints": [{"tools": ["*"], "pointer": "/q", "deny_regex": "(?i)drop\\s+table"}]})
                .to_string(),
        )
        .unwrap();
        only_regex
            .request(&call("echo", json!({"q": long})))
            .assert_denied("denied pattern");
    }

    #[test]
    fn bad_configs_are_refused() {
        let bad = |c: Value| Harness::<ArgGuard>::new(&c.to_string()).err().unwrap();
        assert!(
            bad(json!({"constraints": [{"tools": ["*"], "pointer": "x"}]}))
                .contains("must start with")
        );
        assert!(bad(
            json!({"constraints": [{"tools": ["*"], "pointer": "/x", "deny_regex": "("}]})
        )
        .contains("bad regex"));
        assert!(bad(
            json!({"constraints": [{"tools": ["*"], "pointer": "/x", "path_prefix": "rel"}]})
        )
        .contains("absolute"));
    }
}
