//! `auth:`: Portcullis as the OAuth 2.1 resource server in front of the
//! MCP server (issue 11).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::config::ConfigError;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `required` (the default): a request without a valid token gets the
    /// 401 challenge. `optional`: a token is verified if present.
    #[serde(default)]
    pub mode: AuthMode,
    /// The canonical URI of this MCP server: the Protected Resource
    /// Metadata `resource`, and the only audience accepted. Never derived
    /// from `Host`.
    pub resource: String,
    /// More audiences accepted (IdPs that cannot mint `aud` = resource,
    /// such as Entra's `api://…`). Each is logged at start.
    #[serde(default)]
    pub audiences_extra: Vec<String>,
    pub metadata: MetadataConfig,
    /// Longer tokens are refused before any decoding.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Clock skew allowed on `exp`, `nbf` and `iat` (at most 5 minutes).
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    pub issuers: Vec<IssuerConfig>,
    /// SPIFFE JWT-SVIDs accepted as bearer tokens (see
    /// [`crate::auth::svid`]). Absent: none are.
    #[serde(default)]
    pub jwt_svid: Option<JwtSvidConfig>,
    #[serde(default)]
    pub scopes: ScopesConfig,
}

/// `auth.jwt_svid`: workloads calling with a JWT-SVID.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JwtSvidConfig {
    /// Each trust domain's JWT bundle: a JWKS file in the SPIFFE bundle
    /// format (keys with `use: jwt-svid`), read again every
    /// `refresh_interval` and on an unknown `kid`.
    pub bundles: BTreeMap<String, PathBuf>,
    /// Trust domains whose JWT-SVIDs are accepted. Empty: the identity
    /// section's trust domains if there is one, else every bundle's.
    #[serde(default)]
    pub trust_domains: Vec<String>,
    /// What a JWT-SVID's `aud` must name (at least one of them), compared
    /// exactly: usually this server's own SPIFFE ID.
    pub audiences: Vec<String>,
    /// Longest lifetime left (`exp` − now) a JWT-SVID may claim.
    #[serde(default = "default_max_lifetime", with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// How often bundle files are read again (a removed key is refused
    /// from the next read on).
    #[serde(default = "default_bundle_refresh", with = "humantime_serde")]
    pub refresh_interval: Duration,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    Required,
    Optional,
    Off,
}

/// What the Protected Resource Metadata (RFC 9728) says besides
/// `resource`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    /// Issuer URLs of the authorization servers clients should use.
    pub authorization_servers: Vec<String>,
    /// The minimal scopes for basic use (`offline_access` is refused).
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    #[serde(default)]
    pub resource_name: Option<String>,
    #[serde(default)]
    pub resource_documentation: Option<String>,
    /// Also serve the metadata at `/.well-known/oauth-protected-resource`
    /// (some clients look only there).
    #[serde(default = "yes")]
    pub serve_root: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// A short name for metrics, audit records and policies.
    pub name: String,
    /// Compared byte for byte with the token's `iss`.
    pub issuer: String,
    pub jwks: JwksConfig,
    /// Signature algorithms accepted; `HS*` and `none` are refused at
    /// load. Default: RS256/384/512, PS256/384/512, ES256, ES384, EdDSA.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// Accepted `typ` headers; `none` stands for no `typ` at all.
    #[serde(default = "default_typ")]
    pub typ: Vec<String>,
    /// Longest lifetime left (`exp` − now) a token may claim.
    #[serde(default = "default_max_lifetime", with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// Claims read as scopes: a space-separated string or an array.
    #[serde(default = "default_scope_claims")]
    pub scope_claims: Vec<String>,
    /// Claims naming the party acting for the subject, first found wins:
    /// `act.sub` (RFC 8693), `azp`, `client_id`.
    #[serde(default = "default_actor_claims")]
    pub actor_claims: Vec<String>,
    /// When both the token's actor and an mTLS peer are present, they
    /// must be the same (a user's token replayed by another workload is
    /// refused).
    #[serde(default = "yes")]
    pub actor_must_match_peer: bool,
}

