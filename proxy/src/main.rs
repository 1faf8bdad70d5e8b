use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use portcullis::Config;

/// Portcullis: an MCP-aware security sidecar.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Worker threads of the async runtime. Default: one per CPU of the
        /// cgroup's CPU limit (rounded up), one when there is no limit;
        /// TOKIO_WORKER_THREADS, if set, is honoured instead.
        #[arg(long, env = "PORTCULLIS_WORKERS", value_parser = clap::value_parser!(u16).range(1..=512))]
        workers: Option<u16>,
    },
    /// Check a config file and print the effective configuration.
    Validate {
        #[arg(long)]
        config: PathBuf,
    },
    /// Compile filters ahead of time (and, as a child of the sidecar, when
    /// it loads one).
    Filter {
        #[command(subcommand)]
        command: FilterCommand,
    },
    /// Tools for policy authors.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Install (or, with --clean, remove) the nat rules that send the pod's
    /// TCP connections to the sidecar. Run by the capture init container.
    Capture(portcullis_capture::CaptureArgs),
    /// A development CA for demos and tests (production SVIDs come from
    /// SPIRE or cert-manager).
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Mint a trust domain's root CA into DIR (ca.pem, ca.key).
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        trust_domain: String,
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        lifetime: std::time::Duration,
    },
    /// Issue an X.509-SVID signed by the CA in DIR, as OUT.pem and OUT.key.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// The SPIFFE ID, e.g. spiffe://demo.local/ns/agents/sa/planner.
        #[arg(long)]
        id: String,
        #[arg(long)]
        out: PathBuf,
        /// Extra DNS SANs, for clients that check host names (curl, httpx).
        #[arg(long)]
        dns: Vec<String>,
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        lifetime: std::time::Duration,
    },
}

