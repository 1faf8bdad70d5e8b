//! Routing headers (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`, the version)
//! against a body: never a panic, and headers that pass say what the body
//! says.

use crate::fuzzing::{era, MAX_DEPTH};
use crate::mcp::{
    headers::{self, MCP_METHOD, MCP_NAME},
    param_headers::{self, Declared, ParamHeaders},
    parse_body, Body,
};
use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue};

const NAMES: [&str; 10] = [
    "mcp-method",
    "mcp-name",
    "mcp-protocol-version",
    "mcp-session-id",
    "mcp-param-region",
    "mcp-param-count",
    "mcp-param-Region",
    "mcp-param-",
    "mcp-other",
    "content-type",
];

#[derive(Arbitrary, Debug)]
struct Input {
    era: u8,
    headers: Vec<(u8, Vec<u8>)>,
    schema: Option<String>,
    body: Vec<u8>,
}

/// One fuzz input.
pub fn run(data: &[u8]) {
    let Ok(input) = <Input as arbitrary::Arbitrary<'_>>::arbitrary_take_rest(
        arbitrary::Unstructured::new(data),
    ) else {
        return;
    };
    let mut map = HeaderMap::new();
    for (name, value) in &input.headers {
        let Ok(name) = HeaderName::from_bytes(NAMES[usize::from(*name) % NAMES.len()].as_bytes())
        else {
            continue;
        };
        if let Ok(v) = HeaderValue::from_bytes(value) {
            map.append(name, v);
        }
    }
    let _ = headers::check_repeated(&map);
    for v in map.values().filter_map(|v| v.to_str().ok()) {
        let _ = headers::decode_value(v);
        let _ = headers::decode_wrapped(v);
    }
    let schema = input
        .schema
        .as_deref()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok());
    let declared = ParamHeaders::from_schema(schema.as_ref());
    let _ = param_headers::refuse_any(&map);
    match parse_body(&input.body, MAX_DEPTH, &era(input.era)) {
        Ok(Body::Single(call)) => {
            let args = call.arguments.as_deref();
            for modern in [false, true] {
                let _ = param_headers::check(&map, Declared::Known(&declared), args, modern);
                let _ = param_headers::check(&map, Declared::Unknown, args, modern);
            }
            if headers::check_single(&map, &call).is_ok() {
                if let Some(m) = map.get(MCP_METHOD) {
                    assert_eq!(m.to_str().ok(), Some(call.method.as_str()));
                }
                if let Some(n) = map.get(MCP_NAME).and_then(|n| n.to_str().ok()) {
                    let decoded = headers::decode_value(n).expect("passed, so it decodes");
                    assert_eq!(Some(&*decoded), call.target_name());
                }
            }
        }
        Ok(Body::Batch(_)) => {
            if headers::check_batch(&map).is_ok() {
                assert!(!map.contains_key(MCP_METHOD) && !map.contains_key(MCP_NAME));
            }
        }
        Err(_) => {}
    }
}
