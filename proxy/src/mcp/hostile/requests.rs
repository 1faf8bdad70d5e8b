//! Request side: ids, control characters, Unicode case folding.

use crate::mcp::{
    json::{self, JsonError},
    message::{parse_body, Body, CodecError, Era, Kind},
    ErrorCode,
};

fn era() -> Era {
    Era::from_version(Some("2025-11-25"))
}

fn parse(body: &str) -> Result<Body, CodecError> {
    parse_body(body.as_bytes(), 64, &era())
}

/// Request methods with the params that name their target.
const TARGETED: [(&str, &str); 5] = [
    ("tools/call", r#"{"name":"delete_file","arguments":{}}"#),
    ("prompts/get", r#"{"name":"delete_prompt"}"#),
    ("resources/read", r#"{"uri":"file:///etc/shadow"}"#),
    ("resources/subscribe", r#"{"uri":"file:///etc/shadow"}"#),
    ("resources/unsubscribe", r#"{"uri":"file:///etc/shadow"}"#),
];

const UNTARGETED: [&str; 9] = [
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "initialize",
    "ping",
    "completion/complete",
    "logging/setLevel",
    "x-vendor/anything",
];

/// Every form in which a request can travel without a usable id.
fn idless_forms(method: &str, params: &str) -> Vec<String> {
    vec![
        format!(r#"{{"jsonrpc":"2.0","method":"{method}","params":{params}}}"#),
        format!(r#"{{"jsonrpc":"2.0","id":null,"method":"{method}","params":{params}}}"#),
        format!(r#"{{"jsonrpc":"2.0","method":"{method}","params":{params},"id" : null }}"#),
        format!(
            r#"[{{"jsonrpc":"2.0","id":1,"method":"ping"}},{{"jsonrpc":"2.0","method":"{method}","params":{params}}}]"#
        ),
        format!(
            r#"[{{"jsonrpc":"2.0","id":null,"method":"{method}","params":{params}}},{{"jsonrpc":"2.0","id":2,"method":"ping"}}]"#
        ),
        format!(r#"[{{"jsonrpc":"2.0","method":"{method}","params":{params}}}]"#),
    ]
}

fn assert_missing_id(body: &str, method: &str) {
    let err = parse(body).err();
    assert_eq!(
        err,
        Some(CodecError::MissingId {
            method: method.to_string()
        }),
        "{body}"
    );
    assert_eq!(err.map(|e| e.code()), Some(ErrorCode::InvalidRequest));
}

#[test]
fn targeted_requests_without_id_are_refused() {
    for (method, params) in TARGETED {
        for body in idless_forms(method, params) {
            assert_missing_id(&body, method);
        }
    }
}

#[test]
fn every_request_method_needs_an_id() {
    for method in UNTARGETED {
        for body in idless_forms(method, "{}") {
            assert_missing_id(&body, method);
        }
    }
}

#[test]
fn ids_that_are_not_strings_or_integers_are_refused() {
    for id in ["true", "{}", "[]", "[1]", "1.5", "1e3", r#""a\u0000""#] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"x"}}}}"#
        );
        assert!(
            matches!(parse(&body), Err(CodecError::BadId { .. })),
            "{body}: {:?}",
            parse(&body)
        );
    }
}

#[test]
fn notifications_and_responses_still_pass() {
    let Ok(Body::Single(n)) =
        parse(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#)
    else {
        panic!("notification refused");
    };
    assert_eq!(n.kind, Kind::Notification);
    let Ok(Body::Batch(b)) = parse(
        r#"[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":0,"method":"tools/call","params":{"name":"x"}}]"#,
    ) else {
        panic!("batch refused");
    };
    assert_eq!(b[0].1.kind, Kind::Notification);
    assert_eq!(b[1].1.kind, Kind::Request);
    let Ok(Body::Single(r)) =
        parse(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#)
    else {
        panic!("error response refused");
    };
    assert_eq!(r.kind, Kind::Response);
    // A notifications/ method that carries an id is a request, and meets
    // the request rules.
    let Ok(Body::Single(q)) = parse(r#"{"jsonrpc":"2.0","id":"a","method":"notifications/x"}"#)
    else {
        panic!("refused");
    };
    assert_eq!(q.kind, Kind::Request);
    for ok_id in ["0", "-7", "18446744073709551615", r#""""#, r#""x y""#] {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{ok_id},"method":"ping"}}"#);
        assert!(parse(&body).is_ok(), "{body}");
    }
}

#[test]
fn responses_are_exactly_one_of_result_and_error() {
    assert!(parse(r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#).is_err());
    assert!(parse(r#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#).is_err());
}

const CONTROL_NAMES: [&str; 10] = [
    r"delete_file\u0000x",
    r"delete_file\u0000",
    r"\u0000",
    r"a\u001fb",
    r"a\u001bb",
    r"a\u007fb",
    r"a\u0085b",
    r"a\u009fb",
    r"a\tb",
    r"a\nb",
];

#[test]
fn control_characters_in_target_names_are_refused() {
    for name in CONTROL_NAMES {
        for (method, field) in [
            ("tools/call", "name"),
            ("prompts/get", "name"),
            ("resources/read", "uri"),
        ] {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"{field}":"{name}"}}}}"#
            );
            assert!(
                matches!(
                    parse(&body),
                    Err(CodecError::ControlChar {
                        what: "target name",
                        ..
                    })
                ),
                "{body}: {:?}",
                parse(&body)
            );
        }
    }
}

#[test]
fn raw_del_and_c1_bytes_in_names_are_refused() {
    // DEL and C1 controls are legal unescaped inside JSON strings.
    for name in ["delete\u{7f}x", "delete\u{85}x", "delete\u{9b}x"] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}"}}}}"#
        );
        assert!(
            matches!(parse(&body), Err(CodecError::ControlChar { .. })),
            "{body:?}"
        );
    }
}

#[test]
fn control_characters_in_methods_are_refused() {
    for method in [
        r"tools/call\u0000",
        r"tools/call\u0000x",
        r"ping\u007f",
        "ping\u{85}",
        r"notifications/initialized\u0000",
    ] {
        let forms = [
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"name":"x"}}}}"#),
            format!(r#"{{"jsonrpc":"2.0","method":"{method}"}}"#),
        ];
        for body in forms {
            assert!(
                matches!(
                    parse(&body),
                    Err(CodecError::ControlChar { what: "method", .. })
                ),
                "{body}: {:?}",
                parse(&body)
            );
        }
    }
}

#[test]
fn control_characters_in_any_key_are_refused() {
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read","name\u0000":"delete_file"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read","\u0000":1}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read","arguments\u001b":{}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read","arguments":{"a":{"b\u0000":1}}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"id\u0000":2,"method":"ping"}"#,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{\"k\u{7f}\":1}}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{\"k\u{80}\":1}}",
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x\u0001":1}}]"#,
    ] {
        assert!(
            matches!(
                parse(body),
                Err(CodecError::Json(JsonError::ControlInKey(_)))
            ),
            "{body}: {:?}",
            parse(body)
        );
    }
}

#[test]
fn unicode_case_variants_of_envelope_keys_are_refused() {
    for body in [
        // ſ (U+017F) folds to s: Go reads "paramſ" as "params".
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read"},"paramſ":{"name":"delete_file"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","param\u017f":{"name":"delete_file"},"params":{"name":"read"}}"#,
        r#"{"jsonrpc":"2.0","jſonrpc":"1.0","id":1,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read"},"PARAMſ":{}}"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read"},"paramſ":{"name":"delete_file"}}]"#,
    ] {
        assert!(
            matches!(
                parse(body),
                Err(CodecError::Json(JsonError::DuplicateKey(_)))
            ),
            "{body}: {:?}",
            parse(body)
        );
    }
}

