//! The X.509-SVID rules, applied to a peer's certificate in either
//! direction: a single `spiffe://` URI SAN naming a workload (not just a
//! trust domain), not a CA, the key usage the standard requires, inside its
//! validity window, and chaining to a currently valid root of the bundle of
//! an allowed trust domain through intermediates that may sign
//! certificates (see [`super::path`]).

use std::{cell::RefCell, sync::Arc};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{
    anchors::Root,
    path,
    svid::{uri_sans, IdentityStore},
    SpiffeId,
};
use crate::policy::glob;

#[derive(thiserror::Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    #[error("certificate does not parse: {0}")]
    Parse(String),
    #[error("certificate has no URI SAN")]
    NoUriSan,
    #[error("certificate has {0} URI SANs; an SVID has exactly one")]
    ManyUriSans(usize),
    #[error("URI SAN {0:?} is not a valid SPIFFE ID: {1}")]
    NotSpiffe(String, String),
    #[error(
        "SPIFFE ID {0:?} has no path: it names a trust domain, not a workload (X509-SVID §5.2)"
    )]
    NoPath(String),
    #[error("trust domain {0:?} is not allowed")]
    TrustDomain(String),
    #[error("no bundle for trust domain {0:?}")]
    NoBundle(String),
    #[error("leaf certificate is a CA")]
    IsCa,
    #[error("key usage: {0}")]
    KeyUsage(&'static str),
    #[error("certificate expired")]
    Expired,
    #[error("certificate not yet valid")]
    NotYetValid,
    #[error("chain does not verify against the {0} bundle: {1}")]
    Chain(String, String),
    #[error("no root of the {0} bundle is valid now")]
    NoValidRoot(String),
    #[error("intermediate CA {0} {1}")]
    Issuer(String, &'static str),
    #[error("URI {0:?} is outside the URI name constraints of root {1}")]
    NameConstraint(String, String),
    #[error("chain ends at a root that is not in the bundle")]
    UnknownAnchor,
    #[error("peer {0} is not one of the expected SPIFFE IDs")]
    UnexpectedId(String),
    #[error("no identity available yet (no SVID or bundle from the source)")]
    NoIdentity,
}

/// rustls shows the inner error of a rejected certificate with `{:?}`;
/// this makes that the readable reason.
impl std::fmt::Debug for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// Checks `end_entity` (with `intermediates`) as an X.509-SVID and returns
/// its SPIFFE ID.
pub fn verify_svid(
    store: &IdentityStore,
    allowed: &[String],
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: webpki::KeyUsage,
) -> Result<SpiffeId, VerifyError> {
    let (_, cert) =
        X509Certificate::from_der(end_entity).map_err(|e| VerifyError::Parse(e.to_string()))?;
    let id = single_spiffe_id(&cert)?;
    let td = id.trust_domain().to_string();
    if !allowed.contains(&td) {
        return Err(VerifyError::TrustDomain(td));
    }
    leaf_rules(&cert)?;
    window(&cert, now)?;
    let snapshot = store.current().ok_or(VerifyError::NoIdentity)?;
    let bundle = snapshot
        .bundles
        .get(&td)
        .ok_or_else(|| VerifyError::NoBundle(td.clone()))?;
    // Roots are filtered when a bundle is loaded, and again here, for a
    // root that expired since.
    let roots: Vec<&Root> = bundle.iter().filter(|r| r.valid_at(secs(now))).collect();
    if roots.is_empty() {
        return Err(VerifyError::NoValidRoot(td));
    }
    let leaf = Leaf {
        der: end_entity,
        uris: &uri_sans(&cert),
        td: &td,
    };
    chain(&leaf, &roots, intermediates, now, usage)?;
    Ok(id)
}

/// The leaf being verified: its DER, URI SANs and trust domain.
struct Leaf<'a> {
    der: &'a CertificateDer<'a>,
    uris: &'a [String],
    td: &'a str,
}

/// Builds the chain from `leaf` to one of `roots` with webpki, which runs
/// our own checks on each candidate path (see [`path`]). When a candidate
/// failed those, that is the reason given.
fn chain(
    leaf: &Leaf<'_>,
    roots: &[&Root],
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: webpki::KeyUsage,
) -> Result<(), VerifyError> {
    let anchors: Vec<_> = roots.iter().map(|r| r.borrowed()).collect();
    let ee = webpki::EndEntityCert::try_from(leaf.der)
        .map_err(|e| VerifyError::Parse(format!("{e:?}")))?;
    let refusal = RefCell::new(None);
    let check = |candidate: &webpki::VerifiedPath<'_>| {
        path::check(candidate, roots, leaf.uris).map_err(|e| {
            *refusal.borrow_mut() = Some(e);
            // Any non-fatal error: webpki goes on to the next candidate.
            webpki::Error::UnknownIssuer
        })
    };
    let verified = ee.verify_for_usage(
        algorithms().all,
        &anchors,
        intermediates,
        now,
        usage,
        None,
        Some(&check),
    );
    match verified {
        Ok(_) => Ok(()),
        Err(e) => Err(refusal
            .take()
            .unwrap_or_else(|| VerifyError::Chain(leaf.td.to_string(), format!("{e:?}")))),
    }
}

