//! What the upstream learns about the caller, instead of the client's
//! token (which is never passed on unless `forward_authorization` says so).
//!
//! - `headers`: `x-portcullis-*` headers (the peer, the token's subject,
//!   issuer, scopes, actor). Plain text: trustworthy only when the server
//!   can be reached solely through this sidecar, as on loopback in the pod.
//! - `assertion`: one short-lived JWT signed by the sidecar, carrying the
//!   user as `sub` and the agent as `act.sub` (RFC 8693 §4.1), bound to the
//!   upstream by `aud`. A remote server verifies it against the sidecar's
//!   public key (the admin listener's `/.well-known/jwks.json`, or the key
//!   file the operator distributes) and needs to trust no header.
//! - `none`: nothing.
//!
//! `auto` (the default) picks `headers` for a loopback upstream and
//! `assertion` for any other (`none` when the client's token is forwarded
//! to it, which excludes an assertion).

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use http::HeaderValue;
use ring::{
    digest,
    rand::{SecureRandom, SystemRandom},
    signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING},
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{config::ConfigError, identity::Principal};

/// The `typ` of an assertion, so that no verifier can take it for an
/// access token (RFC 8725 §3.11).
pub const TYP: &str = "portcullis-id+jwt";

/// `upstream.identity`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    #[serde(default)]
    pub mode: IdentityMode,
    #[serde(default)]
    pub assertion: AssertionConfig,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IdentityMode {
    /// `headers` for a loopback upstream, `assertion` otherwise.
    #[default]
    Auto,
    Headers,
    Assertion,
    None,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AssertionConfig {
    /// The header that carries it. `authorization` sends `Bearer <jwt>`,
    /// for servers that verify bearer tokens with their own SDK.
    #[serde(default = "default_header")]
    pub header: String,
    /// The `aud`. Default: the upstream's SPIFFE ID when
    /// `upstream.server_ids` names exactly one without wildcards, else
    /// `upstream.url` as written.
    #[serde(default)]
    pub audience: Option<String>,
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// A P-256 private key (PKCS#8, PEM or DER), so that every replica
    /// signs with a key the upstream already knows. Absent: a key made at
    /// start, published only on the admin listener.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl Default for AssertionConfig {
    fn default() -> Self {
        Self {
            header: default_header(),
            audience: None,
            ttl: default_ttl(),
            key_file: None,
        }
    }
}

fn default_header() -> String {
    "x-portcullis-identity".into()
}

fn default_ttl() -> Duration {
    Duration::from_secs(60)
}

/// Assertions kept for reuse, across all principals.
const MAX_CACHED: usize = 4096;

/// Signs identity assertions. One per process.
pub struct Asserter {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    kid: String,
    jwk: Value,
    issuer: String,
    audience: String,
    ttl: Duration,
    header: http::HeaderName,
    bearer: bool,
    /// By everything an assertion says ([`cache_key`]): it is reused for
    /// half its lifetime, so an agent's burst of calls costs one signature,
    /// not one per call.
    cache: Mutex<HashMap<CacheKey, (HeaderValue, Instant)>>,
}

impl std::fmt::Debug for Asserter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Asserter")
            .field("kid", &self.kid)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl Asserter {
    /// `instance` names this sidecar in `iss`; `audience` is the resolved
    /// default when the config names none.
    pub fn new(
        config: &AssertionConfig,
        instance: &str,
        audience: String,
    ) -> Result<Self, ConfigError> {
        const FIELD: &str = "upstream.identity.assertion";
        const KEY_FILE: &str = "upstream.identity.assertion.key_file";
        let rng = SystemRandom::new();
        let pkcs8 = match &config.key_file {
            Some(path) => read_pkcs8(path).map_err(|e| invalid(KEY_FILE, e))?,
            None => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| invalid(FIELD, "cannot make a signing key"))?
                .as_ref()
                .to_vec(),
        };
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|e| invalid(KEY_FILE, format!("not a P-256 PKCS#8 private key: {e}")))?;
        if config.ttl < Duration::from_secs(5) || config.ttl > Duration::from_secs(3600) {
            return Err(invalid(
                "upstream.identity.assertion.ttl",
                "must be between 5s and 1h",
            ));
        }
        let header_name = config.header.to_ascii_lowercase();
        let header = http::HeaderName::from_bytes(header_name.as_bytes())
            .map_err(|_| invalid("upstream.identity.assertion.header", "not a header name"))?;
        let audience = config.audience.clone().unwrap_or(audience);
        if audience.is_empty() {
            return Err(invalid(
                "upstream.identity.assertion.audience",
                "must not be empty",
            ));
        }
        let (jwk, kid) = public_jwk(&key);
        Ok(Self {
            key,
            rng,
            kid,
            jwk,
            issuer: format!("portcullis:{instance}"),
            audience,
            ttl: config.ttl,
            bearer: header == http::header::AUTHORIZATION,
            header,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The header the assertion travels in.
    pub fn header(&self) -> &http::HeaderName {
        &self.header
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The public key set an upstream verifies assertions with.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.jwk]})
    }

    /// The header value for `principal`, or none for an anonymous caller
    /// (there is nobody to assert).
    pub fn assertion(&self, principal: &Principal) -> Option<HeaderValue> {
        if principal.spiffe_id().is_none() && principal.token().is_none() {
            return None;
        }
        let now = Instant::now();
        let key = cache_key(principal);
        if let Ok(cache) = self.cache.lock() {
            if let Some((value, fresh_until)) = cache.get(&key) {
                if now < *fresh_until {
                    return Some(value.clone());
                }
            }
        }
        let jwt = self.sign(principal, SystemTime::now())?;
        let text = if self.bearer {
            format!("Bearer {jwt}")
        } else {
            jwt
        };
        let value = HeaderValue::from_str(&text).ok()?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, (_, until)| now < *until);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            cache.insert(key, (value.clone(), now + self.ttl / 2));
        }
        Some(value)
    }

    /// The claims: the user as `sub` (or the workload, when there is no
    /// token), the agent as `act.sub` when a peer carried a user's token.
    fn claims(&self, principal: &Principal, now: SystemTime) -> Value {
        let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        // Never valid longer than the token it speaks for.
        let exp = principal
            .token()
            .and_then(|t| t.expires_at.duration_since(UNIX_EPOCH).ok())
            .map_or(iat + self.ttl.as_secs(), |t| {
                t.as_secs().min(iat + self.ttl.as_secs())
            });
        let mut jti = [0u8; 16];
        // A failed draw leaves zeros: the jti is a label, not a secret.
        let _ = self.rng.fill(&mut jti);
        let peer = principal.spiffe_text().map(str::to_owned);
        let mut claims = json!({
            "iss": self.issuer,
            "aud": self.audience,
            "iat": iat,
            "nbf": iat,
            "exp": exp,
            "jti": URL_SAFE_NO_PAD.encode(jti),
        });
        match principal.token() {
            Some(token) => {
                claims["sub"] = json!(token.subject);
                claims["orig_iss"] = json!(token.issuer);
                claims["scope"] = json!(token.scopes.join(" "));
                // The nearest actor is the agent this sidecar verified; a
                // token's own actor, when it names another party (a client
                // id), is kept beneath it as RFC 8693 nests them.
                let inner = token
                    .actor
                    .as_ref()
                    .filter(|a| Some(*a) != peer.as_ref())
                    .map(|a| json!({"sub": a}));
                match (&peer, inner) {
                    (Some(p), Some(inner)) => claims["act"] = json!({"sub": p, "act": inner}),
                    (Some(p), None) => claims["act"] = json!({"sub": p}),
                    (None, Some(inner)) => claims["act"] = inner,
                    (None, None) => {}
                }
            }
            None => claims["sub"] = json!(peer),
        }
        claims
    }

    fn sign(&self, principal: &Principal, now: SystemTime) -> Option<String> {
        let header = json!({"alg": "ES256", "typ": TYP, "kid": self.kid});
        let claims = self.claims(principal, now);
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        match self.key.sign(&self.rng, input.as_bytes()) {
            Ok(sig) => Some(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))),
            Err(_) => {
                tracing::error!("identity assertion not signed: the signer failed");
                None
            }
        }
    }
}