#[derive(Subcommand)]
enum FilterCommand {
    /// Compile a filter component (`.wasm`) into an artifact the sidecar
    /// loads without compiling (`.cwasm`, named in `filters[].path`). It
    /// works only with this build of Portcullis, on this kind of CPU, with
    /// the same memory layout (`filter_engine.max_instances` on the same
    /// side of 2 046, and an address space and `ulimit -v` that fit it as
    /// the sidecar's do; while memories are bounds-checked, also
    /// `memory_limit_bytes`, the largest of the config's filters, rounded
    /// up to the same power of two): the sidecar refuses any other
    /// artifact with a clear error.
    Compile {
        /// The component; stdin when absent.
        input: Option<PathBuf>,
        /// Where the artifact goes (name it `.cwasm`: only such paths are
        /// loaded as artifacts); stdout when absent.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The sidecar's config, for its memory settings.
        #[arg(long, conflicts_with = "max_memory")]
        config: Option<PathBuf>,
        /// The largest `memory_limit_bytes` of the sidecar's filters.
        #[arg(long)]
        max_memory: Option<usize>,
        /// The sidecar's `filter_engine.max_instances` (over --config's).
        #[arg(long)]
        max_instances: Option<u32>,
        /// The memory layout as the sidecar chose it (`RESERVATION:GUARD`
        /// in bytes), instead of deriving it here: how the sidecar runs
        /// its compile child.
        #[arg(long, hide = true)]
        memory_layout: Option<portcullis::filter::MemoryLayout>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run a filter against recorded calls and print its decisions.
    Test {
        /// The filter component (`.wasm`).
        #[arg(long, required_unless_present = "rules")]
        filter: Option<PathBuf>,
        /// Static rules (YAML or JSON: `default` and `rules`, as under
        /// `policy:` in the sidecar's config), run before the filter.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// The filter's configuration (a JSON file).
        #[arg(long)]
        config: Option<PathBuf>,
        /// One recorded call (JSON).
        #[arg(long, conflicts_with = "fixtures")]
        call: Option<PathBuf>,
        /// A directory of recorded calls (`*.json`).
        #[arg(long)]
        fixtures: Option<PathBuf>,
        /// Replay an audit log (the sidecar's `--log-format json` output)
        /// against the candidate and print every decision that would
        /// change.
        #[arg(long, conflicts_with_all = ["call", "fixtures"])]
        audit: Option<PathBuf>,
        /// The evaluation deadline.
        #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// The filter's memory limit in bytes (`memory_limit_bytes`).
        #[arg(long, default_value_t = 32 << 20)]
        memory: usize,
        /// Keep compiled filters here between runs (`filter_engine.cache_dir`).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Evaluate each fixture this many more times, warm, and print the
        /// mean time of one evaluation (decisions are not reused here, even
        /// for a filter that declares what it decides on).
        #[arg(long, default_value_t = 0)]
        repeat: u32,
    },
}

fn init_logs(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    // The serving sidecar only: compiling filters (here or in the child
    // processes the sidecar starts) runs Cranelift on many threads at once.
    // Before the runtime's threads exist: they pick their arena when they
    // first allocate.
    if let Command::Run { workers, .. } = cli.command {
        portcullis::memory::use_one_arena();
        if let Some(n) = portcullis::cpu_limit::runtime_workers(workers) {
            runtime.worker_threads(n);
        }
    }
    runtime
        .enable_all()
        .build()
        .context("tokio runtime")?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    init_logs(cli.log_format);
    match cli.command {
        Command::Validate { config } => {
            let cfg = load(&config)?;
            println!("{cfg:#?}");
            println!("config OK: {}", config.display());
            Ok(())
        }
        Command::Policy {
            command:
                PolicyCommand::Test {
                    filter,
                    rules,
                    config,
                    call,
                    fixtures,
                    audit,
                    timeout,
                    memory,
                    cache_dir,
                    repeat,
                },
        } => policy_test(PolicyTestArgs {
            cache_dir,
            filter,
            rules,
            config,
            calls: call.or(fixtures),
            audit,
            timeout,
            memory,
            repeat,
        }),
        Command::Ca { command } => ca(command),
        Command::Filter {
            command:
                FilterCommand::Compile {
                    input,
                    out,
                    config,
                    max_memory,
                    max_instances,
                    memory_layout,
                },
        } => filter_compile(
            input,
            out.as_deref(),
            config,
            (max_memory, max_instances),
            memory_layout,
        ),
        Command::Capture(args) => {
            let mut out = std::io::stdout().lock();
            portcullis_capture::run(&args, &mut out).context("portcullis capture")
        }
        Command::Run { config, .. } => {
            // Before it is loaded: a change made during start is reloaded.
            let read = portcullis::reload::ConfigRead::before_load(&config);
            let cfg = load(&config)?;
            raise_fd_limit();
            // The compiler's memory stays out of the sidecar: filters are
            // compiled by short-lived children of this binary.
            // /proc/self/exe still names this program after an in-place
            // upgrade replaced the file (current_exe would not).
            portcullis::filter::compile::compile_in_child(PathBuf::from("/proc/self/exe"));
            tracing::info!(config = ?cfg, "effective configuration");
            tracing::info!(
                workers = tokio::runtime::Handle::current().metrics().num_workers(),
                cpu_limit = ?portcullis::cpu_limit::limit(),
                "runtime"
            );
            let running = portcullis::runtime::start_watching(cfg, read)
                .await
                .map_err(|e| anyhow::anyhow!("starting portcullis: {e}"))?;
            let stop = running.shutdown_token();
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("signal received, draining");
                stop.cancel();
            });
            running.wait().await;
            Ok(())
        }
    }
}

/// Every connection costs a descriptor (two when proxied), and the usual
/// soft limit (1024) is far below `listener.max_connections`: raise it to
/// the hard limit, as a server process should, and say so.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    if before < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            return tracing::warn!(error = %e, "could not raise the open-file limit");
        }
    }
    tracing::info!(from = ?before, to = ?limit.current, "open-file limit");
}

/// The config file, with what the injected pod sets in the environment
/// (`PORTCULLIS_CAPTURE_MODE`, `PORTCULLIS_INBOUND_PORTS`,
/// `PORTCULLIS_APP_PROBES`) applied on top.
fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load_with_env(path, |name| {
        std::env::var(name).ok()
    })?)
}

