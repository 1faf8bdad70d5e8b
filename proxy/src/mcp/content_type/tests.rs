use http::HeaderValue;

use super::*;

fn headers(values: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn json_types_clients_parse() {
    for v in [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        "application/json;charset=\"UTF-8\"",
        "application/json-rpc",
        "application/jsonrequest",
        "application/x-json",
        "application/problem+json",
        "application/vnd.api+json",
        "text/json",
        "text/x-json",
        "application/x-ndjson",
        "  application/json  ",
    ] {
        assert_eq!(classify_value(v), Ok(BodyType::Json), "{v}");
    }
}

#[test]
fn event_streams_and_others() {
    assert_eq!(
        classify_value("text/event-stream"),
        Ok(BodyType::EventStream)
    );
    assert_eq!(
        classify_value("TEXT/Event-Stream; charset=utf-8"),
        Ok(BodyType::EventStream)
    );
    for v in [
        "text/plain",
        "text/html; charset=iso-8859-1",
        "application/octet-stream",
        "",
    ] {
        assert_eq!(classify_value(v), Ok(BodyType::Other), "{v}");
    }
    assert_eq!(classify(&HeaderMap::new()), Ok(BodyType::Other));
}

#[test]
fn repeated_or_joined_types_are_refused() {
    assert_eq!(
        classify(&headers(&["text/plain", "application/json"])),
        Err(ContentTypeError::Repeated)
    );
    assert_eq!(
        classify(&headers(&["application/json", "application/json"])),
        Err(ContentTypeError::Repeated)
    );
    assert_eq!(
        classify(&headers(&["text/plain, application/json"])),
        Err(ContentTypeError::Repeated)
    );
    assert_eq!(
        classify(&headers(&["application/json"])),
        Ok(BodyType::Json)
    );
}

#[test]
fn non_utf8_charsets_are_refused_for_json_and_sse() {
    for v in [
        "application/json; charset=utf-16",
        "application/json; charset=UTF-16LE",
        "text/event-stream; charset=\"latin1\"",
    ] {
        assert!(
            matches!(classify_value(v), Err(ContentTypeError::Charset(_))),
            "{v}"
        );
    }
    assert!(matches!(
        classify_value("nonsense"),
        Err(ContentTypeError::Unreadable(_))
    ));
}

#[test]
fn sniffs_bodies_that_look_like_json() {
    for body in [
        &b"{\"id\":1}"[..],
        b"  \n[1]",
        b"\xEF\xBB\xBF{}",
        b"\xFF\xFE{\x00}\x00",
        b"{\x00\"\x00",
    ] {
        assert!(sniff_json(body), "{body:?}");
    }
    for body in [&b"hello"[..], b"", b"<html>{", b"event: x\ndata: {}\n\n"] {
        assert!(!sniff_json(body), "{body:?}");
    }
}

#[test]
fn compressed_answers_are_refused() {
    let mut h = HeaderMap::new();
    assert_eq!(check_encoding(&h), Ok(()));
    h.append(CONTENT_ENCODING, HeaderValue::from_static("Identity"));
    assert_eq!(check_encoding(&h), Ok(()));
    for v in ["gzip", "br", "identity, gzip", "", "x-gzip"] {
        let mut h = HeaderMap::new();
        h.append(CONTENT_ENCODING, HeaderValue::from_str(v).unwrap());
        assert!(
            matches!(check_encoding(&h), Err(ContentTypeError::Encoded(_))),
            "{v:?}"
        );
    }
    h.append(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    assert!(check_encoding(&h).is_err());
}
