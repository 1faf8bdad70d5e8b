//! Verifying a bearer JWT, in an order that never lets the token choose
//! how it is checked.
//!
//! 1. Bounds before any decoding: `max_token_bytes`, exactly three
//!    segments (a JWE has five), a header of at most 2 KiB and claims of
//!    at most 16 KiB.
//! 2. The header is read: a token that carries a key or a key's location
//!    (`jwk`, `jku`, `x5u`, `x5c`) or any `crit` is refused; keys come only
//!    from the configured issuer.
//! 3. The still unverified `iss` picks the issuer, by exact string; its
//!    `typ` list and algorithm allowlist apply.
//! 4. The key is that issuer's key with the exact `kid` (see [`keys`]);
//!    the algorithm must be one that key verifies.
//! 5. jsonwebtoken checks the signature (with the ring provider, which
//!    cannot do HMAC), `exp`, `nbf`, `iss` and `aud`, with `exp`, `iss`,
//!    `aud` and `sub` required (jsonwebtoken alone would pass a token with
//!    no `aud`).
//! 6. Then: the lifetime left is at most `max_lifetime`, `iat` is not in
//!    the future, and an actor that names a SPIFFE ID matches the mTLS
//!    peer when there is one.
//!
//! [`keys`]: super::keys

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use jsonwebtoken::{errors::ErrorKind, Algorithm, Validation};
use serde_json::Value;

use super::{
    cache::{self, VerifiedCache},
    config::IssuerConfig,
    keys::{IssuerKeys, Lookup},
};
use crate::identity::{Peer, Token, TokenKind};

const MAX_HEADER_BYTES: usize = 2 * 1024;
const MAX_CLAIMS_BYTES: usize = 16 * 1024;

/// Why a token was refused: the `reason` label, and what the client's
/// `error_description` says (a class, never a claim's value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    TooLarge,
    Malformed,
    KeyInToken,
    Crit,
    UnknownIssuer,
    TypNotAllowed,
    AlgNotAllowed,
    UnknownKid,
    BadSignature,
    Expired,
    NotYetValid,
    WrongAudience,
    WrongIssuer,
    MissingClaim,
    LifetimeExceeded,
    IssuedInFuture,
    ActorMismatch,
    /// The issuer has no usable keys: 503, not the client's fault.
    KeysUnavailable,
}

impl Failure {
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::KeyInToken => "key_in_token",
            Self::Crit => "crit",
            Self::UnknownIssuer => "unknown_issuer",
            Self::TypNotAllowed => "typ_not_allowed",
            Self::AlgNotAllowed => "alg_not_allowed",
            Self::UnknownKid => "unknown_kid",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongAudience => "wrong_audience",
            Self::WrongIssuer => "wrong_issuer",
            Self::MissingClaim => "missing_claim",
            Self::LifetimeExceeded => "lifetime_exceeded",
            Self::IssuedInFuture => "issued_in_future",
            Self::ActorMismatch => "actor_mismatch",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Self::Expired => "token expired",
            Self::NotYetValid | Self::IssuedInFuture => "token not yet valid",
            Self::WrongAudience => "token not issued for this resource",
            Self::ActorMismatch => "token presented by another workload than it names",
            Self::KeysUnavailable => "keys unavailable",
            _ => "invalid token",
        }
    }
}

/// One configured issuer and its keys.
pub struct Issuer {
    pub config: IssuerConfig,
    pub keys: Arc<IssuerKeys>,
}

pub struct Verifier {
    pub issuers: Vec<Issuer>,
    /// The resource and any extra audiences.
    pub audiences: Vec<String>,
    pub leeway: Duration,
    pub max_token_bytes: usize,
    pub cache: VerifiedCache,
}

/// A verified token and the issuer (configured name) that vouched for it.
pub struct Verified {
    pub issuer: String,
    pub token: Arc<Token>,
    /// Served from the verified-token cache.
    pub cached: bool,
}

