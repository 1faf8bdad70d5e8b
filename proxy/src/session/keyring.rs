//! The session keyring: a file (mounted from a Kubernetes Secret) listing
//! keys by id, each `primary` (seals and opens), `decrypt-only` (opens) or
//! `retired` (refused). Rotation is three edits of the file, none needing a
//! restart: add the new key as `decrypt-only` everywhere, promote it to
//! `primary`, retire the old one after the longest session lifetime.
//!
//! There is no default key: without a keyring, sessions are not sealed.
//! Keys are random, 32 bytes at least, never passwords; what seals a
//! session id is a sub-key derived with HKDF-SHA256, so the same master key
//! can later serve other purposes (event ids, store values) without reuse.

use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use hkdf::Hkdf;
use serde::Deserialize;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

/// The HKDF `info` of the session-id sub-key.
const SESSION_ID_INFO: &[u8] = b"portcullis/v1/session-id";
/// The HKDF `info` of the sub-key that seals session records in a shared
/// store (they hold upstream session ids, credentials to the app).
const STORE_VALUE_INFO: &[u8] = b"portcullis/v1/store-value";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyState {
    Primary,
    DecryptOnly,
    Retired,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    #[error("cannot read keyring {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("keyring: {field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> KeyringError {
    KeyringError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    keys: Vec<FileKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    kid: String,
    key_b64: String,
    state: KeyState,
}

impl Drop for FileKey {
    fn drop(&mut self) {
        self.key_b64.zeroize();
    }
}

/// One usable key: its id, its state and the derived cipher.
pub struct Key {
    pub kid: String,
    pub state: KeyState,
    pub(super) cipher: XChaCha20Poly1305,
    pub(super) store: XChaCha20Poly1305,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct Keyring {
    keys: Vec<Key>,
    /// Index of the one primary key.
    primary: usize,
}

impl Keyring {
    pub fn load(path: &Path) -> Result<Self, KeyringError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|e| KeyringError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?,
            );
        Self::from_yaml(&text)
    }

    pub fn from_yaml(text: &str) -> Result<Self, KeyringError> {
        let file: File =
            serde_yaml_ng::from_str(text).map_err(|e| invalid("keys", e.to_string()))?;
        let mut keys = Vec::with_capacity(file.keys.len());
        for (i, k) in file.keys.iter().enumerate() {
            let field = format!("keys[{i}]");
            check_kid(&k.kid).map_err(|why| invalid(format!("{field}.kid"), why))?;
            if keys.iter().any(|other: &Key| other.kid == k.kid) {
                return Err(invalid(
                    format!("{field}.kid"),
                    format!("duplicate key id {:?}", k.kid),
                ));
            }
            let (cipher, store) =
                derive(&k.key_b64).map_err(|why| invalid(format!("{field}.key_b64"), why))?;
            keys.push(Key {
                kid: k.kid.clone(),
                state: k.state,
                cipher,
                store,
            });
        }
        let primaries: Vec<usize> = (0..keys.len())
            .filter(|&i| keys[i].state == KeyState::Primary)
            .collect();
        match primaries[..] {
            [primary] => Ok(Self { keys, primary }),
            _ => Err(invalid(
                "keys",
                format!("exactly one key must be primary, {} are", primaries.len()),
            )),
        }
    }

    /// The key new tokens are sealed with.
    pub fn primary(&self) -> &Key {
        &self.keys[self.primary]
    }

    pub fn get(&self, kid: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// Key ids and states, for `/identity` (never the keys).
    pub fn summary(&self) -> Vec<(String, KeyState)> {
        self.keys.iter().map(|k| (k.kid.clone(), k.state)).collect()
    }
}

/// Key ids appear in every token: short, and in a token-safe alphabet.
fn check_kid(kid: &str) -> Result<(), String> {
    let ok = (1..=16).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match ok {
        true => Ok(()),
        false => Err("1 to 16 characters from A-Z a-z 0-9 - _".into()),
    }
}

fn derive(key_b64: &str) -> Result<(XChaCha20Poly1305, XChaCha20Poly1305), String> {
    let master = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(key_b64.trim())
            .map_err(|e| format!("not base64: {e}"))?,
    );
    if master.len() < 32 {
        return Err(format!(
            "{} bytes; a key must have at least 32 random bytes",
            master.len()
        ));
    }
    let hkdf = Hkdf::<Sha256>::new(None, &master);
    let sub = |info: &[u8]| -> Result<XChaCha20Poly1305, String> {
        let mut key = Zeroizing::new([0u8; 32]);
        hkdf.expand(info, key.as_mut()).map_err(|e| e.to_string())?;
        XChaCha20Poly1305::new_from_slice(key.as_ref()).map_err(|e| e.to_string())
    };
    Ok((sub(SESSION_ID_INFO)?, sub(STORE_VALUE_INFO)?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn key_b64(byte: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    pub(crate) fn ring(entries: &[(&str, u8, &str)]) -> Keyring {
        let yaml: String = entries
            .iter()
            .map(|(kid, b, state)| {
                format!(
                    "  - {{kid: {kid}, key_b64: {}, state: {state}}}\n",
                    key_b64(*b)
                )
            })
            .collect();
        Keyring::from_yaml(&format!("keys:\n{yaml}")).unwrap()
    }

    fn err(yaml: &str) -> String {
        Keyring::from_yaml(yaml).unwrap_err().to_string()
    }

    #[test]
    fn loads_a_rotating_keyring() {
        let r = ring(&[
            ("k2", 2, "primary"),
            ("k1", 1, "decrypt-only"),
            ("k0", 0, "retired"),
        ]);
        assert_eq!(r.primary().kid, "k2");
        assert_eq!(r.get("k0").unwrap().state, KeyState::Retired);
        assert!(r.get("k9").is_none());
        assert!(
            !format!("{r:?}").contains(&key_b64(2)),
            "no key material in Debug"
        );
    }

    #[test]
    fn refuses_what_would_weaken_it() {
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        for (yaml, needle) in [
            ("keys: []\n".to_string(), "exactly one key must be primary, 0 are"),
            (format!("keys:\n  - {{kid: a, key_b64: {short}, state: primary}}\n"), "at least 32 random bytes"),
            ("keys:\n  - {kid: a, key_b64: '!!', state: primary}\n".to_string(), "not base64"),
            (
                format!("keys:\n  - {{kid: a, key_b64: {}, state: primary}}\n  - {{kid: a, key_b64: {}, state: decrypt-only}}\n", key_b64(1), key_b64(2)),
                "duplicate key id",
            ),
            (
                format!("keys:\n  - {{kid: a, key_b64: {}, state: primary}}\n  - {{kid: b, key_b64: {}, state: primary}}\n", key_b64(1), key_b64(2)),
                "2 are",
            ),
            (format!("keys:\n  - {{kid: 'a.b', key_b64: {}, state: primary}}\n", key_b64(1)), "keys[0].kid"),
            (format!("keys:\n  - {{kid: a, key_b64: {}, state: active}}\n", key_b64(1)), "unknown variant"),
        ] {
            let e = err(&yaml);
            assert!(e.contains(needle), "{yaml}: {e}");
        }
    }
}
