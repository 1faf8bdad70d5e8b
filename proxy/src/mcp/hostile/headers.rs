//! Repeated MCP routing headers.

use http::{HeaderMap, HeaderValue};

use crate::mcp::{
    headers::{
        check_batch, check_repeated, check_single, decode_value, text, MCP_METHOD, MCP_NAME,
        MCP_PROTOCOL_VERSION, MCP_SESSION_ID,
    },
    message::{parse_body, Body, Call, Era},
};

const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;

fn call() -> Call {
    match parse_body(CALL.as_bytes(), 32, &Era::from_version(None)) {
        Ok(Body::Single(c)) => c,
        other => panic!("{other:?}"),
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        let name = http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        h.append(name, HeaderValue::from_str(v).unwrap());
    }
    h
}

const GOOD: [(&str, &str); 3] = [
    (MCP_PROTOCOL_VERSION, "2026-07-28"),
    (MCP_METHOD, "tools/call"),
    (MCP_NAME, "read"),
];

#[test]
fn a_good_set_passes() {
    assert_eq!(check_single(&headers(&GOOD), &call()), Ok(()));
}

#[test]
fn each_routing_header_given_twice_is_refused() {
    let repeats = [
        (MCP_NAME, "delete_file"),
        (MCP_NAME, "read"),
        (MCP_METHOD, "tools/list"),
        (MCP_METHOD, "tools/call"),
        (MCP_PROTOCOL_VERSION, "2025-11-25"),
        (MCP_PROTOCOL_VERSION, "2026-07-28"),
        (MCP_SESSION_ID, "other"),
    ];
    for extra in repeats {
        // The repeat after the good value, and before it.
        let mut after = GOOD.to_vec();
        after.push(extra);
        if extra.0 == MCP_SESSION_ID {
            after.push((MCP_SESSION_ID, "s1"));
        }
        let mut before = vec![extra];
        before.extend(after.iter().copied().filter(|p| *p != extra));
        before.push(extra);
        for set in [after, before] {
            let err = check_single(&headers(&set), &call());
            assert!(
                matches!(&err, Err(e) if e.0.contains("more than once")),
                "{set:?}: {err:?}"
            );
        }
    }
}

#[test]
fn repeated_param_and_unknown_mcp_headers_are_refused() {
    for name in ["mcp-param-path", "Mcp-Param-Region", "mcp-anything"] {
        let h = headers(&[(name, "a"), (name, "b")]);
        assert!(check_repeated(&h).is_err(), "{name}");
        assert!(check_batch(&h).is_err(), "{name}");
    }
    // Distinct names, and non-MCP repeats, are fine.
    let ok = headers(&[
        ("mcp-param-a", "1"),
        ("mcp-param-b", "2"),
        ("accept", "application/json"),
        ("accept", "text/event-stream"),
    ]);
    assert_eq!(check_repeated(&ok), Ok(()));
}

#[test]
fn text_refuses_a_repeated_header() {
    let h = headers(&[(MCP_SESSION_ID, "a"), (MCP_SESSION_ID, "b")]);
    assert!(text(&h, MCP_SESSION_ID).is_err());
    assert_eq!(
        text(&headers(&[(MCP_SESSION_ID, "a")]), MCP_SESSION_ID),
        Ok(Some("a"))
    );
    assert_eq!(text(&HeaderMap::new(), MCP_SESSION_ID), Ok(None));
}

#[test]
fn encoded_names_with_control_characters_are_refused() {
    // "delete\0x", "read\x7f", "a\u{85}b" in the =?base64?...?= form.
    for v in [
        "=?base64?ZGVsZXRlAHg=?=",
        "=?base64?cmVhZH8=?=",
        "=?base64?YcKFYg==?=",
    ] {
        assert!(decode_value(v).is_err(), "{v}");
    }
}
