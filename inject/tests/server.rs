//! The HTTPS server's edges: bad input gets a clear HTTP error (never a
//! panic), other paths and methods are refused, HTTP/1.1 clients work as
//! well as h2, and /metrics counts results.

mod common;

use portcullis_inject::InjectSettings;
use serde_json::{json, Value};

fn review(uid: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "default",
            "operation": "CREATE",
            "object": object,
        }
    }))
    .unwrap()
}

fn pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "p-", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app", "ports": [{"containerPort": 8080}]}]}
    })
}

#[tokio::test]
async fn bad_requests_get_http_errors() {
    let server = common::start(InjectSettings::default()).await;
    let client = common::client(&server.ca.cert_pem, false);
    let cases: [(&str, &str, &[u8], u16, &str); 6] = [
        ("POST", "/inject", b"not json", 400, "not an AdmissionReview"),
        ("POST", "/inject", br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u"}}"#, 400, "only admission.k8s.io/v1"),
        ("POST", "/inject", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#, 400, "no request"),
        ("GET", "/inject", b"", 405, "POST"),
        ("GET", "/nope", b"", 404, "not found"),
        ("GET", "/healthz", b"", 200, "ok"),
    ];
    for (method, path, body, status, text) in cases {
        let (got, bytes) = common::request(&client, server.addr, method, path, body.to_vec()).await;
        let bytes = String::from_utf8_lossy(&bytes);
        assert_eq!(got, status, "{method} {path}: {bytes}");
        assert!(bytes.contains(text), "{method} {path}: {bytes}");
    }
}

#[tokio::test]
async fn malformed_pod_is_denied_not_crashed() {
    let server = common::start(InjectSettings::default()).await;
    let client = common::client(&server.ca.cert_pem, false);
    for (object, text) in [
        (json!("a string"), "not a JSON object"),
        (json!({"spec": {"containers": "nope"}}), "not a valid Pod"),
        (
            json!({"metadata": {}, "spec": {"containers": []}}),
            "no containers",
        ),
    ] {
        let (status, bytes) = common::request(
            &client,
            server.addr,
            "POST",
            "/inject",
            review("u1", object),
        )
        .await;
        assert_eq!(status, 200);
        let answer: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(answer["response"]["allowed"], false, "{answer}");
        assert!(
            answer["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains(text),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn metrics_count_each_result() {
    let server = common::start(InjectSettings::default()).await;
    let client = common::client(&server.ca.cert_pem, true);
    let bodies = [
        review("a", pod(json!({}))),
        review("b", pod(json!({"portcullis.dev/log-level": "loud"}))),
        review("c", pod(json!({"portcullis.dev/capture-mode": "none"}))),
    ];
    for body in bodies {
        let (status, _) = common::request(&client, server.addr, "POST", "/inject", body).await;
        assert_eq!(status, 200);
    }
    common::request(&client, server.addr, "POST", "/inject", b"{".to_vec()).await;
    let (_, metrics) = common::request(&client, server.addr, "GET", "/metrics", Vec::new()).await;
    let metrics = String::from_utf8(metrics).unwrap();
    for line in [
        "portcullis_injector_requests_total{result=\"injected\"} 2",
        "portcullis_injector_requests_total{result=\"denied\"} 1",
        "portcullis_injector_requests_total{result=\"skipped\"} 0",
        "portcullis_injector_requests_total{result=\"error\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

#[tokio::test]
async fn untrusted_client_cannot_connect() {
    let server = common::start(InjectSettings::default()).await;
    let other_ca = portcullis_inject::ca_bootstrap::generate_ca().unwrap();
    let client = common::client(&other_ca.cert_pem, false);
    let req = http::Request::post(format!("https://localhost:{}/inject", server.addr.port()))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert!(
        client.request(req).await.is_err(),
        "a server cert from another CA must be refused"
    );
}

#[tokio::test]
async fn plain_listener_serves_health_and_metrics_but_never_admission() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let state = std::sync::Arc::new(portcullis_inject::server::State {
        settings: InjectSettings::default(),
        metrics: portcullis_inject::server::Metrics::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(portcullis_inject::server::serve_plain(
        listener,
        state,
        std::future::pending(),
    ));
    let raw = |req: String| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let health = raw("GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".into()).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = raw("GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".into()).await;
    assert!(
        metrics.contains("portcullis_injector_requests_total"),
        "{metrics}"
    );
    let body = String::from_utf8(review("u", pod(json!({})))).unwrap();
    let inject = raw(format!(
        "POST /inject HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ))
    .await;
    assert!(
        inject.starts_with("HTTP/1.1 404"),
        "admission must only be served over TLS: {inject}"
    );
    task.abort();
}
