//! SPIFFE JWT-SVIDs as bearer tokens (issue 11), end to end: tokens really
//! signed (ES256 and Ed25519 keys from ring, the 2048-bit RSA test key),
//! trust-domain JWT bundles written to files in the SPIFFE bundle format,
//! an issuer configured beside them, the sidecar in front of the rmcp
//! example server. Every refused token must get 401 `invalid_token` with
//! the reason in the metrics, and the upstream must see no request.

mod support;

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine as _};
use portcullis::Running;
use ring::{
    rand::SystemRandom,
    signature::{
        EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
        RSA_PKCS1_SHA256, RSA_PSS_SHA256,
    },
};
use serde_json::{json, Value};
use support::Upstream;

const R: &str = "https://files.mcp.test/mcp";
const ISS: &str = "https://idp.test/realms/mcp";
/// The audience JWT-SVIDs must name: this server's SPIFFE ID.
const AUD: &str = "spiffe://demo.local/ns/mcp/sa/files";
const PLANNER: &str = "spiffe://demo.local/ns/agents/sa/planner";
const INTERN: &str = "spiffe://demo.local/ns/agents/sa/intern";
const PARTNER: &str = "spiffe://partner.test/ns/agents/sa/bot";
const OUTSIDER: &str = "spiffe://outside.test/ns/agents/sa/bot";
const RSA_DER: &[u8] = include_bytes!("fixtures/auth/rsa2048-test-only.der");
const DELETE: &str = "delete_file";

/// A signing key and the JWK that publishes its public half.
enum Signer {
    Es(EcdsaKeyPair),
    Rsa(RsaKeyPair),
    Ed(Ed25519KeyPair),
}

impl Signer {
    fn es() -> Self {
        let rng = SystemRandom::new();
        let pk8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Self::Es(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pk8.as_ref(), &rng).unwrap(),
        )
    }

    fn rsa() -> Self {
        Self::Rsa(RsaKeyPair::from_der(RSA_DER).unwrap())
    }

    fn ed() -> Self {
        let pk8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Self::Ed(Ed25519KeyPair::from_pkcs8(pk8.as_ref()).unwrap())
    }

    /// The public JWK, with `kid` and `use`.
    fn jwk(&self, kid: &str, key_use: &str) -> Value {
        let mut jwk = match self {
            Self::Es(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..])})
            }
            Self::Rsa(k) => {
                let c: ring::rsa::PublicKeyComponents<Vec<u8>> = k.public().into();
                json!({"kty": "RSA", "n": B64.encode(c.n), "e": B64.encode(c.e)})
            }
            Self::Ed(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode(k.public_key().as_ref())})
            }
        };
        jwk["kid"] = json!(kid);
        jwk["use"] = json!(key_use);
        jwk
    }

    /// The signature over `input` for the header's `alg`: ES256, RS256,
    /// PS256 or EdDSA, whatever this key is (a mismatch is the test's).
    fn sign(&self, alg: &str, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Self::Es(k) => k.sign(&rng, input).unwrap().as_ref().to_vec(),
            Self::Rsa(k) => {
                let padding: &dyn ring::signature::RsaEncoding = match alg {
                    "PS256" => &RSA_PSS_SHA256,
                    _ => &RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(padding, &rng, input, &mut sig).unwrap();
                sig
            }
            Self::Ed(k) => k.sign(input).as_ref().to_vec(),
        }
    }
}

/// Every key of the test: three in demo.local's bundle (and one CA key
/// marked `x509-svid`), one in partner.test's, one in outside.test's (a
/// bundle present but not accepted), one the issuer's.
struct Keys {
    demo: Signer,
    demo_rsa: Signer,
    demo_ed: Signer,
    demo_ca: Signer,
    partner: Signer,
    outside: Signer,
    issuer: Signer,
}

impl Keys {
    fn new() -> Self {
        Self {
            demo: Signer::es(),
            demo_rsa: Signer::rsa(),
            demo_ed: Signer::ed(),
            demo_ca: Signer::es(),
            partner: Signer::es(),
            outside: Signer::es(),
            issuer: Signer::es(),
        }
    }

