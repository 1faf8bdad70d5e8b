//! Portcullis as the OAuth 2.1 resource server of the MCP server behind it
//! (issue 11): it serves the Protected Resource Metadata (RFC 9728),
//! verifies bearer JWTs on every request (audience-bound, RFC 8707), and
//! answers the spec's challenges: 401 with `WWW-Authenticate`, 403
//! `insufficient_scope` listing every scope the operation needs, 400 for a
//! token in the query or two credentials. The client's token never goes
//! upstream (`upstream.forward_authorization` is the explicit opt-in).
//!
//! - [`config`]: the `auth:` section.
//! - [`ring_provider`]: jsonwebtoken's crypto, on ring.
//! - [`keys`]: each issuer's JWKS, refreshed, refetched on an unknown
//!   `kid`, served stale within bounds.
//! - [`verify`]: one token, checked in an order the token cannot steer.
//! - [`svid`]: SPIFFE JWT-SVIDs as bearer tokens, with their trust
//!   domains' JWT bundles.
//! - [`scopes`]: which scopes an operation needs.
//! - [`challenge`]: the answers.
//!
//! The request path calls [`Auth::intercept`] (metadata paths),
//! [`Auth::authenticate`] (before anything else reads the request) and
//! [`Auth::check_scopes`] (once the JSON-RPC body is decoded).

pub mod assertion;
pub mod cache;
pub mod challenge;
pub mod config;
pub mod keys;
pub mod metrics;
pub mod ring_provider;
pub mod scopes;
pub mod svid;
pub mod verify;

use std::sync::Arc;

use bytes::Bytes;
use http::{header, request::Parts, HeaderValue, Method, Response, StatusCode};

pub use self::{config::AuthConfig, metrics::AuthMetrics};
use self::{
    config::AuthMode,
    keys::IssuerKeys,
    scopes::ScopeRules,
    svid::JwtSvids,
    verify::{Failure, Issuer, Verifier},
};
use crate::{
    body::{self, ProxyBody},
    identity::{Peer, Token},
};

const WELL_KNOWN_PRM: &str = "/.well-known/oauth-protected-resource";
const WELL_KNOWN_AS: &str = "/.well-known/oauth-authorization-server";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth: the ring crypto provider could not be installed for jsonwebtoken")]
    Provider,
    #[error("auth: issuer {0}: {1}")]
    Keys(String, keys::JwksError),
}

pub struct Auth {
    mode: AuthMode,
    verifier: Verifier,
    scopes: ScopeRules,
    /// The metadata document, served as is.
    prm: Bytes,
    /// The path-suffixed metadata path, and whether the root one is served.
    prm_path: String,
    serve_root: bool,
    /// The metadata URL challenges name.
    prm_url: String,
    metrics: AuthMetrics,
}

impl Auth {
    /// Builds the verifier and reads each issuer's keys (and each trust
    /// domain's JWT bundle) once (a source that does not answer yet leaves
    /// that issuer unavailable: 503 until it does). `identity_trust_domains`
    /// are the identity section's, the JWT-SVID default. `None` when
    /// `mode: off`.
    pub async fn new(
        config: &AuthConfig,
        identity_trust_domains: &[String],
        metrics: AuthMetrics,
    ) -> Result<Option<Arc<Self>>, AuthError> {
        if config.mode == AuthMode::Off {
            return Ok(None);
        }
        if !ring_provider::install() {
            return Err(AuthError::Provider);
        }
        let mut issuers = Vec::new();
        for i in &config.issuers {
            let keys = match i.jwks.discovery {
                true => IssuerKeys::discovering(&i.name, &i.issuer, &i.jwks, metrics.clone()),
                false => IssuerKeys::new(&i.name, &i.jwks, metrics.clone()),
            }
            .map_err(|e| AuthError::Keys(i.name.clone(), e))?;
            let keys = Arc::new(keys);
            let _ = keys.refresh("startup").await;
            issuers.push(Issuer {
                config: i.clone(),
                keys,
            });
        }
        let svids = match &config.jwt_svid {
            Some(c) => Some(
                JwtSvids::new(c, identity_trust_domains, &metrics)
                    .await
                    .map_err(|(name, e)| AuthError::Keys(name, e))?,
            ),
            None => None,
        };
        for extra in &config.audiences_extra {
            tracing::warn!(audience = %extra, "auth: tokens for another audience than the resource are accepted");
        }
        let mut audiences = vec![config.resource.clone()];
        audiences.extend(config.audiences_extra.iter().cloned());
        let (prm_url, prm_path) = prm_location(&config.resource);
        Ok(Some(Arc::new(Self {
            mode: config.mode,
            verifier: Verifier {
                issuers,
                audiences,
                leeway: config.leeway,
                max_token_bytes: config.max_token_bytes,
                cache: cache::VerifiedCache::default(),
                svids,
            },
            scopes: ScopeRules::new(&config.scopes),
            prm: Bytes::from(prm_document(config).to_string()),
            prm_path,
            serve_root: config.metadata.serve_root,
            prm_url,
            metrics,
        })))
    }