fn segment(text: &str, max: usize) -> Result<Value, Failure> {
    // Base64 grows by 4/3: a longer segment cannot decode within `max`.
    if text.len() > max / 3 * 4 + 4 {
        return Err(Failure::TooLarge);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| Failure::Malformed)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| Failure::Malformed)?;
    match v {
        Value::Object(_) => Ok(v),
        _ => Err(Failure::Malformed),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Verifier {
    /// Verifies `token` presented by `peer`. `Err` carries the issuer's
    /// name when the token got as far as naming a configured one.
    pub async fn verify(&self, token: &str, peer: &Peer) -> Result<Verified, (String, Failure)> {
        let none = |f: Failure| (String::from("none"), f);
        let cache_key = cache::key(token, peer);
        let generation_of = |i: usize| match self.issuers.get(i) {
            Some(issuer) if issuer.keys.usable() => issuer.keys.content_generation(),
            _ => u64::MAX,
        };
        if let Some(token) = self.cache.get(&cache_key, generation_of) {
            return Ok(Verified {
                issuer: token.issuer.clone(),
                token,
                cached: true,
            });
        }
        let (header, claims) = self.read_unverified(token).map_err(none)?;
        let Some(iss) = claims.get("iss").and_then(Value::as_str) else {
            return Err(none(Failure::MissingClaim));
        };
        let Some((index, issuer)) = self
            .issuers
            .iter()
            .enumerate()
            .find(|(_, i)| i.config.issuer == iss)
        else {
            return Err(none(Failure::UnknownIssuer));
        };
        let generation = issuer.keys.content_generation();
        let name = &issuer.config.name;
        let fail = |f: Failure| (name.clone(), f);
        let (alg, kid) = routing(&header, &issuer.config).map_err(fail)?;
        let key = match issuer.keys.lookup(kid.as_deref()).await {
            Lookup::Found(key) => key,
            Lookup::Unknown => return Err(fail(Failure::UnknownKid)),
            Lookup::Unavailable => return Err(fail(Failure::KeysUnavailable)),
        };
        if !key.algorithms.contains(&alg) {
            return Err(fail(Failure::AlgNotAllowed));
        }
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[issuer.config.issuer.as_str()]);
        validation.set_audience(&self.audiences);
        validation.validate_nbf = true;
        validation.leeway = self.leeway.as_secs();
        let claims = jsonwebtoken::decode::<Value>(token.as_bytes(), &key.decoding, &validation)
            .map_err(|e| fail(failure_of(e.kind())))?
            .claims;
        let token = Arc::new(self.checked(&claims, &issuer.config, peer).map_err(fail)?);
        self.cache.put(cache_key, token.clone(), index, generation);
        Ok(Verified {
            issuer: name.clone(),
            token,
            cached: false,
        })
    }

    /// Bounds, then the header and claims, still unverified: a token that
    /// carries a key (or where to find one), or any `crit`, is refused.
    fn read_unverified(&self, token: &str) -> Result<(Value, Value), Failure> {
        if token.len() > self.max_token_bytes {
            return Err(Failure::TooLarge);
        }
        let parts: Vec<&str> = token.split('.').collect();
        let [head, body, _sig] = parts[..] else {
            return Err(Failure::Malformed);
        };
        let header = segment(head, MAX_HEADER_BYTES)?;
        if ["jwk", "jku", "x5u", "x5c"]
            .iter()
            .any(|k| header.get(k).is_some())
        {
            return Err(Failure::KeyInToken);
        }
        if header.get("crit").is_some() {
            return Err(Failure::Crit);
        }
        Ok((header, segment(body, MAX_CLAIMS_BYTES)?))
    }

    /// The checks after the signature: lifetime, `iat`, `sub`, the actor
    /// against the mTLS peer; and what the token establishes.
    fn checked(
        &self,
        claims: &Value,
        issuer: &IssuerConfig,
        peer: &Peer,
    ) -> Result<Token, Failure> {
        let leeway = self.leeway.as_secs();
        let now = now();
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(Failure::Malformed)?;
        if exp.saturating_sub(now) > issuer.max_lifetime.as_secs() + leeway {
            return Err(Failure::LifetimeExceeded);
        }
        match claims.get("iat").map(Value::as_u64) {
            None => {}
            Some(Some(iat)) if iat <= now + leeway => {}
            Some(Some(_)) => return Err(Failure::IssuedInFuture),
            Some(None) => return Err(Failure::Malformed),
        }
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(Failure::MissingClaim),
        };
        let actor = actor(claims, &issuer.actor_claims);
        // What the app is told must read one way: no control characters
        // in the subject or actor (a header could not carry them, and a
        // request without its subject must not go on), no scope that a
        // space-separated list would split into two.
        let printable = |s: &str| s.chars().all(|c| !c.is_control());
        if !printable(&subject) || !actor.as_deref().is_none_or(printable) {
            return Err(Failure::Malformed);
        }
        let scopes = scopes(claims, &issuer.scope_claims).ok_or(Failure::Malformed)?;
        // Only an actor named by SPIFFE ID can be compared with the peer
        // (an OAuth client id is another namespace).
        if let (Some(actor), Some(peer), true) = (
            actor.as_deref().filter(|a| a.starts_with("spiffe://")),
            peer.spiffe_id(),
            issuer.actor_must_match_peer,
        ) {
            if actor != peer.to_string() {
                return Err(Failure::ActorMismatch);
            }
        }
        Ok(Token {
            kind: TokenKind::AccessToken,
            issuer: issuer.name.clone(),
            subject,
            scopes,
            actor,
            expires_at: UNIX_EPOCH + Duration::from_secs(exp),
            claims: claims.to_string(),
        })
    }
}

