//! The SSE framer over random chunkings: the events of a stream do not
//! depend on how it was cut into chunks, and `encode` frames back to the data it was given.

use crate::fuzzing::MAX_DEPTH;
use crate::mcp::sse::{encode, Decoder, Event, SseError};

const MAX_EVENT: usize = 4096;

/// Every event of `chunks`, then the tail, or the first error.
fn frame<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> Result<Vec<Event>, SseError> {
    let mut d = Decoder::new(MAX_EVENT);
    let mut out = Vec::new();
    for chunk in chunks {
        d.push(chunk);
        while let Some(e) = d.next_event()? {
            out.push(e);
        }
    }
    out.extend(d.finish_checked()?);
    Ok(out)
}

/// Fields only: `raw` of the tail may differ in trailing bytes.
/// An event's fields: type, data, id, retry.
type Fields = (Option<String>, Option<String>, Option<String>, Option<u64>);

fn fields(events: &[Event]) -> Vec<Fields> {
    events
        .iter()
        .map(|e| (e.event.clone(), e.id.clone(), e.data.clone(), e.retry))
        .collect()
}

/// One fuzz input.
pub fn run(data: &[u8]) {
    let input = data;
    let Some((&seed, stream)) = input.split_first() else {
        return;
    };
    // Split points from the first byte: a chunk length cycle of 1..=8.
    let mut chunks = Vec::new();
    let (mut at, mut step) = (0, usize::from(seed));
    while at < stream.len() {
        let len = (step % 8) + 1;
        step = step.wrapping_mul(31).wrapping_add(7);
        let end = (at + len).min(stream.len());
        chunks.push(&stream[at..end]);
        at = end;
    }
    let whole = frame(std::iter::once(stream));
    let cut = frame(chunks.into_iter());
    match (&whole, &cut) {
        (Ok(a), Ok(b)) => {
            assert_eq!(fields(a), fields(b), "events depend on chunking");
            for e in a {
                let _ = e.payload(MAX_DEPTH);
            }
        }
        // An oversized event may be noticed at a different point, but
        // both readings must refuse.
        (Err(_), Err(_)) => {}
        _ => panic!("one chunking refused, the other not: {whole:?} vs {cut:?}"),
    }
    // encode round trip, for text without CR (a CR ends a line in SSE,
    // and encode is only used for JSON, which escapes it).
    if let Ok(text) = std::str::from_utf8(stream) {
        // Only what fits the framer's bound: a longer event is refused as
        // too large, rightly (found by libFuzzer with a 4 KiB input; the
        // oracle had forgotten its own bound).
        if !text.contains('\r') && encode(Some("message"), Some("1"), text).len() <= MAX_EVENT {
            let framed = encode(Some("message"), Some("1"), text);
            let events = frame(std::iter::once(&framed[..])).expect("encoded event frames");
            assert_eq!(events.len(), 1, "encode gave {} events", events.len());
            assert_eq!(events[0].data.as_deref(), Some(text));
        }
    }
}
