//! Tokens already verified, so that an agent sending the same token on
//! every call pays for one signature check, not one per call.
//!
//! An entry is keyed by SHA-256 of the token and the mTLS peer it came
//! with (the actor check depends on the peer), and is used only while:
//! - the token's `exp` has not passed (never a second longer: the cache
//!   holds a token no longer than the token itself lasts);
//! - its issuer's key set is the one it was verified with (any change to
//!   the JWKS, a removal included, sends every token of that issuer
//!   through verification again).
//!
//! Bounded: at most `MAX_ENTRIES`; when full, expired entries go first,
//! then the whole cache (verification refills it).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use sha2::{Digest, Sha256};

use crate::identity::{Peer, Token};

const MAX_ENTRIES: usize = 10_000;

pub type Key = [u8; 32];

struct Entry {
    token: Arc<Token>,
    issuer: usize,
    keys_generation: u64,
}

pub struct VerifiedCache {
    entries: Mutex<HashMap<Key, Entry>>,
    max: usize,
}

impl Default for VerifiedCache {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
            max: MAX_ENTRIES,
        }
    }
}

/// The cache key of `token` presented by `peer`.
pub fn key(token: &str, peer: &Peer) -> Key {
    let mut h = Sha256::new();
    h.update(token.as_bytes());
    h.update([0]);
    h.update(peer.to_string().as_bytes());
    h.finalize().into()
}

impl VerifiedCache {
    /// A cache that keeps nothing: every token is verified (benchmarks of
    /// the verification itself).
    pub fn off() -> Self {
        Self {
            entries: Mutex::default(),
            max: 0,
        }
    }

    /// A verified token, if it is still good: not expired, and its
    /// issuer's keys (`generation_of`) unchanged since.
    pub fn get(&self, key: &Key, generation_of: impl Fn(usize) -> u64) -> Option<Arc<Token>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries.get(key)?;
        let fresh = SystemTime::now() < entry.token.expires_at
            && generation_of(entry.issuer) == entry.keys_generation;
        if fresh {
            return Some(entry.token.clone());
        }
        entries.remove(key);
        None
    }

    pub fn put(&self, key: Key, token: Arc<Token>, issuer: usize, keys_generation: u64) {
        if self.max == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.max {
            let now = SystemTime::now();
            entries.retain(|_, e| now < e.token.expires_at);
            if entries.len() >= self.max {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Entry {
                token,
                issuer,
                keys_generation,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn token(expires_in: Duration) -> Arc<Token> {
        Arc::new(Token {
            kind: crate::identity::TokenKind::AccessToken,
            issuer: "idp".into(),
            subject: "alice".into(),
            scopes: vec![],
            actor: None,
            expires_at: SystemTime::now() + expires_in,
            claims: "{}".into(),
        })
    }

    #[test]
    fn a_hit_never_outlives_the_token_or_its_keys() {
        let cache = VerifiedCache::default();
        let k = key("t", &Peer::Anonymous);
        cache.put(k, token(Duration::from_secs(60)), 0, 7);
        assert!(cache.get(&k, |_| 7).is_some());
        assert!(cache.get(&k, |_| 8).is_none(), "keys changed: verify again");
        assert!(cache.get(&k, |_| 7).is_none(), "and the entry is gone");
        cache.put(k, token(Duration::from_millis(1)), 0, 7);
        std::thread::sleep(Duration::from_millis(5));
        assert!(cache.get(&k, |_| 7).is_none(), "expired");
        assert_ne!(key("t", &Peer::Anonymous), key("t2", &Peer::Anonymous));
    }
}
