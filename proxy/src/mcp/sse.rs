//! Incremental Server-Sent Events framing.
//!
//! The decoder splits an upstream byte stream into whole events without
//! waiting for the stream to end, and keeps each event's original bytes so
//! that events the proxy does not change are forwarded exactly.

use bytes::{Bytes, BytesMut};

/// One SSE event: its bytes as received, and the fields MCP uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub raw: Bytes,
    pub event: Option<String>,
    pub id: Option<String>,
    /// `data` lines joined with `\n`; `None` if the event had no data line.
    pub data: Option<String>,
}

impl Event {
    /// The event type, defaulting to `message` as the SSE standard says.
    pub fn kind(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("SSE event larger than {0} bytes")]
    TooLarge(usize),
}

/// Accumulates chunks and yields complete events.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_event: usize,
}

impl Decoder {
    pub fn new(max_event: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_event,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes received that do not yet form a whole event.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete event, if the buffer holds one.
    pub fn next_event(&mut self) -> Result<Option<Event>, SseError> {
        match event_end(&self.buf) {
            Some(end) => {
                let raw = self.buf.split_to(end).freeze();
                Ok(Some(parse_event(raw)))
            }
            None if self.buf.len() > self.max_event => Err(SseError::TooLarge(self.max_event)),
            None => Ok(None),
        }
    }

    /// Whatever is left when the stream ends: a final event without its
    /// blank line is still delivered, as browsers do.
    pub fn finish(&mut self) -> Option<Event> {
        if self.buf.iter().all(|b| b.is_ascii_whitespace()) {
            self.buf.clear();
            return None;
        }
        let raw = self.buf.split().freeze();
        Some(parse_event(raw))
    }
}

/// Finds the end (exclusive) of the first event: the position just after
/// the blank line that terminates it. Lines end in CRLF, LF or CR.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    let mut i = 0;
    while i < buf.len() {
        let eol_len = match buf[i] {
            b'\n' => 1,
            b'\r' if i + 1 < buf.len() => {
                if buf[i + 1] == b'\n' {
                    2
                } else {
                    1
                }
            }
            // A trailing CR may be the first half of a CRLF.
            b'\r' => return None,
            _ => {
                i += 1;
                continue;
            }
        };
        if i == line_start {
            return Some(i + eol_len);
        }
        i += eol_len;
        line_start = i;
    }
    None
}

fn parse_event(raw: Bytes) -> Event {
    let mut event = None;
    let mut id = None;
    let mut data: Option<String> = None;
    let text = String::from_utf8_lossy(&raw);
    for line in text.split(['\n', '\r']).filter(|l| !l.is_empty()) {
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => event = Some(value.to_string()),
            "id" => id = Some(value.to_string()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_string()),
            },
            _ => {}
        }
    }
    Event {
        raw,
        event,
        id,
        data,
    }
}

/// Encodes an event. `data` may span lines; each becomes a `data:` line.
pub fn encode(event: Option<&str>, id: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(e) = event {
        out.push_str("event: ");
        out.push_str(e);
        out.push('\n');
    }
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_chunks() {
        let mut d = Decoder::new(1024);
        d.push(b"event: message\nid: 1\nda");
        assert_eq!(d.next_event(), Ok(None));
        d.push(b"ta: {\"a\":1}\n\ndata: two\n");
        let e = d.next_event().unwrap().unwrap();
        assert_eq!(e.kind(), "message");
        assert_eq!(e.id.as_deref(), Some("1"));
        assert_eq!(e.data.as_deref(), Some("{\"a\":1}"));
        assert_eq!(&e.raw[..], b"event: message\nid: 1\ndata: {\"a\":1}\n\n");
        assert_eq!(d.next_event(), Ok(None));
        d.push(b"\n");
        assert_eq!(
            d.next_event().unwrap().unwrap().data.as_deref(),
            Some("two")
        );
    }

    #[test]
    fn handles_crlf_and_multiline_data() {
        let mut d = Decoder::new(1024);
        d.push(b"data: a\r\ndata: b\r");
        assert_eq!(d.next_event(), Ok(None));
        d.push(b"\n\r\n");
        let e = d.next_event().unwrap().unwrap();
        assert_eq!(e.data.as_deref(), Some("a\nb"));
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn priming_event_has_id_and_empty_data() {
        let mut d = Decoder::new(1024);
        d.push(b"id: 0\nretry: 3000\ndata:\n\n");
        let e = d.next_event().unwrap().unwrap();
        assert_eq!(e.id.as_deref(), Some("0"));
        assert_eq!(e.data.as_deref(), Some(""));
    }

    #[test]
    fn comments_are_kept_raw_and_ignored() {
        let mut d = Decoder::new(1024);
        d.push(b": keep-alive\n\n");
        let e = d.next_event().unwrap().unwrap();
        assert_eq!(e.data, None);
        assert_eq!(&e.raw[..], b": keep-alive\n\n");
    }

    #[test]
    fn oversized_partial_event_is_an_error() {
        let mut d = Decoder::new(8);
        d.push(b"data: 0123456789");
        assert_eq!(d.next_event(), Err(SseError::TooLarge(8)));
    }

    #[test]
    fn finish_returns_unterminated_tail() {
        let mut d = Decoder::new(64);
        d.push(b"data: last");
        assert_eq!(d.next_event(), Ok(None));
        assert_eq!(d.finish().unwrap().data.as_deref(), Some("last"));
        assert_eq!(d.finish(), None);
    }

    #[test]
    fn encode_round_trips() {
        let bytes = encode(Some("endpoint"), Some("7"), "x\ny");
        let mut d = Decoder::new(64);
        d.push(&bytes);
        let e = d.next_event().unwrap().unwrap();
        assert_eq!(e.kind(), "endpoint");
        assert_eq!(e.id.as_deref(), Some("7"));
        assert_eq!(e.data.as_deref(), Some("x\ny"));
    }
}
