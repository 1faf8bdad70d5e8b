//! The replay log of a session's GET stream: what Portcullis sent on it,
//! under event ids of its own, so that a client that reconnects with
//! `Last-Event-ID` gets what it missed. (The upstream's own ids would name
//! events of a server process that may be gone.)
//!
//! An id is `pc-<epoch>-<seq>-<tag>`: the log's epoch (random, one per log,
//! so a log on another replica or in an earlier process is told apart), a
//! sequence number, and 16 hex digits of SHA-256 over the session's secret
//! handle, the epoch and the number. Only the session's holder can have
//! one, and an id of another session fails its tag. The log keeps the last
//! [`MAX_EVENTS`] events, at most [`MAX_BYTES`] in all.

use std::collections::VecDeque;

use bytes::Bytes;
use chacha20poly1305::aead::{rand_core::RngCore, OsRng};
use sha2::{Digest, Sha256};

use super::store::Handle;

/// Events kept per session: enough for the notifications of a client's
/// reconnect pause (about a second), bounded for 10 000 sessions.
pub const MAX_EVENTS: usize = 256;
/// Bytes kept per session: `max_sessions` × this is the worst case.
pub const MAX_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub struct ReplayLog {
    epoch: u32,
    next: u64,
    events: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

/// What a presented `Last-Event-ID` is.
#[derive(Debug, PartialEq, Eq)]
pub enum LastEvent {
    /// One of this session's, from this log: the events after it can be
    /// replayed.
    Ours(u64),
    /// This session's, from a log this process no longer has (another
    /// replica's, or before a restart): what followed cannot be replayed.
    Elsewhere,
    /// Shaped like Portcullis's but not this session's: refused.
    Forged,
    /// Not Portcullis's (an upstream's, from a POST stream): left to the
    /// upstream.
    Foreign,
}

fn tag(handle: &Handle, epoch: u32, seq: u64) -> String {
    let mut h = Sha256::new();
    h.update(b"portcullis/event-id/v2\0");
    h.update(handle);
    h.update(epoch.to_be_bytes());
    h.update(seq.to_be_bytes());
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What a `Last-Event-ID` is in the session `handle`, whatever the log:
/// `Ours` (of this session, from some log), `Forged` or `Foreign`.
pub fn classify(handle: &Handle, id: &str) -> LastEvent {
    let mut parts = id.split('-');
    let (Some("pc"), Some(epoch), Some(seq), Some(t), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return LastEvent::Foreign;
    };
    let shaped = lower_hex(epoch, 8)
        && !seq.is_empty()
        && seq.len() <= 20
        && seq.bytes().all(|b| b.is_ascii_digit())
        && lower_hex(t, 16);
    if !shaped {
        return LastEvent::Foreign;
    }
    let (Ok(epoch), Ok(seq)) = (u32::from_str_radix(epoch, 16), seq.parse::<u64>()) else {
        return LastEvent::Forged;
    };
    match tag(handle, epoch, seq) == t {
        true => LastEvent::Ours(seq),
        false => LastEvent::Forged,
    }
}

/// The epoch of an id [`classify`] read as `Ours`.
fn epoch_of(id: &str) -> u32 {
    id.split('-')
        .nth(1)
        .and_then(|e| u32::from_str_radix(e, 16).ok())
        .unwrap_or_default()
}

impl Default for ReplayLog {
    fn default() -> Self {
        Self {
            epoch: OsRng.next_u32(),
            next: 0,
            events: VecDeque::new(),
            bytes: 0,
        }
    }
}

impl ReplayLog {
    /// The id of event `seq` of this log, in the session `handle`.
    pub fn event_id(&self, handle: &Handle, seq: u64) -> String {
        format!(
            "pc-{:08x}-{seq}-{}",
            self.epoch,
            tag(handle, self.epoch, seq)
        )
    }

    /// Reads a `Last-Event-ID` presented in the session `handle`.
    pub fn read_last_event(&self, handle: &Handle, id: &str) -> LastEvent {
        match classify(handle, id) {
            LastEvent::Ours(seq) if self.epoch == epoch_of(id) && seq < self.next => {
                LastEvent::Ours(seq)
            }
            LastEvent::Ours(_) => LastEvent::Elsewhere,
            other => other,
        }
    }

    /// The number the next event gets.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Keeps an event under the next number, dropping the oldest past the
    /// bounds; returns its number.
    pub fn push(&mut self, event: Bytes) -> u64 {
        let seq = self.next;
        self.next += 1;
        self.bytes += event.len();
        self.events.push_back((seq, event));
        // The newest event is always kept, whatever its size: a live
        // client must still get it.
        while self.events.len() > 1 && (self.events.len() > MAX_EVENTS || self.bytes > MAX_BYTES) {
            match self.events.pop_front() {
                Some((_, old)) => self.bytes -= old.len(),
                None => break,
            }
        }
        seq
    }

    /// The events numbered `from` and later that are still kept, and
    /// whether any of those were dropped (then more was missed than can be
    /// replayed).
    pub fn since(&self, from: u64) -> (Vec<(u64, Bytes)>, bool) {
        let kept: Vec<(u64, Bytes)> = self
            .events
            .iter()
            .filter(|(n, _)| *n >= from)
            .cloned()
            .collect();
        let oldest = self.events.front().map_or(self.next, |(n, _)| *n);
        (kept, oldest > from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bound_to_their_session_and_log() {
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let mut log = ReplayLog::default();
        for _ in 0..8 {
            log.push(Bytes::from_static(b"e"));
        }
        let id = log.event_id(&a, 7);
        assert_eq!(log.read_last_event(&a, &id), LastEvent::Ours(7));
        assert_eq!(log.read_last_event(&b, &id), LastEvent::Forged);
        let bumped = id.replacen("-7-", "-6-", 1);
        assert_eq!(log.read_last_event(&a, &bumped), LastEvent::Forged);
        // Every single character changed is refused or read as foreign.
        for i in 0..id.len() {
            let mut bytes = id.clone().into_bytes();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            let changed = String::from_utf8(bytes).unwrap();
            assert!(
                !matches!(log.read_last_event(&a, &changed), LastEvent::Ours(_)),
                "{changed}"
            );
        }
        // The same session's id from another log (replica, process).
        let other = ReplayLog::default();
        let theirs = other.event_id(&a, 3);
        assert_eq!(log.read_last_event(&a, &theirs), LastEvent::Elsewhere);
        // A number this log never issued.
        assert_eq!(
            log.read_last_event(&a, &log.event_id(&a, 99)),
            LastEvent::Elsewhere
        );
        assert_eq!(
            log.read_last_event(&a, "upstream-event-42"),
            LastEvent::Foreign
        );
        assert_eq!(log.read_last_event(&a, "0/17"), LastEvent::Foreign);
        assert_eq!(log.read_last_event(&a, ""), LastEvent::Foreign);
    }

    #[test]
    fn the_log_is_bounded_and_replays_what_follows() {
        let mut log = ReplayLog::default();
        for n in 0..(MAX_EVENTS + 10) {
            log.push(Bytes::from(format!("event {n}")));
        }
        let from = u64::try_from(MAX_EVENTS).unwrap() + 6;
        let (kept, gap) = log.since(from);
        let numbers: Vec<u64> = kept.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, (from..from + 4).collect::<Vec<_>>());
        assert_eq!(kept[0].1, Bytes::from(format!("event {from}")));
        assert!(!gap);
        let (_, gap) = log.since(1);
        assert!(gap, "event 1 was dropped");
        let big = Bytes::from(vec![b'x'; MAX_BYTES / 2 + 1]);
        log.push(big.clone());
        log.push(big);
        assert!(log.bytes <= MAX_BYTES);
        assert_eq!(log.events.len(), 1);
        // One event over the bound is kept until the next comes.
        let huge = Bytes::from(vec![b'y'; MAX_BYTES + 1]);
        let n = log.push(huge);
        assert_eq!(
            log.since(n),
            (vec![(n, Bytes::from(vec![b'y'; MAX_BYTES + 1]))], false)
        );
        log.push(Bytes::from_static(b"small"));
        assert_eq!(log.events.len(), 1);
        // Nothing yet past the end: no gap.
        assert_eq!(log.since(log.next()), (Vec::new(), false));
    }
}
