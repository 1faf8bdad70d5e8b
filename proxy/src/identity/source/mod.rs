//! Where our SVID and the trust bundles come from. Every source publishes
//! snapshots into the [`IdentityStore`]; a source that is lost leaves the
//! last snapshot in place, which serves until it expires and then fails
//! closed (see `IdentityStore::usable`).

mod files;
mod workload;

use std::{path::PathBuf, sync::Arc, time::Duration};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub use self::{files::FilesSource, workload::WorkloadApiSource};
use super::svid::IdentityStore;
use super::IdentityMetrics;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Files(String),
    #[error("SPIFFE Workload API: {0}")]
    WorkloadApi(String),
    #[error("no SVID from the source within {0:?}")]
    Timeout(Duration),
}

/// PEM files, e.g. from cert-manager's csi-driver-spiffe or Kubernetes Pod
/// Certificates. They are polled, and every change is published.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Our certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Our trust domain's CA certificates.
    pub bundle: PathBuf,
    /// Other trust domains' bundles, by trust domain.
    #[serde(default)]
    pub federated: std::collections::BTreeMap<String, PathBuf>,
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl FilesConfig {
    /// Makes relative paths relative to `base` (the config file's folder).
    pub fn resolve_relative_to(&mut self, base: &std::path::Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.cert);
        fix(&mut self.key);
        fix(&mut self.bundle);
        self.federated.values_mut().for_each(fix);
    }
}

fn default_poll() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WorkloadApiConfig {
    /// `unix:///path/to/agent.sock`; default `$SPIFFE_ENDPOINT_SOCKET`.
    #[serde(default)]
    pub socket: Option<String>,
}

/// Exactly one of the two must be set.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    #[serde(default)]
    pub workload_api: Option<WorkloadApiConfig>,
    #[serde(default)]
    pub files: Option<FilesConfig>,
}

impl SourceConfig {
    pub fn validate(&self) -> Result<(), &'static str> {
        match (&self.workload_api, &self.files) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => Err("set exactly one of workload_api or files"),
        }
    }
}

/// Starts the configured source, waits for the first snapshot, and keeps
/// following updates until `stop`.
pub async fn start(
    config: &SourceConfig,
    store: Arc<IdentityStore>,
    metrics: IdentityMetrics,
    stop: CancellationToken,
) -> Result<(), SourceError> {
    match (&config.files, &config.workload_api) {
        (Some(c), _) => FilesSource::new(c.clone()).start(store.clone(), stop.clone())?,
        (None, Some(c)) => {
            WorkloadApiSource::new(c.clone())
                .start(store.clone(), stop.clone())
                .await?
        }
        (None, None) => return Err(SourceError::Files("no SVID source configured".into())),
    }
    tokio::spawn(monitor(store, metrics, stop));
    Ok(())
}

/// Keeps `svid_expiry_seconds` current and says so, loudly, when the SVID
/// is near its end or past it.
async fn monitor(store: Arc<IdentityStore>, metrics: IdentityMetrics, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut warned = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(s) = store.current() else { continue };
        let left = s.remaining();
        metrics.svid_expiry(left.as_secs_f64());
        let lifetime = s.not_after.duration_since(s.not_before).unwrap_or_default();
        let near = left < lifetime / 5;
        if left.is_zero() && !warned {
            tracing::error!(id = %s.id, "SVID expired and no new one arrived: refusing mTLS handshakes (fail closed)");
            warned = true;
        } else if near && !warned {
            tracing::warn!(id = %s.id, left = ?left, "SVID near expiry and not yet rotated; is the source healthy?");
            warned = true;
        } else if !near {
            warned = false;
        }
    }
}
