//! Real certificates for the mTLS tests, made with the sidecar's own dev
//! CA (rcgen), and an mTLS HTTP client built on the sidecar's own SPIFFE
//! verifier.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use portcullis::identity::{
    ca::{svid_params, Ca},
    svid::{IdentityStore, Snapshot},
    verify,
};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};

pub const TD: &str = "demo.local";
pub const SIDECAR_ID: &str = "spiffe://demo.local/ns/mcp/sa/portcullis";

pub fn ca(td: &str) -> Ca {
    Ca::new(td, Duration::from_secs(3600)).unwrap()
}

/// A temporary directory for one test.
pub fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("portcullis-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes an SVID (cert, key) and the CA bundle as the files source reads them.
pub fn write_svid(dir: &Path, ca: &Ca, id: &str) {
    let (cert, key) = ca.issue(id, Duration::from_secs(3600)).unwrap();
    write_pem(dir, &cert, &key, &ca.cert_pem);
}

pub fn write_pem(dir: &Path, cert: &str, key: &str, bundle: &str) {
    // Atomic replacement, as Kubernetes volume updates are.
    for (name, text) in [
        ("svid.pem", cert),
        ("svid.key", key),
        ("bundle.pem", bundle),
    ] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

/// The identity section of a sidecar config using files in `dir`.
pub fn identity_yaml(dir: &Path, mode: &str, poll: &str) -> String {
    format!(
        "identity:\n  mode: {mode}\n  trust_domains: [{TD}]\n  source:\n    files:\n      cert: {0}/svid.pem\n      key: {0}/svid.key\n      bundle: {0}/bundle.pem\n      poll_interval: {poll}\n",
        dir.display()
    )
}

/// A client identity: its own store holding its SVID and our CA bundle.
pub struct Client {
    config: Arc<rustls::ClientConfig>,
}

impl Client {
    /// A client presenting `cert`/`key` (PEM), trusting `bundle_pem`, and
    /// expecting the server to be `server_id`.
    pub fn new(cert: &str, key: &str, bundle_pem: &str, server_id: &str) -> Self {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let bundle = CertificateDer::pem_slice_iter(bundle_pem.as_bytes())
            .map(Result::unwrap)
            .collect();
        let store = Arc::new(IdentityStore::default());
        // The store only lends the verifier our bundle; its own SVID is a
        // throwaway, since the certificate under test may be malformed.
        let throwaway = Ca::new(TD, Duration::from_secs(60)).unwrap();
        let (t_cert, t_key) = throwaway
            .issue("spiffe://demo.local/test-client", Duration::from_secs(60))
            .unwrap();
        let t_chain = CertificateDer::pem_slice_iter(t_cert.as_bytes())
            .map(Result::unwrap)
            .collect();
        let t_key = PrivateKeyDer::from_pem_slice(t_key.as_bytes()).unwrap();
        store.publish(
            Snapshot::from_der(t_chain, t_key, HashMap::from([(TD.to_string(), bundle)])).unwrap(),
        );
        // The sidecar's own verifier checks the server; the client presents
        // its certificate whatever its state, so bad SVIDs reach the server.
        let verifier = Arc::new(verify::OutboundVerifier {
            store,
            allowed: vec![TD.into()],
            expected: vec![server_id.into()],
        });
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .unwrap();
        Self {
            config: Arc::new(config),
        }
    }

    /// A client that presents no certificate at all.
    pub fn anonymous(bundle_pem: &str, server_id: &str) -> Self {
        let ca = Ca::new(TD, Duration::from_secs(60)).unwrap();
        let (cert, key) = ca
            .issue("spiffe://demo.local/unused", Duration::from_secs(60))
            .unwrap();
        let mut c = Self::new(&cert, &key, bundle_pem, server_id);
        Arc::get_mut(&mut c.config)
            .unwrap()
            .client_auth_cert_resolver = Arc::new(NoCert);
        c
    }

    /// POSTs `body` to `/mcp` over mTLS; an error if the handshake or the
    /// exchange fails.
    /// A finished mTLS handshake with the sidecar at `addr`.
    pub async fn connect(
        &self,
        addr: std::net::SocketAddr,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let name = ServerName::try_from("localhost").unwrap();
        connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))
    }

    pub async fn post(
        &self,
        addr: std::net::SocketAddr,
        body: &str,
        extra: &[(&str, &str)],
    ) -> Result<(u16, String), String> {
        let tls = self.connect(addr).await?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = http::Request::post("/mcp")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }
}

#[derive(Debug)]
struct NoCert;

impl rustls::client::ResolvesClientCert for NoCert {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        None
    }
    fn has_certs(&self) -> bool {
        false
    }
}

/// Leaf parameters for a well-formed SVID, to be spoiled by a test.
pub fn params(id: &str) -> rcgen::CertificateParams {
    svid_params(id, Duration::from_secs(3600)).unwrap()
}