/// Where an issuer's keys come from: exactly one of `uri` and `file`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    #[serde(default)]
    pub uri: Option<String>,
    /// Find the JWKS through the issuer's OpenID Connect discovery document
    /// (`<issuer>/.well-known/openid-configuration`), read again at every
    /// refresh. Its `issuer` must be the configured one, exactly.
    #[serde(default)]
    pub discovery: bool,
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// CA bundle (PEM) for an https `uri`; absent: the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// At most one fetch forced by an unknown `kid` this often.
    #[serde(default = "default_min_refetch", with = "humantime_serde")]
    pub min_refetch_interval: Duration,
    /// How long keys are used after the source stopped answering; then
    /// requests get 503 until it answers again.
    #[serde(default = "default_max_stale", with = "humantime_serde")]
    pub max_stale: Duration,
}

/// Scopes each operation needs: like the policy rules, first match wins.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScopesConfig {
    /// Needed by every authenticated request (the 401's `scope`).
    #[serde(default)]
    pub required: Vec<String>,
    /// A scope and the narrower ones it grants: `files:write` →
    /// `[files:read]`. Followed transitively.
    #[serde(default)]
    pub implies: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub rules: Vec<ScopeRule>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScopeRule {
    /// JSON-RPC methods (globs); empty: any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Tool, prompt or resource names (globs); empty: any.
    #[serde(default)]
    pub names: Vec<String>,
    pub require: Vec<String>,
}

fn yes() -> bool {
    true
}
fn default_max_token_bytes() -> usize {
    8192
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_algorithms() -> Vec<Algorithm> {
    use Algorithm::*;
    vec![
        RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA,
    ]
}
fn default_typ() -> Vec<String> {
    ["at+jwt", "application/at+jwt", "JWT", "none"]
        .map(String::from)
        .to_vec()
}
fn default_max_lifetime() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_scope_claims() -> Vec<String> {
    vec!["scope".into(), "scp".into()]
}
fn default_actor_claims() -> Vec<String> {
    vec!["act.sub".into(), "azp".into(), "client_id".into()]
}
fn default_refresh() -> Duration {
    Duration::from_secs(600)
}
fn default_bundle_refresh() -> Duration {
    Duration::from_secs(60)
}
fn default_min_refetch() -> Duration {
    Duration::from_secs(30)
}
fn default_max_stale() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl AuthConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mode == AuthMode::Off {
            return Ok(());
        }
        self.validate_resource()?;
        for extra in &self.audiences_extra {
            if extra == &self.resource || extra.contains('*') || extra.is_empty() {
                return Err(invalid(
                    "auth.audiences_extra",
                    format!("{extra:?}: neither the resource itself, empty nor a wildcard"),
                ));
            }
        }
        if self.metadata.authorization_servers.is_empty() {
            return Err(invalid(
                "auth.metadata.authorization_servers",
                "at least one authorization server",
            ));
        }
        if self
            .metadata
            .scopes_supported
            .iter()
            .any(|s| s == "offline_access")
        {
            return Err(invalid(
                "auth.metadata.scopes_supported",
                "offline_access is the client's to ask for, not a resource scope",
            ));
        }
        if !(256..=65536).contains(&self.max_token_bytes) {
            return Err(invalid("auth.max_token_bytes", "between 256 and 65536"));
        }
        if self.leeway > Duration::from_secs(300) {
            return Err(invalid("auth.leeway", "at most 5m"));
        }
        if self.issuers.is_empty() {
            return Err(invalid("auth.issuers", "at least one issuer"));
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut names = std::collections::BTreeSet::new();
        for i in &self.issuers {
            i.validate()?;
            if !seen.insert(i.issuer.as_str()) {
                return Err(invalid(
                    "auth.issuers.issuer",
                    format!("{} listed twice", i.issuer),
                ));
            }
            // The name is the issuer in every principal key (sessions,
            // tasks, warm filter instances, assertions): two issuers under
            // one name would make their users with the same `sub` one
            // principal.
            if !names.insert(i.name.as_str()) {
                return Err(invalid(
                    "auth.issuers.name",
                    format!("{} names two issuers", i.name),
                ));
            }
        }
        if let Some(svid) = &self.jwt_svid {
            svid.validate()?;
        }
        Ok(())
    }
}

