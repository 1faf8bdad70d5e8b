//! The sealed client-facing session id.
//!
//! Wire form: `pc1.<kid>.<base64url(nonce[24] ‖ ciphertext ‖ tag[16])>`,
//! visible ASCII only, as MCP requires of a session id. The cipher is
//! XChaCha20-Poly1305: its 192-bit random nonces are safe for any number of
//! tokens under one key, which many pods share.
//!
//! The caller's principal is *associated data*: it is not in the token, and
//! a token presented by anyone else fails authentication exactly as a
//! tampered one does. Every failure is one [`Reject`], and the request path
//! answers all of them with the same 404 (the reason goes to logs and
//! metrics only), so the answer is no oracle.
//!
//! The plaintext is versioned and padded to a 32-byte bucket, so the length
//! of a token does not tell the length of the upstream's session id.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use chacha20poly1305::{
    aead::{Aead, AeadCore, OsRng, Payload},
    XChaCha20Poly1305, XNonce,
};

use super::keyring::{KeyState, Keyring};
use crate::identity::Principal;

const PREFIX: &str = "pc1";
const VERSION: u8 = 1;
const NONCE: usize = 24;
const TAG: usize = 16;
const PAD: usize = 32;
/// Plaintexts are at least this long: every upstream id up to 51 bytes (a
/// UUID is 36) gives a token of one length, 231 characters.
const MIN_PLAIN: usize = 128;
/// Inbound ids longer than this are refused before any decoding.
pub const MAX_TOKEN_CHARS: usize = 1024;
/// The longest upstream session id a token carries.
pub const MAX_UPSTREAM_ID: usize = 255;

/// What a session id says, once opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The stable session handle: the store key, and what the app's
    /// session key is derived from.
    pub handle: [u8; 16],
    pub issued_at: u64,
    pub expires_at: u64,
    /// The issuing instance (its UUID).
    pub instance: [u8; 16],
    /// The negotiated protocol version.
    pub protocol: String,
    /// A digest of the `initialize` params (binds the replay material).
    pub init_digest: [u8; 16],
    /// The upstream's session id at issue.
    pub upstream_id: String,
}

/// Why a session id was refused. All map to one 404.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    TooLong,
    Malformed,
    UnknownKey,
    RetiredKey,
    /// Tampered, or bound to another principal.
    Authentication,
    Version,
    Expired,
}

impl Reject {
    pub fn label(self) -> &'static str {
        match self {
            Self::TooLong => "too_long",
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::RetiredKey => "retired_key",
            Self::Authentication => "authentication",
            Self::Version => "version",
            Self::Expired => "expired",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("upstream session id longer than {MAX_UPSTREAM_ID} bytes")]
    UpstreamIdTooLong,
    #[error("protocol version longer than 255 bytes")]
    ProtocolTooLong,
    #[error("encryption failed")]
    Cipher,
}

/// The associated data: what the token is bound to. The peer's SPIFFE ID
/// (or `anonymous`) and, when a token verifier ran, the token's issuer and
/// subject. NUL separates parts (none of them may contain one).
pub fn binding(principal: &Principal) -> Vec<u8> {
    let mut aad = b"portcullis/sid/v1\0".to_vec();
    aad.extend_from_slice(principal.peer_text().as_bytes());
    if let Some(t) = principal.token() {
        aad.push(0);
        aad.extend_from_slice(t.issuer.as_bytes());
        aad.push(0);
        aad.extend_from_slice(t.subject.as_bytes());
    }
    aad
}

fn aad(kid: &str, binding: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(kid.len() + binding.len() + 1);
    aad.extend_from_slice(kid.as_bytes());
    aad.push(0);
    aad.extend_from_slice(binding);
    aad
}

/// Seals `claims` with the primary key, bound to `binding`.
pub fn seal(ring: &Keyring, claims: &Claims, binding: &[u8]) -> Result<String, SealError> {
    let key = ring.primary();
    let plain = encode(claims)?;
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let sealed = key
        .cipher
        .encrypt(
            &nonce,
            Payload {
                msg: &plain,
                aad: &aad(&key.kid, binding),
            },
        )
        .map_err(|_| SealError::Cipher)?;
    let mut raw = Vec::with_capacity(NONCE + sealed.len());
    raw.extend_from_slice(&nonce);
    raw.extend_from_slice(&sealed);
    Ok(format!(
        "{PREFIX}.{}.{}",
        key.kid,
        URL_SAFE_NO_PAD.encode(raw)
    ))
}

/// Opens a session id presented by the caller `binding` names, at `now`
/// (seconds since the epoch).
pub fn open(ring: &Keyring, token: &str, binding: &[u8], now: u64) -> Result<Claims, Reject> {
    if token.len() > MAX_TOKEN_CHARS {
        return Err(Reject::TooLong);
    }
    let mut parts = token.splitn(3, '.');
    let (Some(PREFIX), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Reject::Malformed);
    };
    let key = ring.get(kid).ok_or(Reject::UnknownKey)?;
    if key.state == KeyState::Retired {
        return Err(Reject::RetiredKey);
    }
    let raw = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| Reject::Malformed)?;
    if raw.len() < NONCE + TAG {
        return Err(Reject::Malformed);
    }
    let (nonce, sealed) = raw.split_at(NONCE);
    let plain = key
        .cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: &aad(kid, binding),
            },
        )
        .map_err(|_| Reject::Authentication)?;
    let claims = decode(&plain)?;
    if now >= claims.expires_at {
        return Err(Reject::Expired);
    }
    Ok(claims)
}

fn encode(c: &Claims) -> Result<Vec<u8>, SealError> {
    let proto = u8::try_from(c.protocol.len()).map_err(|_| SealError::ProtocolTooLong)?;
    let usid = u8::try_from(c.upstream_id.len()).map_err(|_| SealError::UpstreamIdTooLong)?;
    let mut out = Vec::with_capacity(128);
    out.push(VERSION);
    out.extend_from_slice(&c.handle);
    out.extend_from_slice(&c.issued_at.to_be_bytes());
    out.extend_from_slice(&c.expires_at.to_be_bytes());
    out.extend_from_slice(&c.instance);
    out.extend_from_slice(&c.init_digest);
    out.push(proto);
    out.extend_from_slice(c.protocol.as_bytes());
    out.push(usid);
    out.extend_from_slice(c.upstream_id.as_bytes());
    out.resize((out.len().div_ceil(PAD) * PAD).max(MIN_PLAIN), 0);
    Ok(out)
}

/// Reads the plaintext back. It was authenticated, so a failure here is a
/// version this build does not know, or a defect.
fn decode(plain: &[u8]) -> Result<Claims, Reject> {
    let mut r = Reader(plain);
    if r.take(1)? != [VERSION] {
        return Err(Reject::Version);
    }
    let handle = r.array()?;
    let issued_at = u64::from_be_bytes(r.array()?);
    let expires_at = u64::from_be_bytes(r.array()?);
    let instance = r.array()?;
    let init_digest = r.array()?;
    let protocol = r.text()?;
    let upstream_id = r.text()?;
    if r.0.iter().any(|&b| b != 0) {
        return Err(Reject::Malformed);
    }
    Ok(Claims {
        handle,
        issued_at,
        expires_at,
        instance,
        protocol,
        init_digest,
        upstream_id,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Reject> {
        if self.0.len() < n {
            return Err(Reject::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Reject> {
        self.take(N)?.try_into().map_err(|_| Reject::Malformed)
    }

    fn text(&mut self) -> Result<String, Reject> {
        let n = usize::from(self.take(1)?[0]);
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Reject::Malformed)
    }
}

#[cfg(test)]
mod tests;
