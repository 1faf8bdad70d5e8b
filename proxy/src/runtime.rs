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
    admin::{identity::IdentityReport, Admin},
    admission::{self, Gate},
    capture::{CaptureListener, Routes},
    config::{Config, ConfigError},
    filter::{build_chain, EngineOptions, FilterEngine, FilterError},
    identity::{
        source::{self, SourceError},
        svid::IdentityStore,
        tls,
    },
    instance::Instance,
    listener::tls::Mtls,
    listener::{self, ConnCtx, Handshake, Plaintext},
    metrics::Metrics,
    policy::{Policy, PolicyHandle},
    reload::{Baseline, ConfigRead, Reloader},
    service::{self, Shared},
    session::Sessions,
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
    #[error("sessions: {0}")]
    Sessions(#[from] crate::session::KeyringError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
}

/// A started sidecar.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The capture listener's address, when capture is configured.
    pub capture_addr: Option<SocketAddr>,
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

/// A bound listener and the address it really got (port 0 in tests).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let bound = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let local = bound
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok((bound, local))
}

/// Starts the sidecar from `config`: static rules and WASM filters, with
/// filter files watched for changes.
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_from(config, None).await
}

/// Starts the sidecar with `config`, loaded by the caller (with the
/// environment) from the file `read` was taken of just before; that file
/// is watched for changes as by [`start_from_file`].
pub async fn start_watching(config: Config, read: ConfigRead) -> Result<Running, StartError> {
    start_from(config, Some(read)).await
}

/// Starts the sidecar from a config file, which is watched too: a change
/// to its policy or filters is applied without a restart.
pub async fn start_from_file(path: &Path) -> Result<Running, StartError> {
    let read = ConfigRead::before_load(path);
    let config = Config::load(path)?;
    start_from(config, Some(read)).await
}

async fn start_from(config: Config, read: Option<ConfigRead>) -> Result<Running, StartError> {
    let path = read.as_ref().map(|r| r.path().to_path_buf());
    config.validate()?;
    let metrics = Metrics::new()?;
    let opts = EngineOptions::new(&config.filter_engine, &config.filters);
    let (engine, chain, baseline) = {
        let (config, metrics) = (config.clone(), metrics.clone());
        // Compiling filters takes a while; keep it off the async workers.
        tokio::task::spawn_blocking(move || {
            // Before the chain reads the files: see `Baseline`.
            let baseline = Baseline::take(&config, read);
            let engine = Arc::new(FilterEngine::new(&opts)?);
            let chain = build_chain(&engine, &config.chain(), &metrics.filter)?;
            Ok::<_, FilterError>((engine, chain, baseline))
        })
        .await
        .map_err(|e| StartError::Filter(FilterError::Engine(e.to_string())))??
    };
    tracing::info!(filters = ?chain.filter_names(), "filter chain loaded");
    let handle = Arc::new(PolicyHandle::new(Box::new(chain)));
    let running = serve(
        config.clone(),
        path.clone(),
        handle.clone(),
        metrics.clone(),
    )
    .await?;
    let reloader = Reloader {
        engine,
        handle,
        metrics: metrics.filter,
        config,
        config_path: path,
    };
    tokio::spawn(reloader.run(baseline, running.shutdown.clone()));
    Ok(running)
}

/// Starts the sidecar with any policy (tests and embedders).
pub async fn start_with_policy(
    config: Config,
    policy: Box<dyn Policy>,
) -> Result<Running, StartError> {
    config.validate()?;
    serve(
        config,
        None,
        Arc::new(PolicyHandle::new(policy)),
        Metrics::new()?,
    )
    .await
}

