//! Client-facing MCP sessions (issue 10): Portcullis issues its own
//! `Mcp-Session-Id`, an AEAD-sealed token bound to the caller, so that a
//! session outlives the upstream process that began it.
//!
//! - [`keyring`]: the keys, from a file mounted from a Secret, reloaded on
//!   change; there is no default key.
//! - [`token`]: the sealed id itself.
//! - [`store`]: what this instance remembers of each session (what a
//!   rebind replays).
//! - [`Sessions`]: the three together, as the request path uses them
//!   (`service::session` is the phase that calls it).

pub mod keyring;
mod metrics;
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
    pub metrics: SessionMetrics,
}

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
            metrics,
        })
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
    ) -> Result<(String, Arc<Record>), SealError> {
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
        let record = Arc::new(Record::new(
            handle,
            initialize,
            requested_protocol.to_string(),
            upstream_id.to_string(),
            incarnation,
        ));
        self.metrics.set_active(self.store.insert(record.clone()));
        self.metrics.issued("initialize");
        tracing::debug!(session = %short(&handle), "session id issued");
        Ok((token, record))
    }

    /// `DELETE`: the session is forgotten and its id refused from now on.
    pub fn revoke(&self, opened: &Opened) {
        let n = self
            .store
            .revoke(&opened.claims.handle, opened.claims.expires_at, now());
        self.metrics.set_active(n);
    }

    /// Ends a session Portcullis cannot keep (its server changed the
    /// contract): its id is refused from now on, and the client starts anew.
    pub fn end(&self, handle: &Handle) {
        let now = now();
        let n = self
            .store
            .revoke(handle, now.saturating_add(self.lifetime.as_secs()), now);
        self.metrics.set_active(n);
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