/// The issuer's `typ` and algorithm rules applied to the header; the
/// algorithm and the `kid` it names.
fn routing(header: &Value, issuer: &IssuerConfig) -> Result<(Algorithm, Option<String>), Failure> {
    let typ_ok = match header.get("typ") {
        None => issuer.typ.iter().any(|t| t == "none"),
        Some(Value::String(t)) => issuer.typ.iter().any(|a| a == t),
        Some(_) => false,
    };
    if !typ_ok {
        return Err(Failure::TypNotAllowed);
    }
    let alg: Algorithm = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(|a| a.parse().ok())
        .ok_or(Failure::AlgNotAllowed)?;
    if !issuer.algorithms.contains(&alg) {
        return Err(Failure::AlgNotAllowed);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(Failure::Malformed),
    };
    Ok((alg, kid))
}

fn failure_of(kind: &ErrorKind) -> Failure {
    match kind {
        ErrorKind::InvalidSignature => Failure::BadSignature,
        ErrorKind::ExpiredSignature => Failure::Expired,
        ErrorKind::ImmatureSignature => Failure::NotYetValid,
        ErrorKind::InvalidAudience => Failure::WrongAudience,
        ErrorKind::InvalidIssuer => Failure::WrongIssuer,
        ErrorKind::MissingRequiredClaim(_) => Failure::MissingClaim,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Failure::AlgNotAllowed,
        _ => Failure::Malformed,
    }
}

/// Scopes from the configured claims: a space-separated string (`scope`)
/// or an array of strings (`scp`, as Entra and Okta send it). `None` when
/// an array item holds whitespace (it would read as two scopes once
/// listed) or a scope holds a control character.
pub fn scopes(claims: &Value, names: &[String]) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        match claims.get(name) {
            Some(Value::String(s)) => {
                out.extend(s.split(' ').filter(|s| !s.is_empty()).map(String::from));
            }
            Some(Value::Array(items)) => {
                for item in items.iter().filter_map(Value::as_str) {
                    if item.is_empty() || item.chars().any(char::is_whitespace) {
                        return None;
                    }
                    out.push(item.to_string());
                }
            }
            _ => {}
        }
    }
    if out.iter().any(|s| s.chars().any(char::is_control)) {
        return None;
    }
    out.sort();
    out.dedup();
    Some(out)
}

/// The first configured actor claim present (`act.sub` reads a member).
fn actor(claims: &Value, names: &[String]) -> Option<String> {
    names.iter().find_map(|name| {
        let v = name.split('.').try_fold(claims, |v, part| v.get(part))?;
        v.as_str().map(String::from)
    })
}
