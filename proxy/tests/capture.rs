//! The capture listener and the app probes, without root: a connection
//! that was not redirected by the kernel is refused and counted. What a
//! redirected connection gets is shown in real network namespaces by
//! `tests/capture_netns.sh`.

mod support;

use std::{
    io::{Read, Write},
    time::Duration,
};

use support::*;

async fn metrics(proxy: &portcullis::Running) -> String {
    let url = format!("http://{}/metrics", proxy.admin_addr);
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn a_direct_dial_of_the_capture_port_is_refused_and_counted() {
    let upstream = Upstream::start();
    let extra = format!(
        "capture:\n  addr: 127.0.0.1:0\n  mcp_ports: [{}]\n",
        upstream.addr.port()
    );
    let proxy = portcullis::start(config(upstream.addr, DENY_DELETE, &extra))
        .await
        .unwrap();
    let capture = proxy.capture_addr.expect("capture listener bound");
    let body =
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
    let answer = tokio::task::spawn_blocking(move || {
        let mut tcp = std::net::TcpStream::connect(capture).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let req = format!(
            "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = tcp.write_all(req.as_bytes());
        let mut out = Vec::new();
        let _ = tcp.read_to_end(&mut out);
        out
    })
    .await
    .unwrap();
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(upstream.posts(), 0);
    let text = metrics(&proxy).await;
    assert!(
        text.contains(r#"portcullis_capture_refused_total{reason="not_redirected"} 1"#),
        "{text}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_admin_port_runs_the_apps_probes_on_loopback() {
    let upstream = Upstream::start();
    let port = upstream.addr.port();
    let extra = format!(
        "app_probes:\n  /app-health/server/livez: {{tcpSocket: {{port: {port}}}}}\n  /app-health/server/readyz: {{grpc: {{port: {port}}}}}\n"
    );
    let proxy = portcullis::start(config(upstream.addr, DENY_DELETE, &extra))
        .await
        .unwrap();
    let get = |path: &str| reqwest::get(format!("http://{}{path}", proxy.admin_addr));
    let live = get("/app-health/server/livez").await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = get("/app-health/server/readyz").await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("unsupported"));
    assert_eq!(get("/app-health/other/livez").await.unwrap().status(), 404);
    proxy.shutdown().await;
}