/// Whether `td` is a trust domain name (what follows `spiffe://`).
fn trust_domain_name(td: &str) -> bool {
    crate::identity::SpiffeId::parse(&format!("spiffe://{td}")).is_ok_and(|id| !id.names_workload())
}

impl JwtSvidConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.bundles.is_empty() {
            return Err(invalid(
                "auth.jwt_svid.bundles",
                "at least one trust domain's JWT bundle",
            ));
        }
        if let Some(td) = self.bundles.keys().find(|td| !trust_domain_name(td)) {
            return Err(invalid(
                "auth.jwt_svid.bundles",
                format!("{td:?}: not a trust domain name (example.org, no spiffe://)"),
            ));
        }
        for td in &self.trust_domains {
            if !self.bundles.contains_key(td) {
                return Err(invalid(
                    "auth.jwt_svid.trust_domains",
                    format!("{td:?}: no bundle for it in auth.jwt_svid.bundles"),
                ));
            }
        }
        if self.audiences.is_empty() {
            return Err(invalid(
                "auth.jwt_svid.audiences",
                "at least one (this server's SPIFFE ID, usually)",
            ));
        }
        for aud in &self.audiences {
            if aud.is_empty() || aud.contains('*') || aud.trim() != aud {
                return Err(invalid(
                    "auth.jwt_svid.audiences",
                    format!("{aud:?}: an exact audience, neither empty nor a wildcard"),
                ));
            }
        }
        if self.max_lifetime > Duration::from_secs(366 * 86400) {
            return Err(invalid("auth.jwt_svid.max_lifetime", "at most a year"));
        }
        if self.refresh_interval < Duration::from_secs(1) {
            return Err(invalid("auth.jwt_svid.refresh_interval", "at least 1s"));
        }
        Ok(())
    }

    /// The trust domains accepted: as listed, else `identity`'s (the
    /// identity section's), else every bundle's.
    pub fn accepted(&self, identity: &[String]) -> Vec<String> {
        if !self.trust_domains.is_empty() {
            return self.trust_domains.clone();
        }
        if !identity.is_empty() {
            return identity.to_vec();
        }
        self.bundles.keys().cloned().collect()
    }

    /// How one trust domain's bundle file is read: as an issuer's JWKS
    /// file.
    pub fn jwks(&self, file: &std::path::Path) -> JwksConfig {
        JwksConfig {
            uri: None,
            discovery: false,
            file: Some(file.to_path_buf()),
            ca_file: None,
            refresh_interval: self.refresh_interval,
            min_refetch_interval: default_min_refetch(),
            max_stale: default_max_stale(),
        }
    }
}

impl AuthConfig {
    fn validate_resource(&self) -> Result<(), ConfigError> {
        let resource: http::Uri = self
            .resource
            .parse()
            .map_err(|e| invalid("auth.resource", format!("not a URI: {e}")))?;
        if resource.scheme().is_none() || resource.authority().is_none() {
            return Err(invalid(
                "auth.resource",
                "must be an absolute URI (https://host/path)",
            ));
        }
        if self.resource.contains('#') || resource.query().is_some() {
            return Err(invalid(
                "auth.resource",
                "must not have a query or a fragment",
            ));
        }
        Ok(())
    }
}

