//! A session's GET stream held by the sidecar (issue 10): events get ids
//! of Portcullis's own, a client that reconnects with `Last-Event-ID` gets
//! what the server sent while it was away, and an id of another session is
//! the unknown-session 404 with nothing sent upstream.
//!
//! The upstream here is scripted (the test decides when the server sends
//! an event on the GET stream); the real SDK client doing the same is in
//! `proxy/tests/sessions/run.sh`.

mod support;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use futures_util::StreamExt;
use portcullis::Running;
use support::sessions::initialize;
use tokio::sync::mpsc;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[derive(Clone, Default)]
struct Script {
    /// GET streams opened upstream.
    gets: Arc<AtomicUsize>,
    /// The open GET stream's sender.
    stream: Arc<Mutex<Option<mpsc::Sender<String>>>>,
    sessions: Arc<AtomicUsize>,
    /// The `Last-Event-ID`s the upstream was sent.
    last_ids: Arc<Mutex<Vec<String>>>,
    /// GETs still to answer only after this long (an app slow to start).
    slow_gets: Arc<Mutex<Vec<Duration>>>,
}

async fn on_post(State(s): State<Script>, body: String) -> Response {
    if body.contains("\"initialize\"") {
        let n = s.sessions.fetch_add(1, Ordering::SeqCst);
        let answer = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"resources":{"subscribe":true}},"serverInfo":{"name":"scripted","version":"1"}}}"#;
        return (
            [
                ("content-type", "application/json"),
                ("mcp-session-id", &*format!("upstream-{n}")),
            ],
            answer,
        )
            .into_response();
    }
    StatusCode::ACCEPTED.into_response()
}

async fn on_get(State(s): State<Script>, headers: HeaderMap) -> Response {
    if let Some(id) = headers.get("last-event-id") {
        s.last_ids
            .lock()
            .unwrap()
            .push(id.to_str().unwrap().to_string());
    }
    s.gets.fetch_add(1, Ordering::SeqCst);
    let pause = s.slow_gets.lock().unwrap().pop();
    if let Some(pause) = pause {
        tokio::time::sleep(pause).await;
    }
    let (tx, rx) = mpsc::channel::<String>(16);
    *s.stream.lock().unwrap() = Some(tx);
    let body = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|e| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(e)));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap()
}

async fn scripted() -> (SocketAddr, Script) {
    let script = Script::default();
    let app = Router::new()
        .route("/mcp", post(on_post).get(on_get))
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, script)
}

/// The server sends a `resources/updated` for `uri` on its GET stream,
/// with an id of its own.
async fn server_sends(script: &Script, n: u32) {
    let tx = script.stream.lock().unwrap().clone().unwrap();
    let event = format!(
        "id: upstream-event-{n}\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/resources/updated\",\"params\":{{\"uri\":\"file:///n/{n}\"}}}}\n\n"
    );
    tx.send(event).await.unwrap();
}

async fn proxy(upstream: SocketAddr, name: &str) -> Running {
    proxy_with(upstream, name, "10s").await
}

