//! `portcullis-bench`: measures portcullis against a direct upstream, a
//! bare forwarder and Envoy 1.40 on this machine, interleaved, and writes
//! the results as a markdown table, JSON and a PNG chart. See
//! bench/README.md.

use portcullis_bench::{
    chart, curves, forward, machine, plan, pool, report, scrape, targets, upstream, verify,
};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use plan::{OpenLoop, Plan, StealRule};
use targets::{Kind, Paths};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmark and write RESULTS.md, results.json and latency.png.
    Run(Box<RunArgs>),
    /// Measure the scaling curves and write CURVES.md, curves.json and
    /// curve-*.png.
    Curves(Box<CurvesArgs>),
    /// Serve the benchmark's upstream MCP server (the harness starts it).
    Upstream {
        #[arg(long)]
        listen: SocketAddr,
        /// Tools in the `tools/list` answer (echo, delete_file, then
        /// fillers); the list-size curve sets it.
        #[arg(long)]
        tools: Option<usize>,
    },
    /// Serve configuration h, the bare forwarder to --upstream (the
    /// harness starts it).
    Forward {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        upstream: SocketAddr,
        /// Runtime worker threads (the harness passes portcullis's count).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=512))]
        workers: u16,
    },
    /// Pool the rounds of several runs' results.json and check the
    /// CPU-per-call targets against all of them (bench/README.md).
    Pool {
        /// The runs' results.json files.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Where the pooled table is written; stdout if not given.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Configurations to measure, from a (direct) to i.
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,d,e,f,g,h,i")]
    configs: Vec<String>,
    /// Closed-loop connection counts.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Rounds; each round measures every configuration once per load.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Length of one measured run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured load sent to each configuration before the first round.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Open-loop rate in calls per second; 0 skips the open-loop runs.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Connections the open-loop calls are spread over.
    #[arg(long, default_value_t = 32)]
    open_connections: usize,
    /// Most host steal time for a clean run (percent of the time the vCPUs wanted to run
    /// in the closed loop, of all the machine's time in the open loop); a run over it is
    /// taken again (--steal-retries).
    #[arg(long, default_value_t = plan::DEFAULT_MAX_STEAL_PERCENT)]
    max_steal: f64,
    /// Times a run over --max-steal is taken again; the attempt with the
    /// least steal is kept.
    #[arg(long, default_value_t = 2)]
    steal_retries: u32,
    /// A five-second check that every configuration works: short runs,
    /// one round, and a failure if any call fails. Results go to --out.
    #[arg(long)]
    smoke: bool,
    #[arg(long, default_value = "target/release/portcullis")]
    portcullis: PathBuf,
    /// The Envoy 1.40 binary (configurations e, f, g).
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// The proxy-wasm module of configuration f.
    #[arg(long)]
    envoy_wasm: Option<PathBuf>,
    /// Where tool_rbac.wasm and arg_guard.wasm are (configurations d, i).
    #[arg(long, default_value = "target/wasm32-wasip2/release")]
    filters: PathBuf,
    /// Scratch space: configs, PKI, logs.
    #[arg(long, default_value = "target/bench-work")]
    work: PathBuf,
    /// Where RESULTS.md, results.json and latency.png are written.
    #[arg(long, default_value = "bench")]
    out: PathBuf,
    /// First of the ports used (upstream; proxies follow; admins at +20).
    #[arg(long, default_value_t = 18100)]
    base_port: u16,
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    font: PathBuf,
}