#[test]
fn unicode_case_variants_inside_params_are_refused() {
    for (a, b) in [
        ("k", "\u{212A}"),
        ("task", "tas\u{212A}"),
        ("s", "ſ"),
        ("ß", "ẞ"),
        ("å", "\u{212B}"),
        ("ω", "\u{2126}"),
        ("σ", "ς"),
        ("θ", "ϑ"),
        ("μ", "µ"),
        ("ǆ", "ǅ"),
        ("ι", "\u{1FBE}"),
        ("\u{0390}", "\u{1FD3}"),
    ] {
        let body = format!(r#"{{"params":{{"{a}":1,"{b}":2}}}}"#);
        assert!(
            matches!(
                json::validate(body.as_bytes(), 64),
                Err(JsonError::DuplicateKey(_))
            ),
            "{body}"
        );
    }
    // Below `params` (inside arguments) keys are data and keep their case.
    let deep = r#"{"params":{"arguments":{"x":{"s":1,"ſ":2,"k":3,"K":4}}}}"#;
    assert_eq!(json::validate(deep.as_bytes(), 64), Ok(()));
    // Letters that only look alike are not case variants.
    let distinct = r#"{"params":{"s":1,"ş":2,"i":3,"İ":4}}"#;
    assert_eq!(json::validate(distinct.as_bytes(), 64), Ok(()));
}

#[test]
fn lone_case_variants_of_keys_portcullis_reads_are_refused() {
    for (body, found) in [
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","Params":{"cursor":"x"}}"#, "Params"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","paramſ":{}}"#, "paramſ"),
        (r#"{"jsonrpc":"2.0","ID":1,"id":2,"method":"ping"}"#, "ID"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"ping","Result":{}}"#, "Result"),
        (r#"{"jſonrpc":"2.0","id":1,"method":"ping"}"#, "jſonrpc"),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_META":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
            "_META",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolverſion":"2026-07-28"}}"#,
            "protocolverſion",
        ),
        (
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{\"\u{212A}\":1,\"Name\":\"x\"}}",
            "Name",
        ),
    ] {
        let err = parse(body).err();
        assert!(
            matches!(&err, Some(CodecError::CaseVariant { found: f, .. }) if f == found)
                || matches!(&err, Some(CodecError::Json(JsonError::DuplicateKey(_)))),
            "{body}: {err:?}"
        );
    }
    // The exact spellings, and unrelated keys that merely look alike, pass.
    let ok = r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"},"argument":{"name":"a","value":"v"}}}"#;
    assert!(parse(ok).is_ok());
}
