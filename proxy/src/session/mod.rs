//! Client-facing MCP sessions (issue 10): Portcullis issues its own
//! `Mcp-Session-Id`, an AEAD-sealed token bound to the caller, so that a
//! session outlives the upstream process that began it.
//!
//! - [`keyring`]: the keys, from a file mounted from a Secret, reloaded on
//!   change; there is no default key.
//! - [`token`]: the sealed id itself.
//! - [`store`]: what this instance remembers of each session (what a
//!   rebind replays).
//! - [`remote`]: the same records shared by replicas, in Redis.
//! - [`Sessions`]: the three together, as the request path uses them
//!   (`service::session` is the phase that calls it).

pub mod keyring;
mod metrics;
pub mod remote;
pub mod replay;
pub mod store;
pub mod token;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use bytes::Bytes;
use chacha20poly1305::aead::{rand_core::RngCore, OsRng};
use sha2::{Digest, Sha256};

pub use self::{
    keyring::{KeyState, Keyring, KeyringError},
    metrics::SessionMetrics,
    store::{Handle, Record, State, Store},
    token::{Claims, Reject, SealError},
};
use crate::{config::SessionsConfig, identity::Principal};

/// A session id the caller presented, opened.
#[derive(Debug, Clone)]
pub struct Opened {
    pub claims: Claims,
    /// `None` when this instance has no record of it (issued before this
    /// process started, or evicted): it is then served on the upstream id
    /// the token carries, and cannot be rebound.
    pub record: Option<Arc<Record>>,
}

impl Opened {
    /// The upstream session id to send now, and the binding's generation.
    pub fn upstream(&self) -> (String, Option<State>) {
        match &self.record {
            Some(r) => {
                let s = r.touch();
                (s.upstream_id.clone(), Some(s))
            }
            None => (self.claims.upstream_id.clone(), None),
        }
    }
}

pub struct Sessions {
    keyring: ArcSwap<Keyring>,
    keyring_file: PathBuf,
    /// A digest of the keyring file last loaded, to reload only on change.
    keyring_digest: std::sync::Mutex<[u8; 32]>,
    store: Store,
    lifetime: Duration,
    instance: [u8; 16],
    /// Upstream statuses that mean "unknown session" (404 by the spec;
    /// some SDK servers answer 400 or 401).
    lost_statuses: Vec<u16>,
    pub rebind: bool,
    /// Tools never sent again after a mid-answer loss.
    pub never_retry: Vec<String>,
    /// See `sessions.stream_grace`.
    pub stream_grace: Duration,
    pub metrics: SessionMetrics,
    remote: Option<Shared>,
}

/// The shared store and how to use it.
struct Shared {
    remote: remote::Remote,
    fail_closed: bool,
    lock_timeout: Duration,
    /// This replica's name on the rebind locks it takes.
    owner: String,
}

/// Why a session could not be brought up to date from the shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncError {
    /// Revoked on another replica: the same 404 as any bad id.
    Revoked,
    /// The store is unreachable and `failure: closed` is set.
    StoreDown,
}

/// Whether this replica may rebind a session now.
pub enum RebindTurn {
    /// No shared store, or it is unreachable: rebind here.
    Alone,
    /// This replica holds the session's lock until it calls
    /// [`Sessions::unlock`].
    Held,
    /// Another replica rebound it meanwhile: this is its binding.
    Done(remote::Snapshot),
}

