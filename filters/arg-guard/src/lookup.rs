//! Finding one argument by JSON pointer without building the whole
//! arguments tree.
//!
//! A constraint reads one value, but parsing the arguments into a
//! `serde_json::Value` allocated every key and string of them, and
//! `Value::pointer` split and unescaped the pointer again on every call:
//! together most of a warm evaluation. Here the pointer is split once, when
//! the configuration is read, and the arguments are read as a stream:
//! every value off the pointer's path is read and dropped as it goes, and
//! only the value it points at is built.
//!
//! The meaning is `Value::pointer`'s, to the byte: the same unescaping
//! (`~1` then `~0`), the same array indices (no sign, no leading zero),
//! and for a key given twice the last one, as a `Value` map keeps it.
//! Values off the path are read by the same parser as a `Value` would be
//! (not `serde`'s `IgnoredAny`, whose fast skip takes `1e400` and lone
//! surrogate escapes that a `Value` refuses), so arguments a `Value`
//! cannot hold are an error here too. So is a member named with
//! serde_json's reserved prefix (`$serde_json::private::`): with the
//! `raw_value` feature a `Value` reads `{"$serde_json::private::RawValue":
//! "{\"m\":1}"}` as `{"m":1}`, a server reads it as written, and the two
//! readings must never both be possible.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// A JSON pointer, split into its reference tokens once.
#[derive(Debug, Clone)]
pub struct Pointer {
    text: String,
    /// `None` for a pointer that is neither empty nor starts with `/`:
    /// it points at nothing (the configuration check refuses it).
    tokens: Option<Vec<String>>,
}

impl Pointer {
    pub fn new(text: &str) -> Self {
        let tokens = if text.is_empty() {
            Some(Vec::new())
        } else if text.starts_with('/') {
            Some(
                text.split('/')
                    .skip(1)
                    .map(|t| t.replace("~1", "/").replace("~0", "~"))
                    .collect(),
            )
        } else {
            None
        };
        Self {
            text: text.to_string(),
            tokens,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value this pointer names in `arguments` (JSON text), if any.
    /// `Err` when the arguments are not JSON that `serde_json` reads as a
    /// `Value`: the filter then refuses the call rather than guess.
    pub fn find(&self, arguments: &str) -> Result<Option<Value>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(arguments);
        let found = match &self.tokens {
            Some(tokens) => Seek(tokens).deserialize(&mut de)?,
            None => {
                Skip.deserialize(&mut de)?;
                None
            }
        };
        de.end()?;
        Ok(found)
    }

    /// The value at this pointer in a whole tree, as `Value::pointer`.
    pub fn find_in<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        self.tokens
            .as_ref()?
            .iter()
            .try_fold(root, |target, token| match target {
                Value::Object(map) => map.get(token),
                Value::Array(list) => index(token).and_then(|i| list.get(i)),
                _ => None,
            })
    }

    /// The value at this pointer in a whole tree, as `Value::pointer_mut`.
    pub fn find_mut<'v>(&self, root: &'v mut Value) -> Option<&'v mut Value> {
        self.tokens
            .as_ref()?
            .iter()
            .try_fold(root, |target, token| match target {
                Value::Object(map) => map.get_mut(token),
                Value::Array(list) => index(token).and_then(|i| list.get_mut(i)),
                _ => None,
            })
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Pointer {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <String as serde::Deserialize>::deserialize(d).map(|s| Self::new(&s))
    }
}

/// An array index as `serde_json` reads one in a pointer.
fn index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

/// Reads one value, returning what `tokens` names inside it.
struct Seek<'t>(&'t [String]);

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = Option<Value>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match self.0.split_first() {
            None => d.deserialize_any(Build).map(Some),
            Some((token, rest)) => d.deserialize_any(Step { token, rest }),
        }
    }
}

/// One level of the path: `token` names a member or an element.
struct Step<'t> {
    token: &'t str,
    rest: &'t [String],
}

impl<'de> Visitor<'de> for Step<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is_token) = map.next_key_seed(KeyIs(self.token))? {
            if is_token {
                // A repeated key: the last one counts, as in a `Value`.
                found = map.next_value_seed(Seek(self.rest))?;
            } else {
                map.next_value_seed(Skip)?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let wanted = index(self.token);
        let mut found = None;
        let mut i = 0usize;
        loop {
            if Some(i) == wanted {
                match seq.next_element_seed(Seek(self.rest))? {
                    Some(v) => found = v,
                    None => break,
                }
            } else if seq.next_element_seed(Skip)?.is_none() {
                break;
            }
            i = i.saturating_add(1);
        }
        Ok(found)
    }