#[derive(clap::Args)]
struct CurvesArgs {
    /// Curves to measure: args, filters, list, connections, idle, callers
    /// (all by default).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Length of each point's measured run.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Load at the same level before each point's run, unmeasured.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Calls in flight (closed loop) for every curve but `connections`.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Sizes of echo's text argument, in bytes.
    #[arg(long, value_delimiter = ',', default_value = "100,10000,1000000")]
    sizes: Vec<usize>,
    /// Lengths of the filter chain.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,4,8")]
    filter_counts: Vec<usize>,
    /// Tools in the upstream's tools/list.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    list_sizes: Vec<usize>,
    /// Closed-loop connection counts of the connection curve.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    concurrency: Vec<usize>,
    /// Distinct callers (client SVIDs) of the warm-pool curve.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    callers: Vec<usize>,
    /// Idle keep-alive connections held for the memory measurement.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// A check that every curve works: one or two points each, a fraction
    /// of a second per point, a failure if any call fails.
    #[arg(long)]
    smoke: bool,
    #[arg(long, default_value = "target/release/portcullis")]
    portcullis: PathBuf,
    /// Where tool_rbac.wasm and arg_guard.wasm are.
    #[arg(long, default_value = "target/wasm32-wasip2/release")]
    filters: PathBuf,
    /// Scratch space: configs, PKI, logs.
    #[arg(long, default_value = "target/bench-curves-work")]
    work: PathBuf,
    /// Where CURVES.md, curves.json and curve-*.png are written.
    #[arg(long, default_value = "bench")]
    out: PathBuf,
    /// First of the ports used (upstream; every proxy takes the next two).
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
    match cli.command {
        Cmd::Upstream { listen, tools } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            match tools {
                Some(n) => rt.block_on(upstream::serve_catalog(listen, n)),
                None => rt.block_on(upstream::serve(listen)),
            }
        }
        Cmd::Curves(args) => {
            // As `run`: the load generator gets two threads.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(run_curves(*args))
        }
        Cmd::Forward {
            listen,
            upstream,
            workers,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(usize::from(workers))
                .enable_all()
                .build()?;
            Ok(rt.block_on(forward::serve(listen, upstream))?)
        }
        Cmd::Pool { runs, out } => {
            let runs = pool::read_all(&runs)?;
            let md = pool::markdown(&runs, &pool::goals(&pool::pool(&runs)));
            match out {
                Some(path) => std::fs::write(&path, md)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{md}"),
            }
            Ok(())
        }
        Cmd::Run(args) => {
            // The load generator gets one core's worth of threads; the
            // proxies and the upstream share the rest of the machine.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(run(*args))
        }
    }
}