    fn demo_bundle(&self) -> Value {
        json!({"spiffe_sequence": 1, "keys": [
            self.demo.jwk("d1", "jwt-svid"),
            self.demo_rsa.jwk("d2", "jwt-svid"),
            self.demo_ed.jwk("e1", "jwt-svid"),
            self.demo_ca.jwk("x1", "x509-svid"),
        ]})
    }

    /// Bundles and the issuer's JWKS as files in `dir`.
    fn write(&self, dir: &Path) {
        let write = |name: &str, v: Value| std::fs::write(dir.join(name), v.to_string()).unwrap();
        write("demo.json", self.demo_bundle());
        write(
            "partner.json",
            json!({"keys": [self.partner.jwk("p1", "jwt-svid")]}),
        );
        write(
            "outside.json",
            json!({"keys": [self.outside.jwk("o1", "jwt-svid")]}),
        );
        write("idp.json", json!({"keys": [self.issuer.jwk("i1", "sig")]}));
    }
}

/// A JWS over `header` and `claims` as given (any members, in any order,
/// repeated or not), signed by `key`.
fn sign_text(key: &Signer, header: &str, claims: &str) -> String {
    let alg = serde_json::from_str::<Value>(header)
        .ok()
        .and_then(|h| h["alg"].as_str().map(String::from))
        .unwrap_or_default();
    let input = format!("{}.{}", B64.encode(header), B64.encode(claims));
    let sig = key.sign(&alg, input.as_bytes());
    format!("{input}.{}", B64.encode(sig))
}

