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
    pki_types::{CertificateDer, PrivateKeyDer},
    sign::CertifiedKey,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::{anchors::Root, SpiffeId};

#[derive(Debug, thiserror::Error)]
pub enum SvidError {
    #[error("SVID has no certificate")]
    Empty,
    #[error("SVID certificate does not parse: {0}")]
    Parse(String),
    #[error("SVID has no valid spiffe:// URI SAN")]
    NoId,
    #[error("SVID's SPIFFE ID {0:?} has no path: it names a trust domain, not a workload (X509-SVID §5.2)")]
    NoPath(String),
    #[error("no unexpired root in the bundle for {0}")]
    NoValidRoot(String),
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
    /// Roots by trust domain (ours and federated ones); none that had
    /// expired when the bundle was loaded.
    pub bundles: HashMap<String, Vec<Root>>,
}

fn validity(cert: &X509Certificate<'_>) -> (SystemTime, SystemTime) {
    let at = |t: i64| match u64::try_from(t) {
        Ok(secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => SystemTime::UNIX_EPOCH,
    };
    let v = cert.validity();
    (at(v.not_before.timestamp()), at(v.not_after.timestamp()))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
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
        if !id.names_workload() {
            return Err(SvidError::NoPath(id.to_string()));
        }
        let (not_before, not_after) = validity(&cert);
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| SvidError::Key(e.to_string()))?;
        let mut snapshot = Self {
            id,
            certified: Arc::new(CertifiedKey::new(chain, signing)),
            not_before,
            not_after,
            bundles: HashMap::new(),
        };
        for (td, certs) in bundles {
            snapshot.trust(td, &certs)?;
        }
        Ok(snapshot)
    }

    /// Sets the bundle of trust domain `td`. webpki does not check an
    /// anchor's dates, so an expired root would still anchor chains: it is
    /// left out here, with a warning. A root that is not valid yet is kept
    /// (a new root may arrive a little ahead of its start, and files are
    /// only read again when they change) but anchors nothing until its
    /// start: verification filters roots by the time of each handshake.
    /// A bundle of our own trust domain without an unexpired root is an
    /// error (every handshake would fail); a federated one only loses its
    /// peers, loudly.
    pub fn trust(&mut self, td: String, certs: &[CertificateDer<'_>]) -> Result<(), SvidError> {
        let now = unix_now();
        let mut roots = Vec::with_capacity(certs.len());
        for der in certs {
            let root = Root::from_der(der).map_err(|e| SvidError::Bundle(td.clone(), e))?;
            if root.expired_at(now) {
                tracing::warn!(trust_domain = %td, root = %root.subject, "ignoring an expired trust bundle root");
                continue;
            }
            if !root.valid_at(now) {
                tracing::warn!(trust_domain = %td, root = %root.subject, "trust bundle root is not valid yet; it anchors nothing until then");
            }
            roots.push(root);
        }
        if roots.is_empty() {
            if td == self.id.trust_domain() {
                return Err(SvidError::NoValidRoot(td));
            }
            tracing::error!(trust_domain = %td, "no unexpired root in this federated bundle; its peers will be refused");
        }
        self.bundles.insert(td, roots);
        Ok(())
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

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    use time::{Duration as Span, OffsetDateTime};

    use super::*;
    use crate::identity::ca::svid_params;

    struct Minted {
        der: CertificateDer<'static>,
        issuer: rcgen::Issuer<'static, KeyPair>,
    }

    /// A root valid from `from` to `to` days relative to now.
    fn root(from: i64, to: i64) -> Minted {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let now = OffsetDateTime::now_utc();
        p.not_before = now + Span::days(from);
        p.not_after = now + Span::days(to);
        let der = p.self_signed(&key).unwrap().der().clone();
        Minted {
            der,
            issuer: rcgen::Issuer::new(p, key),
        }
    }

    fn svid(ca: &Minted, uri: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut p =
            svid_params("spiffe://demo.local/x", std::time::Duration::from_secs(60)).unwrap();
        p.subject_alt_names = vec![SanType::URI(uri.to_string().try_into().unwrap())];
        let cert = p.signed_by(&key, &ca.issuer).unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        (vec![cert.der().clone()], key)
    }

    fn bundle(roots: &[&Minted]) -> HashMap<String, Vec<CertificateDer<'static>>> {
        HashMap::from([(
            "demo.local".to_string(),
            roots.iter().map(|r| r.der.clone()).collect(),
        )])
    }

    #[test]
    fn trust_domain_only_ids_are_not_svids() {
        let ca = root(-1, 1);
        for uri in ["spiffe://demo.local", "spiffe://demo.local/"] {
            let (chain, key) = svid(&ca, uri);
            let err = Snapshot::from_der(chain, key, bundle(&[&ca]));
            assert!(err.is_err(), "{uri} must be refused as our SVID");
        }
        let (chain, key) = svid(&ca, "spiffe://demo.local/ns/a/sa/b");
        assert!(Snapshot::from_der(chain, key, bundle(&[&ca])).is_ok());
    }

    #[test]
    fn expired_roots_are_dropped_and_future_ones_wait() {
        let (valid, expired, future) = (root(-1, 1), root(-3, -1), root(1, 3));
        let (chain, key) = svid(&valid, "spiffe://demo.local/ns/a/sa/b");
        let s = Snapshot::from_der(chain, key, bundle(&[&expired, &valid, &future])).unwrap();
        let roots = &s.bundles["demo.local"];
        assert_eq!(roots.len(), 2, "the expired root is gone");
        assert_eq!(roots.iter().filter(|r| r.valid_at(unix_now())).count(), 1);
        // A bundle with no unexpired root at all is an error, not a
        // silent refusal of every peer.
        let (chain, key) = svid(&valid, "spiffe://demo.local/ns/a/sa/b");
        let err = Snapshot::from_der(chain, key, bundle(&[&expired]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no unexpired root"), "{err:?}");
        // A federated bundle without one loses its peers but not ours.
        let (chain, key) = svid(&valid, "spiffe://demo.local/ns/a/sa/b");
        let mut bundles = bundle(&[&valid]);
        bundles.insert("other.local".into(), vec![expired.der.clone()]);
        let s = Snapshot::from_der(chain, key, bundles).unwrap();
        assert!(s.bundles["other.local"].is_empty());
    }
}
