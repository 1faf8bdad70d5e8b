//! SPIFFE JWT-SVIDs as bearer tokens (JWT-SVID standard): a workload
//! without mTLS, behind an L7 load balancer say, names itself with a JWT
//! its SPIFFE agent minted. It goes through the same verifier as an
//! access token (same bounds, same crypto provider, same signature and
//! time checks, same metrics, labelled `jwt-svid:<trust domain>`), with
//! the standard's rules where they differ:
//!
//! - **Which path.** A token whose `iss` is a configured issuer's is that
//!   issuer's access token, whatever its `sub`. Any other token whose
//!   `sub` starts with `spiffe://` is a JWT-SVID (when `jwt_svid` is
//!   configured). Neither path falls back to the other, so a token is
//!   checked against one key set only and cannot be tried against both.
//!   `iss` is not required to be absent: SPIRE puts its `jwt_issuer` there
//!   when one is configured, and the standard tells validators not to use
//!   it; but a configured issuer's tokens must never be read with
//!   trust-domain keys (some IdPs mint client-credentials tokens whose
//!   `sub` is a SPIFFE ID). Top-level members must be unique in the
//!   header and the claims (see `verify`), so that this choice and the
//!   verifier read the same values.
//! - **Header.** `alg` is one of RS256/384/512, PS256/384/512, ES256/384
//!   (ES512 is allowed by the standard, but ring cannot verify P-521, so
//!   it is refused); `typ`, if present, is `JWT` or `JOSE`; `kid` is
//!   optional; any other member is refused.
//! - **Key.** Only from the JWT bundle of the trust domain `sub` names,
//!   which must be accepted (`trust_domains`); `iss` never picks keys.
//!   Without `kid`, the bundle must hold exactly one JWT key.
//! - **Claims.** `sub` is a SPIFFE ID naming a workload; `aud` is required
//!   and must name one of `audiences` exactly; `exp` is required; the same
//!   leeway as access tokens, `max_lifetime`, `iat` not in the future.
//! - **Peer.** With mTLS too, the peer must be the workload `sub` names: a
//!   workload presenting another's JWT-SVID holds a stolen credential.

use std::{sync::Arc, time::Duration};

use jsonwebtoken::Algorithm;
use serde_json::Value;

use super::{
    config::JwtSvidConfig,
    keys::{IssuerKeys, JwksError, KeyUse},
    metrics::AuthMetrics,
    verify::Failure,
};
use crate::identity::SpiffeId;

/// The signature algorithms a JWT-SVID may use that this verifier can
/// check.
pub const ALGORITHMS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// The only header members a JWT-SVID may carry.
const HEADER_MEMBERS: [&str; 3] = ["alg", "kid", "typ"];

/// Claims read as scopes, as for access tokens (a JWT-SVID has none
/// unless its minter adds them).
const SCOPE_CLAIMS: [&str; 2] = ["scope", "scp"];

/// The metrics label of a trust domain: never a configured issuer's name,
/// which cannot hold `:`.
pub fn label(trust_domain: &str) -> String {
    format!("jwt-svid:{trust_domain}")
}

/// One accepted trust domain and its JWT bundle.
pub struct TrustDomain {
    pub name: String,
    pub keys: Arc<IssuerKeys>,
}

/// What JWT-SVIDs are accepted, and with which keys.
pub struct JwtSvids {
    pub domains: Vec<TrustDomain>,
    pub audiences: Vec<String>,
    pub max_lifetime: Duration,
}

impl JwtSvids {
    /// The accepted trust domains (see [`JwtSvidConfig::accepted`]) that
    /// have a bundle, each read once. One without a bundle is logged and
    /// accepts nothing.
    pub async fn new(
        config: &JwtSvidConfig,
        identity_trust_domains: &[String],
        metrics: &AuthMetrics,
    ) -> Result<Self, (String, JwksError)> {
        let mut domains = Vec::new();
        for td in config.accepted(identity_trust_domains) {
            let Some(file) = config.bundles.get(&td) else {
                tracing::warn!(trust_domain = %td, "auth: no JWT bundle for this trust domain: its JWT-SVIDs are refused");
                continue;
            };
            let name = label(&td);
            let keys =
                IssuerKeys::new_for(&name, &config.jwks(file), KeyUse::JwtSvid, metrics.clone())
                    .map_err(|e| (name, e))?;
            let keys = Arc::new(keys);
            let _ = keys.refresh("startup").await;
            domains.push(TrustDomain { name: td, keys });
        }
        Ok(Self {
            domains,
            audiences: config.audiences.clone(),
            max_lifetime: config.max_lifetime,
        })
    }

