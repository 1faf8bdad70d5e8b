use std::collections::BTreeMap;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::*;

/// What the webhook writes into `PORTCULLIS_APP_PROBES` (inject goldens).
const FROM_WEBHOOK: &str = r#"{"/app-health/server/readyz":{"httpGet":{"path":"/healthz","port":8080,"scheme":"HTTP"},"timeoutSeconds":1},"/app-health/server/livez":{"tcpSocket":{"port":8080}},"/app-health/server/startupz":{"grpc":{"port":9000,"service":"x"},"timeoutSeconds":3}}"#;

fn probe(json: &str) -> AppProbe {
    serde_json::from_str(json).unwrap()
}

#[test]
fn the_webhooks_probes_parse() {
    let probes: BTreeMap<String, AppProbe> = serde_json::from_str(FROM_WEBHOOK).unwrap();
    let ready = &probes["/app-health/server/readyz"];
    let get = ready.http_get.as_ref().unwrap();
    assert_eq!((get.port, get.path.as_deref()), (8080, Some("/healthz")));
    assert_eq!(
        probes["/app-health/server/livez"]
            .tcp_socket
            .as_ref()
            .unwrap()
            .port,
        8080
    );
    assert_eq!(
        probes["/app-health/server/startupz"].timeout(),
        Duration::from_secs(3)
    );
    assert!(probes.values().all(|p| p.validate().is_ok()));
}

#[test]
fn a_probe_needs_one_loopback_handler() {
    let cases = [
        (r#"{"timeoutSeconds": 1}"#, "needs one of"),
        (
            r#"{"tcpSocket": {"port": 1}, "grpc": {"port": 2}}"#,
            "more than one",
        ),
        (r#"{"tcpSocket": {"port": 0}}"#, "port 0"),
        (
            r#"{"httpGet": {"port": 80, "host": "10.0.0.9"}}"#,
            "only run against 127.0.0.1",
        ),
        (
            r#"{"tcpSocket": {"port": 80, "host": "metadata.google.internal"}}"#,
            "127.0.0.1",
        ),
    ];
    for (json, want) in cases {
        let err = probe(json).validate().unwrap_err();
        assert!(err.contains(want), "{json}: {err}");
    }
    assert!(probe(r#"{"httpGet": {"port": 80, "host": ""}}"#)
        .validate()
        .is_ok());
}

#[test]
fn timeouts_are_bounded() {
    assert_eq!(
        probe(r#"{"tcpSocket":{"port":1}}"#).timeout(),
        DEFAULT_TIMEOUT
    );
    let long = probe(r#"{"tcpSocket":{"port":1},"timeoutSeconds":3600}"#);
    assert_eq!(long.timeout(), MAX_TIMEOUT);
}

/// A one-shot HTTP server on loopback answering `status`; returns its port
/// and the request head it received.
async fn app(status: &'static str) -> (u16, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = vec![0; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tcp.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
        tcp.write_all(answer.as_bytes()).await.unwrap();
        String::from_utf8(head).unwrap()
    });
    (port, task)
}

#[tokio::test]
async fn http_get_runs_against_loopback_with_path_and_headers() {
    let (port, seen) = app("204 No Content").await;
    let p = probe(&format!(
        r#"{{"httpGet":{{"port":{port},"path":"/healthz?deep=1","httpHeaders":[{{"name":"x-probe","value":"yes"}}]}}}}"#
    ));
    let (status, body) = p.run().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let head = seen.await.unwrap().to_ascii_lowercase();
    assert!(head.starts_with("get /healthz?deep=1 http/1.1"), "{head}");
    assert!(head.contains("x-probe: yes"), "{head}");
    assert!(head.contains(&format!("host: 127.0.0.1:{port}")), "{head}");
}

#[tokio::test]
async fn an_app_error_or_a_dead_port_fails_the_probe() {
    let (port, _seen) = app("500 Internal Server Error").await;
    let p = probe(&format!(r#"{{"httpGet":{{"port":{port}}}}}"#));
    let (status, body) = p.run().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("500"), "{body}");

    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap().port();
    drop(closed);
    for json in [
        format!(r#"{{"httpGet":{{"port":{dead}}}}}"#),
        format!(r#"{{"tcpSocket":{{"port":{dead}}}}}"#),
    ] {
        assert_eq!(
            probe(&json).run().await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "{json}"
        );
    }
}

#[tokio::test]
async fn tcp_socket_passes_on_an_open_port() {
    let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = open.local_addr().unwrap().port();
    let (status, body) = probe(&format!(r#"{{"tcpSocket":{{"port":{port}}}}}"#))
        .run()
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_silent_app_times_out() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let (status, body) = probe(&format!(r#"{{"httpGet":{{"port":{port}}}}}"#))
        .run()
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("timed out"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(silent);
}

#[tokio::test]
async fn grpc_and_https_are_refused_plainly() {
    for json in [
        r#"{"grpc":{"port":9000}}"#,
        r#"{"httpGet":{"port":8443,"scheme":"HTTPS"}}"#,
    ] {
        let (status, body) = probe(json).run().await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
        assert!(body.starts_with("unsupported:"), "{json}: {body}");
    }
}