fn secs(now: UnixTime) -> i64 {
    i64::try_from(now.as_secs()).unwrap_or(i64::MAX)
}

fn single_spiffe_id(cert: &X509Certificate<'_>) -> Result<SpiffeId, VerifyError> {
    let uris = uri_sans(cert);
    match uris.as_slice() {
        [] => Err(VerifyError::NoUriSan),
        [one] => {
            let id = SpiffeId::parse(one)
                .map_err(|e| VerifyError::NotSpiffe(one.clone(), e.to_string()))?;
            if !id.names_workload() {
                return Err(VerifyError::NoPath(one.clone()));
            }
            Ok(id)
        }
        many => Err(VerifyError::ManyUriSans(many.len())),
    }
}

/// The leaf rules of the X509-SVID standard: not a CA, digitalSignature
/// set, keyCertSign and cRLSign clear.
fn leaf_rules(cert: &X509Certificate<'_>) -> Result<(), VerifyError> {
    if cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca)
    {
        return Err(VerifyError::IsCa);
    }
    let ku = cert
        .key_usage()
        .ok()
        .flatten()
        .ok_or(VerifyError::KeyUsage("the key usage extension is missing"))?;
    if !ku.value.digital_signature() {
        return Err(VerifyError::KeyUsage("digitalSignature is not set"));
    }
    if ku.value.key_cert_sign() || ku.value.crl_sign() {
        return Err(VerifyError::KeyUsage(
            "keyCertSign or cRLSign is set on a leaf",
        ));
    }
    Ok(())
}

fn window(cert: &X509Certificate<'_>, now: UnixTime) -> Result<(), VerifyError> {
    let now = secs(now);
    let v = cert.validity();
    if now < v.not_before.timestamp() {
        return Err(VerifyError::NotYetValid);
    }
    if now > v.not_after.timestamp() {
        return Err(VerifyError::Expired);
    }
    Ok(())
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// Handshake signatures are checked the same way in both directions: with
/// ring's algorithms, the product's one crypto provider.
macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            algorithms().supported_schemes()
        }
    };
}

fn rustls_error(e: VerifyError) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(e),
    )))
}

/// Verifies client certificates on the inbound listener.
#[derive(Debug)]
pub struct InboundVerifier {
    pub store: Arc<IdentityStore>,
    pub allowed: Vec<String>,
    /// Strict mode: a certificate is required.
    pub mandatory: bool,
}

impl std::fmt::Debug for IdentityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityStore")
    }
}

impl ClientCertVerifier for InboundVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        verify_svid(
            &self.store,
            &self.allowed,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )
        .map(|_| ClientCertVerified::assertion())
        .map_err(rustls_error)
    }

    signature_checks!();
}

/// Verifies a remote backend's SVID: SPIFFE rules plus an expected ID.
/// The DNS name is not checked; the SPIFFE ID is the server's identity.
#[derive(Debug)]
pub struct OutboundVerifier {
    pub store: Arc<IdentityStore>,
    pub allowed: Vec<String>,
    /// Patterns of acceptable server IDs (`*` within one path segment,
    /// `**` across segments; see `portcullis_policy_sdk::pattern`).
    pub expected: Vec<String>,
}

impl ServerCertVerifier for OutboundVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = verify_svid(
            &self.store,
            &self.allowed,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )
        .map_err(rustls_error)?;
        let text = id.to_string();
        if !self.expected.iter().any(|p| glob::matches(p, &text)) {
            return Err(rustls_error(VerifyError::UnexpectedId(text)));
        }
        Ok(ServerCertVerified::assertion())
    }

    signature_checks!();
}

/// The SPIFFE ID of a peer whose chain a verifier above already accepted.
pub fn peer_id(certs: &[CertificateDer<'_>]) -> Option<SpiffeId> {
    let (_, cert) = X509Certificate::from_der(certs.first()?).ok()?;
    single_spiffe_id(&cert).ok()
}
