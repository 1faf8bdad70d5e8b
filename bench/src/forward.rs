//! Configuration h: the bare forwarder. The smallest correct hyper reverse
//! proxy (no MCP parsing, no policy), so that the tables show what merely
//! putting a proxy in the path costs on this machine: the floor under
//! every other proxy configuration.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

type Upstream = Client<HttpConnector, Incoming>;
/// The upstream's body, streamed through, or an empty error answer.
type Body = Either<Incoming, Empty<Bytes>>;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("upstream address {0}: {1}")]
    Upstream(SocketAddr, http::Error),
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// plus proxy-connection, which old clients still send.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Serves until the process is killed; the harness owns its lifetime.
pub async fn serve(listen: SocketAddr, upstream: SocketAddr) -> Result<(), ForwardError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| ForwardError::Bind(listen, e))?;
    serve_on(listener, upstream).await
}

pub async fn serve_on(listener: TcpListener, upstream: SocketAddr) -> Result<(), ForwardError> {
    let authority = Authority::try_from(upstream.to_string())
        .map_err(|e| ForwardError::Upstream(upstream, e.into()))?;
    let host = HeaderValue::try_from(upstream.to_string())
        .map_err(|e| ForwardError::Upstream(upstream, e.into()))?;
    let mut connector = HttpConnector::new();
    // Small request/response pairs: Nagle would add 40 ms stalls.
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Running out of descriptors or a connection reset before
                // accept is transient; the forwarder must outlive it.
                eprintln!("forward: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (client, authority, host) = (client.clone(), authority.clone(), host.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (client, authority, host) = (client.clone(), authority.clone(), host.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(forward(&client, authority, host, req).await)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            // A client that goes away mid-request is normal at the end of a run.
            let _ = conn.await;
        });
    }
}

/// One request out to the upstream, its answer back, both bodies streamed.
async fn forward(
    client: &Upstream,
    authority: Authority,
    host: HeaderValue,
    req: Request<Incoming>,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = match Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(path)
        .build()
    {
        Ok(uri) => uri,
        Err(_) => return status(StatusCode::BAD_REQUEST),
    };
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(header::HOST, host);
    match client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Either::Left(body))
        }
        Err(e) => {
            eprintln!("forward: upstream: {e}");
            status(StatusCode::BAD_GATEWAY)
        }
    }
}

/// Removes the fixed hop-by-hop headers and any the message's Connection
/// header names as such.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::try_from(t.trim()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Empty::new()));
    *resp.status_mut() = code;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Endpoint;
    use crate::load;
    use http_body_util::{BodyExt, Full};

    async fn forwarder_to(upstream: SocketAddr) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint::plain(listener.local_addr().unwrap());
        tokio::spawn(serve_on(listener, upstream));
        endpoint
    }

    #[tokio::test]
    async fn echo_is_served_through_the_forwarder() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        tokio::spawn(crate::upstream::serve_on(listener));
        let endpoint = forwarder_to(upstream).await;
        load::probe(&endpoint, "echo", "hi").await.unwrap();
        // No policy: what direct serves, the forwarder serves.
        load::probe(&endpoint, "delete_file", "x").await.unwrap();
    }

    /// An upstream that answers with what it received, one header a line.
    async fn mirror(listener: TcpListener) {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let mut text = format!("{} {}\n", req.method(), req.uri());
                    for (k, v) in req.headers() {
                        text.push_str(&format!("{k}: {}\n", v.to_str().unwrap()));
                    }
                    let body = req.into_body().collect().await?.to_bytes();
                    text.push_str(&String::from_utf8_lossy(&body));
                    let mut resp = Response::new(Full::new(Bytes::from(text)));
                    resp.headers_mut()
                        .insert("keep-alive", HeaderValue::from_static("timeout=5"));
                    Ok::<_, hyper::Error>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }

    #[tokio::test]
    async fn method_path_query_and_headers_are_forwarded_without_hop_by_hop() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        tokio::spawn(mirror(listener));
        let endpoint = forwarder_to(upstream).await;
        let mut sender = endpoint.connect().await.unwrap();
        let req = Request::put(format!("http://localhost:{}/a/b?x=1", endpoint.addr.port()))
            .header(header::HOST, "client.example")
            .header("x-kept", "yes")
            .header("x-private", "per-hop")
            .header(header::CONNECTION, "keep-alive, x-private")
            .header("keep-alive", "timeout=5")
            .header(header::TE, "trailers")
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().get("keep-alive").is_none());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with("PUT /a/b?x=1\n"), "{text}");
        assert!(text.contains(&format!("host: {upstream}\n")), "{text}");
        assert!(text.contains("x-kept: yes\n"), "{text}");
        for gone in ["x-private", "keep-alive", "te:", "client.example"] {
            assert!(!text.contains(gone), "{gone} in {text}");
        }
        assert!(text.ends_with("\npayload"), "{text}");
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_502() {
        // A port that was just free: nothing listens on it.
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let endpoint = forwarder_to(closed).await;
        let err = load::probe(&endpoint, "echo", "hi").await.unwrap_err();
        assert!(err.starts_with("HTTP 502"), "{err}");
    }

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Conn"),
        );
        h.insert("x-conn", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::CONTENT_TYPE));
    }
}