fn sign(key: &Signer, header: &Value, claims: &Value) -> String {
    sign_text(key, &header.to_string(), &claims.to_string())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JWT-SVID's claims, as a SPIRE agent mints them (no `iss`).
fn claims(sub: &str) -> Value {
    json!({"sub": sub, "aud": [AUD], "exp": now() + 300, "iat": now()})
}

fn header(kid: &str) -> Value {
    json!({"alg": "ES256", "kid": kid, "typ": "JWT"})
}

/// `base` with `patch` applied: a `null` removes the member.
fn with(mut base: Value, patch: Value) -> Value {
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

/// The planner's valid JWT-SVID, signed with demo.local's `d1`.
fn planner(keys: &Keys) -> String {
    sign(&keys.demo, &header("d1"), &claims(PLANNER))
}

/// The static rules: only the planner may delete.
const POLICY: &str = "default: allow\nrules:\n  - {name: planner-deletes, action: allow, methods: [\"tools/call\"], names: [\"delete_*\"], callers: [\"spiffe://demo.local/ns/agents/sa/planner\"]}\n  - {name: nobody-else, action: deny, methods: [\"tools/call\"], names: [\"delete_*\"]}\n";

/// The `auth:` section: one issuer, three bundles, two trust domains
/// accepted (unless `svid_extra` says otherwise).
fn auth_yaml(dir: &Path, svid_extra: &str) -> String {
    let d = dir.display();
    format!(
        "auth:\n  resource: {R}\n  metadata: {{authorization_servers: [\"{ISS}\"]}}\n  issuers:\n    - {{name: idp, issuer: \"{ISS}\", jwks: {{file: \"{d}/idp.json\"}}, algorithms: [ES256]}}\n  jwt_svid:\n    bundles: {{demo.local: \"{d}/demo.json\", partner.test: \"{d}/partner.json\", outside.test: \"{d}/outside.json\"}}\n    audiences: [\"{AUD}\"]\n{svid_extra}"
    )
}

const ACCEPTED: &str = "    trust_domains: [demo.local, partner.test]\n";

async fn start(upstream: &Upstream, dir: &Path, svid_extra: &str) -> Running {
    portcullis::start(support::config(
        upstream.addr,
        POLICY,
        &auth_yaml(dir, svid_extra),
    ))
    .await
    .unwrap()
}

fn test_dir(name: &str, keys: &Keys) -> PathBuf {
    let dir = support::pki::dir(name);
    keys.write(&dir);
    dir
}

/// An `initialize` with the token: the status, the challenge, the body.
async fn bearer(proxy: &Running, token: &str) -> (u16, String, Value) {
    let resp = support::post(&support::mcp_url(proxy))
        .header("mcp-protocol-version", "2025-06-18")
        .header("authorization", format!("Bearer {token}"))
        .body(support::sessions::INIT)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    (
        status,
        challenge,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// A sessionless `tools/call` of `tool` with the token: the status and
/// the first JSON-RPC message.
async fn call(proxy: &Running, token: &str, tool: &str) -> (u16, Value) {
    let resp = support::modern_call(&support::mcp_url(proxy), 1, tool, json!({"path": "/srv/x"}))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let first = support::messages(&text)
        .into_iter()
        .next()
        .unwrap_or(Value::Null);
    (status, first)
}

/// The decisions counted for `issuer`, `outcome` and `reason`.
async fn decisions(proxy: &Running, issuer: &str, outcome: &str, reason: &str) -> u64 {
    let metrics = support::sessions::metrics(proxy).await;
    let series = format!(
        "portcullis_auth_decisions_total{{issuer=\"{issuer}\",outcome=\"{outcome}\",reason=\"{reason}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Sends each token, which must get 401 `invalid_token` and be counted
/// with its reason under its label; the upstream sees none of them. Every
/// case is tried, and all that went otherwise are listed.
async fn refused(proxy: &Running, upstream: &Upstream, cases: &[(&str, String, &str, &str)]) {
    let before = upstream.posts();
    let mut wrong = Vec::new();
    for (what, token, label, reason) in cases {
        let counted = decisions(proxy, label, "challenge", reason).await;
        let (status, challenge, _) = bearer(proxy, token).await;
        let challenged = challenge.starts_with("Bearer error=\"invalid_token\"");
        let counted_now = decisions(proxy, label, "challenge", reason).await;
        if status != 401 || !challenged || counted_now != counted + 1 {
            wrong.push(format!("{what}: {status}, not counted as {label} {reason}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(
        upstream.posts(),
        before,
        "a refused token reached the upstream"
    );
}

/// A valid JWT-SVID is the caller: 200, static `callers:` rules match its
/// subject, the app is told who called (never the token), and each form
/// the standard allows passes.
#[tokio::test]
async fn a_jwt_svid_is_the_caller_static_rules_see() {
    let keys = Keys::new();
    let dir = test_dir("svid-valid", &keys);
    let upstream = Upstream::start();
    let proxy = start(&upstream, &dir, ACCEPTED).await;

    let good = planner(&keys);
    let (status, _, body) = bearer(&proxy, &good).await;
    assert_eq!(status, 200, "{body}");
    let head = upstream.heads.lock().unwrap()[0].clone();
    assert!(
        head.get("authorization").is_none(),
        "the token went upstream"
    );
    assert_eq!(head["x-portcullis-subject"], PLANNER);
    assert_eq!(head["x-portcullis-issuer"], "spiffe://demo.local");
    assert_eq!(
        decisions(&proxy, "jwt-svid:demo.local", "allow", "ok").await,
        1
    );

    // The static rule on the planner's SPIFFE ID lets it delete...
    let (status, msg) = call(&proxy, &good, DELETE).await;
    assert_eq!(status, 200, "{msg}");
    assert!(msg["result"].is_object(), "{msg}");
    // ...and any other workload, with as valid a JWT-SVID, is denied.
    let intern = sign(&keys.demo, &header("d1"), &claims(INTERN));
    let (status, msg) = call(&proxy, &intern, DELETE).await;
    assert_eq!(
        (status, msg["error"]["data"]["by"].as_str()),
        (200, Some("static:nobody-else")),
        "{msg}"
    );
    let (status, msg) = call(&proxy, &intern, "echo").await;
    assert_eq!(status, 200, "{msg}");

    // What the standard allows.
    let valid: Vec<(&str, String)> = vec![
        (
            "typ JOSE",
            sign(
                &keys.demo,
                &json!({"alg": "ES256", "kid": "d1", "typ": "JOSE"}),
                &claims(PLANNER),
            ),
        ),
        (
            "no typ",
            sign(
                &keys.demo,
                &json!({"alg": "ES256", "kid": "d1"}),
                &claims(PLANNER),
            ),
        ),
        (
            "RS256",
            sign(
                &keys.demo_rsa,
                &json!({"alg": "RS256", "kid": "d2"}),
                &claims(PLANNER),
            ),
        ),
        (
            "PS256",
            sign(
                &keys.demo_rsa,
                &json!({"alg": "PS256", "kid": "d2"}),
                &claims(PLANNER),
            ),
        ),
        (
            "aud a string",
            sign(
                &keys.demo,
                &header("d1"),
                &with(claims(PLANNER), json!({"aud": AUD})),
            ),
        ),
        (
            "aud naming this server among others",
            sign(
                &keys.demo,
                &header("d1"),
                &with(
                    claims(PLANNER),
                    json!({"aud": ["spiffe://demo.local/other", AUD]}),
                ),
            ),
        ),
        (
            "an iss no issuer has (SPIRE's jwt_issuer): ignored",
            sign(
                &keys.demo,
                &header("d1"),
                &with(claims(PLANNER), json!({"iss": "https://oidc.demo.local"})),
            ),
        ),
        (
            "no kid, and the partner's bundle has one key",
            sign(
                &keys.partner,
                &json!({"alg": "ES256", "typ": "JWT"}),
                &claims(PARTNER),
            ),
        ),
    ];
    for (what, token) in &valid {
        let (status, _, body) = bearer(&proxy, token).await;
        assert_eq!(status, 200, "{what}: {body}");
    }
    proxy.shutdown().await;
}

/// Each token breaks one rule of the JWT-SVID standard (or of this
/// verifier's bounds): 401, counted with its reason, never forwarded.
#[tokio::test]
async fn every_bad_jwt_svid_is_refused_and_never_forwarded() {
    let keys = Keys::new();
    let dir = test_dir("svid-refused", &keys);
    let upstream = Upstream::start();
    let proxy = start(&upstream, &dir, ACCEPTED).await;
    const DEMO: &str = "jwt-svid:demo.local";
    let signed = |patch: Value| sign(&keys.demo, &header("d1"), &with(claims(PLANNER), patch));
    let headed = |h: Value| sign(&keys.demo, &h, &claims(PLANNER));
    let good = planner(&keys);
    let (head, body, sig) = {
        let p: Vec<&str> = good.split('.').collect();
        (p[0].to_string(), p[1].to_string(), p[2].to_string())
    };
    let rsa_pkcs1 = {
        let Signer::Rsa(k) = &keys.demo_rsa else {
            unreachable!()
        };
        k.public().as_ref().to_vec()
    };
    let hs256 = {
        let h = json!({"alg": "HS256", "kid": "d2", "typ": "JWT"});
        let input = format!(
            "{}.{}",
            B64.encode(h.to_string()),
            B64.encode(claims(PLANNER).to_string())
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &rsa_pkcs1);
        let tag = ring::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", B64.encode(tag.as_ref()))
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        // Audience.
        (
            "wrong aud",
            signed(json!({"aud": ["spiffe://demo.local/ns/mcp/sa/other"]})),
            DEMO,
            "wrong_audience",
        ),
        (
            "aud = the OAuth resource",
            signed(json!({"aud": R})),
            DEMO,
            "wrong_audience",
        ),
        (
            "aud with a trailing slash",
            signed(json!({"aud": format!("{AUD}/")})),
            DEMO,
            "wrong_audience",
        ),
        (
            "aud empty",
            signed(json!({"aud": []})),
            DEMO,
            "wrong_audience",
        ),
        (
            "missing aud",
            signed(json!({"aud": null})),
            DEMO,
            "missing_claim",
        ),
        // Time.
        (
            "expired",
            signed(json!({"exp": now() - 120})),
            DEMO,
            "expired",
        ),
        (
            "missing exp",
            signed(json!({"exp": null})),
            DEMO,
            "missing_claim",
        ),
        (
            "lifetime over the maximum",
            signed(json!({"exp": now() + 10 * 365 * 86400})),
            DEMO,
            "lifetime_exceeded",
        ),
        (
            "issued in the future",
            signed(json!({"iat": now() + 600})),
            DEMO,
            "issued_in_future",
        ),
        (
            "not yet valid",
            signed(json!({"nbf": now() + 600})),
            DEMO,
            "not_yet_valid",
        ),
        // Header members beyond alg, kid and typ.
        (
            "jwk",
            headed(with(
                header("d1"),
                json!({"jwk": keys.demo.jwk("d1", "jwt-svid")}),
            )),
            "none",
            "key_in_token",
        ),
        (
            "x5u",
            headed(with(header("d1"), json!({"x5u": "https://evil.test/x5u"}))),
            "none",
            "key_in_token",
        ),
        (
            "crit",
            headed(with(header("d1"), json!({"crit": ["exp"]}))),
            "none",
            "crit",
        ),
        (
            "cty",
            headed(with(header("d1"), json!({"cty": "JWT"}))),
            DEMO,
            "header_not_allowed",
        ),
        (
            "x5t",
            headed(with(header("d1"), json!({"x5t": "AAAA"}))),
            DEMO,
            "header_not_allowed",
        ),
        (
            "an unknown member foo",
            headed(with(header("d1"), json!({"foo": "bar"}))),
            DEMO,
            "header_not_allowed",
        ),
        (
            "typ at+jwt",
            headed(with(header("d1"), json!({"typ": "at+jwt"}))),
            DEMO,
            "typ_not_allowed",
        ),
        // Algorithms.
        (
            "HS256 keyed with the RSA public key",
            hs256,
            DEMO,
            "alg_not_allowed",
        ),
        (
            "alg none",
            format!(
                "{}.{body}.",
                B64.encode(json!({"alg": "none", "kid": "d1"}).to_string())
            ),
            DEMO,
            "alg_not_allowed",
        ),
        (
            "EdDSA, with an Ed25519 key of the bundle",
            sign(
                &keys.demo_ed,
                &json!({"alg": "EdDSA", "kid": "e1"}),
                &claims(PLANNER),
            ),
            DEMO,
            "alg_not_allowed",
        ),
        (
            "an RS256 header over the EC key",
            format!(
                "{}.{body}.{sig}",
                B64.encode(json!({"alg": "RS256", "kid": "d1"}).to_string())
            ),
            DEMO,
            "alg_not_allowed",
        ),
        // Trust domains and keys.
        (
            "a trust domain with no bundle",
            sign(
                &keys.demo,
                &header("d1"),
                &claims("spiffe://nowhere.test/ns/a/sa/b"),
            ),
            "none",
            "unknown_trust_domain",
        ),
        (
            "a trust domain with a bundle, not accepted",
            sign(&keys.outside, &header("o1"), &claims(OUTSIDER)),
            "none",
            "unknown_trust_domain",
        ),
        (
            "another trust domain's key, by its kid",
            sign(&keys.partner, &header("p1"), &claims(PLANNER)),
            DEMO,
            "unknown_kid",
        ),
        (
            "another trust domain's key, under this one's kid",
            sign(&keys.partner, &header("d1"), &claims(PLANNER)),
            DEMO,
            "bad_signature",
        ),
        (
            "the partner's subject, signed with demo.local's key",
            sign(&keys.demo, &header("d1"), &claims(PARTNER)),
            "jwt-svid:partner.test",
            "unknown_kid",
        ),
        (
            "a use: x509-svid key of the bundle",
            sign(&keys.demo_ca, &header("x1"), &claims(PLANNER)),
            DEMO,
            "unknown_kid",
        ),
        (
            "no kid, and the bundle has three JWT keys",
            sign(
                &keys.demo,
                &json!({"alg": "ES256", "typ": "JWT"}),
                &claims(PLANNER),
            ),
            DEMO,
            "unknown_kid",
        ),
        (
            "a key no bundle has",
            sign(&Signer::es(), &header("d1"), &claims(PLANNER)),
            DEMO,
            "bad_signature",
        ),
        (
            "tampered payload",
            format!("{head}.{}.{sig}", B64.encode(claims(INTERN).to_string())),
            DEMO,
            "bad_signature",
        ),
        // Subjects.
        (
            "sub with a dot-dot segment",
            signed(json!({"sub": "spiffe://demo.local/ns/../sa/planner"})),
            "none",
            "bad_subject",
        ),
        (
            "sub naming the trust domain, no workload",
            signed(json!({"sub": "spiffe://demo.local"})),
            "none",
            "bad_subject",
        ),
        (
            "sub with an upper-case trust domain",
            signed(json!({"sub": "spiffe://Demo.local/ns/agents/sa/planner"})),
            "none",
            "bad_subject",
        ),
        (
            "sub with a port",
            signed(json!({"sub": "spiffe://demo.local:443/ns/agents/sa/planner"})),
            "none",
            "bad_subject",
        ),
    ];
    refused(&proxy, &upstream, &cases).await;
    proxy.shutdown().await;
}

/// A token that could be read both as an access token and as a JWT-SVID
/// is read one way only: a configured `iss` makes it that issuer's, and
/// neither path falls back to the other.
#[tokio::test]
async fn a_token_is_read_by_one_path_only() {
    let keys = Keys::new();
    let dir = test_dir("svid-paths", &keys);
    let upstream = Upstream::start();
    let proxy = start(&upstream, &dir, ACCEPTED).await;
    let access = |sub: &str| json!({"iss": ISS, "sub": sub, "aud": R, "exp": now() + 300, "iat": now(), "scope": "mcp"});
    let at = |kid: &str| json!({"alg": "ES256", "kid": kid, "typ": "at+jwt"});
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "a valid JWT-SVID, but iss is the issuer's: read as its access token",
            sign(
                &keys.demo,
                &header("d1"),
                &with(claims(PLANNER), json!({"iss": ISS})),
            ),
            "idp",
            "unknown_kid",
        ),
        (
            "an access token with a SPIFFE sub signed by the trust domain's key",
            sign(&keys.demo, &at("d1"), &access(PLANNER)),
            "idp",
            "unknown_kid",
        ),
        (
            "a JWT-SVID signed with the issuer's key",
            sign(&keys.issuer, &header("i1"), &claims(PLANNER)),
            "jwt-svid:demo.local",
            "unknown_kid",
        ),
        (
            "an access token without iss, signed with the issuer's key",
            sign(
                &keys.issuer,
                &json!({"alg": "ES256", "kid": "i1"}),
                &with(access(PLANNER), json!({"iss": null, "aud": AUD})),
            ),
            "jwt-svid:demo.local",
            "unknown_kid",
        ),
        (
            "no iss, and a sub that is no SPIFFE ID",
            sign(&keys.demo, &header("d1"), &claims("alice")),
            "none",
            "missing_claim",
        ),
        (
            "an unknown iss, and a sub that is no SPIFFE ID",
            sign(
                &keys.demo,
                &header("d1"),
                &with(claims("alice"), json!({"iss": "https://evil.test"})),
            ),
            "none",
            "unknown_issuer",
        ),
        // Two members of one name: one reader may take the first, another
        // the last. Refused before anything is read.
        (
            "two iss",
            sign_text(
                &keys.demo,
                &header("d1").to_string(),
                &format!(
                    r#"{{"iss":"{ISS}","sub":"{PLANNER}","aud":"{AUD}","exp":{},"iss":"https://oidc.demo.local"}}"#,
                    now() + 300
                ),
            ),
            "none",
            "malformed",
        ),
        (
            "two iat, the first in the future",
            sign_text(
                &keys.demo,
                &header("d1").to_string(),
                &format!(
                    r#"{{"sub":"{PLANNER}","aud":"{AUD}","exp":{},"iat":{},"iat":{}}}"#,
                    now() + 300,
                    now() + 3600,
                    now()
                ),
            ),
            "none",
            "malformed",
        ),
        (
            "two kid in the header",
            sign_text(
                &keys.demo,
                r#"{"alg":"ES256","kid":"d2","kid":"d1"}"#,
                &claims(PLANNER).to_string(),
            ),
            "none",
            "malformed",
        ),
    ];
    refused(&proxy, &upstream, &cases).await;

    // The issuer's own tokens still pass with JWT-SVIDs configured, even
    // with a SPIFFE ID as subject; and such a subject is no workload to
    // the static rules.
    let user = sign(&keys.issuer, &at("i1"), &access("alice"));
    assert_eq!(bearer(&proxy, &user).await.0, 200);
    let spiffe_user = sign(&keys.issuer, &at("i1"), &access(PLANNER));
    let (status, msg) = call(&proxy, &spiffe_user, DELETE).await;
    assert_eq!(
        (status, msg["error"]["data"]["by"].as_str()),
        (200, Some("static:nobody-else")),
        "an access token's subject matched callers: {msg}"
    );
    proxy.shutdown().await;
}

/// With mTLS, the JWT-SVID must name the peer: a workload presenting
/// another's JWT-SVID is refused. The trust domains accepted default to
/// the identity section's.
#[tokio::test]
async fn a_workload_presenting_another_workloads_svid_is_refused() {
    use support::pki::{self, SIDECAR_ID};
    let keys = Keys::new();
    let dir = test_dir("svid-mtls", &keys);
    let ca = pki::ca(pki::TD);
    pki::write_svid(&dir, &ca, SIDECAR_ID);
    let upstream = Upstream::start();
    // No trust_domains: the identity section's (demo.local) only.
    let extra = format!(
        "{}{}",
        pki::identity_yaml(&dir, "strict", "100ms"),
        auth_yaml(&dir, "")
    );
    let proxy = portcullis::start(support::config(upstream.addr, POLICY, &extra))
        .await
        .unwrap();
    let agent = |id: &str| {
        let (cert, key) = ca.issue(id, Duration::from_secs(3600)).unwrap();
        pki::Client::new(&cert, &key, &ca.cert_pem, SIDECAR_ID)
    };
    let delete = |c: pki::Client, token: String| async move {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": DELETE, "arguments": {"path": "/x"}, "_meta": support::modern_meta()}});
        c.post(
            proxy.proxy_addr,
            &body.to_string(),
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", DELETE),
                ("authorization", &format!("Bearer {token}")),
            ],
        )
        .await
        .unwrap()
    };
    let intern_svid = sign(&keys.demo, &header("d1"), &claims(INTERN));
    // The planner with its own JWT-SVID.
    let (status, text) = delete(agent(PLANNER), planner(&keys)).await;
    assert_eq!(status, 200, "{text}");
    assert!(support::messages(&text)[0]["result"].is_object(), "{text}");
    // The planner with the intern's: a stolen credential.
    let counted = decisions(&proxy, "jwt-svid:demo.local", "challenge", "actor_mismatch").await;
    let (status, text) = delete(agent(PLANNER), intern_svid.clone()).await;
    assert_eq!(status, 401, "{text}");
    assert_eq!(
        decisions(&proxy, "jwt-svid:demo.local", "challenge", "actor_mismatch").await,
        counted + 1
    );
    // The intern with the planner's.
    let (status, _) = delete(agent(INTERN), planner(&keys)).await;
    assert_eq!(status, 401);
    // The intern with its own: verified, and denied by the rules.
    let (status, text) = delete(agent(INTERN), intern_svid).await;
    assert_eq!(
        (
            status,
            support::messages(&text)[0]["error"]["data"]["by"].as_str()
        ),
        (200, Some("static:nobody-else")),
        "{text}"
    );
    // partner.test has a bundle, but the identity section does not trust
    // it.
    let partner = sign(&keys.partner, &header("p1"), &claims(PARTNER));
    let counted = decisions(&proxy, "none", "challenge", "unknown_trust_domain").await;
    let (status, _) = delete(agent(PLANNER), partner).await;
    assert_eq!(status, 401);
    assert_eq!(
        decisions(&proxy, "none", "challenge", "unknown_trust_domain").await,
        counted + 1
    );
    assert_eq!(upstream.posts(), 1, "only the planner's call was forwarded");
    proxy.shutdown().await;
}

/// Bundle files are read again: a key added is used at its first token (an
/// unknown `kid` makes one read happen now); a key removed is refused from
/// the next read on, even for a token verified before.
#[tokio::test]
async fn bundle_files_are_read_again() {
    let keys = Keys::new();
    let dir = test_dir("svid-reload", &keys);
    let upstream = Upstream::start();
    let proxy = start(
        &upstream,
        &dir,
        &format!("{ACCEPTED}    refresh_interval: 1s\n"),
    )
    .await;
    let good = planner(&keys);
    assert_eq!(bearer(&proxy, &good).await.0, 200);
    // Rotation: d3 published beside d1.
    let next = Signer::es();
    let mut bundle = keys.demo_bundle();
    bundle["keys"]
        .as_array_mut()
        .unwrap()
        .push(next.jwk("d3", "jwt-svid"));
    std::fs::write(dir.join("demo.json"), bundle.to_string()).unwrap();
    let rotated = sign(&next, &header("d3"), &claims(PLANNER));
    assert_eq!(bearer(&proxy, &rotated).await.0, 200, "the new key");
    // d1 withdrawn: its token, verified and cached, is refused.
    bundle["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["kid"] != "d1");
    std::fs::write(dir.join("demo.json"), bundle.to_string()).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(bearer(&proxy, &good).await.0, 401, "the withdrawn key");
    assert_eq!(bearer(&proxy, &rotated).await.0, 200);
    proxy.shutdown().await;
}

/// The spiffe crate's own validator (`JwtSvid::parse_and_validate`, with
/// its RustCrypto backend, in tests only) decides as this verifier does:
/// the valid token passes both, an audience mismatch and the others here
/// fail both. (Where they differ by design: it requires `kid`, which the
/// standard makes optional, and it allows no leeway on `exp`.)
#[tokio::test]
async fn the_spiffe_crates_validator_agrees() {
    use spiffe::{JwtBundle, JwtBundleSet, JwtSvid, TrustDomain};
    let keys = Keys::new();
    let dir = test_dir("svid-crosscheck", &keys);
    let upstream = Upstream::start();
    let proxy = start(&upstream, &dir, ACCEPTED).await;
    // The crate leaves `use` filtering to its caller.
    let mut jwks = keys.demo_bundle();
    jwks["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["use"] == "jwt-svid" && k["kty"] != "OKP");
    let mut bundles = JwtBundleSet::new();
    bundles.add_bundle(
        JwtBundle::from_jwt_authorities(
            TrustDomain::new("demo.local").unwrap(),
            jwks.to_string().as_bytes(),
        )
        .unwrap(),
    );
    let signed = |patch: Value| sign(&keys.demo, &header("d1"), &with(claims(PLANNER), patch));
    let cases: Vec<(&str, String, bool)> = vec![
        ("valid", planner(&keys), true),
        (
            "valid, RS256",
            sign(
                &keys.demo_rsa,
                &json!({"alg": "RS256", "kid": "d2", "typ": "JWT"}),
                &claims(PLANNER),
            ),
            true,
        ),
        (
            "aud mismatch",
            signed(json!({"aud": ["spiffe://demo.local/ns/mcp/sa/other"]})),
            false,
        ),
        ("missing aud", signed(json!({"aud": null})), false),
        ("expired", signed(json!({"exp": now() - 120})), false),
        (
            "a header member beyond alg, kid and typ",
            sign(
                &keys.demo,
                &with(header("d1"), json!({"cty": "JWT"})),
                &claims(PLANNER),
            ),
            false,
        ),
        (
            "another trust domain's key",
            sign(&keys.partner, &header("d1"), &claims(PLANNER)),
            false,
        ),
    ];
    for (what, token, valid) in &cases {
        let theirs = JwtSvid::parse_and_validate(token, &bundles, &[AUD]);
        assert_eq!(theirs.is_ok(), *valid, "spiffe crate, {what}: {theirs:?}");
        let (status, _, body) = bearer(&proxy, token).await;
        assert_eq!(status == 200, *valid, "Portcullis, {what}: {status} {body}");
    }
    let ok = JwtSvid::parse_and_validate(&planner(&keys), &bundles, &[AUD]).unwrap();
    assert_eq!(ok.spiffe_id().to_string(), PLANNER);
    proxy.shutdown().await;
}
