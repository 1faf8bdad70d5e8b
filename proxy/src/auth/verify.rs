//! Verifying a bearer JWT, in an order that never lets the token choose
//! how it is checked.
//!
//! 1. Bounds before any decoding: `max_token_bytes`, exactly three
//!    segments (a JWE has five), a header of at most 2 KiB and claims of
//!    at most 16 KiB, each a JSON object whose members are unique (RFC
//!    7515 §5.2 and RFC 7519 §4 allow refusing duplicates; this does, so
//!    that the choice of path below and jsonwebtoken's reading cannot
//!    differ on which of two `iss` or `sub` counts).
//! 2. The header is read: a token that carries a key or a key's location
//!    (`jwk`, `jku`, `x5u`, `x5c`) or any `crit` is refused; keys come only
//!    from the configuration.
//! 3. The still unverified `iss` picks the issuer, by exact string; its
//!    `typ` list and algorithm allowlist apply. A token no issuer claims
//!    whose `sub` is a SPIFFE ID is a JWT-SVID instead (see [`svid`]),
//!    checked with its trust domain's keys and header rules.
//! 4. The key is that issuer's key with the exact `kid` (see [`keys`]);
//!    the algorithm must be one that key verifies.
//! 5. jsonwebtoken checks the signature (with the ring provider, which
//!    cannot do HMAC), `exp`, `nbf`, `iss` and `aud`, with `exp`, `iss`,
//!    `aud` and `sub` required (jsonwebtoken alone would pass a token with
//!    no `aud`). A JWT-SVID: the same, without `iss`.
//! 6. Then: the lifetime left is at most `max_lifetime`, `iat` is not in
//!    the future, and an actor that names a SPIFFE ID matches the mTLS
//!    peer when there is one (for a JWT-SVID, its subject must).
//!
//! [`keys`]: super::keys
//! [`svid`]: super::svid

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
    keys::{IssuerKeys, Key, Lookup},
    svid::{self, JwtSvids},
};
use crate::identity::{Peer, Token, TokenKind};
use crate::mcp::json;

const MAX_HEADER_BYTES: usize = 2 * 1024;
const MAX_CLAIMS_BYTES: usize = 16 * 1024;
/// Nesting allowed in a token's header or claims; real tokens use two or
/// three levels.
const MAX_CLAIMS_DEPTH: usize = 32;

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
    /// A JWT-SVID header member the standard does not allow.
    HeaderNotAllowed,
    /// A JWT-SVID of a trust domain not accepted.
    UnknownTrustDomain,
    /// A JWT-SVID whose `sub` is not a workload's SPIFFE ID.
    BadSubject,
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
            Self::HeaderNotAllowed => "header_not_allowed",
            Self::UnknownTrustDomain => "unknown_trust_domain",
            Self::BadSubject => "bad_subject",
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
    /// JWT-SVIDs, when accepted.
    pub svids: Option<JwtSvids>,
}

/// A verified token and the issuer (configured name) that vouched for it.
pub struct Verified {
    pub issuer: String,
    pub token: Arc<Token>,
    /// Served from the verified-token cache.
    pub cached: bool,
}

/// The metrics label of whoever vouched for `token`: the configured
/// issuer's name, or `jwt-svid:<trust domain>`.
pub fn label(token: &Token) -> String {
    match token.kind {
        TokenKind::AccessToken => token.issuer.clone(),
        TokenKind::JwtSvid => svid::label(
            token
                .issuer
                .strip_prefix("spiffe://")
                .unwrap_or(&token.issuer),
        ),
    }
}

/// A token through either path: what the cache keeps, and for whom.
struct Checked {
    label: String,
    /// The key set's slot in the cache: issuers first, then trust domains.
    slot: usize,
    generation: u64,
    token: Arc<Token>,
}

