//! The session records this instance holds: what a rebind replays.
//!
//! The sealed token carries what never changes (handle, times, issuing
//! instance, protocol, the first upstream id). What changes — the current
//! upstream session id, the log level and subscriptions to replay — lives
//! here, in memory, bounded. A session whose record is gone (evicted, or
//! issued before this process started) still works from its token, on the
//! upstream id it was issued with; it cannot be rebound.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use bytes::Bytes;

use super::{remote::Snapshot, replay::ReplayLog};

/// A session's handle: 16 random bytes, never shown to anyone.
pub type Handle = [u8; 16];

/// One client session.
#[derive(Debug)]
pub struct Record {
    pub handle: Handle,
    /// The client's `initialize` request, as forwarded: replayed on rebind.
    pub initialize: Bytes,
    /// The `protocolVersion` the client asked for.
    pub requested_protocol: String,
    state: Mutex<State>,
    /// Held while the upstream session is re-established, so concurrent
    /// requests of one session rebind once.
    pub rebinding: tokio::sync::Mutex<()>,
    /// What was sent on the session's GET stream, for `Last-Event-ID`.
    replay: Mutex<ReplayLog>,
}

/// What changes during a session.
#[derive(Debug, Clone)]
pub struct State {
    pub upstream_id: String,
    /// Bumped on each rebind.
    pub generation: u64,
    /// The upstream incarnation this binding was made with (see
    /// [`super::Sessions::incarnation`]).
    pub incarnation: u64,
    /// The last `logging/setLevel` params the client sent.
    pub log_level: Option<Bytes>,
    /// `resources/subscribe` URIs not unsubscribed since.
    pub subscriptions: BTreeSet<String>,
    /// The negotiated protocol version, once known (from a rebind's answer
    /// or the client's `MCP-Protocol-Version` header).
    pub negotiated: Option<String>,
    /// Changed since last written to the shared store.
    pub dirty: bool,
    last_used: Instant,
}

impl Record {
    pub fn new(
        handle: Handle,
        initialize: Bytes,
        requested_protocol: String,
        upstream_id: String,
        incarnation: u64,
    ) -> Self {
        Self {
            handle,
            initialize,
            requested_protocol,
            state: Mutex::new(State {
                upstream_id,
                generation: 0,
                incarnation,
                log_level: None,
                subscriptions: BTreeSet::new(),
                negotiated: None,
                dirty: false,
                last_used: Instant::now(),
            }),
            rebinding: tokio::sync::Mutex::new(()),
            replay: Mutex::default(),
        }
    }

    /// The GET stream's replay log. Every update is a single push, so a
    /// poisoned lock is still consistent.
    pub fn replay(&self) -> MutexGuard<'_, ReplayLog> {
        self.replay.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave a State half
        // written (every update is a plain assignment), so a poisoned lock
        // is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the shared store keeps of this session.
    pub fn snapshot(&self) -> Snapshot {
        let s = self.state();
        Snapshot {
            initialize: STANDARD.encode(&self.initialize),
            requested_protocol: self.requested_protocol.clone(),
            upstream_id: s.upstream_id.clone(),
            generation: s.generation,
            log_level: s
                .log_level
                .as_ref()
                .map(|l| String::from_utf8_lossy(l).into_owned()),
            subscriptions: s.subscriptions.iter().cloned().collect(),
            negotiated: s.negotiated.clone(),
        }
    }

    /// A record another replica wrote, or `None` if it is unreadable.
    pub fn from_snapshot(handle: Handle, snap: &Snapshot, incarnation: u64) -> Option<Self> {
        let record = Self::new(
            handle,
            snap.initialize_bytes()?,
            snap.requested_protocol.clone(),
            snap.upstream_id.clone(),
            incarnation,
        );
        record.adopt(snap);
        Some(record)
    }

    /// Takes a newer binding another replica made.
    pub fn adopt(&self, snap: &Snapshot) {
        let mut s = self.state();
        s.upstream_id.clone_from(&snap.upstream_id);
        s.generation = snap.generation;
        s.log_level = snap.log_level.as_ref().map(|l| Bytes::from(l.clone()));
        s.subscriptions = snap.subscriptions.iter().cloned().collect();
        s.negotiated.clone_from(&snap.negotiated);
    }