    /// Keeps every issuer's keys and trust domain's bundle fresh until
    /// `stop`.
    pub fn spawn_refresh(&self, stop: &tokio_util::sync::CancellationToken) {
        for i in &self.verifier.issuers {
            tokio::spawn(i.keys.clone().run(stop.clone()));
        }
        for d in self.verifier.svids.iter().flat_map(|s| &s.domains) {
            tokio::spawn(d.keys.clone().run(stop.clone()));
        }
    }

    /// The metadata document and the authorization-server paths, answered
    /// here without authentication and never forwarded.
    pub fn intercept(&self, method: &Method, path: &str) -> Option<Response<ProxyBody>> {
        let prm = path == self.prm_path || (self.serve_root && path == WELL_KNOWN_PRM);
        if prm {
            return Some(match *method {
                Method::GET | Method::HEAD => self.metadata(),
                Method::OPTIONS => cors(StatusCode::NO_CONTENT, body::empty()),
                _ => cors(StatusCode::METHOD_NOT_ALLOWED, body::empty()),
            });
        }
        // Without metadata, SDK clients would take the MCP server for its
        // own authorization server (the 2025-03-26 fallback): say there is
        // none here rather than let the app answer.
        if path == WELL_KNOWN_AS || path.starts_with(&format!("{WELL_KNOWN_AS}/")) {
            return Some(cors(StatusCode::NOT_FOUND, body::empty()));
        }
        None
    }

    fn metadata(&self) -> Response<ProxyBody> {
        let mut resp = cors(StatusCode::OK, body::full(self.prm.clone()));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        resp
    }

    /// The request's verified token, or `None` (no token, and
    /// `optional`). Every decision is counted and every refusal logged
    /// with its reason (never the token).
    pub async fn authenticate(
        &self,
        parts: &Parts,
        peer: &Peer,
    ) -> Result<Option<Arc<Token>>, Refused> {
        let token = match credential(parts) {
            Ok(Some(token)) => token,
            Ok(None) if self.mode == AuthMode::Optional => return Ok(None),
            Ok(None) => {
                return Err(self.refused("none", Refused::Missing(self.scopes.base().to_vec())))
            }
            Err("malformed") => {
                return Err(self.refused("none", Refused::Invalid(Failure::Malformed)))
            }
            Err(why) => return Err(self.refused("none", Refused::BadRequest(why))),
        };
        match self.verifier.verify(token, peer).await {
            Ok(verified) => {
                let reason = if verified.cached { "cached" } else { "ok" };
                self.metrics.decision(&verified.issuer, "allow", reason);
                Ok(Some(verified.token))
            }
            Err((issuer, Failure::KeysUnavailable)) => {
                Err(self.refused(&issuer, Refused::Unavailable))
            }
            Err((issuer, failure)) => Err(self.refused(&issuer, Refused::Invalid(failure))),
        }
    }

    /// Whether the token's scopes cover `ops` (method, name): every
    /// message of the body. Without a token (`optional`), an operation
    /// that needs scopes needs a token first.
    pub fn check_scopes(
        &self,
        token: Option<&Token>,
        ops: &[(&str, Option<&str>)],
    ) -> Result<(), Refused> {
        let needed = self.scopes.needed(ops);
        match token {
            None if needed.is_empty() => Ok(()),
            None => Err(self.refused("none", Refused::Missing(needed))),
            Some(t) if self.scopes.satisfied(&t.scopes, &needed) => Ok(()),
            Some(t) => Err(self.refused(&verify::label(t), Refused::Insufficient(needed))),
        }
    }

