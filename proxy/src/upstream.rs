//! The pooled HTTP client that reaches the local MCP server.

use std::{sync::atomic::Ordering, time::Duration};

use bytes::Bytes;
use http::{uri::Authority, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};

use crate::config::{ConfigError, UpstreamConfig};

mod bare;
use bare::BareConnector;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// The connection was refused: the request never reached the upstream.
    #[error("upstream unavailable: {0}")]
    Refused(String),
    #[error("invalid upstream request: {0}")]
    Request(#[from] http::Error),
}

impl UpstreamError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Unavailable(_) | Self::Refused(_) => "unavailable",
            Self::Request(_) => "request",
        }
    }
}

/// Where one connection's requests go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Target {
    /// The configured `upstream.url` (the explicit listener).
    #[default]
    Configured,
    /// `http://127.0.0.1:<port>`: the local server port a captured client
    /// dialled. Always loopback and always plain HTTP: the app is in the
    /// same pod, and the port was checked against the configured MCP ports.
    Loopback(u16),
}

#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<BareConnector>, Full<Bytes>>,
    authority: Authority,
    scheme: &'static str,
    request_timeout: Duration,
    incarnation: std::sync::Arc<Incarnation>,
}

/// Counts restarts of the upstream as a sidecar sees them: a refused
/// connection followed by a served request means a new process is
/// listening. Sessions bound before it are rebound before their next
/// request, which catches servers that accept unknown session ids silently
/// instead of answering 404. Only a refused *connect* counts: an idle
/// pooled connection the app closed is no restart.
///
/// One word, so that a reader never sees half an update: the count of
/// restarts times two, plus one while the last connect was refused.
#[derive(Debug, Default)]
struct Incarnation(std::sync::atomic::AtomicU64);

impl Incarnation {
    fn refused(&self) {
        self.0.fetch_or(1, Ordering::AcqRel);
    }

    fn served(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (v & 1 == 1).then_some(((v >> 1) + 1) << 1)
            });
    }

    /// While the last connect was refused, this is already the next
    /// number: the request about to be sent is the first the new process
    /// sees.
    fn get(&self) -> u64 {
        let v = self.0.load(Ordering::Acquire);
        (v >> 1) + (v & 1)
    }
}

impl Upstream {
    /// `tls` is the client config for `https` upstreams (our SVID, the
    /// expected server IDs); plain `http` needs none.
    pub fn new(
        config: &UpstreamConfig,
        uri: &Uri,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<Self, ConfigError> {
        let authority = uri.authority().cloned().ok_or(ConfigError::Invalid {
            field: "upstream.url",
            reason: "needs a host and port".into(),
        })?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let https = uri.scheme_str() == Some("https");
        let tls = match (tls, https) {
            (Some(tls), true) => tls,
            (None, true) => {
                return Err(ConfigError::Invalid {
                    field: "upstream.url",
                    reason: "https needs an identity".into(),
                })
            }
            // Plain HTTP: the TLS config is never used.
            (_, false) => rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::Invalid {
                field: "upstream.url",
                reason: e.to_string(),
            })?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        };
        // ALPN offers h2: a remote backend that speaks HTTP/2 gets it.
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(BareConnector(connector));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Self {
            client,
            authority,
            scheme: if https { "https" } else { "http" },
            request_timeout: config.request_timeout,
            incarnation: std::sync::Arc::default(),
        })
    }

    /// How many times the upstream was seen to restart (see
    /// [`Incarnation`]).
    pub fn incarnation(&self) -> u64 {
        self.incarnation.get()
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The upstream URI for a client's path and query, at `target`.
    pub fn uri_for(&self, target: Target, path_and_query: &str) -> Result<Uri, http::Error> {
        let builder = match target {
            Target::Configured => Uri::builder()
                .scheme(self.scheme)
                .authority(self.authority.clone()),
            Target::Loopback(port) => Uri::builder()
                .scheme("http")
                .authority(format!("127.0.0.1:{port}")),
        };
        builder.path_and_query(path_and_query).build()
    }

    /// Sends a request and waits for the response headers, within the
    /// configured timeout.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.request_timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout(self.request_timeout)),
            Ok(Err(e)) => {
                if e.is_connect() {
                    self.incarnation.refused();
                    return Err(UpstreamError::Refused(error_chain(&e)));
                }
                Err(UpstreamError::Unavailable(error_chain(&e)))
            }
            Ok(Ok(resp)) => {
                self.incarnation.served();
                Ok(resp)
            }
        }
    }
}

/// hyper's errors say little at the top level; the cause chain says why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn a_captured_connection_goes_to_loopback_over_plain_http() {
        let c = Config::from_yaml("upstream: {url: 'http://10.1.2.3:9000'}\n").unwrap();
        let up = Upstream::new(&c.upstream, &c.upstream_uri().unwrap(), None).unwrap();
        let configured = up.uri_for(Target::Configured, "/mcp?x=1").unwrap();
        assert_eq!(configured.to_string(), "http://10.1.2.3:9000/mcp?x=1");
        let captured = up.uri_for(Target::Loopback(8080), "/mcp").unwrap();
        assert_eq!(captured.to_string(), "http://127.0.0.1:8080/mcp");
    }
}
