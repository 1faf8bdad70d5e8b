//! The admin listener: `/metrics`, `/healthz` and `/readyz`, on a port of
//! its own so that it is never exposed through the MCP listener.

use std::{
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
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct Admin {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
}

impl Admin {
    pub fn new(metrics: Metrics, ready: Arc<AtomicBool>) -> Self {
        Self { metrics, ready }
    }

    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            let (tcp, _) = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        continue;
                    }
                },
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.answer(&req)) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        match req.uri().path() {
            "/metrics" => match self.metrics.render() {
                Ok(text) => text_response(StatusCode::OK, "text/plain; version=0.0.4", text),
                Err(e) => text_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    e.to_string().into_bytes(),
                ),
            },
            "/healthz" => text_response(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" if self.ready.load(Ordering::Acquire) => {
                text_response(StatusCode::OK, "text/plain", b"ready\n".to_vec())
            }
            "/readyz" => text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                b"draining\n".to_vec(),
            ),
            _ => text_response(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
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
