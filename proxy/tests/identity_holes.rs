//! Regression tests for the identity and policy-pattern holes of issue 13,
//! with certificates minted here (rcgen) independently of the dev CA, and
//! real mTLS handshakes through the sidecar's listener:
//!
//! - `*` in caller and server-ID patterns stays within one path segment;
//! - a trust-domain-only SPIFFE ID is not an SVID;
//! - an intermediate must be a CA with keyCertSign;
//! - an expired (or not yet valid) root in a bundle anchors nothing;
//! - a root whose URI name constraints permit the trust domain is usable,
//!   and one whose constraints exclude it is not.

mod support;

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde_json::json;
use support::{logs, pki::*, *};
use time::OffsetDateTime;

/// A CA minted for one test: its PEM and what signs with it.
struct Authority {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// PEMs of the intermediates between this CA and the root, nearest first.
    chain: String,
}

fn ca_params(name: &str, tweak: impl FnOnce(&mut CertificateParams)) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.subject_alt_names = vec![SanType::URI(format!("spiffe://{TD}").try_into().unwrap())];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(1);
    tweak(&mut p);
    p
}

fn root(name: &str, tweak: impl FnOnce(&mut CertificateParams)) -> Authority {
    let key = KeyPair::generate().unwrap();
    let params = ca_params(name, tweak);
    let cert = params.self_signed(&key).unwrap();
    Authority {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
        chain: String::new(),
    }
}

fn intermediate(
    parent: &Authority,
    name: &str,
    tweak: impl FnOnce(&mut CertificateParams),
) -> Authority {
    let key = KeyPair::generate().unwrap();
    let params = ca_params(name, tweak);
    let cert = params.signed_by(&key, &parent.issuer).unwrap();
    Authority {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
        chain: format!("{}{}", cert.pem(), parent.chain),
    }
}

/// A well-formed SVID for `id` under `ca`: (chain PEM, leaf first; key PEM).
fn leaf(ca: &Authority, id: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let cert = params(id).signed_by(&key, &ca.issuer).unwrap();
    (format!("{}{}", cert.pem(), ca.chain), key.serialize_pem())
}

/// The sidecar, with its own SVID from `ca` and `bundle` as trust bundle.
async fn sidecar(
    name: &str,
    ca: &Authority,
    bundle: &str,
    policy: &str,
) -> (Upstream, portcullis::Running, std::path::PathBuf) {
    let dir = dir(name);
    let (cert, key) = leaf(ca, SIDECAR_ID);
    write_pem(&dir, &cert, &key, bundle);
    let upstream = Upstream::start();
    let proxy = portcullis::start(config(
        upstream.addr,
        policy,
        &identity_yaml(&dir, "strict", "1s"),
    ))
    .await
    .unwrap();
    (upstream, proxy, dir)
}

/// One `tools/call` over mTLS: the JSON-RPC answer, or why it failed.
async fn call(
    c: &Client,
    addr: std::net::SocketAddr,
    tool: &str,
) -> Result<serde_json::Value, String> {
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": tool, "arguments": {"path": "/x", "text": "t"}, "_meta": modern_meta()}});
    let headers = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", tool),
    ];
    let (_, text) = c.post(addr, &body.to_string(), &headers).await?;
    messages(&text)
        .into_iter()
        .find(|m| m["id"] == 7)
        .ok_or(text)
}

fn client(ca: &Authority, id: &str, bundle: &str) -> Client {
    let (cert, key) = leaf(ca, id);
    Client::new(&cert, &key, bundle, SIDECAR_ID)
}

