//! The no-dependency TLS mode: the webhook makes its own CA, keeps it where
//! every replica finds it (a Secret, through `WebhookApi`), mints its
//! serving certificate from it, and writes the CA into the
//! MutatingWebhookConfiguration's `caBundle`.
//!
//! The API calls sit behind `WebhookApi` so the flow is tested offline with
//! a fake; the in-cluster implementation is a thin HTTP client.

use std::future::Future;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// The CA as stored: PEM certificate and PEM private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPair {
    pub cert_pem: String,
    pub key_pem: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    /// Another replica won the race; read its CA.
    AlreadyExists,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("kubernetes API: {0}")]
    Api(String),
    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("the CA Secret vanished after a create conflict")]
    Vanished,
}

/// The four API calls the bootstrap needs (RBAC: get/create one Secret,
/// get/patch one MutatingWebhookConfiguration).
pub trait WebhookApi {
    fn get_ca(&self) -> impl Future<Output = Result<Option<CaPair>, BootstrapError>> + Send;
    fn create_ca(
        &self,
        ca: &CaPair,
    ) -> impl Future<Output = Result<Created, BootstrapError>> + Send;
    /// The current `caBundle` of every webhook entry (base64-decoded PEM).
    fn ca_bundles(&self) -> impl Future<Output = Result<Vec<String>, BootstrapError>> + Send;
    /// Sets `caBundle` on every webhook entry.
    fn set_ca_bundles(
        &self,
        pem: &str,
        entries: usize,
    ) -> impl Future<Output = Result<(), BootstrapError>> + Send;
}

/// The DNS names the apiserver may use for the webhook Service.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

pub fn generate_ca() -> Result<CaPair, BootstrapError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "portcullis-injector-ca");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(3650);
    let cert = params.self_signed(&key)?;
    Ok(CaPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A fresh serving certificate (PEM chain, PEM key) signed by `ca`. Each
/// replica mints its own; only the CA is shared.
pub fn serving_cert(ca: &CaPair, names: Vec<String>) -> Result<(String, String), BootstrapError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.clone())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.last().cloned().unwrap_or_default(),
    );
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(365);
    let cert = params.signed_by(&key, &issuer)?;
    Ok((
        format!("{}{}", cert.pem(), ca.cert_pem),
        key.serialize_pem(),
    ))
}

/// Get or create the shared CA. Losing the create race is normal with
/// several replicas: the loser reads the winner's CA.
pub async fn ensure_ca(api: &impl WebhookApi) -> Result<CaPair, BootstrapError> {
    if let Some(ca) = api.get_ca().await? {
        return Ok(ca);
    }
    let ca = generate_ca()?;
    match api.create_ca(&ca).await? {
        Created::Created => Ok(ca),
        Created::AlreadyExists => api.get_ca().await?.ok_or(BootstrapError::Vanished),
    }
}

/// Writes the CA into `caBundle` unless every entry already has it (no
/// write when nothing changed, so restarts do not churn the object).
pub async fn ensure_ca_bundle(api: &impl WebhookApi, ca: &CaPair) -> Result<bool, BootstrapError> {
    let bundles = api.ca_bundles().await?;
    if !bundles.is_empty() && bundles.iter().all(|b| b.trim() == ca.cert_pem.trim()) {
        return Ok(false);
    }
    api.set_ca_bundles(&ca.cert_pem, bundles.len()).await?;
    Ok(true)
}

/// The whole flow: returns the serving certificate chain and key (PEM).
pub async fn bootstrap(
    api: &impl WebhookApi,
    service: &str,
    namespace: &str,
) -> Result<(String, String), BootstrapError> {
    let ca = ensure_ca(api).await?;
    let serving = serving_cert(&ca, service_names(service, namespace))?;
    if ensure_ca_bundle(api, &ca).await? {
        tracing::info!("caBundle written to the webhook configuration");
    }
    Ok(serving)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// An apiserver in a Mutex: one Secret, one webhook configuration with
    /// `entries` webhooks, and a log of the writes.
    #[derive(Default)]
    struct FakeApi {
        secret: Mutex<Option<CaPair>>,
        bundles: Mutex<Vec<String>>,
        writes: Mutex<Vec<String>>,
        /// Simulates another replica creating the Secret first.
        race: Mutex<Option<CaPair>>,
    }

    impl WebhookApi for FakeApi {
        async fn get_ca(&self) -> Result<Option<CaPair>, BootstrapError> {
            Ok(self.secret.lock().unwrap().clone())
        }
        async fn create_ca(&self, ca: &CaPair) -> Result<Created, BootstrapError> {
            let mut s = self.secret.lock().unwrap();
            if let Some(winner) = self.race.lock().unwrap().take() {
                *s = Some(winner);
                return Ok(Created::AlreadyExists);
            }
            self.writes.lock().unwrap().push("create secret".into());
            *s = Some(ca.clone());
            Ok(Created::Created)
        }
        async fn ca_bundles(&self) -> Result<Vec<String>, BootstrapError> {
            Ok(self.bundles.lock().unwrap().clone())
        }
        async fn set_ca_bundles(&self, pem: &str, entries: usize) -> Result<(), BootstrapError> {
            self.writes
                .lock()
                .unwrap()
                .push(format!("patch {entries} caBundle"));
            *self.bundles.lock().unwrap() = vec![pem.to_string(); entries];
            Ok(())
        }
    }

    fn api(entries: usize) -> FakeApi {
        let api = FakeApi::default();
        *api.bundles.lock().unwrap() = vec![String::new(); entries];
        api
    }

    #[tokio::test]
    async fn first_replica_creates_ca_and_patches_every_entry() {
        let api = api(2);
        let (chain, key) = bootstrap(&api, "portcullis-webhook", "portcullis-system")
            .await
            .unwrap();
        let ca = api.secret.lock().unwrap().clone().unwrap();
        assert!(chain.ends_with(&ca.cert_pem), "chain must carry the CA");
        assert!(key.contains("PRIVATE KEY"));
        assert_eq!(*api.bundles.lock().unwrap(), vec![ca.cert_pem.clone(); 2]);
        assert_eq!(
            *api.writes.lock().unwrap(),
            vec!["create secret", "patch 2 caBundle"]
        );
    }

    #[tokio::test]
    async fn second_replica_reuses_ca_and_writes_nothing() {
        let api = api(1);
        bootstrap(&api, "svc", "ns").await.unwrap();
        api.writes.lock().unwrap().clear();
        bootstrap(&api, "svc", "ns").await.unwrap();
        assert!(api.writes.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn losing_the_create_race_uses_the_winners_ca() {
        let api = api(1);
        let winner = generate_ca().unwrap();
        *api.race.lock().unwrap() = Some(winner.clone());
        bootstrap(&api, "svc", "ns").await.unwrap();
        assert_eq!(api.bundles.lock().unwrap()[0], winner.cert_pem);
    }

    #[test]
    fn serving_cert_verifies_against_the_ca_for_the_service_name() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime};
        let ca = generate_ca().unwrap();
        let (chain, _) = serving_cert(&ca, service_names("svc", "ns")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap())
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        let certs: Vec<_> = CertificateDer::pem_slice_iter(chain.as_bytes())
            .map(Result::unwrap)
            .collect();
        let ok = |name: &'static str| {
            verifier
                .verify_server_cert(
                    &certs[0],
                    &certs[1..],
                    &ServerName::try_from(name).unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .is_ok()
        };
        assert!(ok("svc.ns.svc"));
        assert!(!ok("other.ns.svc"));
    }
}
