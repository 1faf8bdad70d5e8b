//! cert-manager mode: the serving certificate files are renewed in place
//! and the running server picks up the new pair; a broken pair is ignored
//! and the old certificate kept.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_inject::ca_bootstrap::{generate_ca, serving_cert, CaPair};
use portcullis_inject::server::{serve, Metrics, State};
use portcullis_inject::tls::{server_config, CertFiles, ReloadingCert};
use portcullis_inject::InjectSettings;

fn write_pair(dir: &Path, ca: &CaPair) {
    let (chain, key) = serving_cert(ca, vec!["localhost".into()]).unwrap();
    // Write to temp names and rename, as the kubelet's atomic writer does.
    std::fs::write(dir.join("tls.key.new"), key).unwrap();
    std::fs::write(dir.join("tls.crt.new"), chain).unwrap();
    std::fs::rename(dir.join("tls.key.new"), dir.join("tls.key")).unwrap();
    std::fs::rename(dir.join("tls.crt.new"), dir.join("tls.crt")).unwrap();
}

async fn healthy(ca: &CaPair, port: u16) -> bool {
    let client = common::client(&ca.cert_pem, false);
    let req = http::Request::get(format!("https://localhost:{port}/healthz"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    matches!(tokio::time::timeout(Duration::from_secs(5), client.request(req)).await, Ok(Ok(r)) if r.status() == 200)
}

#[tokio::test]
async fn renewed_files_are_served_without_restart() {
    let dir = std::env::temp_dir().join(format!("portcullis-inject-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca1, ca2) = (generate_ca().unwrap(), generate_ca().unwrap());
    write_pair(&dir, &ca1);
    let files = CertFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    let resolver = ReloadingCert::new(files.load().unwrap());
    let watcher = files.watch(resolver.clone(), Duration::from_millis(50));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(resolver).unwrap()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(State {
        settings: InjectSettings::default(),
        metrics: Metrics::default(),
    });
    let server = tokio::spawn(serve(listener, acceptor, state, std::future::pending()));

    assert!(healthy(&ca1, port).await);
    assert!(!healthy(&ca2, port).await);
    // Modification times can be coarse: make sure the new pair is newer.
    tokio::time::sleep(Duration::from_millis(20)).await;
    write_pair(&dir, &ca2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !healthy(&ca2, port).await {
        assert!(
            Instant::now() < deadline,
            "renewed certificate not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!healthy(&ca1, port).await);

    // A broken renewal keeps the current certificate.
    std::fs::write(dir.join("tls.crt"), "garbage").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(healthy(&ca2, port).await);

    watcher.abort();
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
