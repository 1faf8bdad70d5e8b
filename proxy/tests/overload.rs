//! Overload and hostile peers (issue 13): connection and request limits,
//! slowloris on headers and bodies, upstreams that never answer or answer
//! at a trickle, slow readers of large streams, and 10 000 idle
//! connections held by the real binary (memory per connection printed).
//!
//! The upstreams here are raw sockets, so that each misbehaves exactly as
//! the test says.

mod support;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use portcullis::{Config, Running};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
};

/// What a raw upstream does with each request it reads.
#[derive(Clone, Copy)]
enum Behaviour {
    /// A JSON-RPC result for the request's id, at once.
    Answer,
    /// Reads the request and never answers.
    Hold,
    /// A valid JSON answer, sent one byte per `Duration`.
    Drip(Duration),
    /// `200 text/event-stream` and events as fast as the socket takes them.
    Flood,
    /// A `200 application/json` answer of 1 GiB, written as fast as it is read.
    Huge,
}

struct RawUpstream {
    addr: SocketAddr,
    /// Requests read.
    requests: Arc<AtomicU64>,
    /// Body bytes written (for `Flood`).
    written: Arc<AtomicU64>,
}

async fn raw_upstream(behaviour: Behaviour) -> RawUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let (r, w) = (requests.clone(), written.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (r, w) = (r.clone(), w.clone());
            tokio::spawn(serve_raw(tcp, behaviour, r, w));
        }
    });
    RawUpstream {
        addr,
        requests,
        written,
    }
}

async fn serve_raw(
    mut tcp: TcpStream,
    behaviour: Behaviour,
    requests: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
) {
    while let Some(body) = read_request(&mut tcp).await {
        requests.fetch_add(1, Ordering::SeqCst);
        let id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("id").cloned())
            .unwrap_or(serde_json::Value::Null);
        let answer =
            serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {"tools": []}}).to_string();
        match behaviour {
            Behaviour::Answer => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    answer.len()
                );
                if tcp
                    .write_all(format!("{head}{answer}").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Behaviour::Hold => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Behaviour::Drip(every) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    answer.len()
                );
                let _ = tcp.write_all(head.as_bytes()).await;
                for b in answer.bytes() {
                    if tcp.write_all(&[b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(every).await;
                }
            }
            Behaviour::Huge => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"tools\":[";
                let _ = tcp.write_all(head.as_bytes()).await;
                let item = "{\"name\":\"t\",\"inputSchema\":{\"type\":\"object\"}},".repeat(100);
                loop {
                    if tcp.write_all(item.as_bytes()).await.is_err() {
                        return;
                    }
                    written.fetch_add(item.len() as u64, Ordering::SeqCst);
                }
            }
            Behaviour::Flood => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                let _ = tcp.write_all(head.as_bytes()).await;
                let event = format!(
                    "event: message\ndata: {}\n\n",
                    serde_json::json!({"jsonrpc": "2.0", "method": "notifications/message",
                        "params": {"level": "info", "data": "x".repeat(4000)}})
                );
                let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                loop {
                    if tcp.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                    written.fetch_add(event.len() as u64, Ordering::SeqCst);
                }
            }
        }
    }
}

/// Reads one HTTP/1.1 request (head and `content-length` body).
async fn read_request(tcp: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await.ok()?;
    Some(body)
}

fn config(upstream: SocketAddr, listener: &str, upstream_extra: &str) -> Config {
    let yaml = format!(
        "listener:\n  addr: 127.0.0.1:0\n{listener}admin:\n  addr: 127.0.0.1:0\nupstream:\n  url: http://{upstream}\n{upstream_extra}policy:\n  default: allow\n"
    );
    Config::from_yaml(&yaml).unwrap()
}

async fn start(config: Config) -> Running {
    portcullis::start(config).await.unwrap()
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{}}"#;

/// A POST of `body` as raw HTTP/1.1 on `tcp`; the status, the head
/// (lower case) and the body. Reads until the body is complete.
async fn post_on(tcp: &mut TcpStream, body: &str) -> (u16, String, String) {
    tcp.write_all(post_request(body).as_bytes()).await.unwrap();
    read_response(tcp).await
}