async fn refused_with(
    logs: &logs::Logs,
    r: Result<serde_json::Value, String>,
    case: &str,
    why: &str,
) {
    assert!(r.is_err(), "{case}: must be refused, got {r:?}");
    assert!(
        logs.wait_for(&["mTLS handshake refused", why]).await,
        "{case}: no log line saying {why:?} in:\n{}",
        logs.text()
            .lines()
            .filter(|l| l.contains("refused"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// --- 1. `*` stays within one segment -------------------------------------

const READER_POLICY: &str = r#"
default: allow
rules:
  - name: readers-delete
    action: allow
    methods: ["tools/call"]
    names: ["delete_*"]
    callers: ["spiffe://demo.local/ns/*/sa/reader", "spiffe://demo.local/team/**"]
  - name: nobody-else-deletes
    action: deny
    methods: ["tools/call"]
    names: ["delete_*"]
"#;

#[tokio::test]
async fn caller_star_does_not_cross_segments() {
    let ca = root("td root", |_| {});
    let (_up, proxy, _dir) = sidecar("holes-star", &ca, &ca.pem, READER_POLICY).await;
    let addr = proxy.proxy_addr;
    for (id, allowed) in [
        ("spiffe://demo.local/ns/a/sa/reader", true),
        ("spiffe://demo.local/team/x/y/z", true),
        ("spiffe://demo.local/ns/a/b/sa/reader", false),
        ("spiffe://demo.local/ns/evil/sa/x/sa/reader", false),
        ("spiffe://demo.local/ns/a/sa/reader/sa/reader", false),
        ("spiffe://demo.local/ns/a/sa/x/ns/b/sa/reader", false),
    ] {
        let answer = call(&client(&ca, id, &ca.pem), addr, "delete_file")
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        if allowed {
            assert!(
                answer["result"].is_object(),
                "{id} must be allowed: {answer}"
            );
        } else {
            assert_eq!(
                answer["error"]["code"], -32051,
                "{id} must be denied: {answer}"
            );
            assert_eq!(answer["error"]["data"]["by"], "static:nobody-else-deletes");
        }
    }
    proxy.shutdown().await;
}

/// The same matcher checks a remote server's SPIFFE ID
/// (`upstream.server_ids`); the sidecar's own verifier plays the client.
#[tokio::test]
async fn server_id_star_does_not_cross_segments() {
    let ca = root("td root", |_| {});
    let (_up, proxy, _dir) = sidecar("holes-server-id", &ca, &ca.pem, "rules: []").await;
    let addr = proxy.proxy_addr;
    let (cert, key) = leaf(&ca, "spiffe://demo.local/ns/agents/sa/a");
    // SIDECAR_ID is spiffe://demo.local/ns/mcp/sa/portcullis.
    for (expected, ok) in [
        ("spiffe://demo.local/ns/*/sa/portcullis", true),
        ("spiffe://demo.local/**/portcullis", true),
        ("spiffe://demo.local/*", false),
        ("spiffe://demo.local/*/portcullis", false),
        ("spiffe://demo.local/ns/*/portcullis", false),
        ("spiffe://*/portcullis", false),
    ] {
        let c = Client::new(&cert, &key, &ca.pem, expected);
        let r = call(&c, addr, "echo").await;
        assert_eq!(r.is_ok(), ok, "expected {expected}: {r:?}");
        if !ok {
            assert!(
                r.unwrap_err()
                    .contains("not one of the expected SPIFFE IDs"),
                "{expected}"
            );
        }
    }
    proxy.shutdown().await;
}

// --- 2. trust-domain-only IDs are not SVIDs ------------------------------

#[tokio::test]
async fn trust_domain_only_ids_are_refused_as_peers() {
    let logs = logs::capture();
    let ca = root("td root", |_| {});
    let (up, proxy, _dir) = sidecar("holes-td-only", &ca, &ca.pem, "rules: []").await;
    for (id, why) in [
        ("spiffe://demo.local", "has no path"),
        ("spiffe://demo.local/", "is not a valid SPIFFE ID"),
    ] {
        let key = KeyPair::generate().unwrap();
        let mut p = params("spiffe://demo.local/placeholder");
        p.subject_alt_names = vec![SanType::URI(id.to_string().try_into().unwrap())];
        let cert = p.signed_by(&key, &ca.issuer).unwrap();
        let c = Client::new(&cert.pem(), &key.serialize_pem(), &ca.pem, SIDECAR_ID);
        refused_with(&logs, call(&c, proxy.proxy_addr, "echo").await, id, why).await;
    }
    assert_eq!(up.posts(), 0);
    proxy.shutdown().await;
}

/// A sidecar whose own SVID names only the trust domain must not start
/// (files source), nor serve it if it arrives later.
#[tokio::test]
async fn trust_domain_only_own_svid_is_refused() {
    let ca = root("td root", |_| {});
    let dir = dir("holes-td-only-own");
    let key = KeyPair::generate().unwrap();
    let mut p = params("spiffe://demo.local/placeholder");
    p.subject_alt_names = vec![SanType::URI(format!("spiffe://{TD}").try_into().unwrap())];
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    write_pem(&dir, &cert.pem(), &key.serialize_pem(), &ca.pem);
    let upstream = Upstream::start();
    let started = portcullis::start(config(
        upstream.addr,
        "rules: []",
        &identity_yaml(&dir, "strict", "1s"),
    ))
    .await;
    let err = match started {
        Ok(p) => {
            p.shutdown().await;
            panic!("a trust-domain-only SVID must refuse start-up");
        }
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("has no path"), "{err}");
}

// --- 3. intermediates must be CAs allowed to sign certificates ----------

fn usages(u: &[KeyUsagePurpose]) -> impl FnOnce(&mut CertificateParams) + '_ {
    move |p| p.key_usages = u.to_vec()
}

#[tokio::test]
async fn intermediates_need_ca_and_key_cert_sign() {
    let logs = logs::capture();
    let ca = root("td root", |_| {});
    let (up, proxy, _dir) = sidecar("holes-intermediate", &ca, &ca.pem, "rules: []").await;
    let addr = proxy.proxy_addr;
    use KeyUsagePurpose::*;
    let good = intermediate(&ca, "good", |_| {});
    let ok = call(
        &client(&good, "spiffe://demo.local/ns/a/sa/ok", &ca.pem),
        addr,
        "echo",
    )
    .await;
    assert!(
        ok.unwrap()["result"].is_object(),
        "a proper intermediate works"
    );
    let deep = intermediate(&good, "deeper", |_| {});
    let ok = call(
        &client(&deep, "spiffe://demo.local/ns/a/sa/ok2", &ca.pem),
        addr,
        "echo",
    )
    .await;
    assert!(
        ok.unwrap()["result"].is_object(),
        "two proper intermediates work"
    );

    let cases: Vec<(&str, Authority, &str)> = vec![
        (
            "digitalSignature only",
            intermediate(&ca, "ds", usages(&[DigitalSignature])),
            "keyCertSign",
        ),
        (
            "cRLSign only",
            intermediate(&ca, "crl", usages(&[CrlSign])),
            "keyCertSign",
        ),
        (
            "no key usage",
            intermediate(&ca, "none", usages(&[])),
            "key usage",
        ),
        (
            "bad one below a good one",
            intermediate(&good, "bad-low", usages(&[DigitalSignature])),
            "keyCertSign",
        ),
        (
            "good one below a bad one",
            intermediate(
                &intermediate(&ca, "bad-high", usages(&[DigitalSignature, CrlSign])),
                "good-low",
                |_| {},
            ),
            "keyCertSign",
        ),
        (
            "not a CA",
            intermediate(&ca, "noca", |p| p.is_ca = IsCa::ExplicitNoCa),
            "chain does not verify",
        ),
    ];
    for (case, bad, why) in cases {
        let c = client(&bad, "spiffe://demo.local/ns/a/sa/x", &ca.pem);
        refused_with(&logs, call(&c, addr, "echo").await, case, why).await;
    }
    assert_eq!(
        up.posts(),
        2,
        "only the two good chains reached the upstream"
    );
    proxy.shutdown().await;
}

/// Our checks run on each path webpki tries, not on the first one only: a
/// chain that carries, for the same CA key, a certificate without
/// keyCertSign and one with it is accepted through the proper one, and
/// refused when only the improper one is sent.
#[tokio::test]
async fn a_refused_candidate_path_lets_webpki_try_another() {
    let ca = root("td root", |_| {});
    let (up, proxy, _dir) = sidecar("holes-alt-path", &ca, &ca.pem, "rules: []").await;
    let key = KeyPair::generate().unwrap();
    let improper = ca_params("shared", usages(&[KeyUsagePurpose::DigitalSignature]))
        .signed_by(&key, &ca.issuer)
        .unwrap();
    let proper_params = ca_params("shared", |_| {});
    let proper = proper_params.signed_by(&key, &ca.issuer).unwrap();
    let shared = Authority {
        pem: proper.pem(),
        issuer: Issuer::new(proper_params, key),
        chain: String::new(),
    };
    let (leaf_pem, leaf_key) = leaf(&shared, "spiffe://demo.local/ns/a/sa/x");
    let addr = proxy.proxy_addr;
    let both = format!("{leaf_pem}{}{}", improper.pem(), proper.pem());
    let c = Client::new(&both, &leaf_key, &ca.pem, SIDECAR_ID);
    let r = call(&c, addr, "echo").await;
    assert!(r.unwrap()["result"].is_object(), "the proper path is found");
    let only_improper = format!("{leaf_pem}{}", improper.pem());
    let c = Client::new(&only_improper, &leaf_key, &ca.pem, SIDECAR_ID);
    assert!(call(&c, addr, "echo").await.is_err());
    assert_eq!(up.posts(), 1);
    proxy.shutdown().await;
}

/// The other direction: a server presenting a chain through an
/// intermediate without keyCertSign is refused by the client side.
#[tokio::test]
async fn server_chain_through_a_non_signing_intermediate_is_refused() {
    let ca = root("td root", |_| {});
    let bad = intermediate(&ca, "ds", usages(&[KeyUsagePurpose::DigitalSignature]));
    let (_up, proxy, _dir) = sidecar("holes-intermediate-out", &bad, &ca.pem, "rules: []").await;
    let c = client(&ca, "spiffe://demo.local/ns/a/sa/x", &ca.pem);
    let r = call(&c, proxy.proxy_addr, "echo").await;
    let err = r.expect_err("the server's chain must be refused");
    assert!(err.contains("keyCertSign"), "{err}");
    proxy.shutdown().await;
}

// --- 4. expired roots anchor nothing --------------------------------------

#[tokio::test]
async fn expired_or_future_roots_in_a_bundle_anchor_nothing() {
    let logs = logs::capture();
    let now = OffsetDateTime::now_utc();
    let valid = root("valid root", |_| {});
    let expired = root("expired root", |p| {
        p.not_before = now - time::Duration::days(30);
        p.not_after = now - time::Duration::days(1);
    });
    let future = root("future root", |p| {
        p.not_before = now + time::Duration::days(1);
        p.not_after = now + time::Duration::days(30);
    });
    let bundle = format!("{}{}{}", expired.pem, valid.pem, future.pem);
    let (up, proxy, _dir) = sidecar("holes-expired-root", &valid, &bundle, "rules: []").await;
    let addr = proxy.proxy_addr;
    let ok = call(
        &client(&valid, "spiffe://demo.local/ns/a/sa/ok", &valid.pem),
        addr,
        "echo",
    )
    .await;
    assert!(
        ok.unwrap()["result"].is_object(),
        "the valid root still anchors"
    );
    for (case, ca) in [("expired root", &expired), ("future root", &future)] {
        let c = client(ca, "spiffe://demo.local/ns/a/sa/x", &valid.pem);
        refused_with(
            &logs,
            call(&c, addr, "echo").await,
            case,
            "chain does not verify",
        )
        .await;
        // Through an intermediate of that root, too.
        let mid = intermediate(ca, "mid", |p| {
            p.not_before = now - time::Duration::hours(1);
            p.not_after = now + time::Duration::days(1);
        });
        let c = client(&mid, "spiffe://demo.local/ns/a/sa/y", &valid.pem);
        refused_with(
            &logs,
            call(&c, addr, "echo").await,
            case,
            "chain does not verify",
        )
        .await;
    }
    assert!(
        logs.wait_for(&["ignoring an expired trust bundle root", "expired root"])
            .await
            && logs.wait_for(&["not valid yet", "future root"]).await,
        "the expired and the future root must be logged"
    );
    assert_eq!(up.posts(), 1);
    proxy.shutdown().await;
}

/// A bundle with no unexpired root refuses start-up with a reason,
/// rather than starting and refusing every peer.
#[tokio::test]
async fn a_bundle_of_only_expired_roots_refuses_start_up() {
    let now = OffsetDateTime::now_utc();
    let ours = root("our root", |_| {});
    let expired = root("expired root", |p| {
        p.not_before = now - time::Duration::days(30);
        p.not_after = now - time::Duration::days(1);
    });
    let dir = dir("holes-only-expired");
    let (cert, key) = leaf(&ours, SIDECAR_ID);
    write_pem(&dir, &cert, &key, &expired.pem);
    let upstream = Upstream::start();
    let started = portcullis::start(config(
        upstream.addr,
        "rules: []",
        &identity_yaml(&dir, "strict", "1s"),
    ))
    .await;
    let err = match started {
        Ok(p) => {
            p.shutdown().await;
            panic!("a bundle without a valid root must refuse start-up");
        }
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("no unexpired root"), "{err}");
}

// --- 5. URI name constraints ----------------------------------------------

/// DER of a NameConstraints extension with URI subtrees (rcgen has no URI
/// form): `permitted` and `excluded` host constraints. An entry written
/// `dns:name` is a DNS subtree instead.
fn uri_name_constraints(permitted: &[&str], excluded: &[&str]) -> CustomExtension {
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        assert!(body.len() < 128, "short form only");
        let mut v = vec![tag, body.len() as u8];
        v.extend_from_slice(body);
        v
    }
    let subtrees = |tag: u8, hosts: &[&str]| -> Vec<u8> {
        if hosts.is_empty() {
            return vec![];
        }
        let inner: Vec<u8> = hosts
            .iter()
            .flat_map(|h| match h.strip_prefix("dns:") {
                Some(dns) => tlv(0x30, &tlv(0x82, dns.as_bytes())),
                None => tlv(0x30, &tlv(0x86, h.as_bytes())),
            })
            .collect();
        tlv(tag, &inner)
    };
    let mut body = subtrees(0xa0, permitted);
    body.extend(subtrees(0xa1, excluded));
    let mut ext = CustomExtension::from_oid_content(&[2, 5, 29, 30], tlv(0x30, &body));
    ext.set_criticality(true);
    ext
}

fn constrained_root(name: &str, permitted: &[&str], excluded: &[&str]) -> Authority {
    let ext = uri_name_constraints(permitted, excluded);
    root(name, move |p| p.custom_extensions.push(ext))
}

#[tokio::test]
async fn uri_name_constraints_on_a_root_are_honoured() {
    let logs = logs::capture();
    let ours = root("our root", |_| {});
    let permits = constrained_root("permits demo.local", &["demo.local"], &[]);
    let permits_sub = constrained_root("permits .demo.local", &[".demo.local"], &[]);
    let permits_other = constrained_root("permits other.local", &["other.local"], &[]);
    let excludes = constrained_root("excludes demo.local", &[], &["demo.local"]);
    let both = constrained_root("permits, then excludes", &["demo.local"], &["demo.local"]);
    let many = constrained_root(
        "permits one of two",
        &["other.local", "DEMO.local"],
        &["evil.local"],
    );
    // With a constraint of another form, the root's constraints stay with
    // webpki, which refuses the URI form: closed.
    let mixed = constrained_root("mixed", &["demo.local", "dns:demo.local"], &[]);
    let bundle: String = [
        &ours,
        &permits,
        &permits_sub,
        &permits_other,
        &excludes,
        &both,
        &many,
        &mixed,
    ]
    .iter()
    .map(|a| a.pem.as_str())
    .collect();
    let (up, proxy, _dir) = sidecar("holes-uri-nc", &ours, &bundle, "rules: []").await;
    let addr = proxy.proxy_addr;
    let id = "spiffe://demo.local/ns/a/sa/x";
    for ca in [&permits, &many] {
        let r = call(&client(ca, id, &ours.pem), addr, "echo").await;
        assert!(
            r.unwrap()["result"].is_object(),
            "a root permitting the trust domain works"
        );
    }
    let via = intermediate(&permits, "mid", |_| {});
    let r = call(&client(&via, id, &ours.pem), addr, "echo").await;
    assert!(
        r.unwrap()["result"].is_object(),
        "and so does its intermediate"
    );
    let ours_says = "outside the URI name constraints";
    for (case, ca, why) in [
        ("permits only subdomains", &permits_sub, ours_says),
        ("permits another domain", &permits_other, ours_says),
        ("excludes the domain", &excludes, ours_says),
        ("permits and excludes", &both, ours_says),
        ("URI and DNS constraints", &mixed, "NameConstraintViolation"),
    ] {
        let r = call(&client(ca, id, &ours.pem), addr, "echo").await;
        refused_with(&logs, r, case, why).await;
    }
    // An intermediate whose own SAN breaks the root's constraint.
    let stray = intermediate(&permits, "stray", |p| {
        p.subject_alt_names = vec![SanType::URI("spiffe://other.local".try_into().unwrap())];
    });
    let r = call(&client(&stray, id, &ours.pem), addr, "echo").await;
    refused_with(
        &logs,
        r,
        "intermediate outside the constraint",
        "name constraint",
    )
    .await;
    assert_eq!(up.posts(), 3);
    proxy.shutdown().await;
}

/// Constraints carried by an intermediate are processed by webpki, which
/// does not implement the URI form and refuses it: that stays closed.
#[tokio::test]
async fn uri_name_constraints_on_an_intermediate_fail_closed() {
    let logs = logs::capture();
    let ours = root("our root", |_| {});
    let ext = uri_name_constraints(&["demo.local"], &[]);
    let mid = intermediate(&ours, "constrained mid", move |p| {
        p.custom_extensions.push(ext)
    });
    let (up, proxy, _dir) = sidecar("holes-uri-nc-mid", &ours, &ours.pem, "rules: []").await;
    let r = call(
        &client(&mid, "spiffe://demo.local/ns/a/sa/x", &ours.pem),
        proxy.proxy_addr,
        "echo",
    )
    .await;
    refused_with(
        &logs,
        r,
        "constrained intermediate",
        "NameConstraintViolation",
    )
    .await;
    assert_eq!(up.posts(), 0);
    proxy.shutdown().await;
}
