//! Strict JSON validation that closes parser differentials.
//!
//! serde_json keeps the *last* value of a duplicated key, other parsers keep
//! the first, and Go's `encoding/json` matches keys case-insensitively. A
//! body such as `{"name":"read","name":"delete"}` could therefore be
//! authorized as one tool and executed as another. Portcullis forwards the
//! exact bytes it authorized, so it only has to make sure that every parser
//! reads those bytes the same way: duplicate keys are refused everywhere, and
//! keys that differ only by case (Unicode simple folding, as Go does) are
//! refused in the JSON-RPC envelope and its `params`, where routing
//! decisions are made. Control characters are refused in every object key:
//! C-string parsers and loggers read `"name\u0000x"` as `name`. Keys
//! under serde_json's reserved prefix (`$serde_json::private::`) are
//! refused at every depth: with its `raw_value` feature (which this
//! workspace, and so every filter built with the SDK, has) a
//! `serde_json::Value` reads `{"$serde_json::private::RawValue":"{\"m\":1}"}`
//! as `{"m":1}`, while a server reads the object as written.
//!
//! Upstream answers that Portcullis filters get a stricter reading
//! ([`validate_answer`]): integers that no common client reads exactly are
//! refused too, because what a policy judges there (an id, a tool's
//! annotations) must read the same everywhere. (The keys a filter reads
//! deeper down are checked by spelling in [`super::answer`].)

use std::{borrow::Cow, collections::HashSet, fmt};

use serde::{
    de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor},
    Deserialize,
};
use smallvec::SmallVec;

use super::fold::fold_key;

/// Why a body was refused by the strict validator.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JsonError {
    #[error("malformed JSON: {0}")]
    Malformed(String),
    #[error("duplicate key {0:?}")]
    DuplicateKey(String),
    #[error("JSON nesting deeper than {0} levels")]
    TooDeep(usize),
    #[error("control character in object key {0:?}")]
    ControlInKey(String),
    #[error("body is not UTF-8 JSON: {0}")]
    Encoding(&'static str),
    #[error("integer {0} cannot be read exactly by common clients")]
    HugeNumber(String),
    #[error("key {0:?} is reserved: serde_json reads such an object as something else")]
    ReservedKey(String),
}

/// How many object levels are checked for case-variant keys: the envelope
/// and its `params` or `result` (array levels, as in a batch, do not count).
/// Deeper down, only the keys Portcullis reads are checked, by spelling, in
/// [`super::answer`].
const FOLD_LEVELS: u8 = 2;

/// Checks that `bytes` is a single well-formed JSON value with no duplicate
/// keys and no nesting deeper than `max_depth`.
pub fn validate(bytes: &[u8], max_depth: usize) -> Result<(), JsonError> {
    check(bytes, max_depth)
}

/// The stricter reading for an upstream answer Portcullis must filter or
/// inspect: everything [`validate`] refuses, plus integers outside the
/// 64-bit range (which serde_json, Go and JavaScript each round their own
/// way, so a policy and a client would read different numbers).
pub fn validate_answer(bytes: &[u8], max_depth: usize) -> Result<(), JsonError> {
    check(bytes, max_depth)?;
    check_integers(bytes)
}

/// The same checks for JSON that is not an MCP message (a token's header
/// and claims): keys are compared as written, at every level, because no
/// envelope member's spelling is special there.
pub fn validate_document(bytes: &[u8], max_depth: usize) -> Result<(), JsonError> {
    check_folding(bytes, max_depth, 0)
}

fn check(bytes: &[u8], max_depth: usize) -> Result<(), JsonError> {
    check_folding(bytes, max_depth, FOLD_LEVELS)
}

fn check_folding(bytes: &[u8], max_depth: usize, fold_case_levels: u8) -> Result<(), JsonError> {
    check_encoding(bytes)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // Our own depth limit applies below serde_json's fixed one (128), which
    // is why the config caps the setting at 128.
    let state = Strict {
        depth_left: max_depth,
        fold_case_levels,
    };
    let res = state.deserialize(&mut de).and_then(|()| de.end());
    res.map_err(|e| classify(e, max_depth))
}

