//! `/app-health/<container>/<kind>`: the app's own probes, run by the
//! sidecar.
//!
//! Under capture the kubelet's probes of the pod IP land on the capture
//! listener, which would refuse them (not an MCP port) or demand mTLS (an
//! MCP port). The webhook therefore points each `httpGet`/`tcpSocket`/`grpc`
//! probe at this admin path and hands the original to the sidecar, which
//! runs it against 127.0.0.1, never anywhere else, within the probe's own
//! timeout (capped).
//!
//! `grpc` probes and `HTTPS` `httpGet` probes are not run: they answer
//! `503` with a body that says so, and the pod does not become Ready. A
//! probe that names a `host` is refused when the config is loaded.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

/// Every app probe path starts with this.
pub const PREFIX: &str = "/app-health/";

/// The Kubernetes default when a probe gives no `timeoutSeconds`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest the admin port waits on the app for one probe.
const MAX_TIMEOUT: Duration = Duration::from_secs(10);

/// One original probe, in the shape Kubernetes writes it (the fields the
/// sidecar needs; others, such as future ones, are ignored).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AppProbe {
    #[serde(default)]
    pub http_get: Option<HttpGet>,
    #[serde(default)]
    pub tcp_socket: Option<TcpSocket>,
    #[serde(default)]
    pub grpc: Option<Grpc>,
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HttpGet {
    pub port: u16,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub http_headers: Vec<HttpHeader>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct TcpSocket {
    pub port: u16,
    #[serde(default)]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Grpc {
    pub port: u16,
    #[serde(default)]
    pub service: Option<String>,
}

/// The outcome of one probe: the admin answer's status and body.
pub type Outcome = (StatusCode, String);

impl AppProbe {
    /// One handler, on a non-zero port, aimed at no other host.
    pub fn validate(&self) -> Result<(), String> {
        let handlers = [
            self.http_get.as_ref().map(|h| (h.port, h.host.as_deref())),
            self.tcp_socket
                .as_ref()
                .map(|t| (t.port, t.host.as_deref())),
            self.grpc.as_ref().map(|g| (g.port, None)),
        ];
        let mut set = handlers.iter().flatten();
        let Some((port, host)) = set.next() else {
            return Err("needs one of httpGet, tcpSocket, grpc".into());
        };
        if set.next().is_some() {
            return Err("has more than one handler".into());
        }
        if *port == 0 {
            return Err("port 0 is not a port".into());
        }
        match host {
            Some(h) if !h.is_empty() => Err(format!(
                "host {h:?}: app probes are only run against 127.0.0.1"
            )),
            _ => Ok(()),
        }
    }

    fn timeout(&self) -> Duration {
        self.timeout_seconds
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
            .clamp(DEFAULT_TIMEOUT, MAX_TIMEOUT)
    }

    /// Runs the probe against the app on 127.0.0.1.
    pub async fn run(&self) -> Outcome {
        let timeout = self.timeout();
        let result = if let Some(h) = &self.http_get {
            tokio::time::timeout(timeout, http_get(h)).await
        } else if let Some(t) = &self.tcp_socket {
            tokio::time::timeout(timeout, tcp_connect(t.port)).await
        } else {
            return unsupported("grpc probes are not run by the sidecar");
        };
        match result {
            Ok(Ok(detail)) => (StatusCode::OK, detail),
            Ok(Err(Failure::Unsupported(why))) => unsupported(why),
            Ok(Err(Failure::Failed(why))) => (StatusCode::SERVICE_UNAVAILABLE, why),
            Err(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("probe timed out after {timeout:?}"),
            ),
        }
    }
}

enum Failure {
    Unsupported(&'static str),
    Failed(String),
}

fn unsupported(why: &str) -> Outcome {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("unsupported: {why}"),
    )
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn tcp_connect(port: u16) -> Result<String, Failure> {
    TcpStream::connect(loopback(port))
        .await
        .map(|_| format!("connected to 127.0.0.1:{port}"))
        .map_err(|e| Failure::Failed(format!("connect 127.0.0.1:{port}: {e}")))
}

/// A GET over HTTP/1.1 on a fresh connection; success is a status from
/// 200 to 399, as for the kubelet. Redirects are not followed.
async fn http_get(h: &HttpGet) -> Result<String, Failure> {
    if !h
        .scheme
        .as_deref()
        .unwrap_or("HTTP")
        .eq_ignore_ascii_case("http")
    {
        return Err(Failure::Unsupported(
            "HTTPS probes are not run by the sidecar",
        ));
    }
    let failed = |e: &dyn std::fmt::Display| Failure::Failed(format!("GET: {e}"));
    let req = probe_request(h).map_err(|e| failed(&e))?;
    let tcp = TcpStream::connect(loopback(h.port))
        .await
        .map_err(|e| failed(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| failed(&e))?;
    // The connection task ends when `sender` is dropped.
    tokio::spawn(conn);
    let status = sender
        .send_request(req)
        .await
        .map_err(|e| failed(&e))?
        .status();
    match status.as_u16() {
        200..=399 => Ok(format!("app answered {status}")),
        _ => Err(Failure::Failed(format!("app answered {status}"))),
    }
}

fn probe_request(h: &HttpGet) -> Result<Request<Empty<Bytes>>, http::Error> {
    use http::header::{HeaderValue, HOST, USER_AGENT};
    let path = h.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
    let mut req = Request::get(path);
    for header in &h.http_headers {
        req = req.header(header.name.as_str(), header.value.as_str());
    }
    let mut req = req.body(Empty::new())?;
    // The probe's own headers win, as with the kubelet.
    let headers = req.headers_mut();
    if !headers.contains_key(HOST) {
        headers.insert(
            HOST,
            HeaderValue::from_str(&format!("127.0.0.1:{}", h.port))?,
        );
    }
    if !headers.contains_key(USER_AGENT) {
        headers.insert(USER_AGENT, HeaderValue::from_static("portcullis-app-probe"));
    }
    Ok(req)
}

#[cfg(test)]
mod tests;
