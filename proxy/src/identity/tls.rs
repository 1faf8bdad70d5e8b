//! rustls configurations built on the identity store: the server side of
//! the inbound listener and the client side towards remote backends. Both
//! read the current SVID at every handshake, which is what makes rotation
//! take effect without touching live connections.

use std::sync::Arc;

use rustls::{
    client::ResolvesClientCert,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ClientConfig, ServerConfig, SignatureScheme,
};

use super::{
    svid::IdentityStore,
    verify::{InboundVerifier, OutboundVerifier},
};

/// Serves our current SVID; none once it has expired (fail closed).
#[derive(Debug)]
struct SvidResolver(Arc<IdentityStore>);

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snapshot = self.0.usable();
        if snapshot.is_none() {
            tracing::warn!("no valid SVID to present; refusing the handshake");
        }
        snapshot.map(|s| s.certified.clone())
    }
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.usable().map(|s| s.certified.clone())
    }

    fn has_certs(&self) -> bool {
        self.0.usable().is_some()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The inbound server config. `mandatory` is strict mode.
pub fn server_config(
    store: Arc<IdentityStore>,
    allowed: Vec<String>,
    mandatory: bool,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let verifier = Arc::new(InboundVerifier {
        store: store.clone(),
        allowed,
        mandatory,
    });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SvidResolver(store)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // No resumption: a resumed session would carry the client's identity
    // from an earlier handshake, even after that SVID expired or was
    // replaced. Every connection proves its identity afresh.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The outbound client config: our SVID as client certificate, the
/// server checked against `expected` SPIFFE IDs. ALPN (h2, http/1.1) is
/// set by the HTTP connector that uses it.
pub fn client_config(
    store: Arc<IdentityStore>,
    allowed: Vec<String>,
    expected: Vec<String>,
) -> Result<ClientConfig, rustls::Error> {
    let verifier = Arc::new(OutboundVerifier {
        store: store.clone(),
        allowed,
        expected,
    });
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(SvidResolver(store)));
    Ok(config)
}
