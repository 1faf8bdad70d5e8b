//! The YAML configuration (it lives in a ConfigMap). Every struct refuses
//! unknown fields, and [`Config::validate`] names the field at fault, so a
//! typo is loud instead of silently changing behaviour.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use serde::Deserialize;

use crate::{
    admin::app_health::AppProbe,
    filter::{ChainSpec, EngineConfig, FilterSpec},
    identity::source::SourceConfig,
    policy::StaticRules,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("invalid config: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn yes() -> bool {
    true
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This sidecar's stable instance id (see [`crate::instance`] for
    /// what is used when it is not set).
    #[serde(default)]
    pub instance: Option<String>,
    /// Add `Portcullis-Instance: <instance UUID>` to every response.
    #[serde(default = "yes")]
    pub instance_header: bool,
    #[serde(default)]
    pub listener: ListenerConfig,
    /// mTLS with SPIFFE identities. Absent: a plaintext listener, every
    /// caller anonymous.
    #[serde(default)]
    pub identity: Option<IdentityConfig>,
    #[serde(default)]
    pub admin: AdminConfig,
    /// Transparent capture: the listener the pod's nat rules send inbound
    /// connections to. Absent: no capture listener.
    #[serde(default)]
    pub capture: Option<CaptureConfig>,
    /// The app's own probes, run by the admin listener under
    /// `/app-health/<container>/<kind>` (the webhook passes them in
    /// `PORTCULLIS_APP_PROBES`).
    #[serde(default)]
    pub app_probes: BTreeMap<String, AppProbe>,
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub security: SecurityConfig,
    #[serde(default)]
    pub policy: StaticRules,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// WASM policy filters, run in order after the static rules.
    #[serde(default)]
    pub filters: Vec<FilterSpec>,
    #[serde(default)]
    pub filter_engine: EngineConfig,
    /// Client-facing sealed session ids and transparent rebind (see
    /// [`crate::session`]). Absent: session ids pass through unchanged.
    #[serde(default)]
    pub sessions: Option<SessionsConfig>,
    /// The OAuth 2.1 resource server (see [`crate::auth`]). Absent: no
    /// token is verified.
    #[serde(default)]
    pub auth: Option<crate::auth::AuthConfig>,
}

/// `sessions:`: Portcullis issues its own `Mcp-Session-Id` and keeps the
/// client's session alive across upstream restarts.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// The keyring (a file mounted from a Secret; see
    /// [`crate::session::keyring`]). Required: there is no default key.
    pub keyring_file: std::path::PathBuf,
    /// How often the keyring file is read again for rotations.
    #[serde(default = "default_keyring_reload", with = "humantime_serde")]
    pub keyring_reload_interval: Duration,
    /// Absolute lifetime of a session id.
    #[serde(default = "default_session_lifetime", with = "humantime_serde")]
    pub lifetime: Duration,
    /// Session records held in memory (least recently used go first).
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Re-establish the upstream session when the upstream has lost it.
    #[serde(default = "yes")]
    pub rebind: bool,
    /// Upstream statuses that mean "I do not know this session": 404 by
    /// the spec; add 400 or 401 for servers that answer those.
    #[serde(default = "default_lost_statuses")]
    pub session_lost_statuses: Vec<u16>,
    /// Tools never sent again after the upstream was lost mid-answer, even
    /// if the server annotates them read-only or idempotent.
    #[serde(default)]
    pub never_retry: Vec<String>,
    /// How long a session's GET stream is kept open upstream after its
    /// client went away, so that events sent meanwhile are replayed when
    /// it comes back with `Last-Event-ID`.
    #[serde(default = "default_stream_grace", with = "humantime_serde")]
    pub stream_grace: Duration,
    /// A store shared by replicas (Redis). Absent: each replica keeps its
    /// own sessions' records in memory.
    #[serde(default)]
    pub store: Option<SessionStoreConfig>,
}

