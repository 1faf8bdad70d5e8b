//! Webhook serving certificates: loaded from files (cert-manager mounts a
//! Secret and renews it in place, so the files are re-read when they
//! change) or minted in memory by the self-made CA (see `ca_bootstrap`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{what}: no usable PEM in {path}")]
    Pem { what: &'static str, path: String },
    #[error("unsupported private key: {0}")]
    Key(rustls::Error),
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

/// A serving certificate that can be swapped while the server runs.
#[derive(Debug)]
pub struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
}

impl ReloadingCert {
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(key),
        })
    }

    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    origin: &str,
) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: "certificate",
            path: origin.into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::Pem {
        what: "private key",
        path: origin.into(),
    })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(TlsError::Key)?;
    Ok(CertifiedKey::new(certs, signer))
}

/// The cert-manager mode: `tls.crt` and `tls.key` from a mounted Secret.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    pub fn load(&self) -> Result<CertifiedKey, TlsError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        certified_key_from_pem(
            &read(&self.cert)?,
            &read(&self.key)?,
            &self.cert.display().to_string(),
        )
    }

    fn stamp(&self) -> Option<(SystemTime, SystemTime)> {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((m(&self.cert)?, m(&self.key)?))
    }

    /// Polls the files and swaps the certificate when they change. Polling
    /// (not inotify) because kubelet updates Secret volumes by swapping a
    /// symlinked directory, which file watches on the old inode miss. A
    /// half-written pair fails to parse and is retried on the next tick.
    pub fn watch(self, target: Arc<ReloadingCert>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut last = self.stamp();
            loop {
                tokio::time::sleep(every).await;
                let now = self.stamp();
                if now == last {
                    continue;
                }
                match self.load() {
                    Ok(key) => {
                        target.replace(key);
                        last = now;
                        tracing::info!(cert = %self.cert.display(), "webhook certificate reloaded");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook certificate not reloaded, keeping the old one")
                    }
                }
            }
        })
    }
}

pub fn server_config(resolver: Arc<ReloadingCert>) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // The apiserver's webhook client speaks HTTP/2 when offered.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
