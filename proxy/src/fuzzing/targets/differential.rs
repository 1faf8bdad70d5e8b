//! Differential: what Portcullis reads of a message it accepts (method,
//! target name, arguments) is what a plain JSON reader (serde_json into a
//! `Value`) reads of the same bytes. A policy judges Portcullis's reading;
//! the server acts on the other one.

use crate::fuzzing::{envelope::Doc, era, MAX_DEPTH};
use crate::mcp::{parse_body, Body, Call, Kind, Target};
use serde_json::Value;

/// One fuzz input.
pub fn run(data: &[u8]) {
    let Ok(input) = <(u8, Doc) as arbitrary::Arbitrary<'_>>::arbitrary_take_rest(
        arbitrary::Unstructured::new(data),
    ) else {
        return;
    };
    let (pick, doc) = input;
    let bytes = doc.to_bytes();
    let Ok(body) = parse_body(&bytes, MAX_DEPTH, &era(pick)) else {
        return;
    };
    let plain: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => panic!("Portcullis accepted what serde_json refuses: {e}"),
    };
    match body {
        Body::Single(call) => same(&call, &plain),
        Body::Batch(calls) => {
            let items = plain.as_array().expect("a batch is an array");
            assert_eq!(items.len(), calls.len(), "batch length");
            for ((_, call), item) in calls.iter().zip(items) {
                same(call, item);
            }
        }
    }
}

/// The target field of each method, as the server reads it.
fn target_field(target: &Target) -> &'static str {
    match target {
        Target::Tool(_) | Target::Prompt(_) => "name",
        Target::Resource(_) => "uri",
        Target::Task(_) => "taskId",
    }
}

fn same(call: &Call, plain: &Value) {
    let method = plain.get("method").and_then(Value::as_str);
    match call.kind {
        Kind::Response => assert_eq!(method, None, "response with a method"),
        _ => assert_eq!(method, Some(call.method.as_str()), "method"),
    }
    let params = plain.get("params");
    if let Some(target) = &call.target {
        let seen = params
            .and_then(|p| p.get(target_field(target)))
            .and_then(Value::as_str);
        assert_eq!(seen, Some(target.name()), "target name");
    }
    // `"arguments": null` is no arguments to Portcullis (its policies see
    // none) and to the SDK servers (Python and Go read it as absent, the
    // TypeScript SDK refuses it): the same reading, found by this target
    // (`mcp::message::tests::fuzz_regression_null_arguments`).
    let plain_args = params
        .and_then(|p| p.get("arguments"))
        .filter(|a| !a.is_null());
    let args: Option<Value> = call
        .arguments
        .as_ref()
        .map(|a| serde_json::from_str(a.get()).expect("arguments are JSON"));
    assert_eq!(args.as_ref(), plain_args, "arguments");
}
