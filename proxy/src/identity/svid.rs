//! Our SVID and the trust bundles, published by a source as one snapshot
//! and read by TLS at every handshake. A new snapshot serves new
//! handshakes; live connections keep the keys they were set up with.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwapOption;
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor},
    sign::CertifiedKey,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::SpiffeId;

#[derive(Debug, thiserror::Error)]
pub enum SvidError {
    #[error("SVID has no certificate")]
    Empty,
    #[error("SVID certificate does not parse: {0}")]
    Parse(String),
    #[error("SVID has no valid spiffe:// URI SAN")]
    NoId,
    #[error("SVID private key unusable: {0}")]
    Key(String),
    #[error("bundle for {0} has an unusable certificate: {1}")]
    Bundle(String, String),
}

/// One consistent view of our identity and whom we trust.
pub struct Snapshot {
    pub id: SpiffeId,
    pub certified: Arc<CertifiedKey>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Trust anchors by trust domain (ours and federated ones).
    pub bundles: HashMap<String, Vec<TrustAnchor<'static>>>,
}

fn validity(cert: &X509Certificate<'_>) -> (SystemTime, SystemTime) {
    let at = |t: i64| match u64::try_from(t) {
        Ok(secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => SystemTime::UNIX_EPOCH,
    };
    let v = cert.validity();
    (at(v.not_before.timestamp()), at(v.not_after.timestamp()))
}

/// The URI SANs of a certificate.
pub fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    cert.subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some((*u).to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Snapshot {
    /// Builds a snapshot from DER: our chain (leaf first), our PKCS#8 key,
    /// and the CA certificates of each trusted domain.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        bundles: HashMap<String, Vec<CertificateDer<'static>>>,
    ) -> Result<Self, SvidError> {
        let leaf = chain.first().ok_or(SvidError::Empty)?;
        let (_, cert) =
            X509Certificate::from_der(leaf).map_err(|e| SvidError::Parse(e.to_string()))?;
        let id = uri_sans(&cert)
            .iter()
            .find_map(|u| SpiffeId::parse(u).ok())
            .ok_or(SvidError::NoId)?;
        let (not_before, not_after) = validity(&cert);
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| SvidError::Key(e.to_string()))?;
        let certified = Arc::new(CertifiedKey::new(chain, signing));
        let bundles = bundles
            .into_iter()
            .map(|(td, certs)| {
                let anchors = certs
                    .iter()
                    .map(|c| {
                        webpki::anchor_from_trusted_cert(c)
                            .map(|a| a.to_owned())
                            .map_err(|e| SvidError::Bundle(td.clone(), e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((td, anchors))
            })
            .collect::<Result<_, SvidError>>()?;
        Ok(Self {
            id,
            certified,
            not_before,
            not_after,
            bundles,
        })
    }

    /// Time left before the SVID expires (zero once it has).
    pub fn remaining(&self) -> Duration {
        self.not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    }

    pub fn is_valid_now(&self) -> bool {
        let now = SystemTime::now();
        self.not_before <= now && now < self.not_after
    }
}

/// The latest snapshot. Sources publish; handshakes read.
#[derive(Default)]
pub struct IdentityStore {
    current: ArcSwapOption<Snapshot>,
}

impl IdentityStore {
    pub fn publish(&self, snapshot: Snapshot) {
        tracing::info!(id = %snapshot.id, expires_in = ?snapshot.remaining(), "SVID updated");
        self.current.store(Some(Arc::new(snapshot)));
    }

    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// Our key, if we have one that is valid now. Past its expiry the SVID
    /// is no longer offered: handshakes fail closed rather than present an
    /// expired identity.
    pub fn usable(&self) -> Option<Arc<Snapshot>> {
        self.current().filter(|s| s.is_valid_now())
    }
}
