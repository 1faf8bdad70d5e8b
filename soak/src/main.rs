//! `portcullis-soak`: steady open-loop load through portcullis (mTLS and
//! two WASM filters, bench's configuration d) for a long run, while the
//! config is reloaded, the proxy's SVID rotated and the upstream
//! restarted; then errors by class and restart window, memory and file
//! descriptors over time, and latency per window. See soak/README.md.

mod chaos;
mod chart;
mod load;
mod report;
mod sampler;
mod stats;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use portcullis_bench::targets::{self, Kind, Paths};
use portcullis_bench::{conn, upstream, verify};
use tokio::time::Instant;

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the soak and write RESULTS.md, results.json and soak.png.
    Run(Box<Args>),
    /// Serve the upstream MCP server (the soak starts and restarts it).
    Upstream {
        #[arg(long)]
        listen: SocketAddr,
    },
}

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Length of the loaded run.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Calls per second, due on a fixed schedule.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Connections the calls are spread over.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Filter chain reload (tool-rbac's file is rewritten) every ...
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    reload_every: Duration,
    /// New proxy SVID every ...
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    rotate_every: Duration,
    /// Upstream killed and started again every ...
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    restart_every: Duration,
    /// How long the upstream stays down at each restart.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    downtime: Duration,
    /// Errors up to this long after a restarted upstream listens are
    /// charged to the restart.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// Latency percentiles are reported per window of this length.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    window: Duration,
    /// RSS and open fds of the proxy are read this often.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    sample_every: Duration,
    #[arg(long, default_value = "target/release/portcullis")]
    portcullis: PathBuf,
    /// Where tool_rbac.wasm and arg_guard.wasm are.
    #[arg(long, default_value = "target/wasm32-wasip2/release")]
    filters: PathBuf,
    /// Scratch space: config, PKI, logs.
    #[arg(long, default_value = "target/soak-work")]
    work: PathBuf,
    /// Where RESULTS.md, results.json and soak.png are written.
    #[arg(long, default_value = "soak")]
    out: PathBuf,
    /// Upstream port; the proxy listens at +4 and its admin at +23
    /// (bench's layout for configuration d).
    #[arg(long, default_value_t = 18400)]
    base_port: u16,
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    font: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::Upstream { listen } => rt.block_on(upstream::serve(listen)),
        Cmd::Run(args) => {
            let failures = rt.block_on(run(*args))?;
            if !failures.is_empty() {
                bail!("the soak failed:\n- {}", failures.join("\n- "));
            }
            Ok(())
        }
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

/// Sets up, runs and reports; returns what failed.
async fn run(args: Args) -> anyhow::Result<Vec<String>> {
    if args.rate <= 0.0 || args.connections == 0 {
        bail!("--rate and --connections must be above 0");
    }
    for dir in [&args.work, &args.out] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let paths = Paths {
        portcullis: absolute(&args.portcullis)?,
        envoy: None,
        filters: absolute(&args.work)?.join("filters"),
        envoy_wasm: None,
        work: absolute(&args.work)?,
        base_port: args.base_port,
    };
    let _ = std::fs::remove_dir_all(paths.work.join("filter-cache"));
    // The proxy runs copies of the filters, which reloads rewrite.
    let filters = paths.work.join("filters");
    std::fs::create_dir_all(&filters)?;
    for f in ["tool_rbac.wasm", "arg_guard.wasm"] {
        let from = absolute(&args.filters)?.join(f);
        std::fs::copy(&from, filters.join(f))
            .with_context(|| format!("copying {}", from.display()))?;
    }
    targets::mint_pki(&paths).await?;
    let upstream = targets::start_upstream(&paths).await?;
    let proxy = targets::start(Kind::D, &paths).await?;
    verify::enforces_policy(Kind::D, &proxy.endpoint).await?;
    let pid = proxy.pid().context("the proxy has no pid")?;
    let admin = proxy.admin.context("the proxy has no admin port")?;
    let filter_file = paths.filters.join("tool_rbac.wasm");
    let filter_wasm = std::fs::read(&filter_file)?;
    let pki = paths.pki();
    let tls = Arc::new(conn::mtls_client(
        &pki.join("ca/ca.pem"),
        &pki.join("client.pem"),
        &pki.join("client.key"),
    )?);
    eprintln!(
        "soak: {:?} at {} calls/s over {} connections, proxy pid {pid}",
        args.duration, args.rate, args.connections
    );

    let start = Instant::now();
    let deadline = start + args.duration;
    let sampler = tokio::spawn(sampler::run(pid, start, deadline, args.sample_every));
    let schedule = load::Schedule {
        rate: args.rate,
        connections: args.connections,
        start,
        duration: args.duration,
        window: args.window,
    };
    let load = tokio::spawn(load::run(proxy.endpoint.clone(), schedule));
    let mut chaos = chaos::Chaos::new(
        paths.clone(),
        start,
        filter_file,
        filter_wasm,
        admin,
        proxy.endpoint.addr,
        tls,
        upstream,
        args.downtime,
    );
    drive(&mut chaos, &args, start).await;
    let recorder = load.await??;
    let samples = sampler.await?;
    let alive = portcullis_bench::procstat::rss(pid).is_ok();
    drop(proxy);

    let machine = portcullis_bench::machine::describe(&paths).await;
    let summary = report::summarize(&args, machine, &recorder, &chaos, samples, alive);
    report::write(&args.out, &summary)?;
    portcullis_bench::chart::load_font(&args.font)?;
    chart::draw(&summary, &args.out.join("soak.png"))?;
    eprintln!(
        "wrote {}/RESULTS.md, results.json and soak.png",
        args.out.display()
    );
    Ok(summary.failures.clone())
}

/// Makes the changes on their schedules until the run ends. Changes due at
/// the same moment are made in turn: restart, rotation, reload.
async fn drive(chaos: &mut chaos::Chaos, args: &Args, start: Instant) {
    let every = [args.restart_every, args.rotate_every, args.reload_every];
    let mut next = every;
    loop {
        let Some(soonest) = next.iter().copied().min() else {
            return;
        };
        // A change that took long to check may have pushed the schedule
        // past the end of the run.
        if soonest >= args.duration || start.elapsed() >= args.duration {
            return;
        }
        tokio::time::sleep_until(start + soonest).await;
        for i in 0..3 {
            if next[i] > soonest {
                continue;
            }
            if start.elapsed() >= args.duration {
                return;
            }
            next[i] += every[i];
            match i {
                0 => {
                    if let Err(e) = chaos.restart().await {
                        eprintln!("upstream restart failed: {e}");
                    }
                }
                1 => chaos.rotate().await,
                _ => chaos.reload().await,
            }
        }
    }
}
