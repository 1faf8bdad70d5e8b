//! A development CA: `portcullis ca init` mints a trust domain's root, and
//! `portcullis ca issue` signs X.509-SVIDs with it. For demos and tests;
//! production SVIDs come from SPIRE or cert-manager.

use std::{path::Path, time::Duration};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::SpiffeId;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{0}")]
    Cert(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid SPIFFE ID: {0}")]
    Id(String),
    #[error("{0} is for trust domain {1}, but this CA is for {2}")]
    WrongDomain(String, String, String),
}

fn write(path: &Path, text: &str) -> Result<(), CaError> {
    std::fs::write(path, text).map_err(|source| CaError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// A CA certificate and key, PEM.
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
    pub trust_domain: String,
}

impl Ca {
    /// A new self-signed root for `trust_domain`.
    pub fn new(trust_domain: &str, lifetime: Duration) -> Result<Self, CaError> {
        SpiffeId::parse(&format!("spiffe://{trust_domain}"))
            .map_err(|e| CaError::Id(e.to_string()))?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{trust_domain} dev CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names =
            vec![SanType::URI(format!("spiffe://{trust_domain}").try_into()?)];
        set_lifetime(&mut params, lifetime);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            trust_domain: trust_domain.to_string(),
        })
    }

    pub fn save(&self, dir: &Path) -> Result<(), CaError> {
        std::fs::create_dir_all(dir).map_err(|source| CaError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        write(&dir.join("ca.pem"), &self.cert_pem)?;
        write(&dir.join("ca.key"), &self.key_pem)?;
        write(&dir.join("trust-domain"), &self.trust_domain)
    }

    pub fn load(dir: &Path) -> Result<Self, CaError> {
        Ok(Self {
            cert_pem: read(&dir.join("ca.pem"))?,
            key_pem: read(&dir.join("ca.key"))?,
            trust_domain: read(&dir.join("trust-domain"))?.trim().to_string(),
        })
    }

    /// Issues an X.509-SVID for `id`: (certificate PEM, key PEM).
    pub fn issue(&self, id: &str, lifetime: Duration) -> Result<(String, String), CaError> {
        self.issue_with_dns(id, lifetime, &[])
    }

    /// Issues an X.509-SVID that also names DNS hosts, for clients that
    /// check host names (curl, httpx). The SPIFFE ID stays the identity.
    pub fn issue_with_dns(
        &self,
        id: &str,
        lifetime: Duration,
        dns: &[String],
    ) -> Result<(String, String), CaError> {
        let parsed = SpiffeId::parse(id).map_err(|e| CaError::Id(e.to_string()))?;
        if parsed.trust_domain() != self.trust_domain {
            return Err(CaError::WrongDomain(
                id.into(),
                parsed.trust_domain().into(),
                self.trust_domain.clone(),
            ));
        }
        let mut params = svid_params(id, lifetime)?;
        for name in dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(name.clone().try_into()?));
        }
        self.sign(params)
    }

    /// Signs arbitrary leaf parameters (tests use this for bad SVIDs).
    pub fn sign(&self, params: CertificateParams) -> Result<(String, String), CaError> {
        let ca_key = KeyPair::from_pem(&self.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// The parameters of a well-formed X.509-SVID.
pub fn svid_params(id: &str, lifetime: Duration) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, id);
    params.subject_alt_names = vec![SanType::URI(id.to_string().try_into()?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    set_lifetime(&mut params, lifetime);
    Ok(params)
}

fn set_lifetime(params: &mut CertificateParams, lifetime: Duration) {
    let now = time::OffsetDateTime::now_utc();
    // A minute of slack for clocks that disagree a little.
    params.not_before = now - time::Duration::minutes(1);
    params.not_after =
        now + time::Duration::try_from(lifetime).unwrap_or(time::Duration::hours(24));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_svids_load_as_snapshots() {
        let ca = Ca::new("demo.local", Duration::from_secs(60)).unwrap();
        let (cert, key) = ca
            .issue_with_dns(
                "spiffe://demo.local/x",
                Duration::from_secs(60),
                &["localhost".into()],
            )
            .unwrap();
        use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let s = super::super::svid::Snapshot::from_der(chain, key, Default::default()).unwrap();
        assert_eq!(s.id.to_string(), "spiffe://demo.local/x");
        assert!(s.is_valid_now());
        assert!(matches!(
            ca.issue("spiffe://other/x", Duration::from_secs(60)),
            Err(CaError::WrongDomain(..))
        ));
    }
}
