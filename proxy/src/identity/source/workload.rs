//! The SPIFFE Workload API source, through the `spiffe` crate's
//! `X509Source`, which follows the agent's streamed rotations and
//! reconnects on its own.

use std::{collections::HashMap, sync::Arc, time::Duration};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe::X509Source;
use tokio_util::sync::CancellationToken;

use super::{SourceError, WorkloadApiConfig};
use crate::identity::svid::{IdentityStore, Snapshot};

/// How long start-up waits for the first SVID.
const FIRST_SVID: Duration = Duration::from_secs(15);

pub struct WorkloadApiSource {
    config: WorkloadApiConfig,
}

impl WorkloadApiSource {
    pub fn new(config: WorkloadApiConfig) -> Self {
        Self { config }
    }

    pub async fn start(
        self,
        store: Arc<IdentityStore>,
        stop: CancellationToken,
    ) -> Result<(), SourceError> {
        let mut builder = X509Source::builder();
        if let Some(socket) = &self.config.socket {
            builder = builder.endpoint(socket);
        }
        let source = tokio::time::timeout(FIRST_SVID, builder.build())
            .await
            .map_err(|_| SourceError::Timeout(FIRST_SVID))?
            .map_err(|e| SourceError::WorkloadApi(e.to_string()))?;
        store.publish(snapshot(&source)?);
        let mut updates = source.updated();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => {
                        source.shutdown().await;
                        return;
                    }
                    changed = updates.changed() => {
                        if let Err(e) = changed {
                            tracing::error!(error = %e, "Workload API source lost; keeping the last SVID until it expires");
                            return;
                        }
                    }
                }
                match snapshot(&source) {
                    Ok(s) => store.publish(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "Workload API sent an unusable SVID; keeping the current one")
                    }
                }
            }
        });
        Ok(())
    }
}

fn snapshot(source: &X509Source) -> Result<Snapshot, SourceError> {
    let ctx = source
        .x509_context()
        .map_err(|e| SourceError::WorkloadApi(e.to_string()))?;
    let svid = ctx
        .default_svid()
        .ok_or_else(|| SourceError::WorkloadApi("no SVID in the response".into()))?;
    let chain = svid
        .cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        svid.private_key().as_bytes().to_vec(),
    ));
    let bundles: HashMap<String, Vec<CertificateDer<'static>>> = ctx
        .bundle_set()
        .iter()
        .map(|(td, b)| {
            let certs = b
                .authorities()
                .iter()
                .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
                .collect();
            (td.to_string(), certs)
        })
        .collect();
    Snapshot::from_der(chain, key, bundles).map_err(|e| SourceError::WorkloadApi(e.to_string()))
}
