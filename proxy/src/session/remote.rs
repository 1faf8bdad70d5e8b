//! Session records shared by replicas, in Redis (`sessions.store`).
//!
//! A session issued by one replica can then be served, and rebound, by
//! another: the token carries what never changes, and the record here
//! carries what a rebind replays and the current upstream binding.
//!
//! - Keys name a digest of the session's secret handle (`<prefix>:s:<hex>`),
//!   never the handle: a dump of Redis yields nothing a client could
//!   present.
//! - Values are sealed (XChaCha20-Poly1305 with the keyring's store-value
//!   sub-key, under the primary key's id, bound to the key name), since
//!   they hold upstream session ids, which are credentials to the app.
//! - Every read slides the idle expiry (`GETEX … PX`); the token's own
//!   expiry still bounds the session.
//! - A rebind takes `<prefix>:lk:<hex>` (`SET NX PX`), so one replica
//!   re-establishes a session at a time; the others wait for the new
//!   generation.
//! - `DELETE` writes `<prefix>:rv:<hex>` until the token's expiry.
//!
//! Redis unreachable: each operation fails fast (timeouts), the caller
//! falls back to this replica's memory (or refuses, with `failure:
//! closed`), and `portcullis_store_up` says 0.

use std::time::Duration;

use base64::{engine::general_purpose::STANDARD, Engine as _};
use bytes::Bytes;
use chacha20poly1305::aead::{Aead, AeadCore, OsRng, Payload};
use prometheus::IntGauge;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{keyring::KeyState, store::Handle, Keyring};

/// What a replica needs of a session that another one issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The client's `initialize`, base64.
    pub initialize: String,
    pub requested_protocol: String,
    pub upstream_id: String,
    pub generation: u64,
    pub log_level: Option<String>,
    pub subscriptions: Vec<String>,
    pub negotiated: Option<String>,
}

impl Snapshot {
    pub fn initialize_bytes(&self) -> Option<Bytes> {
        STANDARD.decode(&self.initialize).ok().map(Bytes::from)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("session store: a record could not be sealed")]
    Seal,
}

pub struct Remote {
    conn: ConnectionManager,
    prefix: String,
    idle_ttl: Duration,
    up: IntGauge,
}

