//! Unicode simple case folding, as loose as Go's `encoding/json`.
//!
//! Go matches an object key to a struct field by `bytes.EqualFold`-style
//! folding: two keys are the same if every rune of one is in the simple
//! case-fold orbit of the matching rune of the other. That is wider than
//! ASCII: `ſ` (U+017F) matches `s`, the Kelvin sign (U+212A) matches `k`,
//! `ẞ` matches `ß`. A key that Portcullis reads as unknown but a Go server
//! reads as `params` would let a call through unchecked, so the strict
//! validator compares keys under [`fold_key`].
//!
//! No crate on hand gives simple (not full) folding without new
//! dependencies: `caseless` does *full* folding (`ß` → `ss`), a different
//! equivalence. The table is therefore built once from the standard
//! library's own case mappings: every character is joined to its
//! single-character lowercase and uppercase forms, the joined sets are the
//! orbits, and each orbit is named by its smallest member. Where the
//! standard library only has a multi-character mapping, Unicode's simple
//! foldings (`S` lines of CaseFolding.txt) that it cannot show are added by
//! hand. The result folds at least everything Go folds; it also joins a few
//! characters Go keeps apart (dotless `ı` with `i`), which can only refuse
//! more, never let more through.

use std::{borrow::Cow, collections::HashMap, sync::OnceLock};

/// Simple foldings whose two sides the standard library cannot link,
/// because both only have multi-character full mappings.
const EXTRA_ORBITS: [(char, char); 3] = [
    ('\u{1FD3}', '\u{0390}'),
    ('\u{1FE3}', '\u{03B0}'),
    ('\u{FB05}', '\u{FB06}'),
];

/// The end of the scan for case mappings: the end of plane 1.
const LAST_CASED: u32 = 0x1_FFFF;

/// The key as a string in which case variants of it are all equal;
/// borrowed when it is that already, as the keys of a message mostly are.
pub fn fold_key(key: &str) -> Cow<'_, str> {
    if key.is_ascii() {
        return match key.bytes().any(|b| b.is_ascii_uppercase()) {
            true => Cow::Owned(key.to_ascii_lowercase()),
            false => Cow::Borrowed(key),
        };
    }
    match key.chars().all(|c| fold_char(c) == c) {
        true => Cow::Borrowed(key),
        false => Cow::Owned(key.chars().map(fold_char).collect()),
    }
}

/// Whether JSON `text` may hold a string (a member name, or a value) that
/// a client reads as one of `names` (ASCII), in any case. Exact when it
/// says no: ASCII text without a backslash has no escape and no character
/// that folds onto an ASCII letter (`ſ`, the Kelvin sign), so a string is
/// its bytes and folds by ASCII case only, and no name appears in the
/// text in any case. Most answers are such text, and need not be read.
pub fn may_spell(text: &str, names: &[&str]) -> bool {
    let bytes = text.as_bytes();
    if !text.is_ascii() || memchr::memchr(b'\\', bytes).is_some() {
        return true;
    }
    names.iter().any(|name| {
        let Some(&first) = name.as_bytes().first() else {
            return true;
        };
        let (lower, upper) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
        memchr::memchr2_iter(lower, upper, bytes).any(|at| {
            bytes
                .get(at..at + name.len())
                .is_some_and(|r| r.eq_ignore_ascii_case(name.as_bytes()))
        })
    })
}

/// Whether `a` and `b` fold to the same key, without building either.
fn same_folded(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.chars().map(fold_char).eq(b.chars().map(fold_char))
}

/// The entry of `known` that `key` is a case variant of without being
/// spelled like it, if any (`Result` for `result`, `toolſ` for `tools`).
/// Every message's every key is checked, so this allocates nothing. No two
/// entries of `known` are variants of each other, so a key spelled like
/// one of them is a variant of none.
pub fn variant_of<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    debug_assert!(
        known
            .iter()
            .all(|a| known.iter().all(|b| a == b || !same_folded(a, b))),
        "two known keys fold alike: {known:?}"
    );
    if known.contains(&key) {
        return None;
    }
    known.iter().find(|k| same_folded(k, key)).copied()
}

/// The canonical member of `c`'s orbit.
pub fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    table().get(&c).copied().unwrap_or(c)
}

/// Non-ASCII characters whose canonical member is not themselves.
fn table() -> &'static HashMap<char, char> {
    static TABLE: OnceLock<HashMap<char, char>> = OnceLock::new();
    TABLE.get_or_init(build)
}

fn build() -> HashMap<char, char> {
    let mut orbits = Orbits::default();
    // No character above plane 1 has a case mapping (planes 2 and up hold
    // ideographs, tags and private use), so the scan stops there.
    for c in (0..=LAST_CASED).filter_map(char::from_u32) {
        if let Some(l) = single(c.to_lowercase()) {
            orbits.join(c, l);
        }
        if let Some(u) = single(c.to_uppercase()) {
            orbits.join(c, u);
        }
    }
    for (a, b) in EXTRA_ORBITS {
        orbits.join(a, b);
    }
    orbits.canonical()
}

fn single(mut it: impl Iterator<Item = char>) -> Option<char> {
    let first = it.next()?;
    it.next().is_none().then_some(first)
}

/// A small union-find over the characters that have case mappings.
#[derive(Default)]
struct Orbits {
    parent: HashMap<char, char>,
}