    // A scalar has no members: the pointer names nothing.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Builds the value pointed at as `Value`'s own `Deserialize` does (a
/// repeated key's last value, `f64` through `Number::from_f64`), except
/// that a reserved key is an error instead of an instruction.
struct Build;

impl<'de> DeserializeSeed<'de> for Build {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(Build)
    }
}

impl<'de> Visitor<'de> for Build {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key_seed(Key)? {
            let value = map.next_value_seed(Build)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Build)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// A member's key, refused if it is reserved.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<String, E> {
        reserved(key)?;
        Ok(key.to_string())
    }
}

fn reserved<E: de::Error>(key: &str) -> Result<(), E> {
    if key.starts_with(RESERVED) {
        return Err(E::custom(format!("key {key:?} is reserved by serde_json")));
    }
    Ok(())
}

/// Reads one value as a `Value` would, number ranges and escapes
/// included, and keeps nothing.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(KeyIs(""))?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

use portcullis_policy_sdk::SERDE_JSON_RESERVED_PREFIX as RESERVED;

/// Whether a member's key (after unescaping) is the token, without
/// keeping the key.
struct KeyIs<'t>(&'t str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        reserved(key)?;
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pointer and document here is read as `Value::pointer` reads
    /// it: the streaming reader must agree on all of them.
    #[test]
    fn finds_what_value_pointer_finds() {
        let docs = [
            r#"{"text":"hi","n":1}"#,
            r#"{"a":{"b":[10,{"c":"deep"},30]},"a~b":1,"a/b":2,"":3}"#,
            r#"{"k":1,"k":2}"#,
            r#"{"k":{"x":1},"k":"s"}"#,
            r#"[1,[2,3],{"0":"zero"}]"#,
            r#"{"te\u0078t":"escaped key","list":[]}"#,
            r#""just a string""#,
            r#"42"#,
            r#"null"#,
            r#"{"big":123456789012345678901234567890,"f":1.5e10,"t":true}"#,
        ];
        let pointers = [
            "", "/", "/text", "/n", "/a", "/a/b", "/a/b/0", "/a/b/1/c", "/a/b/3", "/a/b/01",
            "/a/b/+1", "/a/b/-1", "/a~0b", "/a~1b", "/k", "/k/x", "/0", "/1/1", "/2/0", "/text/0",
            "/list/0", "/big", "/f", "/t", "/missing", "x", "/t/x",
        ];
        for doc in docs {
            let tree: Value = serde_json::from_str(doc).unwrap();
            for p in pointers {
                let want = tree.pointer(p).cloned();
                let got = Pointer::new(p).find(doc).unwrap();
                assert_eq!(got, want, "pointer {p:?} in {doc}");
            }
        }
    }

    /// What `serde_json` would not read as a `Value` is an error, even
    /// off the pointer's path or after the value was found.
    #[test]
    fn unreadable_arguments_are_an_error() {
        for doc in [
            r#"{"text":"hi","x":1e400}"#,
            r#"{"x":1e400,"text":"hi"}"#,
            r#"{"text":"hi"} trailing"#,
            r#"{"text":"hi","#,
            r#"{"text":"hi","x":[1,]}"#,
            r#"{"text":"\ud800"}"#,
            r#"{"x":"\udc00","text":"hi"}"#,
            r#"{"x":"a\qb","text":"hi"}"#,
            // serde_json's reserved keys, on the path and off it.
            r#"{"text":{"$serde_json::private::RawValue":"\"hi\""}}"#,
            r#"{"x":{"$serde_json::private::RawValue":"{}"},"text":"hi"}"#,
            r#"{"text":"hi","x":[{"$serde_json::private::Number":"1"}]}"#,
            "{\"x\":\"\u{1}\",\"text\":\"hi\"}",
            "",
        ] {
            assert!(Pointer::new("/text").find(doc).is_err(), "{doc}");
            // A `Value` refuses them too, or reads them as something else.
            let reserved = doc.contains(RESERVED);
            assert!(
                reserved || serde_json::from_str::<Value>(doc).is_err(),
                "{doc}"
            );
        }
    }

    #[test]
    fn find_mut_names_the_same_value() {
        let mut tree: Value = serde_json::from_str(r#"{"a":[{"b":1}],"c/d":2}"#).unwrap();
        *Pointer::new("/a/0/b").find_mut(&mut tree).unwrap() = Value::from(5);
        *Pointer::new("/c~1d").find_mut(&mut tree).unwrap() = Value::from(6);
        assert_eq!(tree.to_string(), r#"{"a":[{"b":5}],"c/d":6}"#);
        assert!(Pointer::new("/a/01").find_mut(&mut tree).is_none());
        assert!(Pointer::new("a").find_mut(&mut tree).is_none());
    }
}