impl IssuerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.name;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(invalid(
                "auth.issuers.name",
                format!("{name:?}: letters, digits, - _ ."),
            ));
        }
        if self.issuer.is_empty() || self.issuer.trim() != self.issuer {
            return Err(invalid(
                "auth.issuers.issuer",
                format!("{name}: an exact issuer URL"),
            ));
        }
        if self.max_lifetime > Duration::from_secs(366 * 86400) {
            return Err(invalid(
                "auth.issuers.max_lifetime",
                format!("{name}: at most a year"),
            ));
        }
        if self.algorithms.is_empty() {
            return Err(invalid(
                "auth.issuers.algorithms",
                format!("{name}: at least one"),
            ));
        }
        if let Some(bad) = self
            .algorithms
            .iter()
            .find(|a| !super::ring_provider::verifies(**a))
        {
            return Err(invalid(
                "auth.issuers.algorithms",
                format!("{name}: {bad:?} is refused (HMAC: the key would be a shared secret)"),
            ));
        }
        if self.jwks.discovery {
            let secure = self
                .issuer
                .parse::<http::Uri>()
                .is_ok_and(|u| secure_uri(&u));
            if !secure {
                return Err(invalid(
                    "auth.issuers.issuer",
                    format!(
                        "{name}: discovery needs an https issuer (plain http only on loopback)"
                    ),
                ));
            }
        }
        self.jwks.validate(name)
    }
}