async fn proxy_with(upstream: SocketAddr, name: &str, grace: &str) -> Running {
    let dir = std::env::temp_dir().join(format!("pc-held-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ring = dir.join("keyring.yaml");
    std::fs::write(
        &ring,
        format!("keys:\n  - {{kid: k1, key_b64: \"{KEY}\", state: primary}}\n"),
    )
    .unwrap();
    let extra = format!(
        "sessions:\n  keyring_file: {}\n  stream_grace: {grace}\n",
        ring.display()
    );
    portcullis::start(support::config(upstream, support::DENY_DELETE, &extra))
        .await
        .unwrap()
}

fn get(url: &str, sid: &str, last: Option<&str>) -> reqwest::RequestBuilder {
    support::tls_init();
    let mut req = reqwest::Client::new()
        .get(url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", "2025-06-18");
    if let Some(last) = last {
        req = req.header("last-event-id", last);
    }
    req
}

/// Reads SSE events from a streaming response until `n` have come: each
/// event's id and the `uri` of its message.
async fn read_events(resp: &mut reqwest::Response, n: usize) -> Vec<(String, String)> {
    let mut text = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            let id = event
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .unwrap_or_default()
                .to_string();
            let data: String = event
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            let uri = serde_json::from_str::<serde_json::Value>(&data)
                .ok()
                .and_then(|v| v["params"]["uri"].as_str().map(str::to_string))
                .unwrap_or_default();
            out.push((id, uri));
        }
    }
    out
}

#[tokio::test]
async fn a_client_that_reconnects_gets_what_it_missed() {
    let (upstream, script) = scripted().await;
    let proxy = proxy(upstream, "resume").await;
    let url = support::mcp_url(&proxy);
    let sid = initialize(&url, None).await;

    let mut first = get(&url, &sid, None).send().await.unwrap();
    assert_eq!(first.status(), 200);
    server_sends(&script, 1).await;
    let seen = read_events(&mut first, 1).await;
    assert_eq!(seen[0].1, "file:///n/1");
    assert!(
        seen[0].0.starts_with("pc-"),
        "an id of ours: {:?}",
        seen[0].0
    );
    // The client's connection drops; the server goes on sending.
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    server_sends(&script, 2).await;
    server_sends(&script, 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut again = get(&url, &sid, Some(&seen[0].0)).send().await.unwrap();
    assert_eq!(again.status(), 200);
    let missed = read_events(&mut again, 2).await;
    let uris: Vec<&str> = missed.iter().map(|(_, u)| u.as_str()).collect();
    assert_eq!(uris, ["file:///n/2", "file:///n/3"]);
    // Live events follow on the same stream.
    server_sends(&script, 4).await;
    assert_eq!(read_events(&mut again, 1).await[0].1, "file:///n/4");
    assert_eq!(
        script.gets.load(Ordering::SeqCst),
        1,
        "one upstream stream served both client streams"
    );
    assert!(script.last_ids.lock().unwrap().is_empty());
    let text = support::sessions::metrics(&proxy).await;
    assert!(
        text.contains("portcullis_stream_resumes_total{outcome=\"replayed\"} 1"),
        "{text}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_event_id_of_another_session_is_404_and_never_forwarded() {
    let (upstream, script) = scripted().await;
    let proxy = proxy(upstream, "forged").await;
    let url = support::mcp_url(&proxy);
    let a = initialize(&url, None).await;
    let b = initialize(&url, None).await;

    let mut stream_a = get(&url, &a, None).send().await.unwrap();
    server_sends(&script, 1).await;
    let id_a = read_events(&mut stream_a, 1).await.remove(0).0;
    let gets = script.gets.load(Ordering::SeqCst);

    let mut tampered = id_a.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    for (what, sid, id) in [
        ("session A's event id in session B", &b, id_a.as_str()),
        ("a tampered event id", &a, tampered.as_str()),
    ] {
        let resp = get(&url, sid, Some(id)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{what}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], -32001, "{what}: {body}");
    }
    assert_eq!(
        script.gets.load(Ordering::SeqCst),
        gets,
        "no GET reached the upstream"
    );
    // Session A's stream was not disturbed.
    server_sends(&script, 2).await;
    assert_eq!(read_events(&mut stream_a, 1).await[0].1, "file:///n/2");
    let text = support::sessions::metrics(&proxy).await;
    assert!(
        text.contains("portcullis_sid_reject_total{reason=\"event_id\"} 2"),
        "{text}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_upstream_event_id_is_the_servers_to_resume() {
    let (upstream, script) = scripted().await;
    let proxy = proxy(upstream, "foreign").await;
    let url = support::mcp_url(&proxy);
    let sid = initialize(&url, None).await;
    // A POST stream's id (the server's own) is forwarded as it is.
    let resp = get(&url, &sid, Some("upstream-event-9"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(support::eventually(|| script.gets.load(Ordering::SeqCst) == 1).await);
    assert_eq!(*script.last_ids.lock().unwrap(), ["upstream-event-9"]);
    drop(resp);
    proxy.shutdown().await;
}

/// The upstream stream of a session nobody reads is given up after the
/// grace period, even while the server keeps it busy with keep-alives
/// (which once restarted the grace timer, so it was never given up).
#[tokio::test]
async fn an_abandoned_stream_is_closed_upstream_after_the_grace_period() {
    let (upstream, script) = scripted().await;
    let proxy = proxy_with(upstream, "grace", "1s").await;
    let url = support::mcp_url(&proxy);
    let sid = initialize(&url, None).await;
    let mut stream = get(&url, &sid, None).send().await.unwrap();
    server_sends(&script, 1).await;
    read_events(&mut stream, 1).await;
    drop(stream);
    let tx = script.stream.lock().unwrap().clone().unwrap();
    let started = std::time::Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(4) {
        if tx.send(": keep-alive\n\n".into()).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(closed, "the upstream stream was still read after 4 s");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "not before the grace period"
    );
    proxy.shutdown().await;
}

/// A client that gives up while the app is slow to open its stream leaves
/// nothing behind: the next GET opens a stream that works (it once
/// attached to a stream that was never opened, and got nothing, forever).
#[tokio::test]
async fn a_get_abandoned_while_the_stream_opens_does_not_block_the_next() {
    let (upstream, script) = scripted().await;
    let proxy = proxy(upstream, "cancelled").await;
    let url = support::mcp_url(&proxy);
    let sid = initialize(&url, None).await;
    script
        .slow_gets
        .lock()
        .unwrap()
        .push(Duration::from_secs(2));
    let gave_up =
        tokio::time::timeout(Duration::from_millis(300), get(&url, &sid, None).send()).await;
    assert!(gave_up.is_err(), "the first GET waits for the slow app");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut next = get(&url, &sid, None).send().await.unwrap();
    assert_eq!(next.status(), 200);
    assert!(support::eventually(|| script.gets.load(Ordering::SeqCst) == 2).await);
    server_sends(&script, 1).await;
    assert_eq!(read_events(&mut next, 1).await[0].1, "file:///n/1");
    proxy.shutdown().await;
}

/// A sidecar that holds no record of the session (restarted since, or
/// another replica without a shared store) cannot replay, but still never
/// sends an id of Portcullis's upstream, and refuses a forged one.
#[tokio::test]
async fn without_a_record_an_event_id_of_ours_is_never_sent_upstream() {
    let (upstream, script) = scripted().await;
    let first = proxy(upstream, "norecord").await;
    let url = support::mcp_url(&first);
    let sid = initialize(&url, None).await;
    let mut stream = get(&url, &sid, None).send().await.unwrap();
    server_sends(&script, 1).await;
    let id = read_events(&mut stream, 1).await.remove(0).0;
    drop(stream);
    first.shutdown().await;

    // The same keys, a fresh process: the token opens, the record is gone.
    let second = proxy(upstream, "norecord").await;
    let url = support::mcp_url(&second);
    let mut tampered = id.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
    let resp = get(&url, &sid, Some(&String::from_utf8(tampered).unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let gets = script.gets.load(Ordering::SeqCst);
    let resp = get(&url, &sid, Some(&id)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(support::eventually(|| script.gets.load(Ordering::SeqCst) == gets + 1).await);
    assert!(
        script.last_ids.lock().unwrap().is_empty(),
        "an id of ours reached the upstream: {:?}",
        script.last_ids.lock().unwrap()
    );
    drop(resp);
    second.shutdown().await;
}
