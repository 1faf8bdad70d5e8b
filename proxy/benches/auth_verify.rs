//! The cost of a bearer token on the request path: verifying a fresh one
//! (ES256, RS256: the signature check dominates) and serving one already
//! verified from the cache (what an agent sending the same token on every
//! call pays), against parsing the request's JSON-RPC body, measured in
//! the same run as the baseline.

use std::{sync::Arc, time::Duration};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine as _};
use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::{
    auth::{
        cache::VerifiedCache,
        config::IssuerConfig,
        keys::IssuerKeys,
        metrics::AuthMetrics,
        ring_provider,
        verify::{Issuer, Verifier},
    },
    identity::Peer,
    mcp::{parse_body, Era},
};
use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

const RSA_DER: &[u8] = include_bytes!("../tests/fixtures/auth/rsa2048-test-only.der");
const BODY: &[u8] = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/data/report.csv"},"_meta":{"progressToken":"p7"}}}"#;

fn verifier(dir: &std::path::Path, es: &[u8], cache: VerifiedCache) -> Verifier {
    let pair = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        es,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let point = pair.public_key().as_ref();
    let rsa = RsaKeyPair::from_der(RSA_DER).unwrap();
    let c: ring::rsa::PublicKeyComponents<Vec<u8>> = rsa.public().into();
    let jwks = serde_json::json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "e1", "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..])},
        {"kty": "RSA", "kid": "r1", "n": B64.encode(c.n), "e": B64.encode(c.e)},
    ]});
    let file = dir.join("jwks.json");
    std::fs::write(&file, jwks.to_string()).unwrap();
    let config: IssuerConfig = serde_yaml_ng::from_str(&format!(
        "{{name: idp, issuer: 'https://idp.test', jwks: {{file: {}}}}}",
        file.display()
    ))
    .unwrap();
    let metrics = AuthMetrics::register(&prometheus::Registry::new()).unwrap();
    let keys = Arc::new(IssuerKeys::new("idp", &config.jwks, metrics).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(keys.refresh("startup")).unwrap();
    Verifier {
        issuers: vec![Issuer { config, keys }],
        audiences: vec!["https://files.test/mcp".into()],
        leeway: Duration::from_secs(30),
        max_token_bytes: 8192,
        cache,
        svids: None,
    }
}

fn token(alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({"iss": "https://idp.test", "aud": "https://files.test/mcp", "sub": "alice",
        "exp": now + 3600, "iat": now, "scope": "mcp files:read", "client_id": "agent-app",
        "jti": "3f1c9a4e-6d2b-4b7e-9d1a-2c5e8f0a7b13"});
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    h.typ = Some("at+jwt".into());
    jsonwebtoken::encode(&h, &claims, key).unwrap()
}

fn bench(c: &mut Criterion) {
    ring_provider::install();
    let dir = std::env::temp_dir().join(format!("pc-bench-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let es = EcdsaKeyPair::generate_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let es = es.as_ref().to_vec();
    let es_token = token(Algorithm::ES256, "e1", &EncodingKey::from_ec_der(&es));
    let rs_token = token(Algorithm::RS256, "r1", &EncodingKey::from_rsa_der(RSA_DER));
    let fresh = verifier(&dir, &es, VerifiedCache::off());
    let cached = verifier(&dir, &es, VerifiedCache::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let peer = Peer::Anonymous;
    assert!(rt.block_on(cached.verify(&es_token, &peer)).is_ok());

    let mut g = c.benchmark_group("auth_verify");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let era = Era::from_version(Some("2025-06-18"));
    g.bench_function("baseline_parse_request_body", |b| {
        b.iter(|| parse_body(std::hint::black_box(BODY), 64, &era).unwrap())
    });
    g.bench_function("es256_fresh", |b| {
        b.iter(|| {
            rt.block_on(fresh.verify(std::hint::black_box(&es_token), &peer))
                .is_ok()
        })
    });
    g.bench_function("rs256_fresh", |b| {
        b.iter(|| {
            rt.block_on(fresh.verify(std::hint::black_box(&rs_token), &peer))
                .is_ok()
        })
    });
    g.bench_function("cache_hit", |b| {
        b.iter(|| {
            rt.block_on(cached.verify(std::hint::black_box(&es_token), &peer))
                .is_ok()
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