/// Store keys: a digest of the handle, so the store never holds one.
fn key_id(handle: &Handle) -> String {
    let mut h = Sha256::new();
    h.update(b"portcullis/store-key/v1\0");
    h.update(handle);
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Remote {
    /// Connects lazily: a Redis that is down at start does not stop the
    /// sidecar.
    pub fn new(
        url: &str,
        prefix: &str,
        idle_ttl: Duration,
        up: IntGauge,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            prefix: prefix.to_string(),
            idle_ttl,
            up,
        })
    }

    fn record_key(&self, id: &str) -> String {
        format!("{}:s:{id}", self.prefix)
    }

    fn note<T>(&self, r: &Result<T, StoreError>) {
        match r {
            Ok(_) => self.up.set(1),
            Err(StoreError::Redis(e)) => {
                self.up.set(0);
                tracing::warn!(error = %e, "session store unavailable");
            }
            Err(StoreError::Seal) => {}
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.idle_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Writes a session's record (sliding its idle expiry).
    pub async fn put(
        &self,
        ring: &Keyring,
        handle: &Handle,
        snap: &Snapshot,
    ) -> Result<(), StoreError> {
        let r = self.put_inner(ring, handle, snap).await;
        self.note(&r);
        r
    }

    async fn put_inner(
        &self,
        ring: &Keyring,
        handle: &Handle,
        snap: &Snapshot,
    ) -> Result<(), StoreError> {
        let id = key_id(handle);
        let key = self.record_key(&id);
        let plain = serde_json::to_vec(snap).map_err(|_| StoreError::Seal)?;
        let value = seal(ring, key.as_bytes(), &plain)?;
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(&key)
            .arg(value)
            .arg("PX")
            .arg(self.ttl_ms())
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// A session's record and whether it was revoked, in one round trip.
    pub async fn get(
        &self,
        ring: &Keyring,
        handle: &Handle,
    ) -> Result<(Option<Snapshot>, bool), StoreError> {
        let r = self.get_inner(ring, handle).await;
        self.note(&r);
        r
    }

    async fn get_inner(
        &self,
        ring: &Keyring,
        handle: &Handle,
    ) -> Result<(Option<Snapshot>, bool), StoreError> {
        let id = key_id(handle);
        let key = self.record_key(&id);
        let mut conn = self.conn.clone();
        let (value, revoked): (Option<String>, bool) = redis::pipe()
            .cmd("GETEX")
            .arg(&key)
            .arg("PX")
            .arg(self.ttl_ms())
            .cmd("EXISTS")
            .arg(format!("{}:rv:{id}", self.prefix))
            .query_async(&mut conn)
            .await?;
        // A value that does not open (tampered, or under a retired key) is
        // no record: the session goes on from its token alone.
        let snap = value
            .and_then(|v| open(ring, key.as_bytes(), &v))
            .and_then(|plain| serde_json::from_slice(&plain).ok());
        Ok((snap, revoked))
    }

    /// Marks a session revoked until `ttl` from now, and drops its record.
    pub async fn revoke(&self, handle: &Handle, ttl: Duration) -> Result<(), StoreError> {
        let id = key_id(handle);
        let mut conn = self.conn.clone();
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let r = redis::pipe()
            .cmd("SET")
            .arg(format!("{}:rv:{id}", self.prefix))
            .arg(1)
            .arg("PX")
            .arg(ms)
            .ignore()
            .cmd("DEL")
            .arg(self.record_key(&id))
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(StoreError::from);
        self.note(&r);
        r
    }

    /// Takes the rebind lock of a session for `hold`; `Ok(false)` when
    /// another replica holds it.
    pub async fn lock(
        &self,
        handle: &Handle,
        owner: &str,
        hold: Duration,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let ms = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX);
        let r = redis::cmd("SET")
            .arg(format!("{}:lk:{}", self.prefix, key_id(handle)))
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(ms)
            .query_async::<Option<String>>(&mut conn)
            .await
            .map(|v| v.is_some())
            .map_err(StoreError::from);
        self.note(&r);
        r
    }

    /// Releases the lock if this owner still holds it.
    pub async fn unlock(&self, handle: &Handle, owner: &str) {
        const RELEASE: &str =
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
        let mut conn = self.conn.clone();
        let r = redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(format!("{}:lk:{}", self.prefix, key_id(handle)))
            .arg(owner)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(StoreError::from);
        self.note(&r);
    }
}

/// `kid.base64(nonce ‖ ciphertext ‖ tag)` under the primary key's store
/// sub-key, bound to the Redis key (a value moved to another key fails).
fn seal(ring: &Keyring, bound: &[u8], plain: &[u8]) -> Result<String, StoreError> {
    let key = ring.primary();
    let nonce = chacha20poly1305::XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let sealed = key
        .store
        .encrypt(
            &nonce,
            Payload {
                msg: plain,
                aad: bound,
            },
        )
        .map_err(|_| StoreError::Seal)?;
    let mut raw = nonce.to_vec();
    raw.extend_from_slice(&sealed);
    Ok(format!("{}.{}", key.kid, STANDARD.encode(raw)))
}

fn open(ring: &Keyring, bound: &[u8], value: &str) -> Option<Vec<u8>> {
    let (kid, body) = value.split_once('.')?;
    let key = ring.get(kid).filter(|k| k.state != KeyState::Retired)?;
    let raw = STANDARD.decode(body).ok()?;
    if raw.len() < 24 {
        return None;
    }
    let (nonce, sealed) = raw.split_at(24);
    key.store
        .decrypt(
            chacha20poly1305::XNonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: bound,
            },
        )
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RING: &str = "keys:\n  - {kid: a1, key_b64: \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\", state: primary}\n";

    #[test]
    fn a_sealed_record_opens_only_under_its_key_name() {
        let ring = Keyring::from_yaml(RING).unwrap();
        let v = seal(&ring, b"pc:s:aa", b"secret upstream id").unwrap();
        assert!(!v.contains("secret"));
        assert_eq!(open(&ring, b"pc:s:aa", &v).unwrap(), b"secret upstream id");
        assert!(
            open(&ring, b"pc:s:bb", &v).is_none(),
            "moved to another key"
        );
        let mut tampered = v.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(open(&ring, b"pc:s:aa", &String::from_utf8(tampered).unwrap()).is_none());
    }

    #[test]
    fn store_keys_do_not_contain_the_handle() {
        let handle = [0xab; 16];
        let id = key_id(&handle);
        assert_eq!(id.len(), 32);
        assert!(!id.contains("abababab"));
    }
}
