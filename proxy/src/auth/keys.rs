//! An issuer's signing keys: a JWKS read from a URI (refreshed in the
//! background) or a file (read again on change), kept as the last good
//! set.
//!
//! - **Stale while failing.** A refresh that fails keeps the last good
//!   keys for up to `max_stale`; after that the issuer has no keys and
//!   requests get 503 until the source answers again.
//! - **Unknown `kid`.** A token naming a key the set lacks makes one fetch
//!   happen now (the issuer may have rotated): concurrent misses wait on
//!   the same fetch, and at most one such fetch runs per
//!   `min_refetch_interval`, so a flood of random `kid`s costs one fetch.
//! - **Removal is revocation.** A key absent from a successful fetch is
//!   gone at once.
//! - **What is kept.** Signature keys (`use` absent or `sig`; in a SPIFFE
//!   JWT bundle, `use: jwt-svid` only) of types this verifier handles: RSA
//!   of 2048 bits or more, EC P-256 and P-384, Ed25519. A key without
//!   `kid` only if it is the set's only key. A set with a repeated `kid`,
//!   more than 64 keys or over 256 KiB is refused whole.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::{config::JwksConfig, metrics::AuthMetrics};

const MAX_KEYS: usize = 64;
const MAX_JWKS_BYTES: usize = 256 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One verification key.
#[derive(Clone)]
pub struct Key {
    pub decoding: DecodingKey,
    /// The algorithms this key may verify (from its type, curve and `alg`).
    pub algorithms: Vec<Algorithm>,
}

/// Which keys of a document are for verifying tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeyUse {
    /// An issuer's JWKS: `use` absent or `sig`.
    #[default]
    Signature,
    /// A SPIFFE trust domain's bundle: `use: jwt-svid` only. The bundle
    /// format requires `use`, and an `x509-svid` key is a CA for
    /// certificates, never a JWT signer.
    JwtSvid,
}

/// A parsed key set.
#[derive(Clone, Default)]
pub struct KeySet {
    by_kid: HashMap<String, Key>,
    /// The single key of a set whose one key has no `kid`.
    lone: Option<Key>,
    /// The set's only usable key, `kid` or not (JWT-SVID bundles: a token
    /// without `kid` is checked against it when there is no other).
    sole: Option<Key>,
    uses: KeyUse,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    #[error("not a JWKS: {0}")]
    Malformed(String),
    #[error("JWKS over the bounds ({0})")]
    TooLarge(&'static str),
    #[error("kid {0:?} appears twice")]
    DuplicateKid(String),
    #[error("fetching: {0}")]
    Fetch(String),
}

impl KeySet {
    /// An issuer's JWKS.
    pub fn parse(bytes: &[u8]) -> Result<Self, JwksError> {
        Self::parse_for(bytes, KeyUse::Signature)
    }