/// The resource server, its issuers' keys read once and kept fresh.
async fn start_auth(
    config: &Config,
    metrics: &Metrics,
    shutdown: &CancellationToken,
    court: &crate::service::Court,
) -> Result<Option<Arc<crate::auth::Auth>>, StartError> {
    let Some(section) = &config.auth else {
        return Ok(None);
    };
    let identity_tds = config
        .identity
        .as_ref()
        .map_or(&[][..], |i| i.trust_domains.as_slice());
    let auth = crate::auth::Auth::new(section, identity_tds, metrics.auth.clone()).await?;
    if let Some(auth) = &auth {
        auth.spawn_refresh(shutdown);
        // Lists are filtered by the same scope rules as calls.
        let _ = court.auth.set(auth.clone());
    }
    Ok(auth)
}

/// The admin listener: metrics, probes, the identity report, and the
/// public key of the upstream identity assertions when they are signed.
fn admin_server(
    config: &Config,
    metrics: &Metrics,
    ready: &Arc<AtomicBool>,
    shared: &Shared,
    report: IdentityReport,
) -> Admin {
    let admin = Admin::new(metrics.clone(), ready.clone())
        .with_app_probes(config.app_probes.clone())
        .with_identity(report);
    match shared.upstream_identity.asserter() {
        Some(asserter) => admin.with_assertion_keys(&asserter.jwks()),
        None => admin,
    }
}

async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    policy: Arc<PolicyHandle>,
    metrics: Metrics,
) -> Result<Running, StartError> {
    let config = Arc::new(config);
    let instance = Arc::new(Instance::from_env(config.instance.as_deref()));
    metrics.register_instance(&instance)?;
    // Every port is bound before anything starts, so a clash fails the start.
    let (proxy, proxy_addr) = bind(config.listener.addr).await?;
    let (admin, admin_addr) = bind(config.admin.addr).await?;
    let capture = match &config.capture {
        Some(c) => Some(bind(c.addr).await?),
        None => None,
    };
    let capture_addr = capture.as_ref().map(|(_, addr)| *addr);

    let shutdown = CancellationToken::new();
    let draining = CancellationToken::new();
    let identity = start_identity(&config, &metrics, shutdown.clone()).await?;
    let sessions = start_sessions(&config, &instance, &metrics, shutdown.clone())?;
    let mut shared = Shared::new(
        &config,
        &instance,
        policy,
        metrics.http.clone(),
        draining.clone(),
        identity.as_ref().and_then(|i| i.upstream.clone()),
        sessions,
    )?;
    shared.auth = start_auth(&config, &metrics, &shutdown, &shared.court).await?;
    let shared = Arc::new(shared);
    let ready = Arc::new(AtomicBool::new(true));
    let admin_stop = CancellationToken::new();
    let report = IdentityReport {
        instance,
        svid: identity.as_ref().map(|i| i.store.clone()),
        config_path,
        config: config.clone(),
        sessions: shared.sessions.clone(),
    };
    let admin_server = admin_server(&config, &metrics, &ready, &shared, report);
    tokio::spawn(admin_server.serve(admin, admin_stop.clone()));

    tracing::info!(%proxy_addr, %admin_addr, ?capture_addr, upstream = %config.upstream.url, rules = config.policy.rules.len(), "portcullis started");
    let listeners = Listeners {
        capture: capture.and_then(|(bound, _)| capture_listener(&config, bound, &metrics)),
        proxy,
        gate: gate("proxy", &config, &metrics),
    };
    let data = DataPath {
        config,
        shared,
        ready,
        draining,
        admin_stop,
    };
    let task = tokio::spawn(data.run(listeners, identity, shutdown.clone()));
    Ok(Running {
        proxy_addr,
        admin_addr,
        capture_addr,
        shutdown,
        task,
    })
}