async fn run(mut args: RunArgs) -> anyhow::Result<()> {
    if args.smoke {
        args.concurrency = vec![4];
        args.rounds = 1;
        args.duration = Duration::from_millis(250);
        args.warmup = Duration::from_millis(100);
        args.rate = args.rate.min(200.0);
        args.open_connections = 4;
        // A smoke run measures nothing: it is never taken again.
        args.steal_retries = 0;
    }
    anyhow::ensure!(
        (0.0..=100.0).contains(&args.max_steal),
        "--max-steal is a percentage, 0 to 100"
    );
    let kinds = parse_kinds(&args.configs)?;
    let absolute =
        |p: &Path| std::path::absolute(p).with_context(|| format!("resolving {}", p.display()));
    std::fs::create_dir_all(&args.work)
        .with_context(|| format!("creating {}", args.work.display()))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let paths = Paths {
        portcullis: absolute(&args.portcullis)?,
        envoy: args.envoy.as_deref().map(absolute).transpose()?,
        filters: absolute(&args.filters)?,
        envoy_wasm: args.envoy_wasm.as_deref().map(absolute).transpose()?,
        work: absolute(&args.work)?,
        base_port: args.base_port,
    };
    let plan = Plan {
        concurrency: args.concurrency.clone(),
        rounds: args.rounds,
        duration: args.duration,
        warmup: args.warmup,
        open: (args.rate > 0.0).then_some(OpenLoop {
            rate: args.rate,
            connections: args.open_connections,
            duration: args.duration,
        }),
        steal: StealRule {
            max: args.max_steal / 100.0,
            retries: args.steal_retries,
        },
    };

    // Every run compiles the filters of d and i afresh (each has its own
    // cache), as a new pod with an empty cache does; a warm cache would
    // lower their memory and make a first run and a rerun disagree.
    for dir in ["filter-cache", "filter-cache-i"] {
        let _ = std::fs::remove_dir_all(paths.work.join(dir));
    }
    targets::mint_pki(&paths).await?;
    let _upstream = targets::start_upstream(&paths).await?;
    let mut running = Vec::new();
    for k in &kinds {
        eprintln!("starting {} {}", k, k.label());
        let target = targets::start(*k, &paths).await?;
        verify::enforces_policy(*k, &target.endpoint).await?;
        running.push(target);
    }
    let samples = plan::execute(&plan, &running, |s| {
        let probe = s
            .noise_probe
            .map(|p| format!("  probe {:.1} / {:.1} ms", p.compute_ms, p.memory_ms))
            .unwrap_or_default();
        let switches = s
            .proxy_switches
            .filter(|_| s.ok > 0)
            .map(|w| {
                let per_call = |n: u64| n as f64 / s.ok as f64;
                format!(
                    "  switches/call {:.2} + {:.2}",
                    per_call(w.voluntary),
                    per_call(w.involuntary)
                )
            })
            .unwrap_or_default();
        eprintln!(
            "  {} {:>3} conn round {}: {:>8.0} rps  p99 {:>7.3} ms  errors {}  steal {:.1} %{probe}{switches}",
            s.kind,
            s.connections,
            s.round,
            s.rps(),
            s.quantile_ms(0.99),
            s.errors,
            s.host_steal.unwrap_or(0.0) * 100.0,
        );
    })
    .await?;
    // The configurations with WASM filters report each filter's own time.
    let mut filter_costs = std::collections::BTreeMap::new();
    for t in running
        .iter()
        .filter(|t| matches!(t.kind, Kind::D | Kind::I))
    {
        if let Some(admin) = t.admin {
            match scrape::filter_costs(admin).await {
                Ok(c) => {
                    filter_costs.insert(t.kind, c);
                }
                Err(e) => eprintln!("warning: reading filter costs from {admin}: {e}"),
            }
        }
    }
    drop(running);

    let cells = report::cells(&samples);
    let mut goals = report::goals(&samples, &cells);
    for (kind, costs) in &filter_costs {
        goals.extend(costs.iter().map(|c| report::Goal {
            what: format!(
                "WASM filter {} in {kind}, mean time per call of the filter (proxy's own histogram)",
                c.filter
            ),
            target: "visible".into(),
            measured: format!(
                "{:.1} µs over {} calls, {} of them answered with a reused decision",
                c.mean_us, c.evaluations, c.reused
            ),
            met: None,
        }));
    }
    let machine = machine::describe(&paths).await;
    let tables = report::markdown(&cells, &goals) + &report::probe_table(&samples);
    let md = results_page(&machine, &args, &tables);
    let json = serde_json::json!({
        "machine": machine,
        "settings": {
            "configs": kinds, "concurrency": args.concurrency, "rounds": args.rounds,
            "duration_s": args.duration.as_secs_f64(), "open_loop_rate": args.rate,
            "open_loop_connections": args.open_connections, "smoke": args.smoke,
        },
        "cells": cells,
        "targets": goals,
        "filter_costs": filter_costs,
        "samples": samples,
    });
    std::fs::write(args.out.join("RESULTS.md"), md)?;
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    chart::load_font(&args.font)?;
    chart::draw(&cells, &args.out.join("latency.png"))?;
    eprintln!(
        "wrote {}/RESULTS.md, results.json and latency.png",
        args.out.display()
    );

    let failed: Vec<String> = cells
        .iter()
        .filter(|c| c.errors > 0 || c.ok == 0)
        .map(|c| {
            format!(
                "{} ({}): {} errors, first: {}",
                c.kind,
                report::load_name(c),
                c.errors,
                c.first_error.as_deref().unwrap_or("no successful call")
            )
        })
        .collect();
    if !failed.is_empty() {
        let msg = failed.join("\n");
        if args.smoke {
            bail!("smoke run failed:\n{msg}");
        }
        eprintln!("warning: some calls failed:\n{msg}");
    }
    Ok(())
}