/// Which path a token takes.
enum Route<'a> {
    Issuer(usize, &'a Issuer),
    Svid(&'a JwtSvids),
}

fn segment(text: &str, max: usize) -> Result<Value, Failure> {
    // Base64 grows by 4/3: a longer segment cannot decode within `max`.
    if text.len() > max / 3 * 4 + 4 {
        return Err(Failure::TooLarge);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| Failure::Malformed)?;
    // Refused before anything is read, at any depth:
    // - duplicate members: serde_json keeps the last of two (as
    //   jsonwebtoken's untyped claims do), its typed claims refuse them,
    //   other readers may keep the first;
    // - keys serde_json reserves for its own types: a `Value` reads such an
    //   object as the string's contents, other readers as written.
    // Filters get the host's `Value` re-encoded, so either would let the
    // claims a filter decides on differ from what the issuer meant.
    json::validate_document(&bytes, MAX_CLAIMS_DEPTH).map_err(|_| Failure::Malformed)?;
    let members: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| Failure::Malformed)?;
    Ok(Value::Object(members))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Verifier {
    /// Verifies `token` presented by `peer`. `Err` carries the issuer's
    /// name (or trust domain's label) when the token got as far as naming
    /// a configured one.
    pub async fn verify(&self, token: &str, peer: &Peer) -> Result<Verified, (String, Failure)> {
        let none = |f: Failure| (String::from("none"), f);
        let cache_key = cache::key(token, peer);
        if let Some(token) = self.cache.get(&cache_key, |slot| self.generation(slot)) {
            return Ok(Verified {
                issuer: label(&token),
                token,
                cached: true,
            });
        }
        let (header, claims) = self.read_unverified(token).map_err(none)?;
        let checked = match self.route(&claims).map_err(none)? {
            Route::Issuer(index, issuer) => {
                self.verify_access(index, issuer, token, &header, peer)
                    .await?
            }
            Route::Svid(svids) => {
                self.verify_svid(svids, token, &header, &claims, peer)
                    .await?
            }
        };
        self.cache.put(
            cache_key,
            checked.token.clone(),
            checked.slot,
            checked.generation,
        );
        Ok(Verified {
            issuer: checked.label,
            token: checked.token,
            cached: false,
        })
    }

    /// The key set in cache slot `slot` has this content generation
    /// (`u64::MAX`, which no set reaches, when it is not usable).
    fn generation(&self, slot: usize) -> u64 {
        let keys = match slot.checked_sub(self.issuers.len()) {
            None => self.issuers.get(slot).map(|i| &i.keys),
            Some(d) => self
                .svids
                .as_ref()
                .and_then(|s| s.domains.get(d))
                .map(|d| &d.keys),
        };
        match keys {
            Some(keys) if keys.usable() => keys.content_generation(),
            _ => u64::MAX,
        }
    }

    /// The path: the issuer the unverified `iss` names exactly; else, if
    /// JWT-SVIDs are accepted and `sub` is in the `spiffe` scheme, the
    /// JWT-SVID path. Never both, and no fallback from one to the other.
    fn route(&self, claims: &Value) -> Result<Route<'_>, Failure> {
        let iss = claims.get("iss").and_then(Value::as_str);
        let named = iss.and_then(|iss| {
            self.issuers
                .iter()
                .enumerate()
                .find(|(_, i)| i.config.issuer == iss)
        });
        if let Some((index, issuer)) = named {
            return Ok(Route::Issuer(index, issuer));
        }
        match (&self.svids, iss) {
            (Some(svids), _) if svid::claims_svid(claims) => Ok(Route::Svid(svids)),
            (_, None) => Err(Failure::MissingClaim),
            (_, Some(_)) => Err(Failure::UnknownIssuer),
        }
    }

    /// An access token of `issuer` (number `index`).
    async fn verify_access(
        &self,
        index: usize,
        issuer: &Issuer,
        token: &str,
        header: &Value,
        peer: &Peer,
    ) -> Result<Checked, (String, Failure)> {
        let generation = issuer.keys.content_generation();
        let name = &issuer.config.name;
        let fail = |f: Failure| (name.clone(), f);
        let (alg, kid) = routing(header, &issuer.config).map_err(fail)?;
        let key = key(&issuer.keys, kid.as_deref()).await.map_err(fail)?;
        let claims = self
            .decode(
                token,
                &key,
                alg,
                &["exp", "iss", "aud", "sub"],
                Some(&issuer.config.issuer),
                &self.audiences,
            )
            .map_err(fail)?;
        let token = self.checked(&claims, &issuer.config, peer).map_err(fail)?;
        Ok(Checked {
            label: name.clone(),
            slot: index,
            generation,
            token: Arc::new(token),
        })
    }

    /// A JWT-SVID: the trust domain `sub` names picks the keys, never
    /// `iss`; the standard's header rules; `aud` among the configured
    /// audiences.
    async fn verify_svid(
        &self,
        svids: &JwtSvids,
        token: &str,
        header: &Value,
        unverified: &Value,
        peer: &Peer,
    ) -> Result<Checked, (String, Failure)> {
        let none = |f: Failure| (String::from("none"), f);
        let id = svid::subject(unverified).map_err(none)?;
        // A trust domain not accepted stays out of the labels: its name
        // is the client's to choose.
        let (index, domain) = svids
            .domain(id.trust_domain())
            .ok_or(none(Failure::UnknownTrustDomain))?;
        let generation = domain.keys.content_generation();
        let name = svid::label(&domain.name);
        let fail = |f: Failure| (name.clone(), f);
        let (alg, kid) = svid::routing(header).map_err(fail)?;
        let key = key(&domain.keys, kid.as_deref()).await.map_err(fail)?;
        let claims = self
            .decode(
                token,
                &key,
                alg,
                &["exp", "aud", "sub"],
                None,
                &svids.audiences,
            )
            .map_err(fail)?;
        // The subject the key was chosen for is the one verified. Both
        // reads are serde_json over unique members, so they cannot differ
        // today: this keeps it so if either changes.
        if svid::subject(&claims).map_err(fail)? != id {
            return Err(fail(Failure::BadSubject));
        }
        let exp = self.lifetime(&claims, svids.max_lifetime).map_err(fail)?;
        let scopes = svid::scopes(&claims).ok_or(fail(Failure::Malformed))?;
        if peer.spiffe_id().is_some_and(|p| *p != id) {
            return Err(fail(Failure::ActorMismatch));
        }
        Ok(Checked {
            label: name.clone(),
            slot: self.issuers.len() + index,
            generation,
            token: Arc::new(Token {
                kind: TokenKind::JwtSvid,
                issuer: format!("spiffe://{}", domain.name),
                subject: id.to_string(),
                scopes,
                actor: None,
                expires_at: UNIX_EPOCH + Duration::from_secs(exp),
                claims: claims.to_string(),
            }),
        })
    }

    /// The signature, `exp`, `nbf`, `aud` (and `iss`, for an issuer) by
    /// jsonwebtoken with the ring provider; the verified claims.
    fn decode(
        &self,
        token: &str,
        key: &Key,
        alg: Algorithm,
        required: &[&str],
        issuer: Option<&str>,
        audiences: &[String],
    ) -> Result<Value, Failure> {
        if !key.algorithms.contains(&alg) {
            return Err(Failure::AlgNotAllowed);
        }
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.set_required_spec_claims(required);
        if let Some(issuer) = issuer {
            validation.set_issuer(&[issuer]);
        }
        validation.set_audience(audiences);
        validation.validate_nbf = true;
        validation.leeway = self.leeway.as_secs();
        jsonwebtoken::decode::<Value>(token.as_bytes(), &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| failure_of(e.kind()))
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

    /// `exp` at most `max_lifetime` away and `iat` not in the future, with
    /// the leeway; `exp`.
    fn lifetime(&self, claims: &Value, max_lifetime: Duration) -> Result<u64, Failure> {
        let leeway = self.leeway.as_secs();
        let now = now();
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(Failure::Malformed)?;
        if exp.saturating_sub(now) > max_lifetime.as_secs() + leeway {
            return Err(Failure::LifetimeExceeded);
        }
        match claims.get("iat").map(Value::as_u64) {
            None => {}
            Some(Some(iat)) if iat <= now + leeway => {}
            Some(Some(_)) => return Err(Failure::IssuedInFuture),
            Some(None) => return Err(Failure::Malformed),
        }
        Ok(exp)
    }

    /// The checks after the signature: lifetime, `iat`, `sub`, the actor
    /// against the mTLS peer; and what the token establishes.
    fn checked(
        &self,
        claims: &Value,
        issuer: &IssuerConfig,
        peer: &Peer,
    ) -> Result<Token, Failure> {
        let exp = self.lifetime(claims, issuer.max_lifetime)?;
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

/// `kid`'s key in `keys` (an unknown one may refetch, see [`IssuerKeys`]).
async fn key(keys: &IssuerKeys, kid: Option<&str>) -> Result<Key, Failure> {
    match keys.lookup(kid).await {
        Lookup::Found(key) => Ok(key),
        Lookup::Unknown => Err(Failure::UnknownKid),
        Lookup::Unavailable => Err(Failure::KeysUnavailable),
    }
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
