//! The HTTPS server: `POST /inject` answers AdmissionReviews; `/healthz`,
//! `/readyz` and `/metrics` serve the webhook Deployment itself.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::review::{self, Outcome};
use crate::settings::InjectSettings;

/// A pod object is well under 1.5 MiB (the etcd request limit); anything
/// larger is not a pod the apiserver would store.
const MAX_BODY: usize = 3 * 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct Metrics {
    injected: AtomicU64,
    skipped: AtomicU64,
    denied: AtomicU64,
    bad_request: AtomicU64,
}

impl Metrics {
    fn count(&self, outcome: Outcome) {
        let c = match outcome {
            Outcome::Injected => &self.injected,
            Outcome::Skipped => &self.skipped,
            Outcome::Denied => &self.denied,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP portcullis_injector_requests_total Admission reviews answered, by result.\n\
             # TYPE portcullis_injector_requests_total counter\n",
        );
        for (result, c) in [
            ("injected", &self.injected),
            ("skipped", &self.skipped),
            ("denied", &self.denied),
            ("error", &self.bad_request),
        ] {
            let n = c.load(Ordering::Relaxed);
            out.push_str(&format!(
                "portcullis_injector_requests_total{{result=\"{result}\"}} {n}\n"
            ));
        }
        out
    }
}

pub struct State {
    pub settings: InjectSettings,
    pub metrics: Metrics,
}

type Body = Full<Bytes>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

/// `admission`: whether this listener answers reviews (the TLS one) or
/// only health and metrics (the optional plain one).
async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
    admission: bool,
) -> Result<Response<Body>, Infallible> {
    let resp = match (req.method(), req.uri().path()) {
        (&Method::POST, "/inject") if admission => inject(req, &state).await,
        (&Method::GET, "/healthz") | (&Method::GET, "/readyz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/metrics") => text(StatusCode::OK, state.metrics.render()),
        (_, "/inject") if admission => {
            text(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(resp)
}

async fn inject(req: Request<Incoming>, state: &State) -> Response<Body> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad_request(state, format!("reading the body: {e}")),
    };
    let request = match review::parse(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(state, e.to_string()),
    };
    let (answer, outcome) = review::answer(request, &state.settings);
    state.metrics.count(outcome);
    match serde_json::to_vec(&answer) {
        Ok(json) => {
            let mut r = text(StatusCode::OK, json);
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the answer: {e}\n"),
        ),
    }
}

/// Without a uid there is no AdmissionResponse to send; the apiserver
/// treats the HTTP error as a webhook failure (failurePolicy: Fail).
fn bad_request(state: &State, message: String) -> Response<Body> {
    state.metrics.bad_request.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(%message, "bad admission request");
    text(StatusCode::BAD_REQUEST, format!("{message}\n"))
}

/// Serves until `shutdown` resolves. Each connection is handled on its own
/// task; a failed handshake only ends that connection.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let svc = hyper::service::service_fn(move |req| handle(req, state.clone(), true));
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Plain-HTTP `/healthz`, `/readyz` and `/metrics` (no `/inject`), so
/// kubelet probes and Prometheus need no TLS configuration.
pub async fn serve_plain(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, state.clone(), false));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
