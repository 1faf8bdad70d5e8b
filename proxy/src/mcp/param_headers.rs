//! `Mcp-Param-*` headers (2026-07-28, SEP-2243), and the check that they
//! agree with the arguments of a `tools/call`.
//!
//! A tool's `inputSchema` may mark a top-level property with
//! `"x-mcp-header": "Region"`; a client calling that tool then mirrors the
//! argument in `Mcp-Param-Region`, so that a load balancer can route on it
//! without reading the body. The policy judges the body, so a header that
//! says something else is a parser differential: one component would act
//! on one value and another on a different one. Hence:
//!
//! - a header whose value differs from its argument is refused;
//! - a header given while its argument is absent or `null` is refused;
//! - a header the tool does not declare (or any `Mcp-Param-*` on a message
//!   that is not `tools/call`) is refused;
//! - in the 2026-07-28 era, a declared header that is missing while its
//!   argument is present is refused (the specification requires servers to
//!   reject it; earlier clients do not know these headers);
//! - when the tool's schema is unknown (no `tools/list` answer seen yet for
//!   it), any `Mcp-Param-*` header is refused, since it cannot be checked;
//!   a call without one is forwarded and the upstream applies its own rule.
//!
//! Values: `=?base64?…?=` is decoded (invalid Base64 is refused), anything
//! else is literal; strings compare exactly, booleans as `true`/`false`,
//! numbers numerically (`42` and `42.0` agree).

use std::collections::{BTreeMap, BTreeSet};

use http::HeaderMap;
use serde_json::{value::RawValue, Map, Number, Value};

use super::headers::{decode_wrapped, text, HeaderMismatch, MCP_PARAM_PREFIX};

/// At most this many annotated parameters are kept per tool; the upstream
/// writes the schemas, so what the sidecar keeps must be bounded.
const MAX_PARAMS: usize = 64;
/// The longest header name suffix kept.
const MAX_NAME: usize = 128;

/// A tool's declared headers: the name after `Mcp-Param-`, lowercased
/// (header names are case-insensitive), to the argument it mirrors.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ParamHeaders(BTreeMap<String, String>);

impl ParamHeaders {
    /// Reads the `x-mcp-header` annotations of an `inputSchema`. Only
    /// annotations the specification allows are kept: on a property directly
    /// under `properties`, of type string, integer or boolean, with a
    /// non-empty token as name. A name two properties share (in any case)
    /// is dropped, so a header by that name is refused as undeclared.
    pub fn from_schema(schema: Option<&Value>) -> Self {
        let Some(props) = schema
            .and_then(|s| s.get("properties"))
            .and_then(Value::as_object)
        else {
            return Self::default();
        };
        let mut map = BTreeMap::new();
        let mut shared = BTreeSet::new();
        for (prop, def) in props {
            let Some(name) = def.get("x-mcp-header").and_then(Value::as_str) else {
                continue;
            };
            if !valid_name(name) || !primitive(def) {
                continue;
            }
            let key = name.to_ascii_lowercase();
            if map.insert(key.clone(), prop.clone()).is_some() {
                shared.insert(key);
            }
            if map.len() >= MAX_PARAMS {
                break;
            }
        }
        for key in shared {
            map.remove(&key);
        }
        Self(map)
    }

