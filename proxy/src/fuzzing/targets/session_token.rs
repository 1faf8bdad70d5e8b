//! The sealed session id (`session::token`), which every client of a
//! session presents: opening any string never panics, and a token that
//! opens is one Portcullis sealed, unchanged, for this caller.
//!
//! Input: byte 0 picks the mode. Even: the rest is a presented id, opened
//! against a fixed keyring. Odd: claims are built from the rest, sealed,
//! then one byte of the token (chosen by the input) is changed, or the
//! caller is; neither may open, and the untouched token opens to the same
//! claims.

use crate::{
    identity::{Peer, Principal, SpiffeId},
    session::{token, Claims, Keyring},
};

const RING: &str = "keys:\n  - {kid: a1, key_b64: \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\", state: primary}\n  - {kid: b2, key_b64: \"ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\", state: decrypt-only}\n";

fn ring() -> Keyring {
    // A constant keyring: failing to load it is a defect of this file.
    Keyring::from_yaml(RING).unwrap_or_else(|e| panic!("fuzz keyring: {e}"))
}

/// One fuzz input.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let ring = ring();
    let me = token::binding(&Principal::from_peer(Peer::Anonymous));
    if mode % 2 == 0 {
        let Ok(presented) = std::str::from_utf8(rest) else {
            return;
        };
        // Nothing a client can write is a token sealed under these keys.
        assert!(
            token::open(&ring, presented, &me, 0).is_err(),
            "{presented:?} opened"
        );
        return;
    }
    let claims = claims(rest);
    let Ok(sealed) = token::seal(&ring, &claims, &me) else {
        return;
    };
    assert!(sealed.len() <= token::MAX_TOKEN_CHARS, "{}", sealed.len());
    assert!(sealed.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    assert_eq!(token::open(&ring, &sealed, &me, 0).as_ref(), Ok(&claims));
    let other = token::binding(&Principal::from_peer(Peer::Spiffe(
        SpiffeId::parse("spiffe://fuzz.test/ns/a/sa/b")
            .unwrap_or_else(|e| panic!("fuzz spiffe id: {e:?}")),
    )));
    assert!(token::open(&ring, &sealed, &other, 0).is_err());
    let at = usize::from(rest.first().copied().unwrap_or(0)) % sealed.len();
    let mut changed = sealed.clone().into_bytes();
    changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
    let changed = String::from_utf8_lossy(&changed).into_owned();
    assert!(
        token::open(&ring, &changed, &me, 0).is_err(),
        "byte {at} changed and it still opened"
    );
}

/// Claims from fuzz bytes: any lengths and contents the token must carry.
fn claims(bytes: &[u8]) -> Claims {
    let take = |from: usize, n: usize| -> Vec<u8> {
        (0..n)
            .map(|i| bytes.get(from + i).copied().unwrap_or(0))
            .collect()
    };
    let mut handle = [0u8; 16];
    handle.copy_from_slice(&take(1, 16));
    let n = usize::from(bytes.get(17).copied().unwrap_or(0));
    let end = 18 + n.min(bytes.len().saturating_sub(18));
    let upstream_id = String::from_utf8_lossy(bytes.get(18..end).unwrap_or(&[])).into_owned();
    Claims {
        handle,
        issued_at: 1,
        expires_at: u64::MAX,
        instance: handle,
        protocol: "2025-06-18".into(),
        init_digest: handle,
        upstream_id,
    }
}