    /// The accepted trust domain `td`, and its index.
    pub fn domain(&self, td: &str) -> Option<(usize, &TrustDomain)> {
        self.domains.iter().enumerate().find(|(_, d)| d.name == td)
    }
}

/// Whether the token is for the JWT-SVID path (once no configured issuer
/// claimed it): its still unverified `sub` is in the `spiffe` scheme.
pub fn claims_svid(claims: &Value) -> bool {
    claims
        .get("sub")
        .and_then(Value::as_str)
        .is_some_and(|s| s.starts_with("spiffe://"))
}

/// The SPIFFE ID in `sub`: it must parse, and name a workload (the trust
/// domain's own ID names none).
pub fn subject(claims: &Value) -> Result<SpiffeId, Failure> {
    claims
        .get("sub")
        .and_then(Value::as_str)
        .and_then(|s| SpiffeId::parse(s).ok())
        .filter(SpiffeId::names_workload)
        .ok_or(Failure::BadSubject)
}

/// The standard's header rules; the algorithm and the `kid`.
pub fn routing(header: &Value) -> Result<(Algorithm, Option<String>), Failure> {
    let Value::Object(members) = header else {
        return Err(Failure::Malformed);
    };
    if members
        .keys()
        .any(|k| !HEADER_MEMBERS.contains(&k.as_str()))
    {
        return Err(Failure::HeaderNotAllowed);
    }
    match members.get("typ") {
        None => {}
        Some(Value::String(t)) if t == "JWT" || t == "JOSE" => {}
        Some(_) => return Err(Failure::TypNotAllowed),
    }
    let alg = members
        .get("alg")
        .and_then(Value::as_str)
        .and_then(|a| a.parse::<Algorithm>().ok())
        .filter(|a| ALGORITHMS.contains(a))
        .ok_or(Failure::AlgNotAllowed)?;
    let kid = match members.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(Failure::Malformed),
    };
    Ok((alg, kid))
}

/// Scopes, if the JWT-SVID carries any.
pub fn scopes(claims: &Value) -> Option<Vec<String>> {
    let names = SCOPE_CLAIMS.map(String::from);
    super::verify::scopes(claims, &names)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_header_holds_alg_kid_and_typ_only() {
        assert_eq!(
            routing(&json!({"alg": "ES256", "kid": "k", "typ": "JWT"})),
            Ok((Algorithm::ES256, Some("k".into())))
        );
        assert_eq!(
            routing(&json!({"alg": "PS512", "typ": "JOSE"})),
            Ok((Algorithm::PS512, None))
        );
        for (what, header, failure) in [
            (
                "cty",
                json!({"alg": "ES256", "cty": "JWT"}),
                Failure::HeaderNotAllowed,
            ),
            (
                "x5t",
                json!({"alg": "ES256", "x5t": "AA"}),
                Failure::HeaderNotAllowed,
            ),
            (
                "foo",
                json!({"alg": "ES256", "foo": 1}),
                Failure::HeaderNotAllowed,
            ),
            (
                "typ at+jwt",
                json!({"alg": "ES256", "typ": "at+jwt"}),
                Failure::TypNotAllowed,
            ),
            ("EdDSA", json!({"alg": "EdDSA"}), Failure::AlgNotAllowed),
            ("HS256", json!({"alg": "HS256"}), Failure::AlgNotAllowed),
            ("ES512", json!({"alg": "ES512"}), Failure::AlgNotAllowed),
            ("none", json!({"alg": "none"}), Failure::AlgNotAllowed),
            ("no alg", json!({"kid": "k"}), Failure::AlgNotAllowed),
            (
                "numeric kid",
                json!({"alg": "ES256", "kid": 1}),
                Failure::Malformed,
            ),
        ] {
            assert_eq!(routing(&header), Err(failure), "{what}");
        }
    }

    #[test]
    fn the_subject_names_a_workload() {
        let sub = |s: &str| subject(&json!({ "sub": s }));
        assert_eq!(
            sub("spiffe://demo.local/ns/a/sa/b").map(|id| id.to_string()),
            Ok("spiffe://demo.local/ns/a/sa/b".into())
        );
        for bad in [
            "spiffe://demo.local",
            "spiffe://Demo.local/x",
            "spiffe://demo.local/a/../b",
            "spiffe://demo.local/x?y",
            "spiffe://demo.local:443/x",
            "alice",
        ] {
            assert_eq!(sub(bad), Err(Failure::BadSubject), "{bad}");
        }
        assert!(claims_svid(&json!({"sub": "spiffe://td/x"})));
        assert!(!claims_svid(&json!({"sub": "SPIFFE://td/x"})));
        assert!(!claims_svid(&json!({"sub": 1})));
    }
}