/// The largest `initialize` kept for replay (real ones are about 1 KiB):
/// `max_sessions` records then take at most `max_sessions` × 16 KiB.
pub const MAX_INITIALIZE: usize = 16 * 1024;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Sessions {
    pub fn new(
        config: &SessionsConfig,
        instance: uuid::Uuid,
        metrics: SessionMetrics,
    ) -> Result<Self, KeyringError> {
        let text = read(&config.keyring_file)?;
        let ring = Keyring::from_yaml(&text)?;
        Ok(Self {
            keyring: ArcSwap::from_pointee(ring),
            keyring_file: config.keyring_file.clone(),
            keyring_digest: std::sync::Mutex::new(digest(text.as_bytes())),
            store: Store::new(config.max_sessions),
            lifetime: config.lifetime,
            instance: *instance.as_bytes(),
            lost_statuses: config.session_lost_statuses.clone(),
            rebind: config.rebind,
            never_retry: config.never_retry.clone(),
            stream_grace: config.stream_grace,
            remote: match &config.store {
                Some(s) => {
                    let mut nonce = [0u8; 8];
                    OsRng.fill_bytes(&mut nonce);
                    Some(Shared {
                        remote: remote::Remote::new(
                            &s.url,
                            &s.prefix,
                            s.idle_ttl,
                            metrics.store_up.clone(),
                        )
                        .map_err(|e| KeyringError::Invalid {
                            field: "sessions.store.url".into(),
                            reason: e.to_string(),
                        })?,
                        fail_closed: s.failure == crate::config::StoreFailure::Closed,
                        lock_timeout: s.lock_timeout,
                        owner: format!("{instance}/{}", URL_SAFE_NO_PAD.encode(nonce)),
                    })
                }
                None => None,
            },
            metrics,
        })
    }

    /// Brings `opened` up to date from the shared store (a record another
    /// replica wrote, a newer binding, a revocation). Without a store, or
    /// with it down and `failure: open`, this replica's memory decides.
    pub async fn sync(&self, opened: &mut Opened, incarnation: u64) -> Result<(), SyncError> {
        let Some(shared) = &self.remote else {
            return Ok(());
        };
        let ring = self.keyring.load_full();
        let handle = opened.claims.handle;
        let (snap, revoked) = match shared.remote.get(&ring, &handle).await {
            Ok(got) => got,
            Err(_) if shared.fail_closed => return Err(SyncError::StoreDown),
            Err(_) => return Ok(()),
        };
        if revoked {
            self.metrics.reject("revoked");
            self.store.revoke(&handle, opened.claims.expires_at, now());
            return Err(SyncError::Revoked);
        }
        let Some(snap) = snap else {
            // Redis lost it (restarted empty, or evicted): write it back
            // from this replica's memory, so the others find it again.
            if let Some(r) = &opened.record {
                self.publish(r).await;
            }
            return Ok(());
        };
        match &opened.record {
            Some(r) => {
                if snap.generation > r.state().generation {
                    r.adopt(&snap);
                }
            }
            None => {
                let Some(r) = Record::from_snapshot(handle, &snap, incarnation) else {
                    return Ok(());
                };
                // Two requests may race here: both get the same record.
                let (r, n) = self.store.insert_if_absent(Arc::new(r));
                self.metrics.set_active(n);
                opened.record = Some(r);
            }
        }
        Ok(())
    }

    /// Writes a record to the shared store if it changed (a no-op without
    /// one; a failure is counted in `store_up` and tried again next time).
    pub async fn publish(&self, record: &Record) {
        let Some(shared) = &self.remote else {
            return;
        };
        // A session ended here is never written back (after a Redis
        // restart lost its revocation, say).
        if self.store.is_revoked(&record.handle) {
            return;
        }
        let snap = record.snapshot();
        let ring = self.keyring.load_full();
        if shared
            .remote
            .put(&ring, &record.handle, &snap)
            .await
            .is_ok()
        {
            let mut s = record.state();
            if s.generation == snap.generation {
                s.dirty = false;
            }
        }
    }

    /// Takes the shared rebind lock of a session whose binding this
    /// replica saw at `generation`, or waits (up to the lock timeout) for
    /// the replica that holds it to finish.
    pub async fn rebind_turn(&self, handle: &Handle, generation: u64) -> RebindTurn {
        let Some(shared) = &self.remote else {
            return RebindTurn::Alone;
        };
        let deadline = std::time::Instant::now() + shared.lock_timeout;
        loop {
            match shared
                .remote
                .lock(handle, &shared.owner, shared.lock_timeout)
                .await
            {
                Ok(true) => return RebindTurn::Held,
                Err(_) => return RebindTurn::Alone,
                Ok(false) => {}
            }
            let ring = self.keyring.load_full();
            if let Ok((Some(snap), _)) = shared.remote.get(&ring, handle).await {
                if snap.generation > generation {
                    return RebindTurn::Done(snap);
                }
            }
            if std::time::Instant::now() >= deadline {
                return RebindTurn::Alone;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Releases a lock [`Sessions::rebind_turn`] gave.
    pub async fn unlock(&self, handle: &Handle) {
        if let Some(shared) = &self.remote {
            shared.remote.unlock(handle, &shared.owner).await;
        }
    }

    /// Reads the keyring file again and swaps it in if it changed. A file
    /// that does not load leaves the keys in force (and says why).
    pub fn reload_keyring(&self) -> Result<bool, KeyringError> {
        let text = read(&self.keyring_file)?;
        let d = digest(text.as_bytes());
        let mut last = self
            .keyring_digest
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *last == d {
            return Ok(false);
        }
        let ring = Keyring::from_yaml(&text)?;
        self.keyring.store(Arc::new(ring));
        *last = d;
        Ok(true)
    }

    /// Key ids and states in force (for `/identity`).
    pub fn keys(&self) -> Vec<(String, KeyState)> {
        self.keyring.load().summary()
    }

    /// Opens a presented id. Every refusal is counted by reason and comes
    /// back as `None`: the caller answers them all with one 404.
    pub fn open(&self, token: &str, principal: &Principal) -> Option<Opened> {
        let ring = self.keyring.load();
        let claims = match token::open(&ring, token, &token::binding(principal), now()) {
            Ok(c) => c,
            Err(r) => {
                self.metrics.reject(r.label());
                tracing::info!(reason = r.label(), "session id refused");
                return None;
            }
        };
        if self.store.is_revoked(&claims.handle) {
            self.metrics.reject("revoked");
            tracing::info!(session = %short(&claims.handle), "revoked session id refused");
            return None;
        }
        let record = self.store.get(&claims.handle);
        Some(Opened { claims, record })
    }

    /// Issues a fresh session id for an upstream session that `initialize`
    /// began, and records what a rebind needs.
    pub fn issue(
        &self,
        principal: &Principal,
        upstream_id: &str,
        initialize: Bytes,
        requested_protocol: &str,
        incarnation: u64,
    ) -> Result<(String, Option<Arc<Record>>), SealError> {
        let mut handle = [0u8; 16];
        OsRng.fill_bytes(&mut handle);
        let issued_at = now();
        let mut init_digest = [0u8; 16];
        init_digest.copy_from_slice(&digest(&initialize)[..16]);
        let claims = Claims {
            handle,
            issued_at,
            expires_at: issued_at.saturating_add(self.lifetime.as_secs()),
            instance: self.instance,
            protocol: requested_protocol.to_string(),
            init_digest,
            upstream_id: upstream_id.to_string(),
        };
        let token = token::seal(&self.keyring.load(), &claims, &token::binding(principal))?;
        self.metrics.issued("initialize");
        tracing::debug!(session = %short(&handle), "session id issued");
        if initialize.len() > MAX_INITIALIZE {
            // Kept bounded: such a session works on its token alone and
            // cannot be rebound.
            tracing::warn!(
                bytes = initialize.len(),
                max = MAX_INITIALIZE,
                "initialize too large to keep: this session cannot be rebound"
            );
            return Ok((token, None));
        }
        let record = Arc::new(Record::new(
            handle,
            initialize,
            requested_protocol.to_string(),
            upstream_id.to_string(),
            incarnation,
        ));
        self.metrics.set_active(self.store.insert(record.clone()));
        Ok((token, Some(record)))
    }

    /// `DELETE`: the session is forgotten and its id refused from now on,
    /// on every replica when there is a shared store. `Err` when the store
    /// could not be told and `failure: closed` is set (the revocation then
    /// holds on this replica only).
    pub async fn revoke(&self, opened: &Opened) -> Result<(), ()> {
        self.revoke_until(&opened.claims.handle, opened.claims.expires_at)
            .await
    }

    async fn revoke_until(&self, handle: &Handle, expires_at: u64) -> Result<(), ()> {
        let now = now();
        let n = self.store.revoke(handle, expires_at, now);
        self.metrics.set_active(n);
        let Some(shared) = &self.remote else {
            return Ok(());
        };
        let ttl = Duration::from_secs(expires_at.saturating_sub(now));
        match shared.remote.revoke(handle, ttl).await {
            Err(_) if shared.fail_closed => Err(()),
            _ => Ok(()),
        }
    }

    /// Whether an opened id may still be used: not revoked here, not
    /// expired.
    pub fn still_valid(&self, claims: &Claims) -> bool {
        now() < claims.expires_at && !self.store.is_revoked(&claims.handle)
    }

    /// Ends a session Portcullis cannot keep (its server changed the
    /// contract): its id is refused from now on, and the client starts anew.
    pub async fn end(&self, handle: &Handle) {
        let until = now().saturating_add(self.lifetime.as_secs());
        // Ended here whatever the store says: the client gets its 404.
        let _ = self.revoke_until(handle, until).await;
    }

    /// Whether an upstream status means it does not know the session.
    pub fn is_lost(&self, status: http::StatusCode) -> bool {
        self.lost_statuses.contains(&status.as_u16())
    }

    /// The key the local app may store per-session state under: stable
    /// for the whole client session across rebinds and key rotations,
    /// unguessable (the handle is secret), and never the session id.
    pub fn app_key(handle: &Handle) -> String {
        let mut h = Sha256::new();
        h.update(b"portcullis/session-key/v1\0");
        h.update(handle);
        URL_SAFE_NO_PAD.encode(&h.finalize()[..18])
    }
}

/// How a session is named in logs: a digest prefix, never the token.
pub fn short(handle: &Handle) -> String {
    digest(handle)[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read(path: &std::path::Path) -> Result<zeroize::Zeroizing<String>, KeyringError> {
    std::fs::read_to_string(path)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| KeyringError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}
