//! Starting and stopping the whole sidecar: listeners, admin, drain.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
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
    filter::{build_chain, EngineOptions, FilterEngine, FilterError},
    identity::{
        source::{self, SourceError},
        svid::IdentityStore,
        tls,
    },
    listener::tls::Mtls,
    listener::{self, ConnCtx, Plaintext},
    metrics::Metrics,
    policy::{Policy, PolicyHandle},
    reload::Reloader,
    service::{self, Shared},
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
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("identity: {0}")]
    Identity(#[from] SourceError),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
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

/// Starts the sidecar from `config`: static rules and WASM filters, with
/// filter files watched for changes.
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_from(config, None).await
}

/// Starts the sidecar from a config file, which is watched too: a change
/// to its policy or filters is applied without a restart.
pub async fn start_from_file(path: &Path) -> Result<Running, StartError> {
    let config = Config::load(path)?;
    start_from(config, Some(path.to_path_buf())).await
}

async fn start_from(config: Config, path: Option<PathBuf>) -> Result<Running, StartError> {
    config.validate()?;
    let metrics = Metrics::new()?;
    let opts = EngineOptions::new(&config.filter_engine, &config.filters);
    let (engine, chain) = {
        let (config, metrics) = (config.clone(), metrics.clone());
        // Compiling filters takes a while; keep it off the async workers.
        tokio::task::spawn_blocking(move || {
            let engine = Arc::new(FilterEngine::new(&opts)?);
            let chain = build_chain(&engine, &config.chain(), &metrics.filter)?;
            Ok::<_, FilterError>((engine, chain))
        })
        .await
        .map_err(|e| StartError::Filter(FilterError::Engine(e.to_string())))??
    };
    tracing::info!(filters = ?chain.filter_names(), "filter chain loaded");
    let handle = Arc::new(PolicyHandle::new(Box::new(chain)));
    let running = serve(config.clone(), handle.clone(), metrics.clone()).await?;
    let reloader = Reloader {
        engine,
        handle,
        metrics: metrics.filter,
        config,
        config_path: path,
    };
    tokio::spawn(reloader.run(running.shutdown.clone()));
    Ok(running)
}

/// Starts the sidecar with any policy (tests and embedders).
pub async fn start_with_policy(
    config: Config,
    policy: Box<dyn Policy>,
) -> Result<Running, StartError> {
    config.validate()?;
    serve(config, Arc::new(PolicyHandle::new(policy)), Metrics::new()?).await
}

/// The sockets the sidecar serves on, bound before anything starts.
struct Bound {
    proxy: TcpListener,
    admin: TcpListener,
    proxy_addr: SocketAddr,
    admin_addr: SocketAddr,
}

async fn bind_listeners(config: &Config) -> Result<Bound, StartError> {
    let local = |l: &TcpListener, addr: SocketAddr| {
        l.local_addr()
            .map_err(|source| StartError::Bind { addr, source })
    };
    let proxy = bind(config.listener.addr).await?;
    let admin = bind(config.admin.addr).await?;
    Ok(Bound {
        proxy_addr: local(&proxy, config.listener.addr)?,
        admin_addr: local(&admin, config.admin.addr)?,
        proxy,
        admin,
    })
}

/// Starts the sidecar: bind, start the identity source, build the shared
/// request state, spawn admin, then serve until shutdown and drain.
async fn serve(
    config: Config,
    policy: Arc<PolicyHandle>,
    metrics: Metrics,
) -> Result<Running, StartError> {
    let config = Arc::new(config);
    let bound = bind_listeners(&config).await?;
    let shutdown = CancellationToken::new();
    let draining = CancellationToken::new();
    let identity = start_identity(&config, &metrics, shutdown.clone()).await?;
    let upstream_tls = identity.as_ref().and_then(|i| i.upstream.clone());
    let shared = Shared::new(
        &config,
        policy,
        metrics.http.clone(),
        draining.clone(),
        upstream_tls,
    )?;
    let ready = Arc::new(AtomicBool::new(true));
    let admin_stop = CancellationToken::new();
    tokio::spawn(Admin::new(metrics, ready.clone()).serve(bound.admin, admin_stop.clone()));
    tracing::info!(proxy_addr = %bound.proxy_addr, admin_addr = %bound.admin_addr, upstream = %config.upstream.url, rules = config.policy.rules.len(), "portcullis started");
    let stop = shutdown.clone();
    let (proxy_addr, admin_addr) = (bound.proxy_addr, bound.admin_addr);
    let task = tokio::spawn(async move {
        let tracker = TaskTracker::new();
        accept_until(
            bound.proxy,
            identity,
            Arc::new(shared),
            &config,
            stop,
            &tracker,
        )
        .await;
        ready.store(false, Ordering::Release);
        draining.cancel();
        drain(&tracker, config.shutdown.drain_timeout).await;
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

/// Serves the MCP listener until `stop`, with mTLS when identity is on.
async fn accept_until(
    proxy: TcpListener,
    identity: Option<Identity>,
    shared: Arc<Shared>,
    config: &Config,
    stop: CancellationToken,
    tracker: &TaskTracker,
) {
    let service =
        move |conn: Arc<ConnCtx>, req| service::handle(shared.clone(), conn.principal.clone(), req);
    let settings = &config.listener;
    match identity {
        Some(id) => {
            listener::serve(
                proxy,
                id.handshake,
                settings,
                service,
                stop,
                tracker.clone(),
            )
            .await
        }
        None => listener::serve(proxy, Plaintext, settings, service, stop, tracker.clone()).await,
    }
}

/// Waits for open connections and streams to finish, up to `timeout`.
async fn drain(tracker: &TaskTracker, timeout: std::time::Duration) {
    tracker.close();
    tracing::info!(open = tracker.len(), ?timeout, "draining connections");
    if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
        tracing::warn!(
            open = tracker.len(),
            "drain timeout reached; closing remaining connections"
        );
    }
}

/// What mTLS needs once the SVID source is running.
struct Identity {
    handshake: Mtls,
    /// The client config for an `https` upstream.
    upstream: Option<rustls::ClientConfig>,
}

async fn start_identity(
    config: &Config,
    metrics: &Metrics,
    stop: CancellationToken,
) -> Result<Option<Identity>, StartError> {
    let Some(id) = &config.identity else {
        return Ok(None);
    };
    let store = Arc::new(IdentityStore::default());
    source::start(&id.source, store.clone(), metrics.identity.clone(), stop).await?;
    let server = tls::server_config(
        store.clone(),
        id.trust_domains.clone(),
        id.mode == crate::config::Mode::Strict,
    )?;
    let upstream = match config.upstream_uri()?.scheme_str() {
        Some("https") => Some(tls::client_config(
            store,
            id.trust_domains.clone(),
            config.upstream.server_ids.clone(),
        )?),
        _ => None,
    };
    tracing::info!(mode = id.mode.label(), trust_domains = ?id.trust_domains, "mTLS enabled");
    Ok(Some(Identity {
        handshake: Mtls::new(server, id.mode, metrics.identity.clone()),
        upstream,
    }))
}
