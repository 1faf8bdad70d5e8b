//! Sealed client-facing session ids and transparent rebind, end to end:
//! the real example server (rmcp, stateful) behind the real sidecar, killed
//! and started again on the same port as a crash and restart would.
//!
//! The SDK clients (Python and TypeScript) against a Python SDK server are
//! in `proxy/tests/sessions/run.sh`.

mod support;

use std::{path::PathBuf, time::Duration};

use portcullis::Running;
use serde_json::{json, Value};
use support::{
    sessions::{echo, echoed, initialize, metrics},
    Upstream,
};

const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const K2: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

fn keyring(dir: &std::path::Path, keys: &[(&str, &str, &str)]) -> PathBuf {
    let path = dir.join("keyring.yaml");
    let mut text = String::from("keys:\n");
    for (kid, key, state) in keys {
        text.push_str(&format!(
            "  - {{kid: {kid}, key_b64: \"{key}\", state: {state}}}\n"
        ));
    }
    // Written whole then renamed, as a Secret update is.
    let tmp = dir.join("keyring.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pc-sessions-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn proxy(upstream: &Upstream, dir: &std::path::Path) -> Running {
    let ring = keyring(dir, &[("k1", K1, "primary")]);
    let extra = format!(
        "sessions:\n  keyring_file: {}\n  keyring_reload_interval: 100ms\n",
        ring.display()
    );
    portcullis::start(support::config(upstream.addr, support::DENY_DELETE, &extra))
        .await
        .unwrap()
}

async fn metric(proxy: &Running, prefix: &str) -> f64 {
    let text = metrics(proxy).await;
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_session_survives_upstream_restarts() {
    let dir = tempdir("survive");
    let mut upstream = Upstream::start();
    let addr = upstream.addr;
    let proxy = proxy(&upstream, &dir).await;
    let url = support::mcp_url(&proxy);
    let sid = initialize(&url, None).await;

    // The client's id is Portcullis's sealed token, never the upstream's.
    assert!(sid.starts_with("pc1.k1."), "{sid}");
    let upstream_sid = upstream.heads.lock().unwrap()[1]["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(!sid.contains(&upstream_sid));

    let (status, msgs, returned) = echo(&url, &sid, 1).await;
    assert_eq!(status, 200);
    assert!(echoed(&msgs, 1), "{msgs:?}");
    assert!(returned.is_none() || returned.as_deref() == Some(sid.as_str()));

    let restarts = 5;
    for n in 0..restarts {
        upstream.kill();
        upstream = Upstream::start_on(addr);
        let (status, msgs, returned) = echo(&url, &sid, 10 + n).await;
        assert_eq!(status, 200, "after restart {n}: {msgs:?}");
        assert!(echoed(&msgs, 10 + n), "after restart {n}: {msgs:?}");
        assert!(returned.is_none() || returned.as_deref() == Some(sid.as_str()));
        // The new server saw: the call with the old id (404), initialize,
        // initialized, the call again.
        let heads = upstream.heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 4, "after restart {n}");
        assert!(
            heads[1].get("mcp-session-id").is_none(),
            "initialize carries no id"
        );
        let fresh = heads[3]["mcp-session-id"].to_str().unwrap();
        assert_ne!(fresh, upstream_sid);
        // The app's session key is the same across every rebind.
        assert_eq!(
            heads[0]["x-portcullis-session-key"],
            heads[3]["x-portcullis-session-key"]
        );
    }
    assert_eq!(
        metric(&proxy, "portcullis_session_rebinds_total{outcome=\"ok\"").await,
        f64::from(u32::try_from(restarts).unwrap())
    );
    assert_eq!(
        metric(&proxy, "portcullis_request_retries_total").await,
        f64::from(u32::try_from(restarts).unwrap())
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_request_sent_while_the_app_restarts_waits_for_it_in_a_new_session() {
    let dir = tempdir("incarnation");
    let upstream = Upstream::start();
    let addr = upstream.addr;
    let proxy = proxy(&upstream, &dir).await;
    let url = support::mcp_url(&proxy);
    let sid = initialize(&url, None).await;
    // A call first, so that the pool holds a connection the kill breaks.
    assert_eq!(echo(&url, &sid, 1).await.0, 200);
    upstream.kill();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The app comes back 700 ms later. The call is sent meanwhile: its
    // connection is refused (it never reached the app, so it is safe to
    // send again), Portcullis waits, and sends it once the app is back in
    // a new upstream session, initialized before the call goes.
    let back = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        Upstream::start_on(addr)
    });
    // A first request may meet the connection the dead app left in the
    // pool (not refused: it may have reached the app); a second is refused.
    let _ = echo(&url, &sid, 2).await;
    let (status, msgs, _) = echo(&url, &sid, 3).await;
    assert_eq!(status, 200, "{msgs:?}");
    assert!(echoed(&msgs, 3));
    let upstream = back.await.unwrap();
    let heads = upstream.heads.lock().unwrap().clone();
    let calls: Vec<_> = heads
        .iter()
        .map(|h| h.get("mcp-session-id").is_some())
        .collect();
    // initialize (no id), initialized, then calls: the old id never
    // reached the new process.
    assert!(!calls[0] && calls[1..].iter().all(|c| *c), "{calls:?}");
    let text = metrics(&proxy).await;
    assert!(
        text.contains("portcullis_session_rebinds_total{outcome=\"ok\",reason=\"incarnation\"} 1"),
        "{}",
        text.lines()
            .filter(|l| l.contains("session"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    proxy.shutdown().await;
}

/// Every way an id can be wrong gets the same 404, and nothing is sent.
#[tokio::test]
async fn a_bad_session_id_is_404_and_never_forwarded() {
    let dir = tempdir("reject");
    let upstream = Upstream::start();
    let proxy = proxy(&upstream, &dir).await;
    let url = support::mcp_url(&proxy);
    let sid = initialize(&url, None).await;
    let upstream_sid = upstream.heads.lock().unwrap()[1]["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut flipped = sid.clone().into_bytes();
    let i = flipped.len() - 10;
    flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let cases = [
        ("tampered", flipped),
        ("the upstream's own id", upstream_sid),
        ("unknown key", sid.replacen("pc1.k1.", "pc1.k9.", 1)),
        ("not a token", "3f2a7c1e-0000-4000-8000-000000000000".into()),
        ("too long", format!("pc1.k1.{}", "A".repeat(2000))),
    ];
    let before = upstream.posts();
    let mut bodies = Vec::new();
    for (what, id) in &cases {
        let (status, msgs, _) = echo(&url, id, 7).await;
        assert_eq!(status, 404, "{what}");
        assert_eq!(msgs[0]["error"]["code"], -32001, "{what}: {msgs:?}");
        bodies.push(msgs);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "one answer for all: {bodies:?}"
    );
    assert_eq!(upstream.posts(), before, "nothing reached the upstream");
    assert!(metric(&proxy, "portcullis_sid_reject_total").await >= cases.len() as f64);
    proxy.shutdown().await;
}

#[tokio::test]
async fn initialize_with_an_old_id_gets_a_fresh_one_and_delete_revokes() {
    let dir = tempdir("fixation");
    let upstream = Upstream::start();
    let proxy = proxy(&upstream, &dir).await;
    let url = support::mcp_url(&proxy);
    let first = initialize(&url, None).await;
    let planted = initialize(&url, Some(&first)).await;
    assert_ne!(planted, first);
    let chosen = initialize(&url, Some("attacker-chosen")).await;
    assert!(chosen.starts_with("pc1."));
    // The initialize that carried an id was sent without it.
    assert!(upstream.heads.lock().unwrap()[2]
        .get("mcp-session-id")
        .is_none());

    let resp = support::tls_client()
        .delete(&url)
        .header("mcp-session-id", &first)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let before = upstream.posts();
    let (status, _, _) = echo(&url, &first, 3).await;
    assert_eq!(status, 404);
    assert_eq!(upstream.posts(), before);
    // Other sessions are untouched.
    let (status, msgs, _) = echo(&url, &planted, 4).await;
    assert_eq!(status, 200);
    assert!(echoed(&msgs, 4));
    proxy.shutdown().await;
}

#[tokio::test]
async fn keys_rotate_without_a_restart_and_a_retired_key_ends_its_sessions() {
    let dir = tempdir("rotate");
    let upstream = Upstream::start();
    let proxy = proxy(&upstream, &dir).await;
    let url = support::mcp_url(&proxy);
    let old = initialize(&url, None).await;

    // Phase 1+2: a new primary, the old key kept for decryption.
    keyring(&dir, &[("k2", K2, "primary"), ("k1", K1, "decrypt-only")]);
    let identity = || async {
        reqwest::get(format!("http://{}/identity", proxy.admin_addr))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let mut new = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        new = initialize(&url, None).await;
        if new.starts_with("pc1.k2.") {
            break;
        }
    }
    assert!(new.starts_with("pc1.k2."), "{new}");
    // The keys in force, as an operator watching the rotation sees them.
    assert_eq!(
        identity().await["session_keys"],
        json!([{"kid": "k2", "state": "Primary"}, {"kid": "k1", "state": "DecryptOnly"}])
    );
    assert!(!identity().await.to_string().contains(K2), "never the key");
    assert_eq!(echo(&url, &old, 1).await.0, 200, "old sessions go on");
    assert_eq!(echo(&url, &new, 2).await.0, 200);

    // Phase 3: the old key retired.
    keyring(&dir, &[("k2", K2, "primary"), ("k1", K1, "retired")]);
    let mut status = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = echo(&url, &old, 3).await.0;
        if status == 404 {
            break;
        }
    }
    assert_eq!(status, 404);
    assert_eq!(echo(&url, &new, 4).await.0, 200);

    // A broken keyring file keeps the keys in force.
    std::fs::write(dir.join("keyring.yaml"), "keys: [oops").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(echo(&url, &new, 5).await.0, 200);
    proxy.shutdown().await;
}

#[tokio::test]
async fn without_a_keyring_the_sidecar_does_not_start() {
    let upstream = Upstream::start();
    let extra = "sessions:\n  keyring_file: /nonexistent/keyring.yaml\n";
    let err = portcullis::start(support::config(upstream.addr, support::DENY_DELETE, extra))
        .await
        .err()
        .expect("no key, no start");
    assert!(err.to_string().contains("keyring"), "{err}");
}

#[tokio::test]
async fn audit_records_name_a_session_without_its_id() {
    let logs = support::logs::capture();
    let dir = tempdir("audit");
    let upstream = Upstream::start();
    let proxy = proxy(&upstream, &dir).await;
    let url = support::mcp_url(&proxy);
    let sid = initialize(&url, None).await;
    let (status, _, _) = echo(&url, &sid, 1).await;
    assert_eq!(status, 200);
    assert!(
        logs.wait_for(&["portcullis::audit", "tools/call", "session=\"s-"])
            .await,
        "{}",
        logs.text()
    );
    assert!(!logs.text().contains(&sid), "the sealed id was logged");
    proxy.shutdown().await;
}

async fn set_level(url: &str, sid: &str, level: &str) -> u16 {
    let body =
        json!({"jsonrpc":"2.0","id":"lvl","method":"logging/setLevel","params":{"level":level}});
    let resp = support::post(url)
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let _ = resp.text().await;
    status
}

/// What a rebind replays is what the upstream accepted: a message a policy
/// denied is never recorded, so a rebind cannot send it past the policy.
#[tokio::test]
async fn a_rebind_replays_only_what_the_policy_let_through() {
    for (policy, replayed) in [
        (
            "default: allow\nrules:\n  - {name: no-levels, action: deny, methods: [\"logging/setLevel\"], reason: no}\n",
            false,
        ),
        ("default: allow\nrules: []\n", true),
    ] {
        let dir = tempdir(if replayed { "replay-allowed" } else { "replay-denied" });
        let mut upstream = Upstream::start();
        let addr = upstream.addr;
        let ring = keyring(&dir, &[("k1", K1, "primary")]);
        let extra = format!("sessions:\n  keyring_file: {}\n", ring.display());
        let proxy = portcullis::start(support::config(addr, policy, &extra))
            .await
            .unwrap();
        let url = support::mcp_url(&proxy);
        let sid = initialize(&url, None).await;
        assert_eq!(set_level(&url, &sid, "debug").await, 200);
        if !replayed {
            // In a batch too (2025-03-26): the denied entry is answered by
            // Portcullis, the rest forwarded; nothing of it is recorded.
            let batch = json!([
                {"jsonrpc":"2.0","id":"b1","method":"logging/setLevel","params":{"level":"debug"}},
                {"jsonrpc":"2.0","id":"b2","method":"ping"}
            ]);
            let resp = support::post(&url)
                .header("mcp-session-id", &sid)
                .header("mcp-protocol-version", "2025-03-26")
                .body(batch.to_string())
                .send()
                .await
                .unwrap();
            // (The example server refuses batches; what matters is that
            // the denied entry is not replayed below.)
            let _ = resp.text().await.unwrap();
        }
        upstream.kill();
        upstream = Upstream::start_on(addr);
        let (status, msgs, _) = echo(&url, &sid, 1).await;
        assert_eq!(status, 200, "{msgs:?}");
        // The old id (404), initialize, initialized, [setLevel], the call.
        let heads = upstream.heads.lock().unwrap().len();
        assert_eq!(heads, if replayed { 5 } else { 4 }, "replayed: {replayed}");
        proxy.shutdown().await;
    }
}