    /// [`Self::from_schema`] of a schema given as JSON text (as a list
    /// answer holds it). A schema that cannot spell `x-mcp-header` in any
    /// way, as most cannot, declares none and is not built into a tree.
    pub fn from_raw_schema(schema: Option<&RawValue>) -> Self {
        let Some(text) = schema.map(RawValue::get) else {
            return Self::default();
        };
        if !super::fold::may_spell(text, &["x-mcp-header"]) {
            return Self::default();
        }
        // Validated text: a tree always reads; if not, nothing is declared
        // and every header for the tool is refused.
        match serde_json::from_str::<Value>(text) {
            Ok(schema) => Self::from_schema(Some(&schema)),
            Err(_) => Self::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The argument the header `Mcp-Param-<name>` mirrors.
    pub fn argument(&self, name: &str) -> Option<&str> {
        self.0.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

/// An HTTP token (RFC 9110), so that `Mcp-Param-<name>` is a header name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn primitive(def: &Value) -> bool {
    matches!(
        def.get("type").and_then(Value::as_str),
        Some("string" | "integer" | "boolean")
    )
}

/// What the sidecar knows of the called tool's headers.
#[derive(Debug, Clone, Copy)]
pub enum Declared<'a> {
    /// No `tools/list` answer has described the tool.
    Unknown,
    Known(&'a ParamHeaders),
}

/// Checks the `Mcp-Param-*` headers of a `tools/call` against its
/// arguments. `modern`: the request is in the 2026-07-28 era, where a
/// declared header must be present when its argument is.
pub fn check(
    headers: &HeaderMap,
    declared: Declared<'_>,
    arguments: Option<&RawValue>,
    modern: bool,
) -> Result<(), HeaderMismatch> {
    let sent = sent(headers)?;
    let declared = match (declared, sent.first()) {
        (Declared::Known(d), _) => d,
        (Declared::Unknown, None) => return Ok(()),
        (Declared::Unknown, Some((name, _))) => {
            return Err(HeaderMismatch(format!(
                "Mcp-Param-{name} given for a tool whose schema is not known yet (list the tools first)"
            )))
        }
    };
    if sent.is_empty() && (!modern || declared.is_empty()) {
        return Ok(());
    }
    let args = object(arguments)?;
    for (name, value) in &sent {
        let prop = declared.argument(name).ok_or_else(|| {
            HeaderMismatch(format!("Mcp-Param-{name} is not declared by the tool"))
        })?;
        match args.get(prop) {
            None | Some(Value::Null) => {
                return Err(HeaderMismatch(format!(
                    "Mcp-Param-{name} given but argument {prop:?} is absent"
                )))
            }
            Some(arg) if !agrees(value, arg)? => {
                return Err(HeaderMismatch(format!(
                    "Mcp-Param-{name} does not match argument {prop:?}"
                )))
            }
            Some(_) => {}
        }
    }
    if modern {
        check_present(declared, &sent, &args)?;
    }
    Ok(())
}

/// Refuses any `Mcp-Param-*` header: for a message that is not a
/// `tools/call`, none can be declared.
pub fn refuse_any(headers: &HeaderMap) -> Result<(), HeaderMismatch> {
    match sent(headers)?.first() {
        Some((name, _)) => Err(HeaderMismatch(format!(
            "Mcp-Param-{name} given for a message that is not tools/call"
        ))),
        None => Ok(()),
    }
}

/// Every declared header whose argument is present must have been sent.
fn check_present(
    declared: &ParamHeaders,
    sent: &[(&str, &str)],
    args: &Map<String, Value>,
) -> Result<(), HeaderMismatch> {
    for (name, prop) in &declared.0 {
        let present = args.get(prop).is_some_and(|v| !v.is_null());
        if present && !sent.iter().any(|(s, _)| s == name) {
            return Err(HeaderMismatch(format!(
                "Mcp-Param-{name} is required: argument {prop:?} is present"
            )));
        }
    }
    Ok(())
}

/// The `Mcp-Param-*` headers sent: lowercased name suffix and value. A
/// repeated or non-ASCII header is refused by [`text`].
fn sent(headers: &HeaderMap) -> Result<Vec<(&str, &str)>, HeaderMismatch> {
    let mut out = Vec::new();
    for key in headers.keys() {
        if let Some(name) = key.as_str().strip_prefix(MCP_PARAM_PREFIX) {
            if let Some(value) = text(headers, key)? {
                out.push((name, value));
            }
        }
    }
    Ok(out)
}

fn object(arguments: Option<&RawValue>) -> Result<Map<String, Value>, HeaderMismatch> {
    match arguments {
        None => Ok(Map::new()),
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|_| HeaderMismatch("tools/call arguments are not an object".into())),
    }
}

/// Whether a header value says the same as the argument. An object or an
/// array cannot be mirrored, so no header agrees with one.
fn agrees(header: &str, arg: &Value) -> Result<bool, HeaderMismatch> {
    let value = decode_wrapped(header)?;
    Ok(match arg {
        Value::String(s) => value == *s,
        Value::Bool(b) => value == if *b { "true" } else { "false" },
        Value::Number(n) => value.parse::<Number>().is_ok_and(|h| same_number(&h, n)),
        _ => false,
    })
}

/// Integers compare exactly (no rounding through `f64` above 2^53);
/// anything else compares as `f64`.
fn same_number(a: &Number, b: &Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
