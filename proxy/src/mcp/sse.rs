//! Incremental Server-Sent Events framing.
//!
//! The decoder splits an upstream byte stream into whole events without
//! waiting for the stream to end, and keeps each event's original bytes so
//! that events the proxy does not change are forwarded exactly.
//!
//! It reads the stream the way clients do (the WHATWG rules, which browsers,
//! Node's `eventsource-parser` and Python's `httpx-sse` follow), so that no
//! event a client acts on escapes the filter: a BOM at the stream start is
//! stripped, an empty `event:` field means `message`, and lines end in
//! CRLF, LF or a lone CR, mixed freely. Where clients would guess (invalid
//! UTF-8) or memory would grow without bound (an oversized event), the
//! decoder returns an error and the relay ends the stream.

use bytes::{Buf, Bytes, BytesMut};

use super::answer::{self, Answer, AnswerError};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One SSE event: its bytes as received, and the fields MCP uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub raw: Bytes,
    pub event: Option<String>,
    pub id: Option<String>,
    /// `data` lines joined with `\n`; `None` if the event had no data line.
    pub data: Option<String>,
    /// A valid `retry:` field (milliseconds), if any.
    pub retry: Option<u64>,
}

impl Event {
    /// The event type, defaulting to `message` as the SSE standard says:
    /// both a missing and an empty `event:` field mean `message`.
    pub fn kind(&self) -> &str {
        match self.event.as_deref() {
            None | Some("") => "message",
            Some(kind) => kind,
        }
    }

    /// Whether clients hand this event's data to their JSON-RPC reader.
    pub fn is_message(&self) -> bool {
        self.kind() == "message"
    }

    /// What a message event carries, read strictly: `Ok(None)` for an
    /// event clients do not read as JSON-RPC (another type, no data, or
    /// blank data such as a priming event), otherwise the classified
    /// message or batch, or the reason it cannot be read with certainty.
    pub fn payload(&self, max_depth: usize) -> Result<Option<Answer>, AnswerError> {
        let Some(data) = self.data.as_deref().filter(|_| self.is_message()) else {
            return Ok(None);
        };
        if data.trim().is_empty() {
            return Ok(None);
        }
        answer::read_answer(data.as_bytes(), max_depth).map(Some)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("SSE event larger than {0} bytes")]
    TooLarge(usize),
    #[error("SSE event is not valid UTF-8")]
    NotUtf8,
}

/// Accumulates chunks and yields complete events.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_event: usize,
    /// Still at the stream start, where one BOM may stand.
    at_start: bool,
    /// The last event ended in a lone CR at the end of the buffer; an LF
    /// right after it belongs to that line end.
    skip_lf: bool,
}

impl Decoder {
    pub fn new(max_event: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_event,
            at_start: true,
            skip_lf: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        if self.skip_lf && !self.buf.is_empty() {
            if self.buf[0] == b'\n' {
                self.buf.advance(1);
            }
            self.skip_lf = false;
        }
        if self.at_start && (self.buf.len() >= BOM.len() || !BOM.starts_with(&self.buf)) {
            if self.buf.starts_with(BOM) {
                self.buf.advance(BOM.len());
            }
            self.at_start = false;
        }
    }

    /// Bytes received that do not yet form a whole event.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete event, if the buffer holds one.
    pub fn next_event(&mut self) -> Result<Option<Event>, SseError> {
        if self.at_start {
            // Only part of a BOM so far: wait for more.
            return Ok(None);
        }
        match event_end(&self.buf) {
            Some(end) if end > self.max_event => Err(SseError::TooLarge(self.max_event)),
            Some(end) => {
                self.skip_lf = self.buf[end - 1] == b'\r' && end == self.buf.len();
                let raw = self.buf.split_to(end).freeze();
                parse_event(raw).map(Some)
            }
            None if self.buf.len() > self.max_event => Err(SseError::TooLarge(self.max_event)),
            None => Ok(None),
        }
    }

    /// Whatever is left when the stream ends: a final event without its
    /// blank line is still delivered, as browsers do. A tail that cannot be
    /// read is dropped, not relayed; [`Decoder::finish_checked`] says why.
    pub fn finish(&mut self) -> Option<Event> {
        self.finish_checked().ok().flatten()
    }

    /// [`Decoder::finish`], with the reason a tail was refused.
    pub fn finish_checked(&mut self) -> Result<Option<Event>, SseError> {
        if self.buf.iter().all(|b| b.is_ascii_whitespace()) || self.at_start {
            self.buf.clear();
            return Ok(None);
        }
        if self.buf.len() > self.max_event {
            return Err(SseError::TooLarge(self.max_event));
        }
        let raw = self.buf.split().freeze();
        parse_event(raw).map(Some)
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
            b'\r' if buf.get(i + 1) == Some(&b'\n') => 2,
            // A CR that ends a blank line ends the event now; an LF that
            // may follow is dropped by the decoder.
            b'\r' if i == line_start || i + 1 < buf.len() => 1,
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

fn parse_event(raw: Bytes) -> Result<Event, SseError> {
    let text = std::str::from_utf8(&raw).map_err(|_| SseError::NotUtf8)?;
    let mut out = Event {
        raw: Bytes::new(),
        event: None,
        id: None,
        data: None,
        retry: None,
    };
    for line in text.split(['\n', '\r']).filter(|l| !l.is_empty()) {
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => out.event = Some(value.to_string()),
            "id" => out.id = Some(value.to_string()),
            "data" => match &mut out.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => out.data = Some(value.to_string()),
            },
            // The standard ignores a retry that is not all digits.
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                out.retry = value.parse().ok();
            }
            _ => {}
        }
    }
    out.raw = raw;
    Ok(out)
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

    /// Found by the libFuzzer `sse_framer` target (its oracle forgot the
    /// bound): an event larger than the decoder's bound is refused whole,
    /// never split or cut, however it was encoded.
    #[test]
    fn fuzz_regression_an_encoded_event_over_the_bound_is_refused() {
        let text = "x".repeat(5000);
        let framed = encode(Some("message"), Some("1"), &text);
        let mut d = Decoder::new(4096);
        d.push(&framed);
        assert_eq!(d.next_event(), Err(SseError::TooLarge(4096)));
        let mut big = Decoder::new(8192);
        big.push(&framed);
        let e = big.next_event().unwrap().unwrap();
        assert_eq!(e.data.as_deref(), Some(text.as_str()));
    }

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