    /// A JWKS, keeping the keys for `uses`.
    pub fn parse_for(bytes: &[u8], uses: KeyUse) -> Result<Self, JwksError> {
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge("256 KiB"));
        }
        let doc: Value =
            serde_json::from_slice(bytes).map_err(|e| JwksError::Malformed(e.to_string()))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| JwksError::Malformed("no \"keys\" array".into()))?;
        if keys.len() > MAX_KEYS {
            return Err(JwksError::TooLarge("64 keys"));
        }
        let mut set = Self {
            uses,
            ..Self::default()
        };
        let mut without_kid = Vec::new();
        let mut usable = Vec::new();
        for jwk in keys {
            let Some(key) = key_of(jwk, uses) else {
                continue;
            };
            usable.push(key.clone());
            match jwk.get("kid").map(Value::as_str) {
                // A `kid` that is not a string names no key: skipped, not
                // taken as a set's lone key.
                Some(None) => continue,
                Some(Some(kid)) => {
                    if set.by_kid.insert(kid.to_string(), key).is_some() {
                        return Err(JwksError::DuplicateKid(kid.to_string()));
                    }
                }
                None => without_kid.push(key),
            }
        }
        if set.by_kid.is_empty() && without_kid.len() == 1 {
            set.lone = without_kid.pop();
        }
        if usable.len() == 1 {
            set.sole = usable.pop();
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.by_kid.len() + usize::from(self.lone.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key a token names: by exact `kid`, or the set's only key when
    /// the token names none. Never a search across keys. An issuer's
    /// kid-less token needs a kid-less key (its IdP signs without one); a
    /// JWT-SVID's `kid` is optional in the standard, so its bundle's one
    /// key serves, and with two or more none does.
    pub fn get(&self, kid: Option<&str>) -> Option<&Key> {
        match (kid, self.uses) {
            (Some(kid), _) => self.by_kid.get(kid),
            (None, KeyUse::Signature) => self.lone.as_ref(),
            (None, KeyUse::JwtSvid) => self.sole.as_ref(),
        }
    }
}

/// A JWK this verifier can use, or `None` (skipped).
fn key_of(jwk: &Value, uses: KeyUse) -> Option<Key> {
    let s = |k: &str| jwk.get(k).and_then(Value::as_str);
    let wanted = match uses {
        KeyUse::Signature => matches!(s("use"), None | Some("sig")),
        KeyUse::JwtSvid => s("use") == Some("jwt-svid"),
    };
    if !wanted {
        return None;
    }
    let (decoding, family): (DecodingKey, Vec<Algorithm>) = match (s("kty")?, s("crv")) {
        ("RSA", _) => {
            let (n, e) = (s("n")?, s("e")?);
            // ring refuses smaller moduli anyway; skipping them here keeps
            // them out of the key count and the metrics.
            let bits = URL_SAFE_NO_PAD
                .decode(n)
                .ok()?
                .iter()
                .skip_while(|b| **b == 0)
                .count()
                * 8;
            if bits < 2048 {
                return None;
            }
            use Algorithm::*;
            (
                DecodingKey::from_rsa_components(n, e).ok()?,
                vec![RS256, RS384, RS512, PS256, PS384, PS512],
            )
        }
        ("EC", Some(crv @ ("P-256" | "P-384"))) => (
            DecodingKey::from_ec_components(s("x")?, s("y")?).ok()?,
            vec![match crv {
                "P-256" => Algorithm::ES256,
                _ => Algorithm::ES384,
            }],
        ),
        ("OKP", Some("Ed25519")) => (
            DecodingKey::from_ed_components(s("x")?).ok()?,
            vec![Algorithm::EdDSA],
        ),
        _ => return None,
    };
    // A key that names its algorithm verifies only that one.
    let algorithms = match s("alg") {
        None => family,
        Some(alg) => {
            let alg: Algorithm = alg.parse().ok()?;
            if !family.contains(&alg) {
                return None;
            }
            vec![alg]
        }
    };
    Some(Key {
        decoding,
        algorithms,
    })
}

type JwksClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

enum Source {
    File(PathBuf),
    Uri {
        uri: http::Uri,
        client: Box<JwksClient>,
    },
    /// The issuer's discovery document, then the `jwks_uri` it names.
    Discovery {
        document: http::Uri,
        issuer: String,
        client: Box<JwksClient>,
    },
}

/// What a lookup found.
pub enum Lookup {
    Found(Key),
    /// The set has no such key (after a refetch, if one was allowed).
    Unknown,
    /// The issuer has no usable keys (never fetched, or stale too long).
    Unavailable,
}

/// One issuer's keys, kept fresh.
pub struct IssuerKeys {
    pub name: String,
    source: Source,
    uses: KeyUse,
    settings: JwksConfig,
    set: ArcSwap<KeySet>,
    /// Bumped by every successful read.
    generation: std::sync::atomic::AtomicU64,
    /// Bumped when a read brings a different key set (see
    /// [`Self::content_generation`]).
    content: std::sync::atomic::AtomicU64,
    /// A digest of the JWKS document last read.
    digest: Mutex<[u8; 32]>,
    /// When the set last came from a successful read (`None`: never).
    loaded_at: Mutex<Option<Instant>>,
    /// Serializes fetches forced by an unknown `kid` (single flight) and
    /// remembers when the last one ran.
    forced: tokio::sync::Mutex<Option<Instant>>,
    /// Held by every fetch, so that an older, slower answer can never be
    /// stored over a newer one (a removed key brought back).
    fetching: tokio::sync::Mutex<()>,
    metrics: AuthMetrics,
}

impl IssuerKeys {
    /// An issuer's keys.
    pub fn new(name: &str, settings: &JwksConfig, metrics: AuthMetrics) -> Result<Self, JwksError> {
        Self::new_for(name, settings, KeyUse::Signature, metrics)
    }

    /// An issuer's keys found through its OpenID Connect discovery
    /// document (`jwks: {discovery: true}`).
    pub fn discovering(
        name: &str,
        issuer: &str,
        settings: &JwksConfig,
        metrics: AuthMetrics,
    ) -> Result<Self, JwksError> {
        let document = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        )
        .parse()
        .map_err(|e: http::uri::InvalidUri| JwksError::Fetch(e.to_string()))?;
        let plain = JwksConfig {
            discovery: false,
            file: Some(PathBuf::new()),
            ..settings.clone()
        };
        let mut keys = Self::new_for(name, &plain, KeyUse::Signature, metrics)?;
        keys.settings.discovery = true;
        keys.source = Source::Discovery {
            document,
            issuer: issuer.to_string(),
            client: Box::new(client(settings.ca_file.as_ref())?),
        };
        Ok(keys)
    }

    /// Keys for `uses` (a SPIFFE trust domain's JWT bundle:
    /// [`KeyUse::JwtSvid`]), read, refreshed and counted as an issuer's.
    pub fn new_for(
        name: &str,
        settings: &JwksConfig,
        uses: KeyUse,
        metrics: AuthMetrics,
    ) -> Result<Self, JwksError> {
        let source = match (&settings.uri, &settings.file) {
            (Some(uri), _) => Source::Uri {
                uri: uri
                    .parse()
                    .map_err(|e: http::uri::InvalidUri| JwksError::Fetch(e.to_string()))?,
                client: Box::new(client(settings.ca_file.as_ref())?),
            },
            (None, Some(file)) => Source::File(file.clone()),
            (None, None) => return Err(JwksError::Fetch("no key source".into())),
        };
        Ok(Self {
            name: name.to_string(),
            source,
            uses,
            settings: settings.clone(),
            set: ArcSwap::from_pointee(KeySet {
                uses,
                ..KeySet::default()
            }),
            generation: std::sync::atomic::AtomicU64::new(0),
            content: std::sync::atomic::AtomicU64::new(0),
            digest: Mutex::new([0; 32]),
            loaded_at: Mutex::new(None),
            forced: tokio::sync::Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            metrics,
        })
    }

    /// Reads the source once; on failure the last good set stays.
    pub async fn refresh(&self, trigger: &'static str) -> Result<(), JwksError> {
        let _one_at_a_time = self.fetching.lock().await;
        let read = match &self.source {
            Source::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| JwksError::Fetch(format!("{}: {e}", path.display()))),
            Source::Uri { uri, client } => fetch(client, uri).await,
            Source::Discovery {
                document,
                issuer,
                client,
            } => discover(client, document, issuer).await,
        };
        match read.and_then(|b| Ok((KeySet::parse_for(&b, self.uses)?, b))) {
            Ok((set, bytes)) => {
                use sha2::Digest as _;
                let digest: [u8; 32] = sha2::Sha256::digest(&bytes).into();
                self.metrics.jwks_refresh(&self.name, trigger, "ok");
                self.metrics.jwks_keys(&self.name, set.len());
                self.set.store(Arc::new(set));
                // After the new set is in place: a token verified with the
                // old one was cached under the old generation.
                let mut last = self.digest.lock().unwrap_or_else(|p| p.into_inner());
                if *last != digest {
                    *last = digest;
                    self.content
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                drop(last);
                self.generation
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                *self.loaded_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                Ok(())
            }
            Err(e) => {
                self.metrics.jwks_refresh(&self.name, trigger, "error");
                tracing::warn!(issuer = %self.name, error = %e, "JWKS refresh failed; keeping the last good keys");
                Err(e)
            }
        }
    }

    /// Changes whenever the key set does (a key added, changed or
    /// removed), not on a refresh that brings the same document: what the
    /// verified-token cache checks.
    pub fn content_generation(&self) -> u64 {
        self.content.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the keys may be used: read once, and not stale too long.
    pub fn usable(&self) -> bool {
        self.loaded_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| {
                at.elapsed() <= self.settings.max_stale + self.settings.refresh_interval
            })
    }

    /// The key for `kid`; an unknown one triggers at most one refetch per
    /// `min_refetch_interval`, shared by concurrent callers.
    pub async fn lookup(&self, kid: Option<&str>) -> Lookup {
        if !self.usable() {
            // Never loaded, or stale too long: one read now, then decide.
            // Boxed, here and below: a fetch is rare, and its state would
            // otherwise be part of every request's future (see `route`).
            let _ = Box::pin(self.refresh_forced()).await;
            if !self.usable() {
                return Lookup::Unavailable;
            }
        }
        if let Some(key) = self.set.load().get(kid) {
            return Lookup::Found(key.clone());
        }
        Box::pin(self.refresh_forced()).await;
        match self.set.load().get(kid) {
            Some(key) => Lookup::Found(key.clone()),
            None => Lookup::Unknown,
        }
    }

    /// A fetch forced by a miss: one at a time, at most one per interval.
    async fn refresh_forced(&self) -> bool {
        let generation = || self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let before = generation();
        let mut last = self.forced.lock().await;
        // Another caller fetched while this one waited: use its result.
        if generation() != before {
            return true;
        }
        if last.is_some_and(|at| at.elapsed() < self.settings.min_refetch_interval) {
            self.metrics
                .jwks_refresh(&self.name, "kid_miss", "rate_limited");
            return false;
        }
        *last = Some(Instant::now());
        self.refresh("kid_miss").await.is_ok()
    }

    /// Refreshes on the configured interval until `stop`.
    pub async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.settings.refresh_interval) => {}
                () = stop.cancelled() => return,
            }
            let _ = self.refresh("interval").await;
        }
    }
}

