//! mTLS with SPIFFE X.509-SVIDs: the verified identity reaches the policy
//! and the upstream; every malformed SVID is refused with a log that says
//! why; rotation loses nothing.

mod support;

use std::time::Duration;

use portcullis::identity::ca::Ca;
use rcgen::{BasicConstraints, IsCa, KeyUsagePurpose, SanType};
use serde_json::json;
use support::{logs, pki::*, *};

const ALLOWED: &str = "spiffe://demo.local/ns/agents/sa/allowed";
const DENIED: &str = "spiffe://demo.local/ns/agents/sa/intruder";

const POLICY: &str = r#"
default: allow
rules:
  - name: only-allowed-agent-deletes
    action: allow
    methods: ["tools/call"]
    names: ["delete_*"]
    callers: ["spiffe://demo.local/ns/agents/sa/allowed"]
  - name: nobody-else-deletes
    action: deny
    methods: ["tools/call"]
    names: ["delete_*"]
"#;

struct Setup {
    ca: Ca,
    upstream: Upstream,
    proxy: portcullis::Running,
    dir: std::path::PathBuf,
}

async fn setup(name: &str, mode: &str) -> Setup {
    let ca = ca(TD);
    let dir = dir(name);
    write_svid(&dir, &ca, SIDECAR_ID);
    let upstream = Upstream::start();
    let proxy = portcullis::start(config(
        upstream.addr,
        POLICY,
        &identity_yaml(&dir, mode, "100ms"),
    ))
    .await
    .unwrap();
    Setup {
        ca,
        upstream,
        proxy,
        dir,
    }
}

fn client(s: &Setup, id: &str) -> Client {
    let (cert, key) = s.ca.issue(id, Duration::from_secs(3600)).unwrap();
    Client::new(&cert, &key, &s.ca.cert_pem, SIDECAR_ID)
}

fn modern(id: u64, tool: &str) -> (String, Vec<(&'static str, String)>) {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": {"path": "/x", "text": "t"}, "_meta": modern_meta()}});
    let headers = vec![
        ("mcp-protocol-version", "2026-07-28".to_string()),
        ("mcp-method", "tools/call".to_string()),
        ("mcp-name", tool.to_string()),
    ];
    (body.to_string(), headers)
}

async fn call(
    c: &Client,
    addr: std::net::SocketAddr,
    id: u64,
    tool: &str,
    extra: &[(&str, &str)],
) -> Result<serde_json::Value, String> {
    let (body, headers) = modern(id, tool);
    let mut all: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    let (_, text) = c.post(addr, &body, &all).await?;
    messages(&text)
        .into_iter()
        .find(|m| m["id"] == id)
        .ok_or(text)
}

#[tokio::test]
async fn verified_identities_decide_and_reach_the_upstream() {
    let s = setup("ids", "strict").await;
    let addr = s.proxy.proxy_addr;
    let allowed = call(&client(&s, ALLOWED), addr, 1, "delete_file", &[])
        .await
        .unwrap();
    assert!(allowed["result"].is_object(), "{allowed}");
    let denied = call(&client(&s, DENIED), addr, 2, "delete_file", &[])
        .await
        .unwrap();
    assert_eq!(denied["error"]["code"], -32051, "{denied}");
    assert_eq!(denied["error"]["data"]["by"], "static:nobody-else-deletes");

    // A client that claims another identity in a header gets nowhere.
    let spoof = call(
        &client(&s, DENIED),
        addr,
        3,
        "echo",
        &[("x-portcullis-caller", ALLOWED)],
    )
    .await
    .unwrap();
    assert!(spoof["result"].is_object());
    let seen = s.upstream.callers.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![Some(ALLOWED.to_string()), Some(DENIED.to_string())],
        "only verified IDs, never the client's header"
    );
    s.proxy.shutdown().await;
}

/// A test case: its name, the SVID (cert, key PEM), the reason to log.
type Case = (&'static str, Result<(String, String), String>, &'static str);

