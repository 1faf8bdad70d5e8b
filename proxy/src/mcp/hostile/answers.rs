//! Answer side: a list is read with certainty or refused, never relayed
//! raw. Each case would show `delete_file` to a client if relayed as is.

use super::hide_delete;
use crate::mcp::{
    answer::{Answer, AnswerError, AnswerKind},
    json::JsonError,
    lists::{filter_answer, Filtered},
};

const DEPTH: usize = 64;

fn filter(body: &[u8]) -> Result<Filtered, AnswerError> {
    filter_answer(body, DEPTH, hide_delete)
}

fn refused(body: &[u8]) -> AnswerError {
    match filter(body) {
        Err(e) => e,
        Ok(f) => panic!("{:?} was read: {f:?}", String::from_utf8_lossy(body)),
    }
}

fn assert_malformed(bodies: &[&[u8]]) {
    for body in bodies {
        assert!(
            matches!(refused(body), AnswerError::Json(JsonError::Malformed(_))),
            "{:?}: {:?}",
            String::from_utf8_lossy(body),
            filter(body)
        );
    }
}

#[test]
fn a_plain_list_is_filtered() {
    let f = filter(
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"},{"name":"delete_file"}]}}"#,
    )
    .unwrap();
    assert_eq!(f.removed, 1);
    assert_eq!(f.lists, 1);
    let out = String::from_utf8(f.rewritten.unwrap().to_vec()).unwrap();
    assert!(
        out.contains("echo") && !out.contains("delete_file"),
        "{out}"
    );
    let clean =
        filter(br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"}]}}"#).unwrap();
    assert_eq!((clean.rewritten, clean.removed, clean.lists), (None, 0, 1));
}

#[test]
fn duplicate_keys_are_refused() {
    for body in [
        &br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_file"}],"tools":[]}}"#[..],
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"tools":[{"name":"delete_file"}]}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]},"result":{"tools":[{"name":"delete_file"}]}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","name":"delete_file"}]}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_file","name":"echo"}]}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"tool\u0073":[{"name":"delete_file"}]}}"#,
        br#"{"jsonrpc":"2.0","id":1,"id":2,"result":{"tools":[]}}"#,
        br#"[{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","name":"delete_file"}]}}]"#,
    ] {
        assert!(
            matches!(refused(body), AnswerError::Json(JsonError::DuplicateKey(_))),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn concatenated_documents_are_refused() {
    assert_malformed(&[
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_file"}]}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}} {"id":2,"result":{}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}
[{"id":1,"result":{"tools":[{"name":"delete_file"}]}}]"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}x"#,
        br#"{}[]"#,
    ]);
}

#[test]
fn invalid_utf8_is_refused() {
    assert_malformed(&[
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"delete_file\xff\"}]}}",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\xc0\x80\":[{\"name\":\"delete_file\"}]}}",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"\xed\xa0\x80\"}]}}",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"\xe2\x82\"}]}}",
    ]);
}

#[test]
fn lone_surrogates_are_refused() {
    assert_malformed(&[
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_file\ud800"}]}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"\udc00delete_file"}]}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"\ud800\u0041"}]}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"tools\ud800":[{"name":"delete_file"}]}}"#,
    ]);
}

#[test]
fn byte_order_marks_and_utf16_are_refused() {
    let list = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_file"}]}}"#;
    let utf16le: Vec<u8> = list.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let utf16be: Vec<u8> = list.encode_utf16().flat_map(u16::to_be_bytes).collect();
    let utf32: Vec<u8> = list
        .chars()
        .flat_map(|c| (c as u32).to_le_bytes())
        .collect();
    let bodies: Vec<Vec<u8>> = vec![
        [b"\xEF\xBB\xBF", list.as_bytes()].concat(),
        [b"\xEF\xBB\xBF \n", list.as_bytes()].concat(),
        [&b"\xFF\xFE"[..], &utf16le].concat(),
        [&b"\xFE\xFF"[..], &utf16be].concat(),
        utf16le,
        utf16be,
        utf32,
    ];
    for body in &bodies {
        assert!(
            matches!(refused(body), AnswerError::Json(JsonError::Encoding(_))),
            "{body:?}: {:?}",
            filter(body)
        );
    }
    // A BOM anywhere else is not whitespace either.
    assert_malformed(&[b" \xEF\xBB\xBF{\"id\":1,\"result\":{}}"]);
}

#[test]
fn nan_and_infinity_are_refused() {
    for lit in [
        "NaN",
        "Infinity",
        "-Infinity",
        "nan",
        "inf",
        "+1",
        "01",
        "1.",
    ] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{{"name":"delete_file","x":{lit}}}]}}}}"#
        );
        assert_malformed(&[body.as_bytes()]);
    }
}

#[test]
fn huge_numbers_are_refused() {
    for (lit, huge) in [
        ("123456789012345678901234567890", true),
        ("18446744073709551616", true),
        ("-9223372036854775809", true),
        ("-99999999999999999999", true),
        ("18446744073709551615", false),
        ("-9223372036854775808", false),
        ("1.5", false),
        ("1e10", false),
        ("-0.0", false),
    ] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{lit},"result":{{"tools":[{{"name":"echo","n":{lit}}}]}}}}"#
        );
        let res = filter(body.as_bytes());
        match huge {
            true => assert!(
                matches!(res, Err(AnswerError::Json(JsonError::HugeNumber(_)))),
                "{lit}: {res:?}"
            ),
            // A float id is refused for its shape, not its size.
            false => assert!(!matches!(res, Err(AnswerError::Json(_))), "{lit}: {res:?}"),
        }
    }
    // Past f64's range serde_json itself refuses.
    let body = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_file","n":1e400}]}}"#;
    assert_malformed(&[body]);
    // Numbers inside strings are text.
    let text = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"123456789012345678901234567890"}]}}"#;
    assert!(filter(text).is_ok());
}

