use std::sync::Arc;

use super::*;
use crate::identity::{Peer, SpiffeId, Token};
use crate::session::keyring::tests::ring;

fn claims(usid: &str) -> Claims {
    Claims {
        handle: [7; 16],
        issued_at: 1_000,
        expires_at: 1_000 + 86_400,
        instance: [9; 16],
        protocol: "2025-06-18".into(),
        init_digest: [3; 16],
        upstream_id: usid.into(),
    }
}

fn alice() -> Principal {
    Principal::from_peer(Peer::Spiffe(
        SpiffeId::parse("spiffe://td/ns/a/sa/alice").unwrap(),
    ))
}

fn bob() -> Principal {
    Principal::from_peer(Peer::Spiffe(
        SpiffeId::parse("spiffe://td/ns/a/sa/bob").unwrap(),
    ))
}

#[test]
fn seals_and_opens_for_the_same_caller() {
    let r = ring(&[("k1", 1, "primary")]);
    let c = claims("upstream-session-0123456789abcdef");
    let t = seal(&r, &c, &binding(&alice())).unwrap();
    assert!(t.starts_with("pc1.k1."));
    assert!(
        t.bytes().all(|b| (0x21..=0x7e).contains(&b)),
        "visible ASCII only: {t}"
    );
    assert!(t.len() <= 256, "{} chars", t.len());
    assert_eq!(open(&r, &t, &binding(&alice()), 2_000), Ok(c));
    assert!(!t.contains("upstream-session"), "nothing in clear");
}

#[test]
fn another_caller_gets_the_same_refusal_as_a_forger() {
    let r = ring(&[("k1", 1, "primary")]);
    let t = seal(&r, &claims("u"), &binding(&alice())).unwrap();
    assert_eq!(
        open(&r, &t, &binding(&bob()), 2_000),
        Err(Reject::Authentication)
    );
    assert_eq!(
        open(&r, &t, &binding(&Principal::default()), 2_000),
        Err(Reject::Authentication)
    );
    // The same peer carrying a user's token is another principal.
    let with_user = Principal::new(
        alice().peer().clone(),
        Some(Arc::new(Token {
            kind: crate::identity::TokenKind::AccessToken,
            issuer: "https://idp".into(),
            subject: "u1".into(),
            scopes: vec![],
            actor: None,
            expires_at: std::time::SystemTime::UNIX_EPOCH,
            claims: "{}".into(),
        })),
    );
    assert_eq!(
        open(&r, &t, &binding(&with_user), 2_000),
        Err(Reject::Authentication)
    );
}

#[test]
fn every_single_bit_flip_is_refused() {
    let r = ring(&[("k1", 1, "primary")]);
    let b = binding(&alice());
    let t = seal(&r, &claims("u-1"), &b).unwrap();
    let bytes = t.as_bytes();
    let mut refused = 0;
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut m = bytes.to_vec();
            m[i] ^= 1 << bit;
            let Ok(text) = String::from_utf8(m) else {
                refused += 1;
                continue;
            };
            // base64 has spare bits in its last character: a flip there can
            // decode to the same bytes, which is the same token, not a forgery.
            match open(&r, &text, &b, 2_000) {
                Ok(c) => assert_eq!(
                    URL_SAFE_NO_PAD
                        .decode(text.rsplit('.').next().unwrap())
                        .ok(),
                    URL_SAFE_NO_PAD.decode(t.rsplit('.').next().unwrap()).ok(),
                    "flip of bit {bit} of byte {i} opened to {c:?}"
                ),
                Err(_) => refused += 1,
            }
        }
    }
    assert!(
        refused >= bytes.len() * 8 - 8,
        "{refused} of {} flips refused",
        bytes.len() * 8
    );
}

#[test]
fn key_states_expiry_and_form() {
    let old = ring(&[("k1", 1, "primary")]);
    let b = binding(&alice());
    let t = seal(&old, &claims("u"), &b).unwrap();
    // Rotation: k2 primary, k1 still opens.
    let rotated = ring(&[("k2", 2, "primary"), ("k1", 1, "decrypt-only")]);
    assert!(open(&rotated, &t, &b, 2_000).is_ok());
    assert!(seal(&rotated, &claims("u"), &b)
        .unwrap()
        .starts_with("pc1.k2."));
    let retired = ring(&[("k2", 2, "primary"), ("k1", 1, "retired")]);
    assert_eq!(open(&retired, &t, &b, 2_000), Err(Reject::RetiredKey));
    let gone = ring(&[("k2", 2, "primary")]);
    assert_eq!(open(&gone, &t, &b, 2_000), Err(Reject::UnknownKey));
    // Same kid, other key material: a forgery.
    let swapped = ring(&[("k1", 5, "primary")]);
    assert_eq!(open(&swapped, &t, &b, 2_000), Err(Reject::Authentication));
    assert_eq!(open(&old, &t, &b, 1_000 + 86_400), Err(Reject::Expired));
    for bad in [
        "",
        "pc1",
        "pc1.k1",
        "pc2.k1.AAAA",
        "pc1.k1.!!!!",
        "pc1.k1.AAAA",
        "x.y.z",
    ] {
        assert!(open(&old, bad, &b, 2_000).is_err(), "{bad:?}");
    }
    assert_eq!(open(&old, &"a".repeat(2000), &b, 0), Err(Reject::TooLong));
}

#[test]
fn length_does_not_tell_the_upstream_id_length() {
    let r = ring(&[("k1", 1, "primary")]);
    let b = binding(&alice());
    let lens: Vec<usize> = (0..=51)
        .map(|n| seal(&r, &claims(&"x".repeat(n)), &b).unwrap().len())
        .collect();
    assert!(lens.windows(2).all(|w| w[0] == w[1]), "{lens:?}");
    assert_eq!(lens[0], 231);
    assert_eq!(
        seal(&r, &claims(&"x".repeat(256)), &b),
        Err(SealError::UpstreamIdTooLong)
    );
}

#[test]
fn two_seals_of_the_same_claims_differ() {
    let r = ring(&[("k1", 1, "primary")]);
    let b = binding(&alice());
    let c = claims("u");
    assert_ne!(
        seal(&r, &c, &b).unwrap(),
        seal(&r, &c, &b).unwrap(),
        "random nonces"
    );
}
