//! The admin listener: `/metrics`, `/healthz`, `/readyz` and the app's own
//! probes under `/app-health/` ([`app_health`]), on a port of its own so
//! that it is never exposed through the MCP listener.

pub mod app_health;
pub mod identity;

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use self::{app_health::AppProbe, identity::IdentityReport};
use crate::{listener, metrics::Metrics};

#[derive(Clone)]
pub struct Admin {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    app_probes: Arc<BTreeMap<String, AppProbe>>,
    identity: Option<Arc<IdentityReport>>,
    /// The public keys of the upstream identity assertions, if signed.
    assertion_keys: Option<Arc<Vec<u8>>>,
}

impl Admin {
    pub fn new(metrics: Metrics, ready: Arc<AtomicBool>) -> Self {
        Self {
            metrics,
            ready,
            app_probes: Arc::default(),
            identity: None,
            assertion_keys: None,
        }
    }

    /// Serves `GET /identity`.
    pub fn with_identity(self, report: IdentityReport) -> Self {
        Self {
            identity: Some(Arc::new(report)),
            ..self
        }
    }

    /// Serves `GET /.well-known/jwks.json`: what an upstream verifies the
    /// sidecar's identity assertions with.
    pub fn with_assertion_keys(self, jwks: &serde_json::Value) -> Self {
        Self {
            assertion_keys: Some(Arc::new(jwks.to_string().into_bytes())),
            ..self
        }
    }

    /// Serves the app's probes, keyed by their full admin path.
    pub fn with_app_probes(self, probes: BTreeMap<String, AppProbe>) -> Self {
        Self {
            app_probes: Arc::new(probes),
            ..self
        }
    }

    pub async fn serve<L>(self, listener: L, shutdown: CancellationToken)
    where
        L: listener::Accept<Conn = tokio::net::TcpStream>,
    {
        // The shared accept loop backs off on errors (EMFILE): a spinning
        // admin port would starve the data path of CPU.
        while let Some((tcp, _)) = listener::accept(&listener, &shutdown).await {
            let admin = self.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.answer(&req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    }

    async fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if path.starts_with(app_health::PREFIX) {
            return match self.app_probes.get(path) {
                Some(probe) => {
                    let (status, detail) = probe.run().await;
                    text_response(status, "text/plain", format!("{detail}\n").into_bytes())
                }
                None => not_found(),
            };
        }
        self.answer_own(path)
    }

    fn answer_own(&self, path: &str) -> Response<Full<Bytes>> {
        match path {
            "/metrics" => match self.metrics.render() {
                Ok(text) => text_response(StatusCode::OK, "text/plain; version=0.0.4", text),
                Err(e) => text_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    e.to_string().into_bytes(),
                ),
            },
            "/healthz" => text_response(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/.well-known/jwks.json" => match &self.assertion_keys {
                Some(jwks) => text_response(
                    StatusCode::OK,
                    "application/jwk-set+json",
                    jwks.as_ref().clone(),
                ),
                None => not_found(),
            },
            "/identity" => match &self.identity {
                Some(report) => text_response(
                    StatusCode::OK,
                    "application/json",
                    report.render().to_string().into_bytes(),
                ),
                None => not_found(),
            },
            "/readyz" if self.ready.load(Ordering::Acquire) => {
                text_response(StatusCode::OK, "text/plain", b"ready\n".to_vec())
            }
            "/readyz" => text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                b"draining\n".to_vec(),
            ),
            _ => not_found(),
        }
    }
}

fn not_found() -> Response<Full<Bytes>> {
    text_response(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec())
}

fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::listener::fakes::Exhausted;

    /// The admin port used to `continue` on an accept error with no pause,
    /// spinning a core while the process was out of file descriptors.
    #[tokio::test]
    async fn admin_backs_off_when_accept_fails() {
        let admin = Admin::new(Metrics::new().unwrap(), Arc::new(AtomicBool::new(true)));
        let failing = Arc::new(Exhausted::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (failing, stop) = (failing.clone(), stop.clone());
            async move { admin.serve(SharedAccept(failing), stop).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
        task.await.unwrap();
        let tries = failing.0.load(Ordering::Relaxed);
        assert!((2..=10).contains(&tries), "{tries} accept attempts");
    }

    struct SharedAccept(Arc<Exhausted>);

    impl listener::Accept for SharedAccept {
        type Conn = tokio::net::TcpStream;

        async fn accept(&self) -> std::io::Result<(Self::Conn, std::net::SocketAddr)> {
            listener::Accept::accept(&*self.0).await
        }
    }
}
