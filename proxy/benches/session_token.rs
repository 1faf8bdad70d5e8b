//! The cost of a sealed session id on the request path: opening one (every
//! request of a session) and sealing one (every `initialize`), against
//! parsing the same request body as the baseline measured in the same run.

use std::time::Duration;

use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::{
    identity::{Peer, Principal, SpiffeId},
    mcp::{parse_body, Era},
    session::{
        token::{binding, open, seal},
        Claims, Keyring,
    },
};

fn keyring() -> Keyring {
    let key = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
    Keyring::from_yaml(&format!(
        "keys:\n  - {{kid: k2, key_b64: {}, state: primary}}\n  - {{kid: k1, key_b64: {}, state: decrypt-only}}\n",
        key(2),
        key(1)
    ))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let ring = keyring();
    let principal = Principal::from_peer(Peer::Spiffe(
        SpiffeId::parse("spiffe://demo.local/ns/agents/sa/planner").unwrap(),
    ));
    let claims = Claims {
        handle: [7; 16],
        issued_at: 1,
        expires_at: u64::MAX,
        instance: [9; 16],
        protocol: "2025-06-18".into(),
        init_digest: [3; 16],
        upstream_id: "5f0c3e0e-2b8f-4a4e-9e51-0f7c1a2b3c4d".into(),
    };
    let token = seal(&ring, &claims, &binding(&principal)).unwrap();
    let body = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}"#;
    let era = Era::Streamable2025("2025-06-18".into());
    let mut g = c.benchmark_group("session_token");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("baseline: parse a tools/call body", |b| {
        b.iter(|| parse_body(body, 64, &era).unwrap())
    });
    g.bench_function("open (each request)", |b| {
        b.iter(|| open(&ring, &token, &binding(&principal), 2).unwrap())
    });
    g.bench_function("seal (each initialize)", |b| {
        b.iter(|| seal(&ring, &claims, &binding(&principal)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