/// A 2025-06-18 POST of `body` as raw HTTP/1.1.
fn post_request(body: &str) -> String {
    format!(
        "POST /mcp HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\nmcp-protocol-version: 2025-06-18\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

async fn read_response(tcp: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(len) = len {
                if buf.len() >= end + 4 + len {
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                    let status = head[9..12].parse().unwrap();
                    return (status, head, body);
                }
            }
        }
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "connection closed mid-response: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn connect(proxy: &Running) -> TcpStream {
    TcpStream::connect(proxy.proxy_addr).await.unwrap()
}

/// A connection from another loopback address: another anonymous caller.
async fn connect_from(ip: [u8; 4], proxy: &Running) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((ip, 0))).unwrap();
    socket.connect(proxy.proxy_addr).await.unwrap()
}

async fn metrics(proxy: &Running) -> String {
    support::tls_init();
    let url = format!("http://{}/metrics", proxy.admin_addr);
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits up to five seconds for the open-connection gauge to read `n`.
async fn open_connections(proxy: &Running, n: f64) -> bool {
    for _ in 0..100 {
        let m = metrics(proxy).await;
        if metric(
            &m,
            "portcullis_listener_connections_open{listener=\"proxy\"}",
        ) == n
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn assert_overloaded(status: u16, head: &str, body: &str, limit_text: &str) {
    assert_eq!(status, 503, "{head}\n{body}");
    assert!(head.contains("retry-after: 1"), "{head}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], -32056, "{body}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(limit_text), "{msg}");
}

#[tokio::test]
async fn a_connection_flood_is_refused_while_admin_and_admitted_connections_work() {
    let up = raw_upstream(Behaviour::Answer).await;
    let proxy = start(config(up.addr, "  max_connections: 20\n", "")).await;
    let mut admitted = Vec::new();
    for _ in 0..20 {
        admitted.push(connect(&proxy).await);
    }
    assert!(
        open_connections(&proxy, 20.0).await,
        "20 connections admitted"
    );

    // One past the limit: answered 503 + Retry-After, then closed.
    let mut over = connect(&proxy).await;
    let (status, head, body) = post_on(&mut over, LIST).await;
    assert_overloaded(
        status,
        &head,
        &body,
        "too many connections to this listener",
    );
    let mut rest = Vec::new();
    assert_eq!(
        over.read_to_end(&mut rest).await.unwrap_or(0),
        0,
        "shed connection closed"
    );

    // A flood of 600 more: some are shed (bounded), the rest reset at once.
    let mut flood = Vec::new();
    for _ in 0..600 {
        if let Ok(tcp) = TcpStream::connect(proxy.proxy_addr).await {
            flood.push(tcp);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = metrics(&proxy).await;
    let shed = metric(
        &m,
        "portcullis_overload_refused_total{limit=\"connections\",listener=\"proxy\"}",
    );
    let reset = metric(
        &m,
        "portcullis_overload_refused_total{limit=\"shed\",listener=\"proxy\"}",
    );
    println!("flood of 600: over the limit {shed}, reset without a handshake {reset}");
    assert!(
        shed >= 600.0,
        "every connection past the limit is counted: {m}"
    );
    assert!(
        reset >= 600.0 - 256.0,
        "past the shed places, connections are reset: {m}"
    );

    // The admitted connections still work, and so does the admin port
    // (metrics above were read during the flood).
    let (status, _, body) = post_on(&mut admitted[3], LIST).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"tools\""), "{body}");
    drop(flood);
    drop(admitted);
    assert!(
        open_connections(&proxy, 0.0).await,
        "every place given back"
    );
}

#[tokio::test]
async fn requests_in_flight_are_bounded_per_caller_and_per_listener() {
    let up = raw_upstream(Behaviour::Hold).await;
    let listener = "  max_inflight: 3\n  max_inflight_per_caller: 2\n";
    let proxy = start(config(up.addr, listener, "  request_timeout: 30s\n")).await;
    // Two held requests from 127.0.0.1.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = connect(&proxy).await;
        let req = post_request(LIST);
        tcp.write_all(req.as_bytes()).await.unwrap();
        held.push(tcp);
    }
    assert!(support::eventually(|| up.requests.load(Ordering::SeqCst) == 2).await);
    // A third from the same caller is refused, and never reaches the upstream.
    let mut third = connect(&proxy).await;
    let (status, head, body) = post_on(&mut third, LIST).await;
    assert_overloaded(status, &head, &body, "from this caller");
    // Another caller (another address) gets the listener's last place...
    let mut other = connect_from([127, 0, 0, 2], &proxy).await;
    let req = post_request(LIST);
    other.write_all(req.as_bytes()).await.unwrap();
    assert!(support::eventually(|| up.requests.load(Ordering::SeqCst) == 3).await);
    // ...and a third caller finds the listener full.
    let mut full = connect_from([127, 0, 0, 3], &proxy).await;
    let (status, head, body) = post_on(&mut full, LIST).await;
    assert_overloaded(status, &head, &body, "on this listener");
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        3,
        "refused requests are not forwarded"
    );
    let m = metrics(&proxy).await;
    assert_eq!(
        metric(
            &m,
            "portcullis_overload_refused_total{limit=\"inflight_per_caller\",listener=\"proxy\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "portcullis_overload_refused_total{limit=\"inflight\",listener=\"proxy\"}"
        ),
        1.0
    );
    // A place comes back when its request ends (here: the client goes away).
    drop(held);
    drop(other);
    let mut again = connect(&proxy).await;
    let req_count = up.requests.load(Ordering::SeqCst);
    let send = post_request(LIST);
    let mut forwarded = false;
    for _ in 0..50 {
        again.write_all(send.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if up.requests.load(Ordering::SeqCst) > req_count {
            forwarded = true;
            break;
        }
        // Refused (503): read it and try again on a new connection.
        again = connect(&proxy).await;
    }
    assert!(forwarded, "places are given back when requests end");
}

#[tokio::test]
async fn event_streams_are_bounded_per_caller() {
    let up = raw_upstream(Behaviour::Flood).await;
    let proxy = start(config(up.addr, "  max_streams_per_caller: 1\n", "")).await;
    let get = "GET /mcp HTTP/1.1\r\nhost: localhost\r\naccept: text/event-stream\r\nmcp-protocol-version: 2025-06-18\r\n\r\n";
    let mut first = connect(&proxy).await;
    first.write_all(get.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let mut second = connect(&proxy).await;
    second.write_all(get.as_bytes()).await.unwrap();
    let (status, head, body) = read_response(&mut second).await;
    assert_overloaded(status, &head, &body, "event streams");
    // Another caller may open its own.
    let mut other = connect_from([127, 0, 0, 2], &proxy).await;
    other.write_all(get.as_bytes()).await.unwrap();
    let n = other.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Closing the first gives its place back.
    drop(first);
    let mut opened = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut third = connect(&proxy).await;
        third.write_all(get.as_bytes()).await.unwrap();
        let n = third.read(&mut buf).await.unwrap();
        if String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200") {
            opened = true;
            break;
        }
    }
    assert!(
        opened,
        "the stream place is given back when the stream ends"
    );
}

#[tokio::test]
async fn slowloris_on_headers_is_cut_and_others_are_served() {
    let up = raw_upstream(Behaviour::Answer).await;
    let listener = "  header_read_timeout: 1s\n";
    let proxy = start(config(up.addr, listener, "")).await;
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut tcp = connect(&proxy).await;
        tcp.write_all(b"POST /mcp HTTP/1.1\r\nhost: localhost\r\n")
            .await
            .unwrap();
        slow.push(tcp);
    }
    // Each sends one more header byte every 200 ms; all must be closed.
    let cut = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for mut tcp in slow {
        let cut = cut.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if tcp.write_all(b"x").await.is_err() {
                    break;
                }
                let mut b = [0u8; 512];
                // Anything read (a 408, EOF or a reset) means it was cut.
                let read = tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut b)).await;
                if read.is_ok() {
                    break;
                }
            }
            cut.fetch_add(1, Ordering::SeqCst);
        }));
    }
    // Meanwhile a normal client is served.
    let mut normal = connect(&proxy).await;
    let (status, _, _) = post_on(&mut normal, LIST).await;
    assert_eq!(status, 200);
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    println!("50 slowloris connections on headers cut after {took:?}");
    assert_eq!(cut.load(Ordering::SeqCst), 50);
    assert!(
        took < Duration::from_secs(9),
        "cut by header_read_timeout, not by the 10 s the clients would take"
    );
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        1,
        "nothing of theirs was forwarded"
    );
}

