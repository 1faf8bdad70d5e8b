use serde_json::json;

use super::*;

fn schema() -> ParamHeaders {
    ParamHeaders::from_schema(Some(&json!({
        "type": "object",
        "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "priority": {"type": "integer", "x-mcp-header": "Priority"},
            "verbose": {"type": "boolean", "x-mcp-header": "Verbose"},
            "query": {"type": "string"}
        }
    })))
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, v.parse().unwrap());
    }
    h
}

fn args(v: serde_json::Value) -> Box<RawValue> {
    RawValue::from_string(v.to_string()).unwrap()
}

fn run(
    h: &[(&'static str, &str)],
    a: serde_json::Value,
    modern: bool,
) -> Result<(), HeaderMismatch> {
    let s = schema();
    check(&headers(h), Declared::Known(&s), Some(&args(a)), modern)
}

#[test]
fn schema_annotations_are_read_and_lowercased() {
    let s = schema();
    assert_eq!(s.argument("region"), Some("region"));
    assert_eq!(s.argument("PRIORITY"), Some("priority"));
    assert_eq!(s.argument("query"), None);
    assert!(ParamHeaders::from_schema(None).is_empty());
}

#[test]
fn invalid_annotations_are_not_kept() {
    let s = ParamHeaders::from_schema(Some(&json!({"properties": {
        "a": {"type": "object", "x-mcp-header": "A"},
        "b": {"type": "number", "x-mcp-header": "B"},
        "c": {"type": "string", "x-mcp-header": ""},
        "d": {"type": "string", "x-mcp-header": "Has Space"},
        "e": {"type": "string", "x-mcp-header": "Région"},
        "f1": {"type": "string", "x-mcp-header": "Dup"},
        "f2": {"type": "string", "x-mcp-header": "dup"},
        "g": {"type": "string", "x-mcp-header": 7},
        "ok": {"type": "string", "x-mcp-header": "Ok"}
    }})));
    assert_eq!(s.0.len(), 1, "{s:?}");
    assert_eq!(s.argument("ok"), Some("ok"));
}

#[test]
fn matching_headers_pass() {
    let h = [
        ("mcp-param-region", "eu-west"),
        ("mcp-param-priority", "3"),
        ("mcp-param-verbose", "true"),
    ];
    let a = json!({"region": "eu-west", "priority": 3, "verbose": true, "query": "q"});
    assert_eq!(run(&h, a.clone(), true), Ok(()));
    assert_eq!(run(&h, a, false), Ok(()));
    // Integers compare numerically.
    assert_eq!(
        run(
            &[("mcp-param-priority", "3.0")],
            json!({"priority": 3}),
            false
        ),
        Ok(())
    );
}

#[test]
fn mismatching_header_is_refused_in_every_era() {
    for modern in [true, false] {
        let err = run(
            &[("mcp-param-region", "us-east")],
            json!({"region": "eu-west"}),
            modern,
        )
        .unwrap_err();
        assert!(err.0.contains("does not match"), "{err}");
    }
    assert!(run(
        &[("mcp-param-verbose", "True")],
        json!({"verbose": true}),
        false
    )
    .is_err());
    assert!(run(
        &[("mcp-param-priority", "+3")],
        json!({"priority": 3}),
        false
    )
    .is_err());
    assert!(run(
        &[("mcp-param-priority", "9007199254740993")],
        json!({"priority": 9_007_199_254_740_992_u64}),
        false
    )
    .is_err());
}

#[test]
fn header_case_does_not_matter() {
    // HeaderMap lowercases names; the schema's case is folded too.
    let mut h = HeaderMap::new();
    let name = http::HeaderName::from_bytes(b"Mcp-Param-REGION").unwrap();
    h.insert(name, "eu".parse().unwrap());
    let s = schema();
    let a = args(json!({"region": "eu"}));
    assert_eq!(check(&h, Declared::Known(&s), Some(&a), true), Ok(()));
    let a = args(json!({"region": "us"}));
    assert!(check(&h, Declared::Known(&s), Some(&a), true).is_err());
}

#[test]
fn missing_header_is_refused_only_in_the_modern_era() {
    let err = run(&[], json!({"region": "eu"}), true).unwrap_err();
    assert!(err.0.contains("required"), "{err}");
    assert_eq!(run(&[], json!({"region": "eu"}), false), Ok(()));
    // Absent or null arguments need no header.
    assert_eq!(
        run(&[], json!({"region": null, "query": "q"}), true),
        Ok(())
    );
}

#[test]
fn header_without_argument_is_refused() {
    assert!(run(&[("mcp-param-region", "eu")], json!({}), false).is_err());
    assert!(run(
        &[("mcp-param-region", "eu")],
        json!({"region": null}),
        false
    )
    .is_err());
    let s = schema();
    let h = headers(&[("mcp-param-region", "eu")]);
    assert!(check(&h, Declared::Known(&s), None, false).is_err());
}

#[test]
fn undeclared_header_is_refused() {
    let err = run(&[("mcp-param-query", "q")], json!({"query": "q"}), false).unwrap_err();
    assert!(err.0.contains("not declared"), "{err}");
    assert!(run(&[("mcp-param-", "q")], json!({}), false).is_err());
    assert!(refuse_any(&headers(&[("mcp-param-region", "eu")])).is_err());
    assert_eq!(refuse_any(&headers(&[("mcp-name", "x")])), Ok(()));
}

#[test]
fn base64_values_are_decoded() {
    // "élan", and a value with a line break, which must travel wrapped.
    let ok = run(
        &[("mcp-param-region", "=?base64?w6lsYW4=?=")],
        json!({"region": "élan"}),
        true,
    );
    assert_eq!(ok, Ok(()));
    let crlf = run(
        &[("mcp-param-region", "=?base64?YQ0KYg==?=")],
        json!({"region": "a\r\nb"}),
        true,
    );
    assert_eq!(crlf, Ok(()));
    // Invalid padding or alphabet is refused, not read as a literal.
    assert!(run(
        &[("mcp-param-region", "=?base64?SGVsbG8?=")],
        json!({"region": "Hello"}),
        true
    )
    .is_err());
    assert!(run(
        &[("mcp-param-region", "=?base64?SGVs!!!bG8=?=")],
        json!({"region": "Hello"}),
        true
    )
    .is_err());
    // Without the exact wrapper the value is literal.
    let literal = "=?base64?SGVsbG8=";
    assert_eq!(
        run(
            &[("mcp-param-region", literal)],
            json!({"region": literal}),
            true
        ),
        Ok(())
    );
    assert!(run(
        &[("mcp-param-region", "SGVsbG8=")],
        json!({"region": "Hello"}),
        true
    )
    .is_err());
}

#[test]
fn unknown_schema_refuses_any_param_header() {
    let h = headers(&[("mcp-param-region", "eu")]);
    let a = args(json!({"region": "eu"}));
    let err = check(&h, Declared::Unknown, Some(&a), true).unwrap_err();
    assert!(err.0.contains("not known"), "{err}");
    // Nothing to check: forwarded, and the upstream applies its own rule.
    assert_eq!(
        check(&HeaderMap::new(), Declared::Unknown, Some(&a), true),
        Ok(())
    );
}

#[test]
fn repeated_or_structured_values_are_refused() {
    assert!(run(
        &[("mcp-param-region", "eu"), ("mcp-param-region", "eu")],
        json!({"region": "eu"}),
        false
    )
    .is_err());
    let s = ParamHeaders(BTreeMap::from([("obj".to_string(), "o".to_string())]));
    let h = headers(&[("mcp-param-obj", "{}")]);
    let a = args(json!({"o": {}}));
    assert!(check(&h, Declared::Known(&s), Some(&a), false).is_err());
    let not_object = args(json!([1]));
    assert!(check(&h, Declared::Known(&s), Some(&not_object), false).is_err());
}

#[test]
fn a_schema_read_as_text_declares_what_its_tree_declares() {
    for text in [
        r#"{"properties":{"region":{"type":"string","x-mcp-header":"Region"}}}"#,
        // Escaped, as every client reads it: declared.
        r#"{"properties":{"region":{"type":"string","x\u002dmcp-header":"Region"}}}"#,
        r#"{"properties":{"region":{"type":"string","X-MCP-HEADER":"Region"}}}"#,
        r#"{"properties":{"region":{"type":"string"}}}"#,
        r#"{"type":"object"}"#,
        "7",
    ] {
        let raw = RawValue::from_string(text.to_string()).unwrap();
        let tree: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            ParamHeaders::from_raw_schema(Some(&raw)),
            ParamHeaders::from_schema(Some(&tree)),
            "{text}"
        );
    }
    let escaped = RawValue::from_string(
        r#"{"properties":{"r":{"type":"string","x\u002dmcp-header":"R"}}}"#.to_string(),
    )
    .unwrap();
    assert_eq!(
        ParamHeaders::from_raw_schema(Some(&escaped)).argument("r"),
        Some("r")
    );
    assert!(ParamHeaders::from_raw_schema(None).is_empty());
}
