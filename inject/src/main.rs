//! `portcullis-inject`: the sidecar-injection webhook (`serve`) and its
//! offline twin (`render`). A separate binary so the sidecar image carries
//! no Kubernetes dependencies.
#![forbid(unsafe_code)]

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use portcullis_inject::ca_bootstrap;
use portcullis_inject::kube_api::InClusterApi;
use portcullis_inject::server::{self, Metrics, State};
use portcullis_inject::settings::InjectSettings;
use portcullis_inject::tls::{self, CertFiles, ReloadingCert};

#[derive(Parser)]
#[command(
    name = "portcullis-inject",
    version,
    about = "Injects the Portcullis sidecar into pods"
)]
struct Cli {
    /// Injector settings (YAML); defaults apply when omitted.
    #[arg(long, global = true, env = "PORTCULLIS_INJECT_CONFIG")]
    config: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve AdmissionReview v1 over HTTPS on POST /inject.
    Serve(ServeArgs),
    /// Print the injected form of the pods/workloads in a YAML file.
    Render {
        /// The file, or - for stdin.
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// Namespace whose defaults apply (else the document's, else default).
        #[arg(short, long)]
        namespace: Option<String>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long, default_value = "0.0.0.0:9443")]
    listen: SocketAddr,
    /// Optional plain-HTTP listener for /healthz, /readyz and /metrics.
    #[arg(long)]
    probe_listen: Option<SocketAddr>,
    /// cert-manager mode: serving certificate (re-read when it changes).
    #[arg(long, requires = "tls_key", conflicts_with = "self_signed_ca")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Self-made CA mode: create or reuse the CA Secret, mint a serving
    /// certificate, and write caBundle into the webhook configuration.
    #[arg(long)]
    self_signed_ca: bool,
    #[arg(long, default_value = "portcullis-webhook")]
    service: String,
    #[arg(long, env = "POD_NAMESPACE", default_value = "portcullis-system")]
    namespace: String,
    #[arg(long, default_value = "portcullis-injector")]
    webhook_config: String,
    #[arg(long, default_value = "portcullis-webhook-ca")]
    ca_secret: String,
    /// How often the certificate files are checked for renewal.
    #[arg(long, default_value = "10s", value_parser = parse_secs)]
    reload_interval: Duration,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let n = s.strip_suffix('s').unwrap_or(s);
    n.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("{s:?}: expected seconds like 10s"))
}

fn settings(path: Option<&str>) -> Result<InjectSettings> {
    Ok(match path {
        Some(p) => InjectSettings::load(p)?,
        None => InjectSettings::default(),
    })
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .json()
        .init();
    let settings = settings(cli.config.as_deref())?;
    match cli.command {
        Command::Render { file, namespace } => render(&file, namespace.as_deref(), &settings),
        Command::Serve(args) => tokio::runtime::Runtime::new()?.block_on(serve(args, settings)),
    }
}

fn render(file: &str, namespace: Option<&str>, settings: &InjectSettings) -> Result<()> {
    let mut text = String::new();
    if file == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    }
    let out = portcullis_inject::render::render(&text, namespace, settings)?;
    for note in &out.notes {
        eprintln!("{note}");
    }
    print!("{}", out.yaml);
    Ok(())
}

async fn serving_cert(args: &ServeArgs) -> Result<Arc<ReloadingCert>> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let files = CertFiles {
            cert: cert.clone(),
            key: key.clone(),
        };
        let resolver = ReloadingCert::new(files.load()?);
        files.watch(resolver.clone(), args.reload_interval);
        return Ok(resolver);
    }
    if !args.self_signed_ca {
        bail!("choose a TLS mode: --tls-cert/--tls-key (cert-manager) or --self-signed-ca");
    }
    let api = InClusterApi::from_env(&args.namespace, &args.ca_secret, &args.webhook_config)?;
    let (chain, key) = ca_bootstrap::bootstrap(&api, &args.service, &args.namespace).await?;
    Ok(ReloadingCert::new(tls::certified_key_from_pem(
        chain.as_bytes(),
        key.as_bytes(),
        "self-made CA",
    )?))
}

async fn serve(args: ServeArgs, settings: InjectSettings) -> Result<()> {
    let resolver = serving_cert(&args).await?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(resolver)?));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(addr = %args.listen, "portcullis-inject serving POST /inject");
    let state = Arc::new(State {
        settings,
        metrics: Metrics::default(),
    });
    if let Some(addr) = args.probe_listen {
        let probes = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(%addr, "portcullis-inject serving /healthz, /readyz and /metrics");
        // Ends with the process: the probes must answer until the last
        // admission request is done.
        tokio::spawn(server::serve_plain(
            probes,
            state.clone(),
            std::future::pending(),
        ));
    }
    server::serve(listener, acceptor, state, shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