    /// The current binding, marking the session used.
    pub fn touch(&self) -> State {
        let mut s = self.state();
        s.last_used = Instant::now();
        s.clone()
    }
}

/// The records, bounded: past `max`, the least recently used goes.
#[derive(Debug)]
pub struct Store {
    max: usize,
    records: Mutex<HashMap<Handle, Arc<Record>>>,
    /// Handles revoked by `DELETE`, until the token's own expiry.
    revoked: Mutex<HashMap<Handle, u64>>,
}

impl Store {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            records: Mutex::default(),
            revoked: Mutex::default(),
        }
    }

    fn records(&self) -> MutexGuard<'_, HashMap<Handle, Arc<Record>>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn revocations(&self) -> MutexGuard<'_, HashMap<Handle, u64>> {
        self.revoked.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, handle: &Handle) -> Option<Arc<Record>> {
        self.records().get(handle).cloned()
    }

    /// Adds a record, evicting the least recently used one when full.
    /// Returns how many records are held.
    pub fn insert(&self, record: Arc<Record>) -> usize {
        let mut records = self.records();
        self.insert_locked(&mut records, record)
    }

    fn insert_locked(
        &self,
        records: &mut HashMap<Handle, Arc<Record>>,
        record: Arc<Record>,
    ) -> usize {
        if records.len() >= self.max && !records.contains_key(&record.handle) {
            let oldest = records
                .iter()
                .min_by_key(|(_, r)| r.state().last_used)
                .map(|(h, _)| *h);
            if let Some(h) = oldest {
                records.remove(&h);
            }
        }
        records.insert(record.handle, record);
        records.len()
    }

    /// Adds a record unless one for its handle is held already; returns
    /// the one held and how many records are held.
    pub fn insert_if_absent(&self, record: Arc<Record>) -> (Arc<Record>, usize) {
        let mut records = self.records();
        if let Some(held) = records.get(&record.handle) {
            return (held.clone(), records.len());
        }
        let n = self.insert_locked(&mut records, record.clone());
        (record, n)
    }

    /// Forgets a session and refuses its token until `expires_at`.
    /// Returns how many records are held.
    pub fn revoke(&self, handle: &Handle, expires_at: u64, now: u64) -> usize {
        let mut revoked = self.revocations();
        // Expired entries are dropped as new ones come, so the set stays
        // as large as the sessions revoked within one token lifetime.
        revoked.retain(|_, exp| *exp > now);
        revoked.insert(*handle, expires_at);
        drop(revoked);
        let mut records = self.records();
        records.remove(handle);
        records.len()
    }

    pub fn is_revoked(&self, handle: &Handle) -> bool {
        self.revocations().contains_key(handle)
    }

    pub fn len(&self) -> usize {
        self.records().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8) -> Arc<Record> {
        Arc::new(Record::new(
            [n; 16],
            Bytes::from_static(b"{}"),
            "2025-06-18".into(),
            format!("up-{n}"),
            0,
        ))
    }

    #[test]
    fn the_least_recently_used_record_goes_when_full() {
        let store = Store::new(2);
        store.insert(record(1));
        std::thread::sleep(std::time::Duration::from_millis(2));
        store.insert(record(2));
        std::thread::sleep(std::time::Duration::from_millis(2));
        // Using 1 makes 2 the oldest.
        store.get(&[1; 16]).unwrap().touch();
        assert_eq!(store.insert(record(3)), 2);
        assert!(store.get(&[1; 16]).is_some());
        assert!(store.get(&[2; 16]).is_none());
        assert!(store.get(&[3; 16]).is_some());
    }

    #[test]
    fn a_revoked_session_is_forgotten_and_refused_until_it_expires() {
        let store = Store::new(8);
        store.insert(record(1));
        assert_eq!(store.revoke(&[1; 16], 100, 50), 0);
        assert!(store.get(&[1; 16]).is_none());
        assert!(store.is_revoked(&[1; 16]));
        // A later revocation, after the first token expired, prunes it.
        store.revoke(&[2; 16], 300, 200);
        assert!(!store.is_revoked(&[1; 16]));
        assert!(store.is_revoked(&[2; 16]));
    }
}