async fn run_curves(mut args: CurvesArgs) -> anyhow::Result<()> {
    if args.smoke {
        // One or two points per curve, on the debug build: that the
        // harness works, not what it measures.
        args.duration = Duration::from_millis(200);
        args.warmup = Duration::from_millis(100);
        args.connections = 4;
        args.sizes = vec![100, 1_000_000];
        args.filter_counts = vec![0, 2];
        args.list_sizes = vec![10, 100];
        args.concurrency = vec![1, 4];
        args.callers = vec![1, 4];
        args.idle = 100;
    }
    for c in &args.only {
        if !["args", "filters", "list", "connections", "idle", "callers"].contains(&c.as_str()) {
            bail!("unknown curve {c:?}; use args, filters, list, connections, idle or callers");
        }
    }
    let absolute =
        |p: &Path| std::path::absolute(p).with_context(|| format!("resolving {}", p.display()));
    std::fs::create_dir_all(&args.work)
        .with_context(|| format!("creating {}", args.work.display()))?;
    let paths = Paths {
        portcullis: absolute(&args.portcullis)?,
        envoy: None,
        filters: absolute(&args.filters)?,
        envoy_wasm: None,
        work: absolute(&args.work)?,
        base_port: args.base_port,
    };
    // Filters are compiled afresh once per run, into the curves' shared
    // cache, by the first proxy that loads them.
    let _ = std::fs::remove_dir_all(paths.work.join("filter-cache"));
    chart::load_font(&args.font)?;
    targets::mint_pki(&paths).await?;
    let _upstream = targets::start_upstream(&paths).await?;
    let settings = curves::Settings {
        duration: args.duration,
        warmup: args.warmup,
        connections: args.connections,
        sizes: args.sizes.clone(),
        filter_counts: args.filter_counts.clone(),
        list_sizes: args.list_sizes.clone(),
        concurrency: args.concurrency.clone(),
        callers: args.callers.clone(),
        idle: args.idle,
        only: args.only.clone(),
        smoke: args.smoke,
    };
    let result = curves::execute(&paths, settings).await?;
    let machine = machine::describe(&paths).await;
    curves::write(&args.out, &result, &machine)?;
    eprintln!(
        "wrote {}/CURVES.md, curves.json and curve-*.png",
        args.out.display()
    );
    let failed = result.failures();
    if !failed.is_empty() {
        let msg = failed.join("\n");
        if args.smoke {
            bail!("curves smoke run failed:\n{msg}");
        }
        eprintln!("warning: some calls failed:\n{msg}");
    }
    Ok(())
}

fn parse_kinds(keys: &[String]) -> anyhow::Result<Vec<Kind>> {
    let mut kinds = Vec::new();
    for k in keys {
        let kind = Kind::parse(k.trim())
            .with_context(|| format!("unknown configuration {k:?}; use a to i"))?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    // Ratios are taken against a; it is measured whenever anything is.
    if !kinds.contains(&Kind::A) {
        kinds.insert(0, Kind::A);
    }
    Ok(kinds)
}

fn results_page(m: &machine::Machine, args: &RunArgs, tables: &str) -> String {
    format!(
        "# Benchmark results\n\n\
         Written by `make bench` (`portcullis-bench run`); see `bench/README.md` for what each \
         configuration is and how the figures are taken. Raw samples: `results.json`; chart: `latency.png`. \
         How portcullis scales (argument size, filters, list size, connections, callers): `CURVES.md`.\n\n\
         - **Date:** {}\n- **Machine:** {} ({} cores, {} RAM), Linux {}\n- **portcullis:** {}\n- **Envoy:** {}\n\
         - **Runs:** {} rounds × {:.1} s per configuration and load, interleaved; warm-up {:.1} s; \
         open loop at {:.0} rps over {} connections\n\
         - **Ratios** (× direct, × Envoy e, added latency) are medians of per-round ratios: each run is \
         compared with the other configuration's run of the same round.\n\
         - **Host steal** is the share of the time the vCPUs wanted to run that the hypervisor gave to \
         other guests during a run (`/proc/stat`; \"n of m over\": runs over the limit); under the open \
         loop's light load, the share of all the machine's time instead (there the steal a vCPU meets \
         on waking from idle is as large as the work itself, and the share of the time wanted reads \
         most of an idle machine as stolen). A run over {} % \
         was taken again at once, up to {} times, keeping the attempt with the least steal (after a run \
         over it on every attempt, the next runs are taken once until one is clean); the tables show each \
         cell's largest. Paired figures use only the rounds where both runs were within {} %, when there \
         are any.\n\
         - **Proxy CPU** is user + system seconds of the proxy process (all threads) per 10 000 calls; \
         **peak RSS** is VmHWM, reset before each run; **peak private** is the most anonymous + \
         shared-memory pages (RssAnon + RssShmem) seen in samples every 20 ms: memory the process \
         holds on its own, without the binary's and libraries' page cache.\n\n\
         ![latency percentiles](latency.png)\n{tables}",
        m.date, m.cpu, m.cores, m.memory, m.kernel, m.portcullis, m.envoy,
        args.rounds, args.duration.as_secs_f64(), args.warmup.as_secs_f64(), args.rate, args.open_connections,
        args.max_steal, args.steal_retries, args.max_steal,
    )
}