/// https, or plain http to this machine only: keys fetched in the clear
/// over a network could be replaced on the way.
pub fn secure_uri(u: &http::Uri) -> bool {
    let loopback = u.host().is_some_and(|h| {
        h == "localhost"
            || h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    match u.scheme_str() {
        Some("https") => true,
        Some("http") => loopback,
        _ => false,
    }
}

impl JwksConfig {
    fn validate(&self, name: &str) -> Result<(), ConfigError> {
        match (&self.uri, &self.file, self.discovery) {
            (Some(uri), None, false) => {
                let u: http::Uri = uri
                    .parse()
                    .map_err(|e| invalid("auth.issuers.jwks.uri", format!("{name}: {e}")))?;
                if !secure_uri(&u) {
                    return Err(invalid(
                        "auth.issuers.jwks.uri",
                        format!("{name}: https (plain http only on loopback)"),
                    ));
                }
            }
            (None, Some(_), false) | (None, None, true) => {}
            _ => {
                return Err(invalid(
                    "auth.issuers.jwks",
                    format!("{name}: exactly one of uri, file and discovery"),
                ))
            }
        }
        if self.min_refetch_interval < Duration::from_secs(1) {
            return Err(invalid(
                "auth.issuers.jwks.min_refetch_interval",
                "at least 1s",
            ));
        }
        if self.refresh_interval < Duration::from_secs(1) {
            return Err(invalid("auth.issuers.jwks.refresh_interval", "at least 1s"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<AuthConfig, String> {
        let c: AuthConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    const BASE: &str = "resource: https://mcp.example.com/mcp\nmetadata: {authorization_servers: [https://idp.example.com]}\n";

    #[test]
    fn refuses_what_would_weaken_verification() {
        let issuer = |extra: &str| {
            format!("{BASE}issuers:\n  - {{name: corp, issuer: https://idp.example.com, jwks: {{file: k.json}}{extra}}}\n")
        };
        assert!(parse(&issuer("")).is_ok());
        for (what, yaml) in [
            ("HS256", issuer(", algorithms: [RS256, HS256]")),
            ("none", issuer(", algorithms: [none]")),
            ("two key sources", format!("{BASE}issuers:\n  - {{name: c, issuer: https://i, jwks: {{file: k, uri: https://i/k}}}}\n")),
            ("no key source", format!("{BASE}issuers:\n  - {{name: c, issuer: https://i, jwks: {{}}}}\n")),
            ("plain http JWKS elsewhere", format!("{BASE}issuers:\n  - {{name: c, issuer: https://i, jwks: {{uri: http://idp.example.com/k}}}}\n")),
            ("no issuer", BASE.to_string()),
            ("relative resource", issuer("").replace("https://mcp.example.com/mcp", "/mcp")),
            ("wildcard audience", format!("audiences_extra: ['*']\n{}", issuer(""))),
            ("offline_access", issuer("").replace("authorization_servers: [https://idp.example.com]", "authorization_servers: [https://idp.example.com], scopes_supported: [offline_access]")),
            ("unknown field", format!("{}typo: 1\n", issuer(""))),
            ("discovery and a uri", issuer(", jwks: {discovery: true, uri: https://idp.example.com/k}").replace("jwks: {file: k.json}, ", "")),
            ("discovery over plain http", format!("{BASE}issuers:\n  - {{name: c, issuer: http://idp.example.com, jwks: {{discovery: true}}}}\n")),
            ("one name, two issuers", format!("{BASE}issuers:\n  - {{name: corp, issuer: https://a.example, jwks: {{file: k}}}}\n  - {{name: corp, issuer: https://b.example, jwks: {{file: k}}}}\n")),
        ] {
            assert!(parse(&yaml).is_err(), "{what} accepted");
        }
    }

    fn with_svid(svid: &str) -> String {
        format!("{BASE}issuers:\n  - {{name: corp, issuer: https://idp.example.com, jwks: {{file: k.json}}}}\njwt_svid: {svid}\n")
    }

    #[test]
    fn jwt_svid_trust_domains_default_to_identity_then_bundles() {
        let good = with_svid(
            "{bundles: {demo.local: b.json, b.test: c.json}, audiences: ['spiffe://demo.local/mcp']}",
        );
        let svid = parse(&good).unwrap().jwt_svid.unwrap();
        assert_eq!(svid.accepted(&[]), ["b.test", "demo.local"], "the bundles'");
        assert_eq!(
            svid.accepted(&["demo.local".into()]),
            ["demo.local"],
            "the identity section's"
        );
        let listed = with_svid("{bundles: {demo.local: b.json, b.test: c.json}, trust_domains: [b.test], audiences: [a]}");
        let svid = parse(&listed).unwrap().jwt_svid.unwrap();
        assert_eq!(
            svid.accepted(&["demo.local".into()]),
            ["b.test"],
            "as listed"
        );
    }

    #[test]
    fn jwt_svid_needs_bundles_and_exact_audiences() {
        let with = with_svid;
        for (what, yaml, field) in [
            (
                "no bundle",
                with("{bundles: {}, audiences: [a]}"),
                "auth.jwt_svid.bundles",
            ),
            (
                "no audience",
                with("{bundles: {td: b}, audiences: []}"),
                "auth.jwt_svid.audiences",
            ),
            (
                "wildcard audience",
                with("{bundles: {td: b}, audiences: ['spiffe://td/*']}"),
                "auth.jwt_svid.audiences",
            ),
            (
                "empty audience",
                with("{bundles: {td: b}, audiences: ['']}"),
                "auth.jwt_svid.audiences",
            ),
            (
                "a SPIFFE ID as trust domain",
                with("{bundles: {'spiffe://td': b}, audiences: [a]}"),
                "auth.jwt_svid.bundles",
            ),
            (
                "an upper-case trust domain",
                with("{bundles: {TD: b}, audiences: [a]}"),
                "auth.jwt_svid.bundles",
            ),
            (
                "a trust domain without bundle",
                with("{bundles: {td: b}, trust_domains: [other], audiences: [a]}"),
                "auth.jwt_svid.trust_domains",
            ),
            (
                "the workload API, not built",
                with("{bundles: {td: b}, audiences: [a], source: workload_api}"),
                "source",
            ),
            (
                "no audiences field",
                with("{bundles: {td: b}}"),
                "audiences",
            ),
        ] {
            let err = parse(&yaml).expect_err(what);
            assert!(err.contains(field), "{what}: {err}");
        }
    }
}
