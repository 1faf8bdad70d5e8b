//! The capture listener: where the pod's nat rules send every inbound TCP
//! connection (see the `portcullis-capture` crate).
//!
//! Each connection is routed once, on its original destination, before a
//! byte is read:
//!
//! * not redirected (a direct dial of this port, or no conntrack entry):
//!   refused, as is one whose original port is this listener's own (a loop);
//! * the canary port: a plain `200 capture-ok`, so a readiness probe that
//!   targets it passes only through a working redirect;
//! * a configured MCP port: the same handshake (mTLS strict or permissive)
//!   and the same service as the explicit listener, forwarding to
//!   `127.0.0.1:<port>`;
//! * any other port: refused. Capture takes every port the pod did not
//!   exclude, so a port nobody configured fails closed here.
//!
//! Refusals are counted in `portcullis_capture_refused_total{reason}`.

mod metrics;

use std::{collections::BTreeSet, future::Future, io, net::SocketAddr, sync::Arc};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use self::metrics::CaptureMetrics;
use crate::{
    body::{self, ProxyBody},
    config::{CaptureConfig, ListenerConfig},
    listener::{accept, ConnCtx, Connection, Handshake, Plaintext},
    upstream::Target,
};

/// What the capture listener does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Mcp(SocketAddr),
    Canary(SocketAddr),
    Refuse(Refused),
}

/// Why a captured connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not redirected: the original destination is this listener itself.
    NotRedirected,
    /// Redirected from a connection to the capture port itself.
    Loop,
    /// Redirected from a port that is neither an MCP port nor the canary.
    Port,
    /// The original destination could not be read.
    Error,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Self::NotRedirected => "not_redirected",
            Self::Loop => "loop",
            Self::Port => "port",
            Self::Error => "error",
        }
    }
}

/// The routing table, from the `capture` config section.
#[derive(Debug, Clone)]
pub struct Routes {
    capture_port: u16,
    canary_port: u16,
    mcp_ports: BTreeSet<u16>,
}

impl Routes {
    pub fn new(config: &CaptureConfig) -> Self {
        Self {
            capture_port: config.addr.port(),
            canary_port: config.canary_port,
            mcp_ports: config.mcp_ports.iter().copied().collect(),
        }
    }

    /// Routes a connection on what `redirected_dst` said of it.
    pub fn route(&self, redirected: &io::Result<Option<SocketAddr>>) -> Route {
        let dst = match redirected {
            Err(_) => return Route::Refuse(Refused::Error),
            Ok(None) => return Route::Refuse(Refused::NotRedirected),
            Ok(Some(dst)) => *dst,
        };
        match dst.port() {
            p if p == self.capture_port => Route::Refuse(Refused::Loop),
            p if p == self.canary_port => Route::Canary(dst),
            p if self.mcp_ports.contains(&p) => Route::Mcp(dst),
            _ => Route::Refuse(Refused::Port),
        }
    }
}

/// A bound capture listener and what it needs to route.
pub struct CaptureListener {
    pub listener: TcpListener,
    pub routes: Routes,
    pub metrics: CaptureMetrics,
    pub settings: ListenerConfig,
    pub gate: Arc<crate::admission::Gate>,
}

impl CaptureListener {
    /// Accepts until `shutdown`, like [`crate::listener::serve`]; routed
    /// connections are followed by `tracker` and drained with the others.
    pub async fn serve<H, S, F>(
        self,
        handshake: H,
        service: S,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) where
        H: Handshake,
        S: Fn(Arc<ConnCtx>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        while let Some((tcp, peer)) = accept(&self.listener, &shutdown).await {
            let route = self.routes.route(&portcullis_capture::redirected_dst(&tcp));
            self.metrics.route(&route);
            let conn = Connection::new(&self.settings, &self.gate, &shutdown, peer);
            match route {
                Route::Mcp(dst) => {
                    let conn = conn.redirected(dst, Target::Loopback(dst.port()));
                    tracker.spawn(conn.run(tcp, handshake.clone(), service.clone()));
                }
                Route::Canary(dst) => {
                    let conn = conn.redirected(dst, Target::Configured);
                    tracker.spawn(conn.run(tcp, Plaintext, canary));
                }
                Route::Refuse(why) => refuse(tcp, peer, why),
            }
        }
    }
}

/// Closes with a reset, so the client sees a refusal at once rather than
/// an accepted connection that never answers.
fn refuse(tcp: TcpStream, peer: SocketAddr, why: Refused) {
    tracing::info!(%peer, reason = why.label(), "captured connection refused");
    let _ = tcp.set_zero_linger();
}

/// The canary's answer, whatever was asked.
async fn canary(_conn: Arc<ConnCtx>, _req: Request<Incoming>) -> Response<ProxyBody> {
    let mut resp = Response::new(body::full(bytes::Bytes::from_static(b"capture-ok\n")));
    *resp.status_mut() = StatusCode::OK;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Routes {
        Routes::new(&CaptureConfig {
            addr: "0.0.0.0:15106".parse().unwrap(),
            mcp_ports: vec![8080, 8081],
            canary_port: 15122,
        })
    }

    fn dst(port: u16) -> io::Result<Option<SocketAddr>> {
        Ok(Some(SocketAddr::from(([10, 0, 0, 2], port))))
    }

    #[test]
    fn only_configured_ports_and_the_canary_are_served() {
        let r = routes();
        assert_eq!(r.route(&dst(8080)), Route::Mcp(dst(8080).unwrap().unwrap()));
        assert_eq!(r.route(&dst(8081)), Route::Mcp(dst(8081).unwrap().unwrap()));
        assert_eq!(
            r.route(&dst(15122)),
            Route::Canary(dst(15122).unwrap().unwrap())
        );
        for port in [22, 8082, 9090, 15001, 15120] {
            assert_eq!(r.route(&dst(port)), Route::Refuse(Refused::Port), "{port}");
        }
    }

    #[test]
    fn unredirected_looped_and_unreadable_connections_are_refused() {
        let r = routes();
        assert_eq!(r.route(&Ok(None)), Route::Refuse(Refused::NotRedirected));
        assert_eq!(r.route(&dst(15106)), Route::Refuse(Refused::Loop));
        let err = Err(io::Error::from_raw_os_error(92)); // ENOPROTOOPT
        assert_eq!(r.route(&err), Route::Refuse(Refused::Error));
    }
}
