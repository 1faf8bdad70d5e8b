//! Shared by the integration tests: a real webhook server on loopback with
//! a test CA, and an HTTPS client that trusts only that CA.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis_inject::ca_bootstrap::{generate_ca, serving_cert, CaPair};
use portcullis_inject::server::{serve, Metrics, State};
use portcullis_inject::settings::InjectSettings;
use portcullis_inject::tls::{certified_key_from_pem, server_config, ReloadingCert};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct TestServer {
    pub addr: SocketAddr,
    pub ca: CaPair,
    pub resolver: Arc<ReloadingCert>,
    pub state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start(settings: InjectSettings) -> TestServer {
    let ca = generate_ca().unwrap();
    let (chain, key) = serving_cert(&ca, vec!["localhost".into()]).unwrap();
    let resolver = ReloadingCert::new(
        certified_key_from_pem(chain.as_bytes(), key.as_bytes(), "test").unwrap(),
    );
    let acceptor =
        tokio_rustls::TlsAcceptor::from(Arc::new(server_config(resolver.clone()).unwrap()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(State {
        settings,
        metrics: Metrics::default(),
    });
    let task = tokio::spawn(serve(
        listener,
        acceptor,
        state.clone(),
        std::future::pending(),
    ));
    TestServer {
        addr,
        ca,
        resolver,
        state,
        task,
    }
}

/// `http2`: offer h2 in ALPN, as the apiserver's Go client does.
pub fn client(ca_pem: &str, http2: bool) -> HttpsClient {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    let https = if http2 {
        builder.enable_all_versions().build()
    } else {
        builder.enable_http1().build()
    };
    Client::builder(TokioExecutor::new()).build(https)
}

pub async fn request(
    client: &HttpsClient,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("https://localhost:{}{path}", addr.port()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = resp.status().as_u16();
    (
        status,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}