/// Names the encodings serde_json would only call "malformed": a client
/// that sniffs a BOM or UTF-16 could read such a body where we cannot.
fn check_encoding(bytes: &[u8]) -> Result<(), JsonError> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        return Err(JsonError::Encoding("UTF-8 byte order mark"));
    }
    if bytes.starts_with(b"\xFE\xFF") || bytes.starts_with(b"\xFF\xFE") {
        return Err(JsonError::Encoding("UTF-16 byte order mark"));
    }
    // JSON text starts with ASCII; UTF-16/32 put NUL bytes beside it.
    if bytes.iter().take(4).any(|b| *b == 0) {
        return Err(JsonError::Encoding("UTF-16 or UTF-32 text"));
    }
    Ok(())
}

/// Refuses integer literals outside the i64/u64 range. serde_json would
/// read them as a rounded float, and a client as another number (or
/// exactly). Runs on text already known to be well-formed JSON.
fn check_integers(bytes: &[u8]) -> Result<(), JsonError> {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => i = skip_string(bytes, i + 1),
            b'-' | b'0'..=b'9' => {
                let end = bytes[i..]
                    .iter()
                    .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                    .map_or(bytes.len(), |n| i + n);
                let token = &bytes[i..end];
                let integer = !token.iter().any(|b| matches!(b, b'.' | b'e' | b'E'));
                let text = String::from_utf8_lossy(token);
                if integer && text.parse::<i64>().is_err() && text.parse::<u64>().is_err() {
                    return Err(JsonError::HugeNumber(text.into_owned()));
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// The index just past the closing quote of a string starting at `i`.
fn skip_string(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// C0 controls, DEL and C1 controls: none belongs in a key or a name.
pub fn is_control(c: char) -> bool {
    c.is_control()
}

fn classify(e: serde_json::Error, max_depth: usize) -> JsonError {
    let msg = e.to_string();
    if let Some(key) = msg.strip_prefix(DUP_PREFIX) {
        let key = key.split(SEP).next().unwrap_or_default();
        return JsonError::DuplicateKey(key.to_string());
    }
    if let Some(key) = msg.strip_prefix(RESERVED_PREFIX) {
        let key = key.split(SEP).next().unwrap_or_default();
        return JsonError::ReservedKey(key.to_string());
    }
    if let Some(key) = msg.strip_prefix(CONTROL_PREFIX) {
        let key = key.split(SEP).next().unwrap_or_default();
        return JsonError::ControlInKey(key.to_string());
    }
    if msg.starts_with(DEPTH_MSG) || msg.starts_with("recursion limit exceeded") {
        return JsonError::TooDeep(max_depth);
    }
    JsonError::Malformed(msg)
}

const DUP_PREFIX: &str = "portcullis-duplicate-key:";
const CONTROL_PREFIX: &str = "portcullis-control-in-key:";
const RESERVED_PREFIX: &str = "portcullis-reserved-key:";
/// serde_json's own types (`RawValue`, `Number` with `arbitrary_precision`)
/// recognise an object by a first key under this prefix.
use portcullis_policy_sdk::SERDE_JSON_RESERVED_PREFIX as SERDE_RESERVED;
// A key with a NUL is refused before it could be mistaken for this
// separator.
const SEP: char = '\u{0}';
const DEPTH_MSG: &str = "portcullis-too-deep";

#[derive(Clone, Copy)]
struct Strict {
    depth_left: usize,
    /// How many more object levels must also be free of keys that collide
    /// after Unicode simple case folding.
    fold_case_levels: u8,
}

impl Strict {
    fn nested(self) -> Result<Self, String> {
        match self.depth_left.checked_sub(1) {
            Some(depth_left) => Ok(Self {
                depth_left,
                fold_case_levels: self.fold_case_levels.saturating_sub(1),
            }),
            None => Err(DEPTH_MSG.to_string()),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.nested().map_err(de::Error::custom)?;
        // Array elements keep the envelope's case-folding rule: a batch's
        // entries are envelopes too.
        let inner = Strict {
            depth_left: inner.depth_left,
            fold_case_levels: self.fold_case_levels,
        };
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.nested().map_err(de::Error::custom)?;
        let mut seen = Seen::default();
        while let Some(Key(key)) = map.next_key()? {
            if key.chars().any(is_control) {
                let shown = key.replace(SEP, "\\u0000");
                return Err(de::Error::custom(format!("{CONTROL_PREFIX}{shown}{SEP}")));
            }
            if key.starts_with(SERDE_RESERVED) {
                return Err(de::Error::custom(format!("{RESERVED_PREFIX}{key}{SEP}")));
            }
            let norm = match (&key, self.fold_case_levels > 0) {
                (Cow::Borrowed(key), true) => fold_key(key),
                (Cow::Owned(key), true) => Cow::Owned(fold_key(key).into_owned()),
                (_, false) => key.clone(),
            };
            if !seen.insert(norm) {
                return Err(de::Error::custom(format!("{DUP_PREFIX}{key}{SEP}")));
            }
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// A member name, borrowed from the body unless it has escapes (serde
/// reads a bare `Cow<str>` as an owned copy).
#[derive(Deserialize)]
pub(crate) struct Key<'a>(#[serde(borrow)] pub(crate) Cow<'a, str>);

/// The member names of one object seen so far. Objects are small, and
/// comparing a name with the few before it costs less than hashing it (and
/// the names stay borrowed from the body); past `FEW` names, a hash set
/// keeps an object with thousands of members linear.
enum Seen<'a> {
    Few(SmallVec<[Cow<'a, str>; 8]>),
    Many(HashSet<Cow<'a, str>>),
}

const FEW: usize = 16;

impl Default for Seen<'_> {
    fn default() -> Self {
        Self::Few(SmallVec::new())
    }
}

impl<'a> Seen<'a> {
    /// Whether `name` is new (it is then kept).
    fn insert(&mut self, name: Cow<'a, str>) -> bool {
        match self {
            Self::Few(names) if names.contains(&name) => false,
            Self::Few(names) if names.len() < FEW => {
                names.push(name);
                true
            }
            Self::Few(names) => {
                let mut set: HashSet<_> = names.drain(..).collect();
                set.insert(name);
                *self = Self::Many(set);
                true
            }
            Self::Many(set) => set.insert(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_json() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"a":[1,2,{"b":null}]}}}"#;
        assert_eq!(validate(body, 64), Ok(()));
    }

    /// Names are compared one by one in a small object and through a hash
    /// set past `FEW` members: a repeat is found either way, and the
    /// first of a pair may be on either side of the switch.
    #[test]
    fn a_repeated_name_is_found_in_small_and_large_objects() {
        let object = |names: &[String]| {
            let members: Vec<String> = names.iter().map(|n| format!("\"{n}\":1")).collect();
            format!(r#"{{"params":{{"arguments":{{{}}}}}}}"#, members.join(","))
        };
        let names = |n: usize| (0..n).map(|i| format!("k{i}")).collect::<Vec<_>>();
        for n in [1, FEW - 1, FEW, FEW + 1, 200] {
            assert_eq!(
                validate(object(&names(n)).as_bytes(), 64),
                Ok(()),
                "{n} names"
            );
        }
        for (n, first) in [
            (3, 1),
            (FEW, 0),
            (FEW + 1, FEW - 1),
            (FEW + 3, FEW),
            (FEW + 5, FEW + 2),
            (200, 3),
        ] {
            let mut with_repeat = names(n);
            with_repeat.push(format!("k{first}"));
            assert_eq!(
                validate(object(&with_repeat).as_bytes(), 64),
                Err(JsonError::DuplicateKey(format!("k{first}"))),
                "{n} names, then k{first} again"
            );
        }
        // An escaped spelling of a name is the same name.
        let escaped = br#"{"params":{"arguments":{"path":1,"p\u0061th":2}}}"#;
        assert_eq!(
            validate(escaped, 64),
            Err(JsonError::DuplicateKey("path".into()))
        );
    }

    #[test]
    fn rejects_duplicate_nested_key() {
        let body = br#"{"method":"tools/call","params":{"name":"read","name":"delete"}}"#;
        assert_eq!(
            validate(body, 64),
            Err(JsonError::DuplicateKey("name".into()))
        );
    }

    #[test]
    fn rejects_duplicate_deep_in_arguments() {
        let body = br#"{"params":{"arguments":{"x":{"path":"/a","path":"/b"}}}}"#;
        assert_eq!(
            validate(body, 64),
            Err(JsonError::DuplicateKey("path".into()))
        );
    }

    #[test]
    fn rejects_escaped_duplicate() {
        // "na\u006de" decodes to "name": a byte-level check would miss it.
        let body = br#"{"params":{"name":"read","na\u006de":"delete"}}"#;
        assert_eq!(
            validate(body, 64),
            Err(JsonError::DuplicateKey("name".into()))
        );
    }

    #[test]
    fn rejects_case_folded_duplicate_in_envelope_only() {
        let body = br#"{"params":{"name":"read","Name":"delete"}}"#;
        assert_eq!(
            validate(body, 64),
            Err(JsonError::DuplicateKey("Name".into()))
        );
        let deep = br#"{"params":{"arguments":{"x":{"Path":"/a","path":"/b"}}}}"#;
        assert_eq!(validate(deep, 64), Ok(()));
    }

    #[test]
    fn rejects_duplicates_inside_batches() {
        let body = br#"[{"id":1,"method":"ping"},{"id":2,"method":"a","METHOD":"b"}]"#;
        assert_eq!(
            validate(body, 64),
            Err(JsonError::DuplicateKey("METHOD".into()))
        );
    }

    #[test]
    fn enforces_depth_limit() {
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert_eq!(validate(deep.as_bytes(), 64), Ok(()));
        assert_eq!(validate(deep.as_bytes(), 10), Err(JsonError::TooDeep(10)));
    }

    #[test]
    fn refuses_serde_json_reserved_keys_at_any_depth() {
        // The premise: a `Value` (raw_value feature) reads the object as
        // the string's contents, not as the member a server sees.
        let value: serde_json::Value =
            serde_json::from_str(r#"{"o":{"$serde_json::private::RawValue":"{\"m\":1}"}}"#)
                .unwrap();
        assert_eq!(value.to_string(), r#"{"o":{"m":1}}"#);
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"w","arguments":{"o":{"$serde_json::private::RawValue":"{\"m\":1}"}}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"w","arguments":{"o":[{"a":1,"\u0024serde_json::private::RawValue":"1"}]}}}"#,
            r#"{"$serde_json::private::Number":"1"}"#,
        ] {
            for res in [
                validate(body.as_bytes(), 32),
                validate_answer(body.as_bytes(), 32),
            ] {
                assert!(
                    matches!(res, Err(JsonError::ReservedKey(_))),
                    "{body}: {res:?}"
                );
            }
        }
        // A key that only mentions serde_json is an ordinary key.
        assert!(validate(
            br#"{"serde_json::private::x":1,"a$serde_json::private::":2}"#,
            8
        )
        .is_ok());
    }

    #[test]
    fn rejects_trailing_garbage_and_bad_utf8() {
        assert!(matches!(
            validate(br#"{"a":1} x"#, 8),
            Err(JsonError::Malformed(_))
        ));
        assert!(matches!(
            validate(b"{\"a\":\"\xff\"}", 8),
            Err(JsonError::Malformed(_))
        ));
        assert!(matches!(
            validate(br#"{"a":"\ud800"}"#, 8),
            Err(JsonError::Malformed(_))
        ));
        assert!(matches!(validate(b"", 8), Err(JsonError::Malformed(_))));
    }
}
