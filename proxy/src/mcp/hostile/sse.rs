//! SSE framing as clients read it: BOM, empty event type, batches in
//! `data:`, line endings, `retry:`, oversized and non-UTF-8 events.

use super::hide_delete;
use crate::mcp::{
    answer::{Answer, AnswerKind},
    lists::filter_answer,
    sse::{Decoder, Event, SseError},
};

const LIST: &str =
    r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_file"},{"name":"echo"}]}}"#;

/// Feeds `chunks` one by one and collects every event, then the tail.
fn events(chunks: &[&[u8]]) -> Vec<Event> {
    let mut d = Decoder::new(4096);
    let mut out = Vec::new();
    for c in chunks {
        d.push(c);
        while let Some(e) = d.next_event().unwrap() {
            out.push(e);
        }
    }
    out.extend(d.finish());
    out
}

/// The one event the stream must carry, with the list in it filtered.
fn assert_filtered_list(chunks: &[&[u8]]) {
    let evs = events(chunks);
    let msgs: Vec<&Event> = evs.iter().filter(|e| e.data.is_some()).collect();
    assert_eq!(msgs.len(), 1, "{chunks:?} gave {evs:?}");
    let e = msgs[0];
    assert!(e.is_message(), "{e:?}");
    assert!(matches!(
        e.payload(32),
        Ok(Some(Answer::Single(AnswerKind::Response { .. })))
    ));
    let data = e.data.as_deref().unwrap_or_default();
    let f = filter_answer(data.as_bytes(), 32, hide_delete).unwrap();
    assert_eq!(f.removed, 1, "{chunks:?}");
}

fn with_bom(s: &str) -> Vec<u8> {
    [b"\xEF\xBB\xBF", s.as_bytes()].concat()
}

#[test]
fn a_bom_at_the_stream_start_is_stripped_as_clients_do() {
    let whole = with_bom(&format!("data: {LIST}\n\n"));
    assert_filtered_list(&[&whole]);
    // The BOM split over chunks, byte by byte.
    assert_filtered_list(&[&whole[..1], &whole[1..2], &whole[2..]]);
    assert_filtered_list(&[&whole[..2], &whole[2..5], &whole[5..]]);
    // A BOM then `event: message`.
    let named = with_bom(&format!("event: message\ndata: {LIST}\n\n"));
    assert_filtered_list(&[&named]);
    // The stripped bytes are not forwarded either.
    assert!(!events(&[&whole])[0].raw.starts_with(b"\xEF"));
}

#[test]
fn a_bom_after_the_start_is_part_of_the_field_name() {
    // Clients strip only the first BOM of a stream: here the second line's
    // field is "\u{FEFF}data", which no client reads as data.
    let evs = events(&[b"\xEF\xBB\xBF: hi\n\n\xEF\xBB\xBFdata: {}\n\n"]);
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[1].data, None);
    // A stream of only a BOM, or part of one, yields nothing.
    assert!(events(&[b"\xEF\xBB"]).is_empty());
    assert!(events(&[b"\xEF\xBB\xBF"]).is_empty());
}

#[test]
fn an_empty_event_type_means_message() {
    for prefix in [
        "event:\n",
        "event: \n",
        "event\n",
        "event: message\nevent:\n",
        "event:\r\n",
    ] {
        let s = format!("{prefix}data: {LIST}\n\n");
        let evs = events(&[s.as_bytes()]);
        assert_eq!(evs[0].kind(), "message", "{prefix:?}");
        assert_filtered_list(&[s.as_bytes()]);
    }
    // Other types are not messages, and clients do not read them as such.
    for prefix in ["event: Message\n", "event: endpoint\n", "event: message \n"] {
        let s = format!("{prefix}data: {LIST}\n\n");
        let e = &events(&[s.as_bytes()])[0];
        assert!(!e.is_message(), "{prefix:?}");
        assert_eq!(e.payload(32), Ok(None));
    }
}

#[test]
fn a_batch_in_data_is_classified_and_filtered() {
    let batch = format!("[{LIST},{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}]");
    for s in [
        format!("data: {batch}\n\n"),
        format!("data: [\ndata: {LIST}\ndata: ]\n\n"),
    ] {
        let e = &events(&[s.as_bytes()])[0];
        let Ok(Some(Answer::Batch(kinds))) = e.payload(32) else {
            panic!("{s}: {:?}", e.payload(32));
        };
        assert!(!kinds.is_empty());
        let data = e.data.as_deref().unwrap_or_default();
        let f = filter_answer(data.as_bytes(), 32, hide_delete).unwrap();
        assert_eq!(f.removed, 1, "{s}");
    }
}