/// What an assertion for `principal` says, but its times and `jti`: two
/// tokens of one user with different scopes or actors (two clients, or a
/// step-up) get different assertions, and so does a renewed token.
fn cache_key(principal: &Principal) -> CacheKey {
    let token = principal.token();
    (
        principal.key().to_string(),
        token.map(|t| t.scopes.clone()).unwrap_or_default(),
        token.and_then(|t| t.actor.clone()),
        token
            .and_then(|t| t.expires_at.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs()),
    )
}

/// Principal key, scopes, actor, token expiry.
type CacheKey = (String, Vec<String>, Option<String>, u64);

/// The JWK of the public key and its RFC 7638 thumbprint, used as `kid`.
fn public_jwk(key: &EcdsaKeyPair) -> (Value, String) {
    // An uncompressed P-256 point: 0x04, then x and y, 32 bytes each.
    let point = key.public_key().as_ref();
    let (x, y) = point
        .get(1..33)
        .zip(point.get(33..65))
        .map_or_else(Default::default, |(x, y)| {
            (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y))
        });
    // The thumbprint's input has exactly these members, in this order.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()));
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y,
                     "kid": kid, "alg": "ES256", "use": "sig"});
    (jwk, kid)
}

fn read_pkcs8(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use rustls::pki_types::{pem::PemObject, PrivatePkcs8KeyDer};
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.starts_with(b"-----") {
        PrivatePkcs8KeyDer::from_pem_slice(&bytes)
            .map(|k| k.secret_pkcs8_der().to_vec())
            .map_err(|e| format!("no PKCS#8 PRIVATE KEY in {}: {e}", path.display()))
    } else {
        Ok(bytes)
    }
}