/// `sessions.store`: Redis, shared by every replica of a server.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SessionStoreConfig {
    /// `redis://host:port/db` (or `rediss://`).
    pub url: String,
    /// Key prefix, so that several servers can share one Redis.
    #[serde(default = "default_store_prefix")]
    pub prefix: String,
    /// A record unused this long is dropped by Redis.
    #[serde(default = "default_idle_ttl", with = "humantime_serde")]
    pub idle_ttl: Duration,
    /// How long one replica may hold a session's rebind lock.
    #[serde(default = "default_lock_timeout", with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// With Redis unreachable: `open` serves from this replica's memory
    /// (default), `closed` answers 503.
    #[serde(default)]
    pub failure: StoreFailure,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreFailure {
    #[default]
    Open,
    Closed,
}

fn default_store_prefix() -> String {
    "pc".into()
}
fn default_idle_ttl() -> Duration {
    Duration::from_secs(2 * 3600)
}
fn default_stream_grace() -> Duration {
    Duration::from_secs(30)
}

fn default_lock_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_keyring_reload() -> Duration {
    Duration::from_secs(5)
}
fn default_session_lifetime() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_max_sessions() -> usize {
    10_000
}
fn default_lost_statuses() -> Vec<u16> {
    vec![404]
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    /// Time allowed for a client to send a request's headers.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Time allowed for a client to send a POST body once its headers are in.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Connections admitted at once; beyond, `503` and close (see
    /// [`crate::admission`]).
    pub max_connections: usize,
    /// Connections admitted at once from one caller (a SPIFFE ID, or an
    /// anonymous caller's IP address).
    pub max_connections_per_caller: usize,
    /// Requests in flight at once (an open stream counts until it ends).
    pub max_inflight: usize,
    pub max_inflight_per_caller: usize,
    /// Open event streams (`GET`) from one caller.
    pub max_streams_per_caller: usize,
    /// HTTP/2 streams a client may open at once on one connection.
    pub max_streams_per_connection: u32,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 15001)),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 16_384,
            max_connections_per_caller: 4_096,
            max_inflight: 4_096,
            max_inflight_per_caller: 1_024,
            max_streams_per_caller: 256,
            max_streams_per_connection: 128,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A client certificate is required.
    #[default]
    Strict,
    /// Plaintext is also accepted, as an unauthenticated caller.
    Permissive,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Permissive => "permissive",
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    #[serde(default)]
    pub mode: Mode,
    /// Trust domains whose SVIDs are accepted (ours and federated ones).
    pub trust_domains: Vec<String>,
    pub source: SourceConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub addr: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 15020)),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Where the nat `REDIRECT` delivers (`--inbound-port` of `portcullis capture`).
    pub addr: SocketAddr,
    /// The app's MCP ports: a connection redirected from one of these is
    /// served and forwarded to `127.0.0.1:<port>`; any other is refused.
    pub mcp_ports: Vec<u16>,
    /// Answered `200` only through the redirect (the readiness probe).
    pub canary_port: u16,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 15106)),
            mcp_ports: Vec::new(),
            canary_port: 15122,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `http://host:port` of the local MCP server, or `https://host:port`
    /// of a remote backend reached over mTLS. Request paths are forwarded
    /// unchanged.
    pub url: String,
    /// For `https` upstreams: the SPIFFE IDs the backend may present
    /// (`*` wildcards).
    #[serde(default)]
    pub server_ids: Vec<String>,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed for the upstream to send response headers (and, for a
    /// JSON response, its whole body).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(default = "default_pool_idle", with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Forward the client's `Authorization` header. Off by default: a token
    /// meant for the sidecar must not be passed through.
    #[serde(default)]
    pub forward_authorization: bool,
    /// What the upstream learns of the caller instead: headers, a signed
    /// assertion, or nothing (see [`crate::auth::assertion`]).
    #[serde(default)]
    pub identity: crate::auth::assertion::IdentityConfig,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_pool_idle() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_json_depth: usize,
    /// Largest JSON response or single SSE event read from the upstream.
    pub max_response_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            max_json_depth: 64,
            max_response_bytes: 16 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Host names accepted in `Host` and `Origin`, besides `localhost`,
    /// `127.0.0.1` and `::1`. `*.example.com` matches subdomains.
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long SIGTERM waits for in-flight requests and streams.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(20),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let config = Self::read(path)?;
        config.validate()?;
        Ok(config)
    }

    /// [`Config::load`] with [`Config::apply_env`] before validation, so a
    /// `capture` section may leave its ports to the environment.
    pub fn load_with_env(
        path: &Path,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config = Self::read(path)?;
        config.apply_env(get)?;
        Ok(config)
    }

    /// Reads and parses, paths resolved, not validated.
    fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Self::parse(&text)?;
        // Absolute, so that relative filter and cache paths do not depend
        // on the working directory.
        let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if let Some(base) = absolute.parent() {
            config.resolve_paths(base);
        }
        Ok(config)
    }

    /// Makes every relative path in the config relative to `base`, the
    /// config file's folder. The one place paths are resolved: modules
    /// only ever see absolute (or deliberately relative) paths.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut std::path::PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(files) = self.identity.as_mut().and_then(|i| i.source.files.as_mut()) {
            fix(&mut files.cert);
            fix(&mut files.key);
            fix(&mut files.bundle);
            files.federated.values_mut().for_each(fix);
        }
        for f in &mut self.filters {
            fix(&mut f.path);
            f.config_files.values_mut().for_each(fix);
        }
        if let Some(svid) = self.auth.as_mut().and_then(|a| a.jwt_svid.as_mut()) {
            svid.bundles.values_mut().for_each(fix);
        }
        if let Some(sessions) = self.sessions.as_mut() {
            fix(&mut sessions.keyring_file);
        }
        if let Some(dir) = self.filter_engine.cache_dir.as_mut() {
            fix(dir);
        }
    }

    /// What the filter chain is built from.
    pub fn chain(&self) -> ChainSpec<'_> {
        ChainSpec {
            rules: &self.policy,
            filters: &self.filters,
            max_json_depth: self.limits.max_json_depth,
        }
    }

    /// The fields that differ between `self` and `next` but take effect
    /// only on restart. Only `policy`, `filters` and the reload interval
    /// are applied by a reload.
    pub fn restart_needed(&self, next: &Self) -> Vec<&'static str> {
        let engine = |c: &Self| EngineConfig {
            reload_interval: std::time::Duration::ZERO,
            ..c.filter_engine.clone()
        };
        let checks: [(&'static str, bool); 14] = [
            ("instance", self.instance == next.instance),
            (
                "instance_header",
                self.instance_header == next.instance_header,
            ),
            ("listener", self.listener == next.listener),
            ("capture", self.capture == next.capture),
            ("app_probes", self.app_probes == next.app_probes),
            ("identity", self.identity == next.identity),
            ("admin", self.admin == next.admin),
            ("upstream", self.upstream == next.upstream),
            ("limits", self.limits == next.limits),
            ("security", self.security == next.security),
            ("shutdown", self.shutdown == next.shutdown),
            ("filter_engine", engine(self) == engine(next)),
            // The keyring file itself is reloaded; the settings are not.
            ("sessions", self.sessions == next.sessions),
            // Issuers, keys sources, audiences and scopes are read at start.
            ("auth", self.auth == next.auth),
        ];
        checks
            .into_iter()
            .filter(|(_, same)| !same)
            .map(|(name, _)| name)
            .collect()
    }

    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let config = Self::parse(text)?;
        config.validate()?;
        Ok(config)
    }

    fn parse(text: &str) -> Result<Self, ConfigError> {
        serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let uri: http::Uri = self
            .upstream
            .url
            .parse()
            .map_err(|e| invalid("upstream.url", format!("not a URL: {e}")))?;
        self.validate_upstream_identity()?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") if self.identity.is_none() => {
                return Err(invalid(
                    "upstream.url",
                    "https upstreams need an identity section (our SVID)",
                ));
            }
            Some("https") if self.upstream.server_ids.is_empty() => {
                return Err(invalid(
                    "upstream.server_ids",
                    "an https upstream needs the SPIFFE IDs it may present",
                ));
            }
            Some("https") => {}
            _ => return Err(invalid("upstream.url", "must be http:// or https://")),
        }
        if let Some(id) = &self.identity {
            if id.trust_domains.is_empty() {
                return Err(invalid(
                    "identity.trust_domains",
                    "must name at least one trust domain",
                ));
            }
            id.source
                .validate()
                .map_err(|e| invalid("identity.source", e))?;
        }
        if uri.authority().is_none() {
            return Err(invalid("upstream.url", "needs a host and port"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid(
                "upstream.url",
                "must not have a path: request paths are forwarded unchanged",
            ));
        }
        self.validate_limits()?;
        self.validate_policy()?;
        self.validate_capture()?;
        self.validate_sessions()?;
        if let Some(auth) = &self.auth {
            auth.validate()?;
            // One resource, one audience: several MCP servers behind one
            // sidecar would accept each other's tokens.
            let ports = self.capture.as_ref().map_or(0, |c| c.mcp_ports.len());
            if auth.mode != crate::auth::config::AuthMode::Off && ports > 1 {
                return Err(invalid(
                    "auth",
                    "one resource per sidecar: with auth, capture.mcp_ports names at most one port",
                ));
            }
        }
        self.validate_app_probes()?;
        self.validate_filters()
    }

    fn validate_upstream_identity(&self) -> Result<(), ConfigError> {
        if self.upstream.forward_authorization
            && self.upstream.identity.mode == crate::auth::assertion::IdentityMode::Assertion
        {
            return Err(invalid(
                "upstream.identity.mode",
                "assertion cannot be combined with forward_authorization: the upstream would get two identities, one of them the client's token",
            ));
        }
        Ok(())
    }

    /// Applies what the injected pod sets in the sidecar's environment
    /// (`get` is `std::env::var` outside tests), then validates again:
    /// * `PORTCULLIS_CAPTURE_MODE`: `none` removes the capture listener,
    ///   `inbound` or `inbound+outbound` adds one (defaults unless the
    ///   file has a `capture` section);
    /// * `PORTCULLIS_INBOUND_PORTS`: the MCP ports, `8080,8081`;
    /// * `PORTCULLIS_APP_PROBES`: JSON, added to `app_probes`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        match get("PORTCULLIS_CAPTURE_MODE").as_deref() {
            None => {}
            Some("none") => self.capture = None,
            Some("inbound" | "inbound+outbound") => {
                self.capture.get_or_insert_with(CaptureConfig::default);
            }
            Some(other) => {
                return Err(invalid(
                    "PORTCULLIS_CAPTURE_MODE",
                    format!("{other:?}: expected none, inbound or inbound+outbound"),
                ))
            }
        }
        if let (Some(ports), Some(capture)) = (get("PORTCULLIS_INBOUND_PORTS"), &mut self.capture) {
            let mut ports = portcullis_capture::spec::parse_ports(&ports)
                .map_err(|e| invalid("PORTCULLIS_INBOUND_PORTS", e.to_string()))?;
            ports.sort_unstable();
            ports.dedup();
            capture.mcp_ports = ports;
        }
        if let Some(json) = get("PORTCULLIS_APP_PROBES") {
            let probes: BTreeMap<String, AppProbe> = serde_json::from_str(&json)
                .map_err(|e| invalid("PORTCULLIS_APP_PROBES", e.to_string()))?;
            self.app_probes.extend(probes);
        }
        self.validate()
    }

    fn validate_sessions(&self) -> Result<(), ConfigError> {
        let Some(s) = &self.sessions else {
            return Ok(());
        };
        if s.lifetime < Duration::from_secs(60) {
            return Err(invalid("sessions.lifetime", "must be at least 1m"));
        }
        if s.stream_grace < Duration::from_secs(1) {
            return Err(invalid("sessions.stream_grace", "must be at least 1s"));
        }
        if s.max_sessions == 0 {
            return Err(invalid("sessions.max_sessions", "must be at least 1"));
        }
        if s.keyring_reload_interval.is_zero() {
            return Err(invalid("sessions.keyring_reload_interval", "must not be 0"));
        }
        // A 2xx or 3xx "lost" status would make a rebind retry requests
        // the upstream may have run.
        if let Some(bad) = s
            .session_lost_statuses
            .iter()
            .find(|c| !(400..=499).contains(*c))
        {
            return Err(invalid(
                "sessions.session_lost_statuses",
                format!("{bad} is not a 4xx status: only a refusal proves nothing ran"),
            ));
        }
        Ok(())
    }

    fn validate_capture(&self) -> Result<(), ConfigError> {
        let Some(c) = &self.capture else {
            return Ok(());
        };
        let own = [
            (c.addr.port(), "the capture port"),
            (c.canary_port, "the canary port"),
            (self.listener.addr.port(), "the explicit listener's port"),
            (self.admin.addr.port(), "the admin port"),
        ];
        if c.mcp_ports.is_empty() {
            return Err(invalid(
                "capture.mcp_ports",
                "must name at least one port (or set PORTCULLIS_INBOUND_PORTS)",
            ));
        }
        if c.canary_port == 0 || c.mcp_ports.contains(&0) {
            return Err(invalid("capture", "port 0 is not a port"));
        }
        if c.canary_port == c.addr.port() {
            return Err(invalid(
                "capture.canary_port",
                "must differ from the capture port",
            ));
        }
        // Forwarding a captured port to one of the sidecar's own would loop
        // into it (or expose the admin port through capture).
        for (port, what) in own {
            if c.mcp_ports.contains(&port) {
                return Err(invalid(
                    "capture.mcp_ports",
                    format!("{port} is {what}, not an app port"),
                ));
            }
        }
        Ok(())
    }

    fn validate_app_probes(&self) -> Result<(), ConfigError> {
        for (path, probe) in &self.app_probes {
            if !path.starts_with(crate::admin::app_health::PREFIX) {
                return Err(invalid(
                    "app_probes",
                    format!(
                        "{path:?} must start with {}",
                        crate::admin::app_health::PREFIX
                    ),
                ));
            }
            probe
                .validate()
                .map_err(|e| invalid("app_probes", format!("{path}: {e}")))?;
        }
        Ok(())
    }

    fn validate_filters(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for f in &self.filters {
            f.validate()
                .map_err(|reason| invalid("filters[]", reason))?;
            if !names.insert(f.name.as_str()) {
                return Err(invalid(
                    "filters[].name",
                    format!("duplicate filter name {:?}", f.name),
                ));
            }
        }
        if self.filter_engine.max_instances == 0 {
            return Err(invalid(
                "filter_engine.max_instances",
                "must be greater than 0",
            ));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.max_body_bytes == 0 {
            return Err(invalid("limits.max_body_bytes", "must be greater than 0"));
        }
        if !(1..=128).contains(&l.max_json_depth) {
            return Err(invalid(
                "limits.max_json_depth",
                "must be between 1 and 128",
            ));
        }
        if l.max_response_bytes < 1024 {
            return Err(invalid(
                "limits.max_response_bytes",
                "must be at least 1024",
            ));
        }
        if self.upstream.request_timeout.is_zero() {
            return Err(invalid(
                "upstream.request_timeout",
                "must be greater than 0",
            ));
        }
        self.validate_admission()
    }

    /// A zero limit would refuse everything: surely a mistake.
    fn validate_admission(&self) -> Result<(), ConfigError> {
        let l = &self.listener;
        let limits = [
            ("listener.max_connections", l.max_connections),
            (
                "listener.max_connections_per_caller",
                l.max_connections_per_caller,
            ),
            ("listener.max_inflight", l.max_inflight),
            (
                "listener.max_inflight_per_caller",
                l.max_inflight_per_caller,
            ),
            ("listener.max_streams_per_caller", l.max_streams_per_caller),
            (
                "listener.max_streams_per_connection",
                l.max_streams_per_connection as usize,
            ),
        ];
        match limits.iter().find(|(_, v)| *v == 0) {
            Some((field, _)) => Err(invalid(field, "must be greater than 0")),
            None => Ok(()),
        }
    }

    fn validate_policy(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for rule in &self.policy.rules {
            if rule.name.is_empty() {
                return Err(invalid("policy.rules[].name", "must not be empty"));
            }
            if !names.insert(rule.name.as_str()) {
                return Err(invalid(
                    "policy.rules[].name",
                    format!("duplicate rule name {:?}", rule.name),
                ));
            }
        }
        Ok(())
    }

    /// The upstream's `scheme://authority`, validated by [`Config::validate`].
    pub fn upstream_uri(&self) -> Result<http::Uri, ConfigError> {
        self.upstream
            .url
            .parse()
            .map_err(|e| invalid("upstream.url", format!("not a URL: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_yaml("upstream:\n  url: http://127.0.0.1:3001\n").unwrap();
        assert_eq!(c.limits.max_body_bytes, 4 * 1024 * 1024);
        assert_eq!(c.listener.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.upstream.request_timeout, Duration::from_secs(60));
        assert!(!c.upstream.forward_authorization);
    }

    #[test]
    fn durations_are_human_readable() {
        let c = Config::from_yaml(
            "listener:\n  idle_timeout: 90s\nupstream:\n  url: http://a:1\n  request_timeout: 1500ms\n",
        )
        .unwrap();
        assert_eq!(c.listener.idle_timeout, Duration::from_secs(90));
        assert_eq!(c.upstream.request_timeout, Duration::from_millis(1500));
    }

    fn err(yaml: &str) -> String {
        Config::from_yaml(yaml).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err("upstream:\n  url: ftp://x\n").contains("upstream.url"));
        assert!(err("upstream:\n  url: http://x:1/mcp\n").contains("must not have a path"));
        let unknown = err("upstream:\n  url: http://x:1\n  timeout: 3s\n");
        assert!(unknown.contains("unknown field `timeout`"), "{unknown}");
        assert!(unknown.contains("upstream"), "{unknown}");
        let depth = err("upstream: {url: 'http://x:1'}\nlimits: {max_json_depth: 0}\n");
        assert!(depth.contains("limits.max_json_depth"), "{depth}");
        let missing = err("listener: {addr: '127.0.0.1:1'}\n");
        assert!(missing.contains("upstream"), "{missing}");
        let bad_type = err("upstream: {url: 'http://x:1'}\nlimits: {max_body_bytes: lots}\n");
        assert!(bad_type.contains("limits.max_body_bytes"), "{bad_type}");
    }

    #[test]
    fn filters_are_parsed_and_checked() {
        let c = Config::from_yaml(
            "upstream: {url: 'http://x:1'}\nfilters:\n  - name: rbac\n    path: f.wasm\n    config: {default: deny, rules: []}\n    timeout: 5ms\n    hooks: [request, list]\n",
        )
        .unwrap();
        assert_eq!(c.filters[0].config["default"], "deny");
        assert_eq!(c.filters[0].timeout, Duration::from_millis(5));
        assert_eq!(c.filters[0].memory_limit_bytes, 32 << 20);
        let mut resolved = c.clone();
        resolved.resolve_paths(Path::new("/etc/p"));
        assert_eq!(resolved.filters[0].path, Path::new("/etc/p/f.wasm"));
        let e = err(
            "upstream: {url: 'http://x:1'}\nfilters:\n  - {name: a, path: a.wasm, timeout: 0ms}\n",
        );
        assert!(e.contains("filters[]") && e.contains("timeout"), "{e}");
        let e = err("upstream: {url: 'http://x:1'}\nfilters:\n  - {name: a, path: a.wasm, on_error: maybe}\n");
        assert!(e.contains("on_error"), "{e}");
    }

    #[test]
    fn duplicate_rule_names_are_refused() {
        let e = err("upstream: {url: 'http://x:1'}\npolicy:\n  rules:\n    - {name: a, action: deny}\n    - {name: a, action: allow}\n");
        assert!(e.contains("duplicate rule name"), "{e}");
    }

    #[test]
    fn every_relative_path_is_resolved_once() {
        let mut c = Config::from_yaml(
            "upstream: {url: 'http://x:1'}\nfilter_engine: {cache_dir: cache}\nfilters:\n  - {name: a, path: a.wasm}\n  - {name: b, path: /abs/b.wasm}\nidentity:\n  trust_domains: [td]\n  source: {files: {cert: c.pem, key: k.pem, bundle: b.pem, federated: {other: o.pem}}}\n",
        )
        .unwrap();
        c.resolve_paths(Path::new("/etc/p"));
        assert_eq!(c.filters[0].path, Path::new("/etc/p/a.wasm"));
        assert_eq!(c.filters[1].path, Path::new("/abs/b.wasm"));
        assert_eq!(
            c.filter_engine.cache_dir.as_deref(),
            Some(Path::new("/etc/p/cache"))
        );
        let files = c.identity.as_ref().unwrap().source.files.as_ref().unwrap();
        assert_eq!(files.cert, Path::new("/etc/p/c.pem"));
        assert_eq!(files.federated["other"], Path::new("/etc/p/o.pem"));
    }

    #[test]
    fn filter_configs_are_never_printed() {
        let c = Config::from_yaml(
            "upstream: {url: 'http://x:1'}\nfilters:\n  - {name: a, path: a.wasm, config: {api_key: hunter2}}\n",
        )
        .unwrap();
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn a_reload_names_every_field_it_cannot_apply() {
        let base = "upstream: {url: 'http://x:1'}\n";
        let old = Config::from_yaml(base).unwrap();
        let cases = [
            ("instance: other\n", "instance"),
            ("listener: {idle_timeout: 3s}\n", "listener"),
            ("admin: {addr: '127.0.0.1:1'}\n", "admin"),
            ("limits: {max_json_depth: 8}\n", "limits"),
            ("security: {allowed_hosts: [a]}\n", "security"),
            ("shutdown: {drain_timeout: 1s}\n", "shutdown"),
            ("filter_engine: {max_instances: 3}\n", "filter_engine"),
            (
                "identity: {trust_domains: [td], source: {workload_api: {}}}\n",
                "identity",
            ),
        ];
        for (extra, field) in cases {
            let next = Config::from_yaml(&format!("{base}{extra}")).unwrap();
            assert_eq!(old.restart_needed(&next), [field], "{extra}");
        }
        let upstream = Config::from_yaml("upstream: {url: 'http://x:1', request_timeout: 2s}\n");
        assert_eq!(old.restart_needed(&upstream.unwrap()), ["upstream"]);
        // What a reload applies is not reported.
        let applied = Config::from_yaml(&format!(
            "{base}policy: {{default: deny}}\nfilter_engine: {{reload_interval: 5s}}\n"
        ))
        .unwrap();
        assert!(old.restart_needed(&applied).is_empty());
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_string())
        }
    }

    #[test]
    fn the_capture_section_is_checked() {
        let base = "upstream: {url: 'http://127.0.0.1:8080'}\n";
        let c = Config::from_yaml(&format!("{base}capture: {{mcp_ports: [8080]}}\n")).unwrap();
        let capture = c.capture.unwrap();
        assert_eq!(capture.addr, "0.0.0.0:15106".parse().unwrap());
        assert_eq!(capture.canary_port, 15122);
        assert!(Config::from_yaml(base).unwrap().capture.is_none());
        let cases = [
            ("capture: {mcp_ports: []}", "at least one port"),
            ("capture: {mcp_ports: [0]}", "port 0"),
            ("capture: {mcp_ports: [15106]}", "the capture port"),
            ("capture: {mcp_ports: [15122]}", "the canary port"),
            ("capture: {mcp_ports: [15001]}", "explicit listener"),
            ("capture: {mcp_ports: [15020]}", "the admin port"),
            (
                "capture: {mcp_ports: [80], canary_port: 15106}",
                "canary_port",
            ),
            (
                "capture: {mcp_ports: [80], port: 1}",
                "unknown field `port`",
            ),
        ];
        for (yaml, want) in cases {
            let e = err(&format!("{base}{yaml}\n"));
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn the_injected_environment_turns_capture_on_and_off() {
        let base = "upstream: {url: 'http://127.0.0.1:8080'}\n";
        let mut c = Config::from_yaml(base).unwrap();
        c.apply_env(env(&[
            ("PORTCULLIS_CAPTURE_MODE", "inbound"),
            ("PORTCULLIS_INBOUND_PORTS", "8081,8080"),
        ]))
        .unwrap();
        assert_eq!(c.capture.as_ref().unwrap().mcp_ports, [8080, 8081]);
        c.apply_env(env(&[("PORTCULLIS_CAPTURE_MODE", "none")]))
            .unwrap();
        assert!(c.capture.is_none());
        // Capture with no port to serve is refused rather than run empty.
        let mut c = Config::from_yaml(base).unwrap();
        let e = c
            .apply_env(env(&[("PORTCULLIS_CAPTURE_MODE", "inbound+outbound")]))
            .unwrap_err();
        assert!(e.to_string().contains("capture.mcp_ports"), "{e}");
        let cases = [
            (
                ("PORTCULLIS_CAPTURE_MODE", "all"),
                "PORTCULLIS_CAPTURE_MODE",
            ),
            (("PORTCULLIS_APP_PROBES", "{"), "PORTCULLIS_APP_PROBES"),
        ];
        for ((k, v), want) in cases {
            let mut c = Config::from_yaml(base).unwrap();
            let e = c.apply_env(env(&[(k, v)])).unwrap_err().to_string();
            assert!(e.contains(want), "{k}={v}: {e}");
        }
        let mut c = Config::from_yaml(base).unwrap();
        let e = c
            .apply_env(env(&[
                ("PORTCULLIS_CAPTURE_MODE", "inbound"),
                ("PORTCULLIS_INBOUND_PORTS", "80,x"),
            ]))
            .unwrap_err();
        assert!(e.to_string().contains("PORTCULLIS_INBOUND_PORTS"), "{e}");
    }

    #[test]
    fn a_capture_section_may_leave_its_ports_to_the_environment() {
        let dir = std::env::temp_dir().join(format!("pc-capture-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        let yaml = "upstream: {url: 'http://127.0.0.1:8080'}\ncapture: {addr: '[::]:15106'}\n";
        std::fs::write(&path, yaml).unwrap();
        assert!(Config::load(&path).is_err());
        let ports = [("PORTCULLIS_INBOUND_PORTS", "8080")];
        let c = Config::load_with_env(&path, env(&ports)).unwrap();
        let capture = c.capture.unwrap();
        assert_eq!(capture.addr, "[::]:15106".parse().unwrap());
        assert_eq!(capture.mcp_ports, [8080]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn app_probes_come_from_the_environment_and_stay_on_loopback() {
        let mut c = Config::from_yaml("upstream: {url: 'http://127.0.0.1:8080'}\n").unwrap();
        let probes = r#"{"/app-health/server/readyz":{"httpGet":{"path":"/healthz","port":8080,"scheme":"HTTP"},"timeoutSeconds":1}}"#;
        c.apply_env(env(&[("PORTCULLIS_APP_PROBES", probes)]))
            .unwrap();
        assert!(c.app_probes.contains_key("/app-health/server/readyz"));
        let away =
            r#"{"/app-health/server/readyz":{"httpGet":{"port":80,"host":"169.254.169.254"}}}"#;
        let e = c
            .apply_env(env(&[("PORTCULLIS_APP_PROBES", away)]))
            .unwrap_err();
        assert!(e.to_string().contains("127.0.0.1"), "{e}");
        let e =
            err("upstream: {url: 'http://x:1'}\napp_probes: {/metrics: {tcpSocket: {port: 1}}}\n");
        assert!(e.contains("/app-health/"), "{e}");
    }
}