#[tokio::test]
async fn slowloris_on_bodies_is_answered_408_and_nothing_is_forwarded() {
    let up = raw_upstream(Behaviour::Answer).await;
    let proxy = start(config(up.addr, "  body_read_timeout: 1s\n", "")).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut tcp = connect(&proxy).await;
        tasks.push(tokio::spawn(async move {
            let head = format!(
                "POST /mcp HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\naccept: application/json\r\ncontent-length: {}\r\n\r\n",
                LIST.len()
            );
            tcp.write_all(head.as_bytes()).await.unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let (mut rd, mut wr) = tcp.into_split();
            let s = stop.clone();
            let writer = tokio::spawn(async move {
                for b in LIST.bytes() {
                    if s.load(Ordering::SeqCst) || wr.write_all(&[b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            });
            let mut buf = vec![0u8; 1024];
            let n = rd.read(&mut buf).await.unwrap_or(0);
            stop.store(true, Ordering::SeqCst);
            writer.abort();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }));
    }
    for t in tasks {
        let answer = t.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("-32600"), "{answer}");
    }
    assert_eq!(up.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_upstream_that_never_answers_gets_a_504_in_time() {
    let up = raw_upstream(Behaviour::Hold).await;
    let proxy = start(config(up.addr, "", "  request_timeout: 1s\n")).await;
    let started = Instant::now();
    let mut tcp = connect(&proxy).await;
    let (status, _, body) = post_on(&mut tcp, LIST).await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("-32053"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The connection is still usable after the timeout.
    let (status, _, _) = post_on(&mut tcp, LIST).await;
    assert_eq!(status, 504);
}

#[tokio::test]
async fn an_upstream_answering_one_byte_at_a_time_is_cut_at_the_request_timeout() {
    // A list answer must be read whole before it is filtered: a trickle
    // that never finishes in time is a 504, not a held connection.
    let up = raw_upstream(Behaviour::Drip(Duration::from_millis(300))).await;
    let proxy = start(config(up.addr, "", "  request_timeout: 1s\n")).await;
    let started = Instant::now();
    let mut tcp = connect(&proxy).await;
    let (status, _, body) = post_on(&mut tcp, LIST).await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("-32053"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_slow_reader_of_a_large_stream_stops_the_upstream_not_grows_memory() {
    let up = raw_upstream(Behaviour::Flood).await;
    let proxy = start(config(up.addr, "", "")).await;
    let mut tcp = connect(&proxy).await;
    let get = "GET /mcp HTTP/1.1\r\nhost: localhost\r\naccept: text/event-stream\r\nmcp-protocol-version: 2025-06-18\r\n\r\n";
    tcp.write_all(get.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let _ = tcp.read(&mut buf).await.unwrap();
    // The client stops reading. The upstream must be stopped too: what it
    // wrote is bounded by socket buffers and the relay's 16 frames.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_2s = up.written.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_3s = up.written.load(Ordering::SeqCst);
    println!(
        "upstream wrote {at_2s} bytes before back-pressure held it; {} more in the next second",
        at_3s - at_2s
    );
    assert!(
        at_2s < 64 * 1024 * 1024,
        "the proxy buffered without bound: {at_2s} bytes"
    );
    assert!(
        at_3s - at_2s < 512 * 1024,
        "the upstream is still writing: {} bytes/s",
        at_3s - at_2s
    );
    // Reading again lets it go on.
    let mut got = 0usize;
    while got < 8 * 1024 * 1024 {
        got += tcp.read(&mut buf).await.unwrap();
    }
    assert!(
        up.written.load(Ordering::SeqCst) > at_3s,
        "reading resumes the flow"
    );
}

#[tokio::test]
async fn a_huge_json_answer_is_refused_at_the_bound_and_reading_stops() {
    let up = raw_upstream(Behaviour::Huge).await;
    let proxy = start(config(up.addr, "", "")).await;
    let mut tcp = connect(&proxy).await;
    let (status, _, body) = post_on(&mut tcp, LIST).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("-32052"), "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let read = up.written.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = up.written.load(Ordering::SeqCst);
    println!(
        "a 1 GiB answer: {read} bytes written by the upstream before it was refused (bound 16 MiB)"
    );
    assert!(
        read < 64 * 1024 * 1024,
        "read far past max_response_bytes: {read}"
    );
    assert_eq!(read, later, "the upstream is no longer read");
}

#[tokio::test]
async fn an_oversized_request_head_is_refused_not_buffered() {
    let up = raw_upstream(Behaviour::Answer).await;
    let proxy = start(config(up.addr, "", "")).await;
    let mut tcp = connect(&proxy).await;
    let big = format!(
        "POST /mcp HTTP/1.1\r\nhost: localhost\r\nx-filler: {}\r\ncontent-length: 2\r\n\r\n{{}}",
        "a".repeat(200 * 1024)
    );
    // The proxy may close before reading it all: a write error is fine.
    let _ = tcp.write_all(big.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );
    assert_eq!(up.requests.load(Ordering::SeqCst), 0);
}

/// The real binary, for memory figures that are the proxy's alone.
struct Child {
    child: std::process::Child,
    proxy: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_binary(upstream: SocketAddr, listener: &str) -> Child {
    spawn_binary_in(
        &support::pki::dir("overload-binary"),
        upstream,
        listener,
        "",
    )
}

/// `top` is appended as top-level sections.
fn spawn_binary_in(
    dir: &std::path::Path,
    upstream: SocketAddr,
    listener: &str,
    top: &str,
) -> Child {
    let proxy = free_port();
    let admin = free_port();
    let yaml = format!(
        "listener:\n  addr: {proxy}\n{listener}admin:\n  addr: {admin}\nupstream:\n  url: http://{upstream}\npolicy:\n  default: allow\n{top}"
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    Child {
        child,
        proxy,
        admin,
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn raise_own_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).unwrap();
    limit.current.unwrap_or(u64::MAX)
}

async fn gauge(admin: SocketAddr) -> f64 {
    support::tls_init();
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric(
        &text,
        "portcullis_listener_connections_open{listener=\"proxy\"}",
    )
}

#[tokio::test]
async fn ten_thousand_idle_connections_are_held_and_measured() {
    support::tls_init();
    // The client's ends are in this process, the proxy's in the child: each
    // needs N descriptors. A machine whose hard limit is lower gets fewer
    // connections, and the figure says how many.
    let limit = raise_own_fd_limit();
    let n = usize::try_from(limit.saturating_sub(500))
        .unwrap_or(usize::MAX)
        .min(10_000);
    assert!(n >= 1_000, "the fd limit here is {limit}");
    #[allow(non_snake_case)]
    let N = n;
    let up = raw_upstream(Behaviour::Answer).await;
    let child = spawn_binary(up.addr, "  max_connections: 20000\n  max_connections_per_caller: 20000\n  header_read_timeout: 120s\n");
    let mut ready = false;
    for _ in 0..200 {
        if reqwest::get(format!("http://{}/ready", child.admin))
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "portcullis did not start");
    // Warm the process (first request paths, allocator) before measuring.
    let mut warm = TcpStream::connect(child.proxy).await.unwrap();
    assert_eq!(post_on(&mut warm, LIST).await.0, 200);
    let pid = child.child.id();
    let before = rss_kib(pid);
    let mut conns = Vec::with_capacity(N);
    for _ in 0..N {
        conns.push(TcpStream::connect(child.proxy).await.unwrap());
    }
    let mut open = 0.0;
    for _ in 0..600 {
        open = gauge(child.admin).await;
        if open >= (N + 1) as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(open, (N + 1) as f64, "every connection admitted");
    let after = rss_kib(pid);
    let per_conn = (after.saturating_sub(before) * 1024) as f64 / N as f64;
    println!(
        "{N} idle plaintext connections: RSS {before} KiB -> {after} KiB, {per_conn:.0} bytes per connection"
    );
    // A sample of them, idle until now, is served.
    for tcp in conns.iter_mut().step_by(N / 20) {
        let (status, _, body) = post_on(tcp, LIST).await;
        assert_eq!(status, 200, "{body}");
    }
    drop(conns);
}

#[tokio::test]
async fn a_thousand_idle_mtls_connections_are_measured() {
    use support::pki;
    const N: usize = 1_000;
    support::tls_init();
    raise_own_fd_limit();
    let up = raw_upstream(Behaviour::Answer).await;
    let dir = pki::dir("overload-mtls");
    let ca = pki::ca(pki::TD);
    pki::write_svid(&dir, &ca, pki::SIDECAR_ID);
    let identity = pki::identity_yaml(&dir, "strict", "1s");
    let child = spawn_binary_in(&dir, up.addr, "", &identity);
    let (cert, key) = ca
        .issue(
            "spiffe://demo.local/ns/agents/sa/client",
            Duration::from_secs(3600),
        )
        .unwrap();
    let client = pki::Client::new(&cert, &key, &ca.cert_pem, pki::SIDECAR_ID);
    let mut ready = false;
    for _ in 0..200 {
        if client.post(child.proxy, LIST, &[]).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "portcullis did not start");
    let pid = child.child.id();
    let before = rss_kib(pid);
    let mut conns = Vec::with_capacity(N);
    for _ in 0..N {
        conns.push(client.connect(child.proxy).await.unwrap());
    }
    let mut open = 0.0;
    for _ in 0..200 {
        open = gauge(child.admin).await;
        if open >= N as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(open >= N as f64, "{open} connections admitted");
    let after = rss_kib(pid);
    let per_conn = (after.saturating_sub(before) * 1024) as f64 / N as f64;
    println!(
        "1000 idle mTLS connections: RSS {before} KiB -> {after} KiB, {per_conn:.0} bytes per connection"
    );
    drop(conns);
}