/// Whether `host` (of the upstream URL) is this machine: `auto` then sends
/// headers, which only a process in the same network namespace can see.
pub fn is_loopback(uri: &http::Uri) -> bool {
    match uri.host() {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::identity::{Peer, SpiffeId, Token, TokenKind};

    fn asserter() -> Asserter {
        Asserter::new(
            &AssertionConfig::default(),
            "pod-a",
            "spiffe://td/ns/mcp/sa/files".into(),
        )
        .unwrap()
    }

    fn user(actor: Option<&str>) -> Arc<Token> {
        Arc::new(Token {
            kind: TokenKind::AccessToken,
            issuer: "corp".into(),
            subject: "alice".into(),
            scopes: vec!["mcp".into(), "files:read".into()],
            actor: actor.map(str::to_string),
            expires_at: SystemTime::now() + Duration::from_secs(600),
            claims: "{}".into(),
        })
    }

    fn agent() -> Peer {
        Peer::Spiffe(SpiffeId::parse("spiffe://td/ns/agents/sa/planner").unwrap())
    }

    /// Verifies with jsonwebtoken and the published JWK, as an upstream
    /// would.
    fn verify(a: &Asserter, jwt: &str) -> Value {
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(a.jwks()["keys"][0].clone()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.set_audience(&[a.audience()]);
        v.set_issuer(&["portcullis:pod-a"]);
        let header = jsonwebtoken::decode_header(jwt).unwrap();
        assert_eq!(header.typ.as_deref(), Some(TYP));
        assert_eq!(header.kid.as_deref(), a.jwks()["keys"][0]["kid"].as_str());
        crate::auth::ring_provider::install();
        jsonwebtoken::decode::<Value>(jwt, &key, &v).unwrap().claims
    }

    #[test]
    fn the_user_is_the_subject_and_the_agent_acts() {
        let a = asserter();
        let p = Principal::new(agent(), Some(user(None)));
        let jwt = a.assertion(&p).unwrap();
        let claims = verify(&a, jwt.to_str().unwrap());
        assert_eq!(claims["sub"], "alice");
        assert_eq!(
            claims["act"],
            json!({"sub": "spiffe://td/ns/agents/sa/planner"})
        );
        assert_eq!(claims["scope"], "mcp files:read");
        assert_eq!(claims["orig_iss"], "corp");
        assert_eq!(claims["aud"], "spiffe://td/ns/mcp/sa/files");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            60
        );
        // Reused within half its life, for the same principal only.
        assert_eq!(a.assertion(&p).unwrap(), jwt);
        let other = Principal::from_peer(agent());
        assert_ne!(a.assertion(&other).unwrap(), jwt);
    }

    /// Two tokens of one user through one agent, with other scopes (two
    /// clients, or a step-up): each gets its own assertion, never the
    /// other's scopes. And none outlives its token.
    #[test]
    fn one_user_with_two_tokens_gets_two_assertions() {
        let a = asserter();
        let wide = Principal::new(agent(), Some(user(None)));
        let mut narrow = (*user(None)).clone();
        narrow.scopes = vec!["mcp".into()];
        narrow.expires_at = SystemTime::now() + Duration::from_secs(20);
        let narrow = Principal::new(agent(), Some(Arc::new(narrow)));
        assert_eq!(wide.key(), narrow.key());
        let first = verify(&a, a.assertion(&wide).unwrap().to_str().unwrap());
        let second = verify(&a, a.assertion(&narrow).unwrap().to_str().unwrap());
        assert_eq!(first["scope"], "mcp files:read");
        assert_eq!(second["scope"], "mcp");
        let left = second["exp"].as_u64().unwrap() - second["iat"].as_u64().unwrap();
        assert!(left <= 20, "{left}");
    }

    #[test]
    fn a_token_actor_other_than_the_peer_nests_beneath_it() {
        let a = asserter();
        let p = Principal::new(agent(), Some(user(Some("client-42"))));
        let claims = verify(&a, a.assertion(&p).unwrap().to_str().unwrap());
        assert_eq!(
            claims["act"],
            json!({"sub": "spiffe://td/ns/agents/sa/planner", "act": {"sub": "client-42"}})
        );
        // No peer: the token's actor alone.
        let p = Principal::new(Peer::Anonymous, Some(user(Some("client-42"))));
        let claims = verify(&a, a.assertion(&p).unwrap().to_str().unwrap());
        assert_eq!(claims["act"], json!({"sub": "client-42"}));
    }

    #[test]
    fn a_workload_alone_is_its_own_subject_and_nobody_gets_nothing() {
        let a = asserter();
        let claims = verify(
            &a,
            a.assertion(&Principal::from_peer(agent()))
                .unwrap()
                .to_str()
                .unwrap(),
        );
        assert_eq!(claims["sub"], "spiffe://td/ns/agents/sa/planner");
        assert!(claims.get("act").is_none());
        assert!(a.assertion(&Principal::default()).is_none());
    }

    #[test]
    fn a_tampered_assertion_does_not_verify() {
        let a = asserter();
        let jwt = a.assertion(&Principal::from_peer(agent())).unwrap();
        let jwt = jwt.to_str().unwrap();
        let mut parts: Vec<String> = jwt.split('.').map(str::to_string).collect();
        parts[1] = URL_SAFE_NO_PAD
            .encode(r#"{"sub":"mallory","aud":"x","iss":"portcullis:pod-a","exp":99999999999}"#);
        let forged = parts.join(".");
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(a.jwks()["keys"][0].clone()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        crate::auth::ring_provider::install();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.validate_aud = false;
        assert!(jsonwebtoken::decode::<Value>(&forged, &key, &v).is_err());
    }

    #[test]
    fn bad_settings_are_refused_with_their_field() {
        let short = AssertionConfig {
            ttl: Duration::from_secs(1),
            ..AssertionConfig::default()
        };
        let err = Asserter::new(&short, "i", "aud".into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstream.identity.assertion.ttl"), "{err}");
        let dir = std::env::temp_dir().join(format!("pc-assert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key.pem");
        std::fs::write(&file, "not a key").unwrap();
        let bad_key = AssertionConfig {
            key_file: Some(file),
            ..AssertionConfig::default()
        };
        let err = Asserter::new(&bad_key, "i", "aud".into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("key_file"), "{err}");
    }

    #[test]
    fn loopback_is_recognised_in_every_spelling() {
        for (url, local) in [
            ("http://127.0.0.1:3001", true),
            ("http://127.9.9.9:3001", true),
            ("http://localhost:3001", true),
            ("http://[::1]:3001", true),
            ("https://10.0.0.7:8443", false),
            ("https://files.mcp.svc:8443", false),
        ] {
            assert_eq!(is_loopback(&url.parse().unwrap()), local, "{url}");
        }
    }
}