    /// Whether `token` has the scopes to use item `name` with `method`
    /// (for lists: what is shown is what may be called).
    pub fn may_use(&self, token: Option<&Token>, method: &str, name: &str) -> bool {
        let needed = self.scopes.needed(&[(method, Some(name))]);
        match token {
            None => needed.is_empty(),
            Some(t) => self.scopes.satisfied(&t.scopes, &needed),
        }
    }

    /// Counts and logs a refusal, and gives it back.
    fn refused(&self, issuer: &str, r: Refused) -> Refused {
        let (outcome, reason) = match &r {
            Refused::Missing(_) => ("challenge", "missing"),
            Refused::Invalid(f) => ("challenge", f.reason()),
            Refused::BadRequest(why) => ("refuse", *why),
            Refused::Insufficient(_) => ("refuse", "insufficient_scope"),
            Refused::Unavailable => ("unavailable", Failure::KeysUnavailable.reason()),
        };
        self.metrics.decision(issuer, outcome, reason);
        if !matches!(r, Refused::Missing(_)) {
            tracing::warn!(%issuer, outcome, reason, "auth: request refused");
        }
        r
    }

    /// The client's answer to a refusal: RFC 6750 challenges naming the
    /// metadata URL, `Cache-Control: no-store`, an OAuth error body.
    pub fn answer(&self, r: &Refused) -> Response<ProxyBody> {
        let www = |error: Option<(&str, &str)>, scope: &[String]| {
            Some(challenge::www_authenticate(error, scope, &self.prm_url))
        };
        match r {
            Refused::Missing(scope) => challenge::refusal(
                StatusCode::UNAUTHORIZED,
                www(None, scope),
                "invalid_token",
                "bearer token required",
            ),
            Refused::Invalid(f) => challenge::refusal(
                StatusCode::UNAUTHORIZED,
                www(Some(("invalid_token", f.description())), self.scopes.base()),
                "invalid_token",
                f.description(),
            ),
            Refused::BadRequest(_) => {
                let why = "credentials must be one Authorization header";
                challenge::refusal(
                    StatusCode::BAD_REQUEST,
                    www(Some(("invalid_request", why)), &[]),
                    "invalid_request",
                    why,
                )
            }
            Refused::Insufficient(needed) => {
                let why = "the token lacks scopes this request needs";
                challenge::refusal(
                    StatusCode::FORBIDDEN,
                    www(Some(("insufficient_scope", why)), needed),
                    "insufficient_scope",
                    why,
                )
            }
            Refused::Unavailable => challenge::refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "temporarily_unavailable",
                "keys unavailable",
            ),
        }
    }
}

/// Why a request gets no further, as [`Auth::answer`] tells the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No token: 401 with the scopes needed, and no `error`.
    Missing(Vec<String>),
    /// A token that did not verify: 401 `invalid_token`.
    Invalid(Failure),
    /// A token in the query, or more than one credential: 400.
    BadRequest(&'static str),
    /// 403 `insufficient_scope`, naming every scope needed.
    Insufficient(Vec<String>),
    /// The issuer has no usable keys: 503.
    Unavailable,
}

/// The request's bearer token: `Ok(None)` if there is none (or another
/// scheme), `Err(reason)` for what could be read two ways: a token in the
/// query, several `Authorization` headers, or one that is not a single
/// RFC 6750 `b64token`.
fn credential(parts: &Parts) -> Result<Option<&str>, &'static str> {
    if let Some(query) = parts.uri.query() {
        // A server decodes the name before it reads it: so does this.
        let named = query.split(['&', ';']).any(|kv| {
            kv.split('=')
                .next()
                .is_some_and(|k| percent_decoded(k).eq_ignore_ascii_case("access_token"))
        });
        if named {
            return Err("query_token");
        }
    }
    let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("multiple_credentials");
    }
    let Ok(value) = value.to_str() else {
        return Err("malformed");
    };
    // The scheme is the first word, whatever whitespace follows it: a
    // server with a `^Bearer\s+` pattern must not read a token this did
    // not check. Exactly one space is the only separator accepted.
    let scheme_end = value
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(value.len());
    if !value[..scheme_end].eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let Some(token) = value[scheme_end..].strip_prefix(' ') else {
        return Err("malformed");
    };
    let b64token = !token.is_empty()
        && token.trim_end_matches('=').bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        });
    if !b64token {
        return Err("malformed");
    }
    Ok(Some(token))
}