fn filter_compile(
    input: Option<PathBuf>,
    out: Option<&std::path::Path>,
    config: Option<PathBuf>,
    (max_memory, max_instances): (Option<usize>, Option<u32>),
    layout: Option<portcullis::filter::MemoryLayout>,
) -> anyhow::Result<()> {
    use portcullis::filter::{compile, EngineOptions, FilterEngine};
    let defaults = match &config {
        Some(path) => {
            let cfg = load(path)?;
            EngineOptions::new(&cfg.filter_engine, &cfg.filters)
        }
        None => EngineOptions::new(&Default::default(), &[]),
    };
    let engine = FilterEngine::compiler(
        max_memory.unwrap_or(defaults.max_memory),
        max_instances.unwrap_or(defaults.max_instances),
        layout,
    )?;
    let bytes = match &input {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut b).context("reading stdin")?;
            b
        }
    };
    compile::precompile(&engine, &bytes, out).map_err(anyhow::Error::msg)
}

fn ca(command: CaCommand) -> anyhow::Result<()> {
    use portcullis::identity::ca::Ca;
    match command {
        CaCommand::Init {
            dir,
            trust_domain,
            lifetime,
        } => {
            Ca::new(&trust_domain, lifetime)?.save(&dir)?;
            println!(
                "CA for trust domain {trust_domain} written to {}",
                dir.display()
            );
        }
        CaCommand::Issue {
            dir,
            id,
            out,
            dns,
            lifetime,
        } => {
            let (cert, key) = Ca::load(&dir)?.issue_with_dns(&id, lifetime, &dns)?;
            let (cert_path, key_path) = (out.with_extension("pem"), out.with_extension("key"));
            std::fs::write(&cert_path, cert)?;
            std::fs::write(&key_path, key)?;
            println!(
                "SVID {id} written to {} and {}",
                cert_path.display(),
                key_path.display()
            );
        }
    }
    Ok(())
}

struct PolicyTestArgs {
    filter: Option<PathBuf>,
    rules: Option<PathBuf>,
    config: Option<PathBuf>,
    calls: Option<PathBuf>,
    audit: Option<PathBuf>,
    timeout: std::time::Duration,
    memory: usize,
    cache_dir: Option<PathBuf>,
    repeat: u32,
}

fn policy_test(args: PolicyTestArgs) -> anyhow::Result<()> {
    use portcullis::policy_test;
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let config = match &args.config {
        Some(p) => read(p)?,
        None => "{}".to_string(),
    };
    let rules = match &args.rules {
        Some(p) => serde_yaml_ng::from_str(&read(p)?)
            .with_context(|| format!("static rules in {}", p.display()))?,
        None => Default::default(),
    };
    let chain = policy_test::load(&policy_test::Setup {
        filter: args.filter.as_deref(),
        config: &config,
        rules,
        timeout: args.timeout,
        memory: args.memory,
        // The engine's cache wants an absolute path; a relative one is
        // taken from the working directory, as a user typing it means.
        cache_dir: args.cache_dir.map(|p| std::path::absolute(&p).unwrap_or(p)),
        reuse_decisions: args.repeat == 0,
    })?;
    if let Some(log) = &args.audit {
        let r = policy_test::replay(&chain, log)?;
        for line in &r.changes {
            println!("{line}");
        }
        println!(
            "{} calls replayed: {} newly denied, {} newly allowed ({} other lines skipped)",
            r.replayed, r.newly_denied, r.newly_allowed, r.skipped
        );
        return Ok(());
    }
    let calls = args
        .calls
        .context("give --call FILE, --fixtures DIR or --audit LOG")?;
    let (mut passed, mut failed) = (0, 0);
    for file in policy_test::fixture_files(&calls)? {
        let (line, ok) = policy_test::run(&chain, &file, args.repeat)?;
        println!("{line}");
        if ok {
            passed += 1
        } else {
            failed += 1
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        anyhow::bail!("{failed} fixture(s) did not get the expected decision");
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_parsed_and_zero_is_refused() {
        let run = |args: &[&str]| {
            Cli::try_parse_from(
                ["portcullis", "run", "--config", "c.yaml"]
                    .iter()
                    .chain(args),
            )
        };
        match run(&["--workers", "1"]).map(|c| c.command) {
            Ok(Command::Run { workers, .. }) => assert_eq!(workers, Some(1)),
            other => panic!("{:?}", other.err()),
        }
        assert!(run(&["--workers", "0"]).is_err());
        assert!(run(&["--workers", "two"]).is_err());
    }
}
