//! The `jsonwebtoken` crypto provider, backed by ring.
//!
//! jsonwebtoken 12 ships two backends, aws-lc-rs and RustCrypto, and no
//! ring one. Portcullis already trusts ring for every TLS handshake, so
//! this small provider keeps one crypto library in the product rather than
//! adding a second (aws-lc needs a C toolchain; RustCrypto's `rsa` crate
//! carries RUSTSEC-2023-0071, which concerns private-key operations but is
//! flagged all the same).
//!
//! It verifies RS256/384/512, PS256/384/512, ES256/384 and EdDSA. It
//! refuses every HMAC algorithm outright: a token verifier that cannot do
//! HMAC cannot be tricked into checking an `HS256` token with an RSA public
//! key as the secret. ring refuses RSA moduli under 2048 bits.
//!
//! Signing (ES256, RS256 and EdDSA, from PKCS#8) serves tests, and later
//! the identity assertions Portcullis signs for upstreams.

use jsonwebtoken::{
    crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils},
    errors::{Error, ErrorKind},
    signature::{self, Signer, Verifier},
    Algorithm, DecodingKey, DecodingKeyKind, EncodingKey,
};
use ring::signature::{self as ring_sig, KeyPair as _};

/// The provider; [`install`] makes it the process default.
pub static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Installs [`PROVIDER`] as jsonwebtoken's default, once per process.
/// Without it the first verification would panic; with another provider
/// installed first (never, in Portcullis) verification fails closed, as
/// that provider is not ours to trust.
pub fn install() -> bool {
    match PROVIDER.install_default() {
        Ok(()) => true,
        Err(installed) => std::ptr::eq(installed, &PROVIDER),
    }
}

struct RingVerifier {
    alg: Algorithm,
    key: DecodingKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        let ok = match (rsa_params(self.alg), self.key.kind()) {
            (Some(params), DecodingKeyKind::RsaModulusExponent { n, e }) => {
                ring_sig::RsaPublicKeyComponents { n, e }.verify(params, msg, sig)
            }
            (Some(params), DecodingKeyKind::SecretOrDer(der)) => {
                ring_sig::UnparsedPublicKey::new(params, der).verify(msg, sig)
            }
            (None, DecodingKeyKind::SecretOrDer(bytes)) => match other_params(self.alg) {
                Some(params) => ring_sig::UnparsedPublicKey::new(params, bytes).verify(msg, sig),
                None => return Err(signature::Error::new()),
            },
            (None, DecodingKeyKind::RsaModulusExponent { .. }) => {
                return Err(signature::Error::new())
            }
        };
        ok.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn rsa_params(alg: Algorithm) -> Option<&'static ring_sig::RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &ring_sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &ring_sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &ring_sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &ring_sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &ring_sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &ring_sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn other_params(alg: Algorithm) -> Option<&'static dyn ring_sig::VerificationAlgorithm> {
    Some(match alg {
        Algorithm::ES256 => &ring_sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &ring_sig::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &ring_sig::ED25519,
        _ => return None,
    })
}

/// Whether this provider verifies `alg` at all (never an HMAC one).
pub fn verifies(alg: Algorithm) -> bool {
    rsa_params(alg).is_some() || other_params(alg).is_some()
}

fn verifier(
    alg: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    if !verifies(*alg) {
        return Err(Error::from(ErrorKind::InvalidAlgorithm));
    }
    Ok(Box::new(RingVerifier {
        alg: *alg,
        key: key.clone(),
    }))
}

enum RingKey {
    Ecdsa(ring_sig::EcdsaKeyPair),
    Rsa(ring_sig::RsaKeyPair),
    Ed25519(ring_sig::Ed25519KeyPair),
}

struct RingSigner {
    alg: Algorithm,
    key: RingKey,
}

impl Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let rng = ring::rand::SystemRandom::new();
        match &self.key {
            RingKey::Ecdsa(k) => k
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
            RingKey::Rsa(k) => {
                let mut out = vec![0; k.public().modulus_len()];
                k.sign(&ring_sig::RSA_PKCS1_SHA256, &rng, msg, &mut out)
                    .map_err(|_| signature::Error::new())?;
                Ok(out)
            }
            RingKey::Ed25519(k) => Ok(k.sign(msg).as_ref().to_vec()),
        }
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn signer(alg: &Algorithm, key: &EncodingKey) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    let der = key.as_bytes();
    let bad = |kind: ErrorKind| Error::from(kind);
    let key = match alg {
        Algorithm::ES256 => RingKey::Ecdsa(
            ring_sig::EcdsaKeyPair::from_pkcs8(
                &ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                der,
                &ring::rand::SystemRandom::new(),
            )
            .map_err(|_| bad(ErrorKind::InvalidEcdsaKey))?,
        ),
        Algorithm::RS256 => RingKey::Rsa(
            ring_sig::RsaKeyPair::from_pkcs8(der)
                .or_else(|_| ring_sig::RsaKeyPair::from_der(der))
                .map_err(|e| bad(ErrorKind::InvalidRsaKey(e.to_string())))?,
        ),
        Algorithm::EdDSA => RingKey::Ed25519(
            ring_sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map_err(|_| bad(ErrorKind::InvalidEddsaKey))?,
        ),
        _ => return Err(bad(ErrorKind::InvalidAlgorithm)),
    };
    Ok(Box::new(RingSigner { alg: *alg, key }))
}

/// The public half of a PKCS#8 ES256 key, as JWK `x` and `y` (base64url):
/// for tests and for publishing Portcullis's own keys.
pub fn es256_public_xy(pkcs8: &[u8]) -> Option<(String, String)> {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
    let pair = ring_sig::EcdsaKeyPair::from_pkcs8(
        &ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8,
        &ring::rand::SystemRandom::new(),
    )
    .ok()?;
    let point = pair.public_key().as_ref();
    let (x, y) = point.get(1..)?.split_at(32);
    Some((URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y)))
}