/// The session keyring, read now (a missing or invalid keyring fails the
/// start: there is no default key) and again every `keyring_reload_interval`
/// so that keys rotate without a restart.
fn start_sessions(
    config: &Config,
    instance: &Instance,
    metrics: &Metrics,
    stop: CancellationToken,
) -> Result<Option<Arc<Sessions>>, StartError> {
    let Some(c) = &config.sessions else {
        return Ok(None);
    };
    let sessions = Arc::new(Sessions::new(c, instance.uuid, metrics.session.clone())?);
    let (watched, every) = (sessions.clone(), c.keyring_reload_interval);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match watched.reload_keyring() {
                Ok(true) => tracing::info!(keys = ?watched.keys(), "session keyring reloaded"),
                Ok(false) => {}
                // The keys in force stay: a half-written Secret must not
                // end every session.
                Err(e) => tracing::warn!(error = %e, "session keyring not reloaded"),
            }
        }
    });
    Ok(Some(sessions))
}

fn capture_listener(
    config: &Config,
    listener: TcpListener,
    metrics: &Metrics,
) -> Option<CaptureListener> {
    Some(CaptureListener {
        listener,
        routes: Routes::new(config.capture.as_ref()?),
        metrics: metrics.capture.clone(),
        settings: config.listener.clone(),
        gate: gate("capture", config, metrics),
    })
}

/// The admission gate of one listener (see [`crate::admission`]).
fn gate(name: &'static str, config: &Config, metrics: &Metrics) -> Arc<Gate> {
    let limits = admission::Limits::from_config(&config.listener);
    Arc::new(Gate::new(name, limits, Some(metrics.admission.clone())))
}

/// The listeners that carry MCP traffic.
struct Listeners {
    proxy: TcpListener,
    /// The explicit listener's gate (the capture listener has its own).
    gate: Arc<Gate>,
    capture: Option<CaptureListener>,
}

/// What serves the data path, and what its drain stops.
struct DataPath {
    config: Arc<Config>,
    shared: Arc<Shared>,
    ready: Arc<AtomicBool>,
    draining: CancellationToken,
    admin_stop: CancellationToken,
}

impl DataPath {
    async fn run(self, listeners: Listeners, identity: Option<Identity>, stop: CancellationToken) {
        let tracker = TaskTracker::new();
        match identity {
            Some(id) => self.accept(listeners, id.handshake, stop, &tracker).await,
            None => self.accept(listeners, Plaintext, stop, &tracker).await,
        }
        self.drain(tracker).await;
    }

    /// Both listeners share one handshake (so one mTLS mode) and one
    /// service; only the target differs, set per connection.
    async fn accept<H: Handshake>(
        &self,
        listeners: Listeners,
        handshake: H,
        stop: CancellationToken,
        tracker: &TaskTracker,
    ) {
        let shared = self.shared.clone();
        let service = move |conn: Arc<ConnCtx>, req| {
            service::handle(
                shared.clone(),
                conn.principal.clone(),
                conn.target,
                conn.admitted.clone(),
                req,
            )
        };
        let explicit = listener::serve(
            listeners.proxy,
            handshake.clone(),
            &self.config.listener,
            listeners.gate,
            service.clone(),
            stop.clone(),
            tracker.clone(),
        );
        match listeners.capture {
            Some(capture) => {
                let captured = capture.serve(handshake, service, stop, tracker.clone());
                tokio::join!(explicit, captured);
            }
            None => explicit.await,
        }
    }

    async fn drain(self, tracker: TaskTracker) {
        self.ready.store(false, Ordering::Release);
        self.draining.cancel();
        tracker.close();
        let timeout = self.config.shutdown.drain_timeout;
        tracing::info!(open = tracker.len(), ?timeout, "draining connections");
        if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
            tracing::warn!(
                open = tracker.len(),
                "drain timeout reached; closing remaining connections"
            );
        }
        self.admin_stop.cancel();
        tracing::info!("portcullis stopped");
    }
}

/// What mTLS needs once the SVID source is running.
struct Identity {
    handshake: Mtls,
    /// The current SVID, for `/identity`.
    store: Arc<IdentityStore>,
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
    let store_for_report = store.clone();
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
        store: store_for_report,
        handshake: Mtls::new(server, id.mode, metrics.identity.clone()),
        upstream,
    }))
}