fn client(
    ca_file: Option<&PathBuf>,
) -> Result<Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>, JwksError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| JwksError::Fetch(format!("{}: {e}", path.display())))?
            {
                let cert =
                    cert.map_err(|e| JwksError::Fetch(format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| JwksError::Fetch(format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| JwksError::Fetch(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// The JWKS an issuer's discovery document names. The document must name
/// this issuer exactly (OpenID Connect Discovery §4.3): a document served
/// for another issuer would bring that issuer's keys. Its `jwks_uri` must
/// be https (plain http only on loopback).
async fn discover(
    client: &JwksClient,
    document: &http::Uri,
    issuer: &str,
) -> Result<Vec<u8>, JwksError> {
    #[derive(serde::Deserialize)]
    struct Document {
        issuer: String,
        jwks_uri: String,
    }
    let fail = |e: String| JwksError::Fetch(format!("discovery {document}: {e}"));
    let bytes = fetch(client, document).await?;
    // A repeated member is refused (serde's derive), so no reader of this
    // document could see another issuer or key location than this one.
    let doc: Document = serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))?;
    if doc.issuer != issuer {
        return Err(fail(format!(
            "names issuer {:?}, not {issuer:?}",
            doc.issuer
        )));
    }
    let jwks: http::Uri = doc
        .jwks_uri
        .parse()
        .map_err(|e: http::uri::InvalidUri| fail(e.to_string()))?;
    if !super::config::secure_uri(&jwks) {
        return Err(fail(format!("jwks_uri {jwks} is not https")));
    }
    fetch(client, &jwks).await
}

/// GETs a JWKS: no redirects followed, 5 s, 256 KiB.
async fn fetch(client: &JwksClient, uri: &http::Uri) -> Result<Vec<u8>, JwksError> {
    let fail = |e: String| JwksError::Fetch(e);
    let req = http::Request::get(uri.clone())
        .header(
            http::header::ACCEPT,
            "application/json, application/jwk-set+json",
        )
        .body(Empty::new())
        .map_err(|e| fail(e.to_string()))?;
    // One deadline for the whole exchange, head and body.
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("status {}", resp.status())));
        }
        let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| fail("timed out".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsa_n(bytes: usize) -> String {
        let mut n = vec![0xC3u8; bytes];
        n[bytes - 1] = 0x01;
        URL_SAFE_NO_PAD.encode(n)
    }

    #[test]
    fn keeps_only_signature_keys_it_can_use() {
        let jwks = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "big", "n": rsa_n(256), "e": "AQAB"},
            {"kty": "RSA", "kid": "small", "n": rsa_n(128), "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": rsa_n(256), "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "pinned", "alg": "PS256", "n": rsa_n(256), "e": "AQAB"},
            {"kty": "RSA", "kid": "mislabelled", "alg": "ES256", "n": rsa_n(256), "e": "AQAB"},
        ]});
        let set = KeySet::parse(jwks.to_string().as_bytes()).unwrap();
        assert!(set.get(Some("big")).is_some());
        for gone in ["small", "enc", "hmac", "p521", "mislabelled"] {
            assert!(set.get(Some(gone)).is_none(), "{gone} kept");
        }
        assert_eq!(
            set.get(Some("pinned")).unwrap().algorithms,
            [Algorithm::PS256]
        );
        assert!(set.get(None).is_none(), "no lone key among several");
    }

    #[test]
    fn refuses_ambiguous_or_oversized_sets() {
        let dup = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "a", "n": rsa_n(256), "e": "AQAB"},
            {"kty": "RSA", "kid": "a", "n": rsa_n(256), "e": "AQAB"},
        ]});
        assert_eq!(
            KeySet::parse(dup.to_string().as_bytes()).err(),
            Some(JwksError::DuplicateKid("a".into()))
        );
        let many: Vec<Value> = (0..65)
            .map(|i| serde_json::json!({"kty": "RSA", "kid": i.to_string(), "n": rsa_n(256), "e": "AQAB"}))
            .collect();
        assert!(KeySet::parse(serde_json::json!({"keys": many}).to_string().as_bytes()).is_err());
        assert!(KeySet::parse(b"{}").is_err());
        assert!(KeySet::parse(b"not json").is_err());
        let lone = serde_json::json!({"keys": [{"kty": "RSA", "n": rsa_n(256), "e": "AQAB"}]});
        assert!(KeySet::parse(lone.to_string().as_bytes())
            .unwrap()
            .get(None)
            .is_some());
    }

    #[test]
    fn a_jwt_bundle_keeps_jwt_svid_keys_only() {
        let bundle = serde_json::json!({"spiffe_sequence": 3, "keys": [
            {"kty": "RSA", "kid": "jwt", "use": "jwt-svid", "n": rsa_n(256), "e": "AQAB"},
            {"kty": "RSA", "kid": "ca", "use": "x509-svid", "n": rsa_n(256), "e": "AQAB"},
            {"kty": "RSA", "kid": "plain", "n": rsa_n(256), "e": "AQAB"},
            {"kty": "RSA", "kid": "sig", "use": "sig", "n": rsa_n(256), "e": "AQAB"},
        ]});
        let set = KeySet::parse_for(bundle.to_string().as_bytes(), KeyUse::JwtSvid).unwrap();
        assert!(set.get(Some("jwt")).is_some());
        for gone in ["ca", "plain", "sig"] {
            assert!(set.get(Some(gone)).is_none(), "{gone} kept");
        }
        // Its one JWT key serves a token without `kid`, `kid` or not...
        assert!(set.get(None).is_some());
        // ...but an issuer's does not (a kid-less token needs a kid-less key).
        let issuer = KeySet::parse(bundle.to_string().as_bytes()).unwrap();
        assert!(issuer.get(None).is_none());
        assert!(
            issuer.get(Some("jwt")).is_none(),
            "jwt-svid keys are not an issuer's"
        );
        let two = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "a", "use": "jwt-svid", "n": rsa_n(256), "e": "AQAB"},
            {"kty": "RSA", "use": "jwt-svid", "n": rsa_n(256), "e": "AQAB"},
        ]});
        let set = KeySet::parse_for(two.to_string().as_bytes(), KeyUse::JwtSvid).unwrap();
        assert!(set.get(None).is_none(), "two candidates: none is chosen");
    }
}
