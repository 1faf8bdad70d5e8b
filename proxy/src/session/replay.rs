//! The replay log of a session's GET stream: what Portcullis sent on it,
//! under event ids of its own, so that a client that reconnects with
//! `Last-Event-ID` gets what it missed (the upstream's own ids would name
//! events of a server process that may be gone).
//!
//! An id is `<seq>.<tag>`: a per-session sequence number and 16 hex digits
//! of SHA-256 over the session's secret handle and the number. Only the
//! session's holder can have one, and an id of another session fails its
//! tag. The log keeps the last [`MAX_EVENTS`] events, at most
//! [`MAX_BYTES`] in all.

use std::collections::VecDeque;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::store::Handle;

pub const MAX_EVENTS: usize = 256;
pub const MAX_BYTES: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct ReplayLog {
    next: u64,
    events: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

/// What a presented `Last-Event-ID` is.
#[derive(Debug, PartialEq, Eq)]
pub enum LastEvent {
    /// One of this session's: the events after it can be replayed.
    Ours(u64),
    /// Shaped like Portcullis's but not this session's: refused.
    Forged,
    /// Not Portcullis's (an upstream's, from a POST stream): left to the
    /// upstream.
    Foreign,
}

fn tag(handle: &Handle, seq: u64) -> String {
    let mut h = Sha256::new();
    h.update(b"portcullis/event-id/v1\0");
    h.update(handle);
    h.update(seq.to_be_bytes());
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The id of event `seq` of the session `handle`.
pub fn event_id(handle: &Handle, seq: u64) -> String {
    format!("{seq}.{}", tag(handle, seq))
}

/// Reads a `Last-Event-ID` presented in the session `handle`.
pub fn read_last_event(handle: &Handle, id: &str) -> LastEvent {
    let Some((seq, t)) = id.split_once('.') else {
        return LastEvent::Foreign;
    };
    let shaped = !seq.is_empty()
        && seq.len() <= 20
        && seq.bytes().all(|b| b.is_ascii_digit())
        && t.len() == 16
        && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !shaped {
        return LastEvent::Foreign;
    }
    match seq.parse::<u64>() {
        Ok(n) if tag(handle, n) == t => LastEvent::Ours(n),
        _ => LastEvent::Forged,
    }
}

impl ReplayLog {
    /// The number the next event gets.
    pub fn reserve(&mut self) -> u64 {
        let n = self.next;
        self.next += 1;
        n
    }

    /// Keeps an event as sent, dropping the oldest past the bounds.
    pub fn keep(&mut self, seq: u64, event: Bytes) {
        if event.len() > MAX_BYTES {
            return;
        }
        self.bytes += event.len();
        self.events.push_back((seq, event));
        while self.events.len() > MAX_EVENTS || self.bytes > MAX_BYTES {
            if let Some((_, old)) = self.events.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    /// The events after `seq` that are still kept, and whether any after
    /// it were dropped (then the client missed more than can be replayed).
    pub fn after(&self, seq: u64) -> (Vec<Bytes>, bool) {
        let missed: Vec<Bytes> = self
            .events
            .iter()
            .filter(|(n, _)| *n > seq)
            .map(|(_, e)| e.clone())
            .collect();
        let oldest = self.events.front().map_or(self.next, |(n, _)| *n);
        (missed, oldest > seq + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bound_to_their_session() {
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let id = event_id(&a, 7);
        assert_eq!(read_last_event(&a, &id), LastEvent::Ours(7));
        assert_eq!(read_last_event(&b, &id), LastEvent::Forged);
        let bumped = id.replacen("7.", "8.", 1);
        assert_eq!(read_last_event(&a, &bumped), LastEvent::Forged);
        assert_eq!(read_last_event(&a, "upstream-event-42"), LastEvent::Foreign);
        assert_eq!(read_last_event(&a, "0/17"), LastEvent::Foreign);
    }

    #[test]
    fn the_log_is_bounded_and_replays_what_follows() {
        let mut log = ReplayLog::default();
        for _ in 0..(MAX_EVENTS + 10) {
            let n = log.reserve();
            log.keep(n, Bytes::from(format!("event {n}")));
        }
        let (missed, gap) = log.after(u64::try_from(MAX_EVENTS).unwrap() + 5);
        assert_eq!(
            missed,
            vec![
                Bytes::from(format!("event {}", MAX_EVENTS + 6)),
                Bytes::from(format!("event {}", MAX_EVENTS + 7)),
                Bytes::from(format!("event {}", MAX_EVENTS + 8)),
                Bytes::from(format!("event {}", MAX_EVENTS + 9))
            ]
        );
        assert!(!gap);
        let (_, gap) = log.after(0);
        assert!(gap, "event 1 was dropped");
        let big = Bytes::from(vec![b'x'; MAX_BYTES / 2 + 1]);
        let n = log.reserve();
        log.keep(n, big.clone());
        let n = log.reserve();
        log.keep(n, big);
        assert!(log.bytes <= MAX_BYTES);
    }
}