/// Each malformed or untrusted SVID, and why it must be refused.
fn bad_svids(ca: &Ca) -> Vec<Case> {
    let other = super_ca("other.local");
    let impostor = super_ca(TD);
    let sign = |p: rcgen::CertificateParams| ca.sign(p).map_err(|e| e.to_string());
    let mut expired = params("spiffe://demo.local/ns/a/sa/old");
    expired.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(2);
    expired.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let mut future = params("spiffe://demo.local/ns/a/sa/new");
    future.not_before = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    future.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(2);
    let mut two = params("spiffe://demo.local/ns/a/sa/one");
    two.subject_alt_names.push(SanType::URI(
        "spiffe://demo.local/ns/a/sa/two".try_into().unwrap(),
    ));
    let mut none = params("spiffe://demo.local/ns/a/sa/x");
    none.subject_alt_names = vec![SanType::DnsName("agent.example".try_into().unwrap())];
    let mut as_ca = params("spiffe://demo.local/ns/a/sa/ca");
    as_ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut https = params("spiffe://demo.local/ns/a/sa/x");
    https.subject_alt_names = vec![SanType::URI("https://demo.local/agent".try_into().unwrap())];
    let mut usage = params("spiffe://demo.local/ns/a/sa/x");
    usage.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ];
    vec![
        (
            "wrong trust domain",
            other
                .issue("spiffe://other.local/ns/a/sa/x", Duration::from_secs(3600))
                .map_err(|e| e.to_string()),
            "trust domain \"other.local\" is not allowed",
        ),
        ("expired", sign(expired), "certificate expired"),
        ("not yet valid", sign(future), "certificate not yet valid"),
        ("two URI SANs", sign(two), "2 URI SANs"),
        ("no URI SAN", sign(none), "no URI SAN"),
        ("CA as leaf", sign(as_ca), "leaf certificate is a CA"),
        (
            "untrusted chain",
            impostor
                .issue("spiffe://demo.local/ns/a/sa/x", Duration::from_secs(3600))
                .map_err(|e| e.to_string()),
            "chain does not verify",
        ),
        (
            "non-spiffe URI SAN",
            sign(https),
            "is not a valid SPIFFE ID",
        ),
        ("key usage", sign(usage), "keyCertSign or cRLSign is set"),
    ]
}

fn super_ca(td: &str) -> Ca {
    ca(td)
}

