//! The PEM-files source.

use std::{collections::HashMap, path::Path, sync::Arc};

use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use super::{FilesConfig, SourceError};
use crate::identity::svid::{IdentityStore, Snapshot};

pub struct FilesSource {
    config: FilesConfig,
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, SourceError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| SourceError::Files(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(SourceError::Files(format!(
            "{}: no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

impl FilesSource {
    pub fn new(config: FilesConfig) -> Self {
        Self { config }
    }

    fn read(&self) -> Result<Snapshot, SourceError> {
        let c = &self.config;
        let chain = certs(&c.cert)?;
        let key = PrivateKeyDer::from_pem_file(&c.key)
            .map_err(|e| SourceError::Files(format!("{}: {e}", c.key.display())))?;
        let own = certs(&c.bundle)?;
        let mut bundles = HashMap::new();
        for (td, path) in &c.federated {
            bundles.insert(td.clone(), certs(path)?);
        }
        let mut snapshot = Snapshot::from_der(chain, key, bundles)
            .map_err(|e| SourceError::Files(e.to_string()))?;
        let own_td = snapshot.id.trust_domain().to_string();
        snapshot
            .trust(own_td, &own)
            .map_err(|e| SourceError::Files(format!("{}: {e}", c.bundle.display())))?;
        Ok(snapshot)
    }

    /// Reads the files now (an error refuses start-up), then polls them.
    pub fn start(
        self,
        store: Arc<IdentityStore>,
        stop: CancellationToken,
    ) -> Result<(), SourceError> {
        store.publish(self.read()?);
        let mut last = self.fingerprint();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.config.poll_interval);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = self.fingerprint();
                if now == last {
                    continue;
                }
                // Files are often replaced one by one: a half-written set
                // fails to parse and is retried on the next tick.
                match self.read() {
                    Ok(snapshot) => {
                        store.publish(snapshot);
                        last = now;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "SVID files changed but are not usable yet; keeping the current SVID")
                    }
                }
            }
        });
        Ok(())
    }

    fn fingerprint(&self) -> Vec<Option<Vec<u8>>> {
        let c = &self.config;
        std::iter::once(&c.cert)
            .chain([&c.key, &c.bundle])
            .chain(c.federated.values())
            .map(|p| std::fs::read(p).ok())
            .collect()
    }
}
