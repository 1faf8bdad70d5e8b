//! Client connections to a configuration under test: plain TCP, or TLS
//! with a client SVID, always HTTP/1.1 with keep-alive.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::{handshake, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub type Sender = SendRequest<Full<Bytes>>;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("connect {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("TLS handshake with {0}: {1}")]
    Tls(SocketAddr, std::io::Error),
    #[error("HTTP/1.1 handshake: {0}")]
    Http(#[from] hyper::Error),
    #[error("client TLS setup: {0}")]
    Setup(String),
}

/// Where a configuration listens and how to reach it.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Endpoint {
    pub fn plain(addr: SocketAddr) -> Self {
        Self { addr, tls: None }
    }

    pub fn mtls(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            addr,
            tls: Some(tls),
        }
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub async fn connect(&self) -> Result<Sender, ConnError> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| ConnError::Connect(self.addr, e))?;
        // Request/response pairs are small; Nagle would stall them.
        tcp.set_nodelay(true)
            .map_err(|e| ConnError::Connect(self.addr, e))?;
        match &self.tls {
            None => drive(tcp).await,
            Some(cfg) => {
                let name = ServerName::try_from("localhost")
                    .map_err(|e| ConnError::Setup(e.to_string()))?;
                let tls = TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ConnError::Tls(self.addr, e))?;
                drive(tls).await
            }
        }
    }
}

async fn drive<T>(io: T) -> Result<Sender, ConnError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        // The connection ends when the worker drops its sender.
        let _ = conn.await;
    });
    Ok(sender)
}

/// A client that presents `cert`/`key` and trusts only `ca`, offering
/// HTTP/1.1 alone so that every configuration is measured on the same
/// protocol.
pub fn mtls_client(ca: &Path, cert: &Path, key: &Path) -> Result<rustls::ClientConfig, ConnError> {
    let setup = |what: &str, e: &dyn std::fmt::Display| ConnError::Setup(format!("{what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| setup("CA bundle", &e))? {
        roots
            .add(c.map_err(|e| setup("CA bundle", &e))?)
            .map_err(|e| setup("CA bundle", &e))?;
    }
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| setup("client certificate", &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setup("client certificate", &e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| setup("client key", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| setup("protocol versions", &e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| setup("client SVID", &e))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}