impl Orbits {
    fn root(&mut self, c: char) -> char {
        let mut r = c;
        while let Some(&p) = self.parent.get(&r) {
            if p == r {
                break;
            }
            r = p;
        }
        // Path compression keeps later look-ups short.
        let mut x = c;
        while x != r {
            let next = self.parent.get(&x).copied().unwrap_or(r);
            self.parent.insert(x, r);
            x = next;
        }
        r
    }

    fn join(&mut self, a: char, b: char) {
        if a == b {
            return;
        }
        let (ra, rb) = (self.root(a), self.root(b));
        // The smaller root wins, so a root is always its orbit's minimum.
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent.insert(lo, lo);
        self.parent.insert(hi, lo);
    }

    fn canonical(mut self) -> HashMap<char, char> {
        let members: Vec<char> = self.parent.keys().copied().collect();
        let mut out = HashMap::new();
        for c in members {
            let r = self.root(c);
            let canon = if r.is_ascii() {
                r.to_ascii_lowercase()
            } else {
                r
            };
            if canon != c && !c.is_ascii() {
                out.insert(c, canon);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Orbits that Go's `unicode.SimpleFold` walks (from its documentation
    /// and tests, and CaseFolding.txt `C`/`S` lines).
    const GO_ORBITS: &[&str] = &[
        "Ssſ",
        "KkK",
        "Åå\u{212B}",
        "ΩωΩ",
        "ẞß",
        "ΣσςΣ",
        "ΘθϑϴΘ",
        "Μμµ",
        "Ιι\u{0345}\u{1FBE}",
        "ΒβϐΒ",
        "ΕεϵΕ",
        "ΚκϰΚ",
        "ΠπϖΠ",
        "ΡρϱΡ",
        "ΦφϕΦ",
        "ǄǅǆǄ",
        "ǇǈǉǇ",
        "ǱǲǳǱ",
        "Ṡṡẛ",
        "\u{0390}\u{1FD3}",
        "\u{03B0}\u{1FE3}",
        "\u{FB05}\u{FB06}",
        "\u{13A0}\u{AB70}",
        "\u{1F80}\u{1F88}",
        "\u{1FB3}\u{1FBC}",
        "Вв\u{1C80}",
        "Ѣѣ\u{1C87}",
        "\u{10400}\u{10428}",
    ];

    #[test]
    fn every_go_orbit_folds_to_one_key() {
        for orbit in GO_ORBITS {
            let folded: Vec<char> = orbit.chars().map(fold_char).collect();
            assert!(
                folded.windows(2).all(|w| w[0] == w[1]),
                "{orbit:?} folds to {folded:?}"
            );
        }
    }

    #[test]
    fn distinct_letters_stay_distinct() {
        for (a, b) in [('s', 't'), ('k', 'x'), ('ß', 's'), ('İ', 'i'), ('é', 'e')] {
            assert_ne!(fold_char(a), fold_char(b), "{a} vs {b}");
        }
    }

    #[test]
    fn nothing_above_plane_one_has_a_case_mapping() {
        let cased = (LAST_CASED + 1..=char::MAX as u32)
            .filter_map(char::from_u32)
            .find(|c| c.to_lowercase().ne([*c]) || c.to_uppercase().ne([*c]));
        assert_eq!(cased, None);
    }

    #[test]
    fn text_that_may_spell_a_name_is_read() {
        let names = ["tools", "prompts", "resources", "resourceTemplates"];
        for name in names {
            assert!(may_spell(&format!(r#"{{"{name}":[]}}"#), &names), "{name}");
            let upper = name.to_uppercase();
            assert!(
                may_spell(&format!(r#"{{"{upper}":[]}}"#), &names),
                "{upper}"
            );
        }
        for text in [
            r#"{"content":[{"type":"text","text":"no list here"}]}"#,
            r#"{"x":"tool","y":"prompt","z":"resource"}"#,
        ] {
            assert!(!may_spell(text, &names), "{text}");
        }
        // An escape, or a character that folds onto an ASCII letter.
        for text in [
            r#"{"tool\u0073":[]}"#,
            r#"{"toolſ":[]}"#,
            r#"{"\u0074ools":[]}"#,
        ] {
            assert!(may_spell(text, &names), "{text}");
        }
        assert!(may_spell(r#"{"TaskId":"t"}"#, &["task"]));
        assert!(!may_spell(r#"{"content":[]}"#, &["task"]));
    }

    #[test]
    fn variants_are_found_but_exact_spellings_are_not() {
        let known = ["result", "tools"];
        assert_eq!(variant_of("Result", &known), Some("result"));
        assert_eq!(variant_of("toolſ", &known), Some("tools"));
        assert_eq!(variant_of("result", &known), None);
        assert_eq!(variant_of("other", &known), None);
    }

    #[test]
    fn keys_fold_per_character() {
        assert_eq!(fold_key("paramſ"), fold_key("PARAMS"));
        assert_eq!(fold_key("\u{212A}ind"), fold_key("kind"));
        assert_eq!(fold_key("toolſ"), "tools");
        assert_eq!(fold_key("Tools"), "tools");
        // A key that is its own fold is not copied.
        assert!(matches!(fold_key("tools"), Cow::Borrowed("tools")));
        assert_ne!(fold_key("tools"), fold_key("tool"));
    }
}