#[tokio::test]
async fn malformed_svids_are_refused_with_a_reason() {
    let logs = logs::capture();
    let s = setup("negative", "strict").await;
    let addr = s.proxy.proxy_addr;
    for (case, svid, why) in bad_svids(&s.ca) {
        let (cert, key) = svid.unwrap_or_else(|e| panic!("{case}: {e}"));
        let c = Client::new(&cert, &key, &s.ca.cert_pem, SIDECAR_ID);
        let r = call(&c, addr, 1, "echo", &[]).await;
        assert!(r.is_err(), "{case}: must be refused, got {r:?}");
        assert!(
            logs.wait_for(&["mTLS handshake refused", why]).await,
            "{case}: no log line saying {why:?} in {}",
            logs.text()
                .lines()
                .filter(|l| l.contains("refused"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // No certificate at all.
    let anon = Client::anonymous(&s.ca.cert_pem, SIDECAR_ID);
    assert!(
        call(&anon, addr, 1, "echo", &[]).await.is_err(),
        "no client certificate must be refused"
    );
    assert!(
        logs.wait_for(&["mTLS handshake refused", "peer sent no certificates"])
            .await
    );
    assert_eq!(s.upstream.posts(), 0, "nothing reached the upstream");
    let metrics = reqwest::get(format!("http://{}/metrics", s.proxy.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"portcullis_connections_total{mode="strict",outcome="rejected"} 10"#),
        "{metrics}"
    );
    s.proxy.shutdown().await;
}

#[tokio::test]
async fn permissive_mode_serves_plaintext_as_anonymous() {
    let s = setup("permissive", "permissive").await;
    let addr = s.proxy.proxy_addr;
    let url = format!("http://{addr}/mcp");
    let plain = modern_call(&url, 1, "delete_file", json!({"path": "/x"}))
        .send()
        .await
        .unwrap();
    let msgs = messages(&plain.text().await.unwrap());
    assert_eq!(
        msgs[0]["error"]["code"], -32051,
        "anonymous callers are not the allowed agent"
    );
    let over_tls = call(&client(&s, ALLOWED), addr, 2, "delete_file", &[])
        .await
        .unwrap();
    assert!(over_tls["result"].is_object(), "{over_tls}");
    let metrics = reqwest::get(format!("http://{}/metrics", s.proxy.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"portcullis_connections_total{mode="permissive",outcome="plaintext"}"#)
    );
    assert!(metrics.contains(r#"portcullis_connections_total{mode="permissive",outcome="mtls"} 1"#));
    assert!(metrics.contains("portcullis_svid_expiry_seconds"));
    s.proxy.shutdown().await;
}

#[tokio::test]
async fn strict_mode_refuses_plaintext() {
    let s = setup("strict-plain", "strict").await;
    let url = format!("http://{}/mcp", s.proxy.proxy_addr);
    assert!(modern_call(&url, 1, "echo", json!({"text": "x"}))
        .send()
        .await
        .is_err());
    assert_eq!(s.upstream.posts(), 0);
    s.proxy.shutdown().await;
}

#[tokio::test]
async fn rotation_under_load_loses_nothing() {
    let s = setup("rotation", "strict").await;
    let addr = s.proxy.proxy_addr;
    let c = std::sync::Arc::new(client(&s, ALLOWED));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4u64 {
        let (c, stop) = (c.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut id) = (0u32, Vec::new(), w * 100_000);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                id += 1;
                match call(&c, addr, id, "echo", &[]).await {
                    Ok(m) if m["result"].is_object() => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        }));
    }
    // Rotate the sidecar's SVID three times while calls run.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        write_svid(&s.dir, &s.ca, SIDECAR_ID);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for w in workers {
        let (o, f) = w.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} failed calls during rotation: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(ok > 20, "too few calls to mean anything: {ok}");
    s.proxy.shutdown().await;
}

#[tokio::test]
async fn workload_api_source_follows_streamed_rotations() {
    let ca = ca(TD);
    let dir = dir("workload-api");
    let socket = dir.join("agent.sock");
    let (cert, key) = ca.issue(SIDECAR_ID, Duration::from_secs(3600)).unwrap();
    let agent = workload_api::Agent::start(
        &socket,
        workload_api::response(SIDECAR_ID, &cert, &key, &ca.cert_pem),
    )
    .await;
    let upstream = Upstream::start();
    let identity = format!(
        "identity:\n  mode: strict\n  trust_domains: [{TD}]\n  source:\n    workload_api:\n      socket: unix://{}\n",
        socket.display()
    );
    let proxy = portcullis::start(config(upstream.addr, POLICY, &identity))
        .await
        .unwrap();
    let (c_cert, c_key) = ca.issue(ALLOWED, Duration::from_secs(3600)).unwrap();
    let expects_v1 = Client::new(&c_cert, &c_key, &ca.cert_pem, SIDECAR_ID);
    assert!(call(&expects_v1, proxy.proxy_addr, 1, "echo", &[])
        .await
        .unwrap()["result"]
        .is_object());

    // The agent rotates the sidecar to a new SVID (here with a new ID, so
    // that clients can tell which one they were shown).
    let v2 = "spiffe://demo.local/ns/mcp/sa/portcullis-v2";
    let (cert2, key2) = ca.issue(v2, Duration::from_secs(3600)).unwrap();
    agent.rotate(workload_api::response(v2, &cert2, &key2, &ca.cert_pem));
    let expects_v2 = Client::new(&c_cert, &c_key, &ca.cert_pem, v2);
    let mut rotated = false;
    for id in 2..100 {
        if call(&expects_v2, proxy.proxy_addr, id, "echo", &[])
            .await
            .is_ok()
        {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rotated, "new handshakes must present the rotated SVID");
    assert!(
        call(&expects_v1, proxy.proxy_addr, 200, "echo", &[])
            .await
            .is_err(),
        "the old SVID is no longer served"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn outbound_mtls_to_a_remote_backend_checks_its_spiffe_id() {
    let ca = ca(TD);
    let backend_id = "spiffe://demo.local/ns/tools/sa/backend";
    let front_id = "spiffe://demo.local/ns/agents/sa/front-sidecar";
    let (b_dir, f_dir) = (dir("backend"), dir("front"));
    write_svid(&b_dir, &ca, backend_id);
    write_svid(&f_dir, &ca, front_id);
    let upstream = Upstream::start();
    // The remote backend: a strict sidecar in front of the MCP server.
    let backend = portcullis::start(config(
        upstream.addr,
        "rules: []",
        &identity_yaml(&b_dir, "strict", "1s"),
    ))
    .await
    .unwrap();
    let front_config = |server_ids: &str| {
        let yaml = format!(
            "listener: {{addr: '127.0.0.1:0'}}\nadmin: {{addr: '127.0.0.1:0'}}\nupstream:\n  url: https://127.0.0.1:{}\n  server_ids: [{server_ids}]\n{}",
            backend.proxy_addr.port(),
            identity_yaml(&f_dir, "permissive", "1s")
        );
        portcullis::Config::from_yaml(&yaml).unwrap()
    };
    let front = portcullis::start(front_config(backend_id)).await.unwrap();
    let url = mcp_url(&front);
    let ok = modern_call(&url, 1, "echo", json!({"text": "across the mesh"}))
        .send()
        .await
        .unwrap();
    let body = ok.text().await.unwrap();
    assert!(body.contains("across the mesh"), "{body}");
    assert_eq!(
        upstream
            .callers
            .lock()
            .unwrap()
            .last()
            .cloned()
            .flatten()
            .as_deref(),
        Some(front_id),
        "the backend saw the front sidecar's verified ID"
    );

    // A front sidecar that expects another server ID refuses the backend.
    let wary = portcullis::start(front_config("spiffe://demo.local/ns/tools/sa/someone-else"))
        .await
        .unwrap();
    let refused = modern_call(&mcp_url(&wary), 2, "echo", json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 502);
    let msgs = messages(&refused.text().await.unwrap());
    assert_eq!(msgs[0]["error"]["code"], -32052);
    assert!(
        msgs[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not one of the expected SPIFFE IDs"),
        "{}",
        msgs[0]
    );
    for p in [wary, front, backend] {
        p.shutdown().await;
    }
}

/// An upstream that creates a task for every `tools/call` and answers
/// `tasks/get` for any id, its answers sent either with a length, in one
/// write, or chunked in two writes a moment apart.
async fn task_upstream(chunked: bool) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < end + 4 + length {
                        let mut chunk = [0u8; 4096];
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: serde_json::Value =
                        serde_json::from_slice(&buf[end + 4..end + 4 + length]).unwrap();
                    buf.drain(..end + 4 + length);
                    let answer = |msg: &serde_json::Value| match msg["method"].as_str() {
                        Some("tools/call") => json!({"jsonrpc": "2.0", "id": msg["id"],
                            "result": {"task": {"taskId": "t-1", "status": "working"}}}),
                        _ => json!({"jsonrpc": "2.0", "id": msg["id"],
                            "result": {"taskId": msg["params"]["taskId"], "status": "working"}}),
                    };
                    let answer = match body.as_array() {
                        Some(batch) => batch.iter().map(answer).collect(),
                        None => answer(&body),
                    }
                    .to_string();
                    let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n";
                    if chunked {
                        let (a, b) = answer.split_at(answer.len() / 2);
                        let first = format!(
                            "{ok}transfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n",
                            a.len()
                        );
                        let _ = tcp.write_all(first.as_bytes()).await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let rest = format!("{:x}\r\n{b}\r\n0\r\n\r\n", b.len());
                        let _ = tcp.write_all(rest.as_bytes()).await;
                    } else {
                        let whole = format!("{ok}content-length: {}\r\n\r\n{answer}", answer.len());
                        let _ = tcp.write_all(whole.as_bytes()).await;
                    }
                }
            });
        }
    });
    addr
}

/// A `tools/call` answer passes through unread when no result hook is in
/// force, but the task it creates is still tied to its caller: another
/// caller's `tasks/get` for it is denied, its creator's is not. Whether
/// the answer comes with a length (read in place, the frame known to be
/// the last) or chunked (read once it may be complete), and when the call
/// came in a 2025-03-26 batch (whose answer is then read whole).
#[tokio::test]
async fn a_task_created_in_a_passed_through_answer_belongs_to_its_caller() {
    for (chunked, batch) in [(false, false), (true, false), (false, true), (true, true)] {
        let ca = ca(TD);
        let dir = dir(&format!("task-sniff-{chunked}-{batch}"));
        write_svid(&dir, &ca, SIDECAR_ID);
        let upstream = task_upstream(chunked).await;
        let proxy = portcullis::start(config(
            upstream,
            "default: allow\n",
            &identity_yaml(&dir, "strict", "100ms"),
        ))
        .await
        .unwrap();
        let addr = proxy.proxy_addr;
        let issue = |id: &str| {
            let (cert, key) = ca.issue(id, Duration::from_secs(3600)).unwrap();
            Client::new(&cert, &key, &ca.cert_pem, SIDECAR_ID)
        };
        let (owner, other) = (issue(ALLOWED), issue(DENIED));
        let created = match batch {
            false => call(&owner, addr, 1, "echo", &[]).await.unwrap(),
            true => {
                let body = json!([{"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": "t"}}}]);
                let version = [("mcp-protocol-version", "2025-03-26")];
                let (_, text) = owner.post(addr, &body.to_string(), &version).await.unwrap();
                messages(&text).into_iter().find(|m| m["id"] == 1).unwrap()
            }
        };
        assert_eq!(created["result"]["task"]["taskId"], "t-1", "{created}");
        let get = |id: u64| {
            let body = json!({"jsonrpc": "2.0", "id": id, "method": "tasks/get",
                "params": {"taskId": "t-1", "_meta": modern_meta()}});
            body.to_string()
        };
        let headers = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tasks/get"),
            ("mcp-name", "t-1"),
        ];
        let (_, text) = other.post(addr, &get(2), &headers).await.unwrap();
        let denied = &messages(&text)[0];
        assert_eq!(
            denied["error"]["data"]["by"], "task-owner",
            "chunked {chunked}, batch {batch}: {text}"
        );
        let (_, text) = owner.post(addr, &get(3), &headers).await.unwrap();
        let allowed = &messages(&text)[0];
        assert_eq!(
            allowed["result"]["status"], "working",
            "chunked {chunked}, batch {batch}: {text}"
        );
        proxy.shutdown().await;
    }
}
