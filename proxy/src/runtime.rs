//! Starting and stopping the whole sidecar: listeners, admin, drain.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    admin::Admin,
    config::{Config, ConfigError},
    listener::{self, Plaintext},
    metrics::Metrics,
    policy::{Policy, PolicyHandle},
    service::Shared,
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A started sidecar.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, drains in-flight requests and streams (up to the
    /// configured drain timeout), and returns when done.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// The token that starts a drain (what SIGTERM cancels).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the sidecar has stopped.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Starts the sidecar with the config's static rules as the policy.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let policy: Box<dyn Policy> = Box::new(config.policy.clone());
    start_with_policy(config, policy).await
}

/// Starts the sidecar with any policy.
pub async fn start_with_policy(
    config: Config,
    policy: Box<dyn Policy>,
) -> Result<Running, StartError> {
    let policy = Arc::new(PolicyHandle::new(policy));
    config.validate()?;
    let config = Arc::new(config);
    let metrics = Metrics::new()?;
    let proxy = bind(config.listener.addr).await?;
    let admin = bind(config.admin.addr).await?;
    let proxy_addr = proxy.local_addr().map_err(|source| StartError::Bind {
        addr: config.listener.addr,
        source,
    })?;
    let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
        addr: config.admin.addr,
        source,
    })?;

    let shutdown = CancellationToken::new();
    let draining = CancellationToken::new();
    let shared = Arc::new(Shared::new(
        config.clone(),
        policy,
        metrics.clone(),
        draining.clone(),
    )?);
    let ready = Arc::new(AtomicBool::new(true));
    let admin_stop = CancellationToken::new();
    tokio::spawn(Admin::new(metrics, ready.clone()).serve(admin, admin_stop.clone()));

    tracing::info!(%proxy_addr, %admin_addr, upstream = %config.upstream.url, rules = config.policy.rules.len(), "portcullis started");
    let tracker = TaskTracker::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        listener::serve(proxy, Plaintext, shared, stop, tracker.clone()).await;
        ready.store(false, Ordering::Release);
        draining.cancel();
        tracker.close();
        let open = tracker.len();
        tracing::info!(open, timeout = ?config.shutdown.drain_timeout, "draining connections");
        if tokio::time::timeout(config.shutdown.drain_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = tracker.len(),
                "drain timeout reached; closing remaining connections"
            );
        }
        admin_stop.cancel();
        tracing::info!("portcullis stopped");
    });
    Ok(Running {
        proxy_addr,
        admin_addr,
        shutdown,
        task,
    })
}