/// `%XX` decoded (and `+` as a space, as form decoders read it); a broken
/// escape is kept as it is.
fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The metadata URL challenges name, and its path on this listener: the
/// well-known prefix inserted before the resource's path (RFC 9728 §3.1).
fn prm_location(resource: &str) -> (String, String) {
    let (origin, path) = match resource.find("://") {
        Some(i) => match resource[i + 3..].find('/') {
            Some(j) => resource.split_at(i + 3 + j),
            None => (resource, ""),
        },
        None => (resource, ""),
    };
    let path = path.trim_end_matches('/');
    let prm_path = format!("{WELL_KNOWN_PRM}{path}");
    (format!("{origin}{prm_path}"), prm_path)
}

fn prm_document(config: &AuthConfig) -> serde_json::Value {
    let m = &config.metadata;
    let mut doc = serde_json::json!({
        "resource": config.resource,
        "authorization_servers": m.authorization_servers,
        "bearer_methods_supported": ["header"],
    });
    if let Some(obj) = doc.as_object_mut() {
        if !m.scopes_supported.is_empty() {
            obj.insert("scopes_supported".into(), m.scopes_supported.clone().into());
        }
        if let Some(name) = &m.resource_name {
            obj.insert("resource_name".into(), name.clone().into());
        }
        if let Some(doc_url) = &m.resource_documentation {
            obj.insert("resource_documentation".into(), doc_url.clone().into());
        }
    }
    doc
}

fn cors(status: StatusCode, body: ProxyBody) -> Response<ProxyBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_lives_under_the_resource_path() {
        assert_eq!(
            prm_location("https://files.example.com/mcp"),
            (
                "https://files.example.com/.well-known/oauth-protected-resource/mcp".into(),
                "/.well-known/oauth-protected-resource/mcp".into()
            )
        );
        assert_eq!(
            prm_location("https://files.example.com:8443"),
            (
                "https://files.example.com:8443/.well-known/oauth-protected-resource".into(),
                "/.well-known/oauth-protected-resource".into()
            )
        );
    }

    fn parts(auth: &[&str], uri: &str) -> Parts {
        let mut b = http::Request::get(uri);
        for a in auth {
            b = b.header(header::AUTHORIZATION, *a);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn credentials_that_could_be_read_two_ways_are_refused() {
        assert_eq!(
            credential(&parts(&["Bearer abc.def.ghi"], "/mcp")),
            Ok(Some("abc.def.ghi"))
        );
        assert_eq!(credential(&parts(&["bearer abc"], "/mcp")), Ok(Some("abc")));
        assert_eq!(credential(&parts(&[], "/mcp")), Ok(None));
        assert_eq!(credential(&parts(&["Basic dXNlcg=="], "/mcp")), Ok(None));
        assert_eq!(
            credential(&parts(&["Bearer a", "Bearer b"], "/mcp")),
            Err("multiple_credentials")
        );
        assert_eq!(
            credential(&parts(&[], "/mcp?access_token=x")),
            Err("query_token")
        );
        assert_eq!(
            credential(&parts(&[], "/mcp?ACCESS_TOKEN=x")),
            Err("query_token")
        );
        assert_eq!(
            credential(&parts(&[], "/mcp?access%5Ftoken=x")),
            Err("query_token")
        );
        assert_eq!(
            credential(&parts(&["Bearer a b"], "/mcp")),
            Err("malformed")
        );
        assert_eq!(credential(&parts(&["Bearer "], "/mcp")), Err("malformed"));
        assert_eq!(
            credential(&parts(&["Bearer a,b"], "/mcp")),
            Err("malformed")
        );
        for spaced in ["Bearer\tabc", "Bearer  abc", "Bearer", "BEARER\t abc"] {
            assert_eq!(
                credential(&parts(&[spaced], "/mcp")),
                Err("malformed"),
                "{spaced:?}"
            );
        }
        assert_eq!(credential(&parts(&["Bearerx abc"], "/mcp")), Ok(None));
    }
}
