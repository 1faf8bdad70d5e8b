//! Sessions shared by replicas through a real `redis-server` (started by
//! the test on a free loopback port): a session issued by one replica is
//! served and rebound by another, `DELETE` on one revokes it on all, Redis
//! holds nothing a client could present, and Redis down falls back to each
//! replica's memory (or refuses, with `failure: closed`).
//!
//! `redis-server` must be installed (`make unit` installs it).

mod support;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use portcullis::Running;
use serde_json::Value;
use support::{
    sessions::{echoed, initialize, metrics},
    Upstream,
};

async fn echo(url: &str, sid: &str, n: u64) -> (u16, Vec<Value>) {
    let (status, msgs, _) = support::sessions::echo(url, sid, n).await;
    (status, msgs)
}

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    fn start_on(port: u16) -> Self {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (install it: make unit does)");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self { port, child };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start on {port}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pc-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("keyring.yaml"),
        format!("keys:\n  - {{kid: k1, key_b64: \"{KEY}\", state: primary}}\n"),
    )
    .unwrap();
    d
}

async fn replica(upstream: &Upstream, dir: &Path, redis: &str, failure: &str) -> Running {
    let extra = format!(
        "sessions:\n  keyring_file: {}\n  store: {{url: \"{redis}\", failure: {failure}}}\n",
        dir.join("keyring.yaml").display()
    );
    portcullis::start(support::config(upstream.addr, support::DENY_DELETE, &extra))
        .await
        .unwrap()
}

/// Two sidecars, each in front of its own server (two pods), sharing Redis.
#[tokio::test]
async fn a_session_issued_by_one_replica_is_served_and_rebound_by_another() {
    let redis = Redis::start();
    let d = dir("replicas");
    let (up_a, up_b) = (Upstream::start(), Upstream::start());
    let a = replica(&up_a, &d, &redis.url(), "open").await;
    let b = replica(&up_b, &d, &redis.url(), "open").await;
    let (url_a, url_b) = (support::mcp_url(&a), support::mcp_url(&b));
    let sid = initialize(&url_a, None).await;
    let (status, msgs) = echo(&url_a, &sid, 1).await;
    assert_eq!(status, 200);
    assert!(echoed(&msgs, 1));

    // Replica A goes away; the client goes on through B, whose server has
    // never seen the session: B rebinds it from the record A wrote.
    a.shutdown().await;
    let before = up_b.posts();
    let (status, msgs) = echo(&url_b, &sid, 2).await;
    assert_eq!(status, 200, "{msgs:?}");
    assert!(echoed(&msgs, 2), "{msgs:?}");
    let heads = up_b.heads.lock().unwrap().clone();
    // The old id (404), initialize without an id, initialized, the call.
    assert_eq!(up_b.posts() - before, 4);
    assert!(heads[1].get("mcp-session-id").is_none());
    let text = metrics(&b).await;
    assert!(
        text.contains(
            "portcullis_session_rebinds_total{outcome=\"ok\",reason=\"upstream_lost\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("portcullis_store_up 1"));
    // And again, now on B's own binding: no rebind.
    let (status, msgs) = echo(&url_b, &sid, 3).await;
    assert_eq!(status, 200);
    assert!(echoed(&msgs, 3));
    assert_eq!(up_b.posts() - before, 5);
    b.shutdown().await;
}

#[tokio::test]
async fn delete_on_one_replica_ends_the_session_on_all_and_redis_holds_no_usable_id() {
    let redis = Redis::start();
    let d = dir("revoke");
    let (up_a, up_b) = (Upstream::start(), Upstream::start());
    let a = replica(&up_a, &d, &redis.url(), "open").await;
    let b = replica(&up_b, &d, &redis.url(), "open").await;
    let (url_a, url_b) = (support::mcp_url(&a), support::mcp_url(&b));
    let sid = initialize(&url_a, None).await;
    assert_eq!(echo(&url_b, &sid, 1).await.0, 200, "B serves it first");

    // What an attacker with a dump of Redis sees: no token, no handle, no
    // upstream session id in clear.
    let upstream_sid = up_a.heads.lock().unwrap()[1]["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let keys = redis.cli(&["--scan", "--pattern", "pc:*"]);
    assert!(keys.contains("pc:s:"), "{keys}");
    for key in keys.lines() {
        let value = redis.cli(&["GET", key]);
        assert!(
            !value.contains(&upstream_sid),
            "{key} holds the upstream id"
        );
        assert!(!value.contains(&sid) && !sid.contains(value.trim()));
    }

    let resp = support::tls_client()
        .delete(&url_a)
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let before = up_b.posts();
    let (status, msgs) = echo(&url_b, &sid, 2).await;
    assert_eq!(status, 404, "{msgs:?}");
    assert_eq!(msgs[0]["error"]["code"], -32001);
    assert_eq!(up_b.posts(), before, "nothing forwarded");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn with_redis_down_a_replica_serves_from_memory_or_refuses_when_told() {
    let redis = Redis::start();
    let port = redis.port;
    let url = redis.url();
    let d = dir("down");
    let (up_open, up_closed) = (Upstream::start(), Upstream::start());
    let open = replica(&up_open, &d, &url, "open").await;
    let closed = replica(&up_closed, &d, &url, "closed").await;
    let sid_open = initialize(&support::mcp_url(&open), None).await;
    let sid_closed = initialize(&support::mcp_url(&closed), None).await;

    redis.stop();
    let (status, msgs) = echo(&support::mcp_url(&open), &sid_open, 1).await;
    assert_eq!(status, 200, "{msgs:?}");
    assert!(echoed(&msgs, 1));
    assert!(metrics(&open).await.contains("portcullis_store_up 0"));
    let before = up_closed.posts();
    let (status, msgs) = echo(&support::mcp_url(&closed), &sid_closed, 2).await;
    assert_eq!(status, 503, "{msgs:?}");
    assert_eq!(up_closed.posts(), before);

    // Redis back (empty: it kept nothing): both serve again.
    let redis = Redis::start_on(port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ok = false;
    for n in 0..30 {
        if echo(&support::mcp_url(&closed), &sid_closed, 10 + n)
            .await
            .0
            == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "the closed replica serves again once Redis is back");
    assert_eq!(echo(&support::mcp_url(&open), &sid_open, 3).await.0, 200);
    open.shutdown().await;
    closed.shutdown().await;
    drop(redis);
}