#[test]
fn cr_only_and_mixed_line_endings() {
    for s in [
        format!("data: {LIST}\r\r"),
        format!("data: {LIST}\r\n\r\n"),
        format!("data: {LIST}\n\r\n"),
        format!("id: 1\rdata: {LIST}\r\n\n"),
        format!(": c\r\nevent:\rdata: {LIST}\n\r"),
    ] {
        assert_filtered_list(&[s.as_bytes()]);
    }
    // Data split over lines with mixed endings joins with "\n".
    let evs = events(&[b"data: a\rdata: b\r\ndata: c\n\n"]);
    assert_eq!(evs[0].data.as_deref(), Some("a\nb\nc"));
}

#[test]
fn a_lone_cr_ends_an_event_at_once_and_its_lf_is_not_a_new_one() {
    let mut d = Decoder::new(1024);
    d.push(b"data: x\r\r");
    // Delivered without waiting for the next byte.
    assert_eq!(d.next_event().unwrap().unwrap().data.as_deref(), Some("x"));
    d.push(b"\ndata: y\n\n");
    let next = d.next_event().unwrap().unwrap();
    assert_eq!(next.data.as_deref(), Some("y"));
    assert_eq!(d.next_event(), Ok(None));
    // CRLF split over chunks is one line end.
    let evs = events(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].data.as_deref(), Some("a\nb"));
}

#[test]
fn retry_fields_are_read_and_do_not_hide_data() {
    let s = format!("retry: 10\ndata: {LIST}\n\n");
    assert_eq!(events(&[s.as_bytes()])[0].retry, Some(10));
    assert_filtered_list(&[s.as_bytes()]);
    for (line, want) in [
        ("retry: x1", None),
        ("retry:", None),
        ("retry: 0", Some(0)),
        ("retry: -5", None),
    ] {
        let s = format!("{line}\ndata: {LIST}\n\n");
        assert_eq!(events(&[s.as_bytes()])[0].retry, want, "{line}");
        assert_filtered_list(&[s.as_bytes()]);
    }
    let only = &events(&[b"retry: 3000\n\n"])[0];
    assert_eq!(only.payload(32), Ok(None));
}

#[test]
fn oversized_events_are_errors() {
    // A whole event larger than the limit, in one chunk.
    let mut d = Decoder::new(64);
    d.push(format!("data: {LIST}\n\n").as_bytes());
    assert_eq!(d.next_event(), Err(SseError::TooLarge(64)));
    // An event that grows past the limit without ending.
    let mut d = Decoder::new(64);
    for _ in 0..10 {
        d.push(b"data: aaaaaaaa\n");
    }
    assert_eq!(d.next_event(), Err(SseError::TooLarge(64)));
    // A tail past the limit when the stream ends.
    let mut d = Decoder::new(16);
    d.push(b"data: 0123456789abcdef");
    assert_eq!(d.finish_checked(), Err(SseError::TooLarge(16)));
    // Exactly at the limit is fine.
    let exact = b"data: 12345678\n\n";
    let mut d = Decoder::new(exact.len());
    d.push(exact);
    assert!(d.next_event().unwrap().is_some());
}

#[test]
fn invalid_utf8_in_an_event_is_an_error() {
    for bad in [
        &b"data: {\"a\":\"\xff\"}\n\n"[..],
        b"event: mess\xc3age\n\n",
        b"data: \xed\xa0\x80\n\n",
    ] {
        let mut d = Decoder::new(1024);
        d.push(bad);
        assert_eq!(d.next_event(), Err(SseError::NotUtf8), "{bad:?}");
    }
}

#[test]
fn payloads_say_what_they_answer() {
    let cases = [
        (
            r#"{"jsonrpc":"2.0","id":7,"result":{}}"#,
            AnswerKind::Response {
                id: "7".into(),
                is_error: false,
            },
        ),
        (
            r#"{"jsonrpc":"2.0","id":"e","error":{"code":1,"message":"m"}}"#,
            AnswerKind::Response {
                id: "\"e\"".into(),
                is_error: true,
            },
        ),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"elicitation/create","params":{}}"#,
            AnswerKind::ServerRequest {
                id: "3".into(),
                method: "elicitation/create".into(),
            },
        ),
        (
            r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#,
            AnswerKind::Notification {
                method: "notifications/tools/list_changed".into(),
            },
        ),
    ];
    for (data, want) in cases {
        let s = format!("data: {data}\n\n");
        let e = &events(&[s.as_bytes()])[0];
        assert_eq!(e.payload(32), Ok(Some(Answer::Single(want))), "{data}");
    }
    // A priming event, a comment, and unreadable data.
    assert_eq!(events(&[b"id: 0\ndata:\n\n"])[0].payload(32), Ok(None));
    assert_eq!(events(&[b": ping\n\n"])[0].payload(32), Ok(None));
    for bad in [
        "data: {\"id\":1,\"result\":{},\"result\":{}}\n\n",
        "data: \u{FEFF}{\"id\":1,\"result\":{}}\n\n",
        "data: {\"id\":1,\"Result\":{}}\n\n",
        "data: {\"id\":1}{}\n\n",
        "data: NaN\n\n",
    ] {
        assert!(events(&[bad.as_bytes()])[0].payload(32).is_err(), "{bad}");
    }
}