#[test]
fn deep_nesting_is_refused() {
    for depth in [DEPTH, DEPTH + 1, 500] {
        let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{{"name":"delete_file","x":{deep}}}]}}}}"#
        );
        assert!(
            matches!(
                refused(body.as_bytes()),
                AnswerError::Json(JsonError::TooDeep(_))
            ),
            "{depth}"
        );
    }
}

#[test]
fn case_variants_of_keys_are_refused() {
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"Result":{"tools":[{"name":"delete_file"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"RESULT":{"tools":[{"name":"delete_file"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"reſult":{"tools":[{"name":"delete_file"}]}}"#,
        r#"{"jsonrpc":"2.0","Id":1,"result":{"tools":[{"name":"delete_file"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"Tools":[{"name":"delete_file"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"TOOLS":[{"name":"delete_file"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"toolſ":[{"name":"delete_file"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tool\u017f":[{"name":"delete_file"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"reſourceTemplateſ":[{"uriTemplate":"file:///delete/{x}"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"Name":"delete_file"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","NAME":"delete_file"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"resources":[{"URI":"file:///delete"}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","Annotations":{"destructiveHint":true}}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","annotations":{"DestructiveHint":true}}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","annotations":{"destructiveHint":false,"destructivehint":true}}]}}"#,
    ] {
        assert!(
            matches!(
                refused(body.as_bytes()),
                AnswerError::CaseVariant { .. } | AnswerError::Json(JsonError::DuplicateKey(_))
            ),
            "{body}: {:?}",
            filter(body.as_bytes())
        );
    }
}

#[test]
fn lists_that_are_not_arrays_are_refused() {
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":{"0":{"name":"delete_file"}}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":"delete_file"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"prompts":null}}"#,
    ] {
        assert!(
            matches!(refused(body.as_bytes()), AnswerError::Shape(_)),
            "{body}"
        );
    }
}

#[test]
fn batch_answers_are_filtered_not_relayed() {
    let body = br#"[{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_file"},{"name":"echo"}]}},{"jsonrpc":"2.0","id":2,"result":{"prompts":[{"name":"delete_prompt"}]}}]"#;
    let f = filter(body).unwrap();
    assert_eq!((f.removed, f.lists), (2, 2));
    assert!(matches!(f.answer, Answer::Batch(ref v) if v.len() == 2));
    let out = String::from_utf8(f.rewritten.unwrap().to_vec()).unwrap();
    assert!(!out.contains("delete"), "{out}");
    // One unreadable entry spoils the whole batch.
    let bad = br#"[{"jsonrpc":"2.0","id":1,"result":{"tools":[]}},{"jsonrpc":"2.0","id":2,"Result":{"tools":[{"name":"delete_file"}]}}]"#;
    assert!(filter(bad).is_err());
}

#[test]
fn nameless_and_odd_items_are_hidden() {
    let body = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"},{"name":7},{},"delete_file",null,{"name":"echo2"}]}}"#;
    let f = filter(body).unwrap();
    assert_eq!(f.removed, 4);
    let out = String::from_utf8(f.rewritten.unwrap().to_vec()).unwrap();
    assert!(
        out.contains("echo2") && !out.contains("delete_file"),
        "{out}"
    );
}

/// Answers without a list skip the tree (only each `result`'s member names
/// are read): every spelling a client reads as a list must still take the
/// filtering path.
#[test]
fn lists_are_found_in_every_spelling_clients_read() {
    for body in [
        &br#"{"jsonrpc":"2.0","id":1,"result":{"tool\u0073":[{"name":"delete_file"}]}}"#[..],
        br#"{"jsonrpc":"2.0","id":1,"\u0072esult":{"tools":[{"name":"delete_file"}]}}"#,
        br#" 	{"jsonrpc":"2.0","id":1,"result": {"x":1,"resourceTemplates":[{"uriTemplate":"file:///delete/{x}"}]}}"#,
        br#"{"result":{"nextCursor":"c","prompts":[{"name":"delete_prompt"}]},"id":"a","jsonrpc":"2.0"}"#,
        br#"[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"result":{"resources":[{"uri":"file:///delete"}]}}]"#,
    ] {
        let f = filter(body).unwrap();
        assert_eq!(
            (f.lists, f.removed),
            (1, 1),
            "{}",
            String::from_utf8_lossy(body)
        );
        let out = String::from_utf8(f.rewritten.unwrap().to_vec()).unwrap();
        assert!(!out.contains("delete"), "{out}");
    }
    // And what holds no list is classified as before, and left as it is.
    for (body, id) in [
        (
            &br#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"tools"}]}}"#[..],
            "7",
        ),
        (
            br#"{"jsonrpc":"2.0","id":"x","result":[{"tools":[{"name":"delete_file"}]}]}"#,
            "\"x\"",
        ),
        (br#"{"jsonrpc":"2.0","id":1,"result":null}"#, "1"),
    ] {
        let f = filter(body).unwrap();
        assert_eq!((f.lists, f.rewritten), (0, None));
        assert_eq!(
            f.answer,
            Answer::Single(AnswerKind::Response {
                id: id.into(),
                is_error: false
            })
        );
    }
}
