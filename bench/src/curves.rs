//! Scaling curves (`portcullis-bench curves`): how portcullis's CPU per
//! call and latency move with the argument size, the number of filters,
//! the size of a filtered `tools/list`, the number of connections and the
//! number of distinct callers (its warm-instance pool), plus the memory
//! an idle connection holds. Every point is one short closed-loop run,
//! after a warm-up at the same load. See bench/README.md.

mod callers;
mod configs;
pub mod idle;
mod page;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::process::Child;

use crate::conn::{self, Endpoint};
use crate::load::{self, Pace, Payload, RunResult, RunSpec, TEXT};
use crate::targets::{self, Kind, Paths};
use crate::upstream::Catalog;
use crate::{procstat, scrape, verify};
use configs::{Filter, Policy};

pub use page::write;

/// What to measure and for how long.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    #[serde(with = "secs")]
    pub duration: Duration,
    #[serde(with = "secs")]
    pub warmup: Duration,
    /// Calls in flight for every curve but the connection curve.
    pub connections: usize,
    pub sizes: Vec<usize>,
    pub filter_counts: Vec<usize>,
    pub list_sizes: Vec<usize>,
    pub concurrency: Vec<usize>,
    pub callers: Vec<usize>,
    pub idle: usize,
    /// The curves to run (all when empty): args, filters, list,
    /// connections, idle, callers.
    pub only: Vec<String>,
    pub smoke: bool,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// One measured point of a curve.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub series: String,
    pub x: f64,
    pub ok: u64,
    pub errors: u64,
    pub secs: f64,
    pub rps: f64,
    /// The proxy's CPU (user + system, all threads) per answered call.
    pub cpu_us_per_call: Option<f64>,
    pub p50_us: u64,
    pub p99_us: u64,
    pub first_error: Option<String>,
    /// The warm-pool curve: hit rate per filter, counted by the proxy
    /// (`filter_instances_total`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub hit_rate: BTreeMap<String, f64>,
    /// Each filter's mean time per evaluation during the run, in µs, from
    /// the proxy's own `filter_duration_seconds` histogram.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub filter_us: BTreeMap<String, f64>,
    /// Steal time over the measured run, as a share of the time the vCPUs
    /// wanted to run (`procstat::HostTicks`): a point taken while the hypervisor
    /// ran other guests costs more than the same point on a quiet host.
    pub host_steal: Option<f64>,
}

impl Point {
    fn new(series: &str, x: f64, r: &RunResult, cpu_secs: f64) -> Self {
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        Point {
            series: series.to_string(),
            x,
            ok: r.ok,
            errors: r.errors,
            secs,
            rps: r.ok as f64 / secs,
            cpu_us_per_call: (r.ok > 0).then(|| cpu_secs / r.ok as f64 * 1e6),
            p50_us: r.latency_us.value_at_quantile(0.50),
            p99_us: r.latency_us.value_at_quantile(0.99),
            first_error: r.first_error.clone(),
            hit_rate: BTreeMap::new(),
            filter_us: BTreeMap::new(),
            host_steal: None,
        }
    }
}

/// One curve: its points and what was derived from them.
#[derive(Clone, Debug, Serialize)]
pub struct Curve {
    pub key: &'static str,
    pub points: Vec<Point>,
    /// Derived figures, by name (the filter curve's fitted slopes).
    pub derived: BTreeMap<String, f64>,
    /// What was checked or found along the way, shown under the table.
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Curves {
    pub settings: Settings,
    pub curves: Vec<Curve>,
    pub idle: Vec<idle::Idle>,
    /// The open-file limit the proxies ran with.
    pub nofile_limit: u64,
}

impl Curves {
    /// Every point's or idle measurement's failures, for the caller to
    /// report (and, in a smoke run, fail on).
    pub fn failures(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .curves
            .iter()
            .flat_map(|c| c.points.iter().map(move |p| (c.key, p)))
            .filter(|(_, p)| p.errors > 0 || p.ok == 0)
            .map(|(k, p)| {
                format!(
                    "{k} {} at {}: {} errors, first: {}",
                    p.series,
                    p.x,
                    p.errors,
                    p.first_error.as_deref().unwrap_or("no successful call")
                )
            })
            .collect();
        out.extend(self.idle.iter().filter(|i| i.held < i.asked).map(|i| {
            format!(
                "idle {}: {} of {} connections held, first error: {}",
                i.series,
                i.held,
                i.asked,
                i.first_error.as_deref().unwrap_or("none")
            )
        }));
        out
    }
}

/// A portcullis started for a curve. Stopped when dropped
/// (`targets::stop`: SIGTERM, then SIGKILL).
struct Proxy {
    name: String,
    endpoint: Endpoint,
    admin: SocketAddr,
    child: Child,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        targets::stop(&mut self.child);
    }
}

impl Proxy {
    fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .id()
            .with_context(|| format!("{} has exited", self.name))
    }
}

struct Ctx {
    paths: Paths,
    s: Settings,
    ticks: f64,
    next_port: u16,
    client_tls: Arc<rustls::ClientConfig>,
    /// Upstreams started for the list curve, killed when dropped.
    upstreams: Vec<Child>,
}

impl Ctx {
    fn port(&mut self) -> u16 {
        self.next_port += 1;
        self.next_port
    }

    fn wants(&self, curve: &str) -> bool {
        self.s.only.is_empty() || self.s.only.iter().any(|o| o == curve)
    }

    async fn proxy(
        &mut self,
        name: &str,
        config: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
        upstream: u16,
    ) -> anyhow::Result<Proxy> {
        let listen = SocketAddr::from(([127, 0, 0, 1], self.port()));
        let admin = self.port();
        eprintln!("starting {name}");
        let child =
            targets::start_portcullis(&self.paths, name, config, listen, admin, upstream).await?;
        let endpoint = match tls {
            Some(cfg) => Endpoint::mtls(listen, cfg),
            None => Endpoint::plain(listen),
        };
        Ok(Proxy {
            name: name.to_string(),
            endpoint,
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            child,
        })
    }

    /// Warm-up, then one measured closed-loop run, the proxy's CPU read
    /// around it.
    async fn measure(
        &self,
        proxy: &Proxy,
        series: &str,
        x: f64,
        connections: usize,
        payload: &Payload,
    ) -> anyhow::Result<Point> {
        let spec = |duration| RunSpec {
            connections,
            duration,
            pace: Pace::Closed,
        };
        load::run_with(&proxy.endpoint, spec(self.s.warmup), payload).await?;
        let pid = proxy.pid()?;
        // Scraped outside the CPU window: the scrape costs the proxy too.
        let evals0 = evaluations(proxy.admin).await;
        let cpu0 = procstat::cpu_seconds(pid, self.ticks)?;
        let host0 = procstat::HostTicks::now().ok();
        let r = load::run_with(&proxy.endpoint, spec(self.s.duration), payload).await?;
        let host1 = procstat::HostTicks::now().ok();
        let cpu = procstat::cpu_seconds(pid, self.ticks)? - cpu0;
        let evals1 = evaluations(proxy.admin).await;
        let mut p = Point::new(series, x, &r, cpu);
        p.host_steal = procstat::steal_between(host0, host1, procstat::StealBasis::Wanted);
        p.filter_us = mean_between(&evals0, &evals1);
        progress(&p);
        // Let the run's sockets close before the next one starts.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(p)
    }
}

/// Each filter's (total seconds, evaluations) so far, from the proxy's
/// own histogram; empty if it has no filters or could not be read.
async fn evaluations(admin: SocketAddr) -> BTreeMap<String, (f64, u64)> {
    match scrape::filter_costs(admin).await {
        Ok(costs) => costs
            .into_iter()
            .map(|c| {
                let total = c.mean_us * c.evaluations as f64 / 1e6;
                (c.filter, (total, c.evaluations))
            })
            .collect(),
        Err(e) => {
            eprintln!("warning: reading filter costs from {admin}: {e}");
            BTreeMap::new()
        }
    }
}

/// Mean µs per evaluation of each filter between two readings.
fn mean_between(
    before: &BTreeMap<String, (f64, u64)>,
    after: &BTreeMap<String, (f64, u64)>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(f, (secs, n))| {
            let (s0, n0) = before.get(f).copied().unwrap_or((0.0, 0));
            let evals = n.checked_sub(n0).filter(|d| *d > 0)?;
            Some((f.clone(), (secs - s0) / evals as f64 * 1e6))
        })
        .collect()
}

fn progress(p: &Point) {
    eprintln!(
        "  {:<40} x={:<9} {:>8.0} rps  cpu {:>7.1} µs/call  p99 {:>8.3} ms  errors {}",
        p.series,
        p.x,
        p.rps,
        p.cpu_us_per_call.unwrap_or(f64::NAN),
        p.p99_us as f64 / 1000.0,
        p.errors
    );
}

/// Runs the curves asked for. The PKI (CA, proxy and client SVIDs) and
/// the default upstream must exist: the caller mints and starts them as
/// `run` does.
pub async fn execute(paths: &Paths, s: Settings) -> anyhow::Result<Curves> {
    // 10 000 connections need as many descriptors in this process and in
    // the proxy (which inherits the limit), plus the rest.
    let nofile_limit = idle::raise_nofile(s.idle as u64 * 2 + 4096);
    let pki = paths.pki();
    let client_tls = Arc::new(conn::mtls_client(
        &pki.join("ca/ca.pem"),
        &pki.join("client.pem"),
        &pki.join("client.key"),
    )?);
    let mut ctx = Ctx {
        paths: paths.clone(),
        ticks: procstat::clock_ticks(),
        // Upstream at base, the list curve's upstreams and the proxies after.
        next_port: paths.base_port,
        client_tls,
        upstreams: Vec::new(),
        s,
    };
    let mut curves = Vec::new();
    if ctx.wants("filters") {
        curves.push(filters(&mut ctx).await?);
    }
    if ctx.wants("list") {
        curves.push(list(&mut ctx).await?);
    }
    if ctx.wants("connections") {
        curves.push(connections(&mut ctx).await?);
    }
    if ctx.wants("callers") {
        curves.push(warm_pool(&mut ctx).await?);
    }
    // The two that disturb what follows them come last. After the
    // megabyte calls the next curve's first points ran slow (in two runs
    // the filters curve's chain of 0 cost 43-47 µs per call against 29-31
    // measured alone); after 10 000 connections, CPU figures are not to be
    // trusted, so the memory curve, which reads no CPU, closes the run.
    if ctx.wants("args") {
        curves.push(args(&mut ctx).await?);
    }
    let mut idle = Vec::new();
    if ctx.wants("idle") {
        idle = idle_memory(&mut ctx, nofile_limit).await?;
    }
    Ok(Curves {
        settings: ctx.s.clone(),
        curves,
        idle,
        nofile_limit,
    })
}

/// `n` characters of the usual call's text, repeated: no `drop table`.
fn text_of(n: usize) -> String {
    TEXT.chars().cycle().take(n).collect()
}

fn upstream_port(ctx: &Ctx) -> u16 {
    ctx.paths.upstream_addr().port()
}

/// CPU per call and p99 against the size of `echo`'s `text`: b (native
/// rules only) and i with arg-guard's limit raised above the largest size.
async fn args(ctx: &mut Ctx) -> anyhow::Result<Curve> {
    eprintln!("curve: argument size");
    let largest = ctx.s.sizes.iter().copied().max().unwrap_or(0);
    let up = upstream_port(ctx);
    let b = configs::portcullis(false, None, Policy::EchoOnly { caller: None }, &[]);
    let i = configs::portcullis(
        false,
        None,
        Policy::Allow,
        &[
            Filter::ToolRbac {
                name: "tool-rbac".into(),
                principal: None,
                tools: &["echo"],
                fresh: false,
                reuse: true,
            },
            Filter::ArgGuard {
                max_length: (largest * 2).max(1024),
                fresh: false,
            },
        ],
    );
    let b = ctx.proxy("curve-args-b", &b, None, up).await?;
    verify::enforces_policy(Kind::B, &b.endpoint).await?;
    let i = ctx.proxy("curve-args-i", &i, None, up).await?;
    // i's policy holds with the raised limit: echo served, delete_file
    // and `drop table` refused.
    verify::enforces_policy(Kind::I, &i.endpoint).await?;
    let mut notes = vec![format!(
        "i here is configuration i with arg-guard's `max_length` on `/text` raised from 1024 to {} \
         characters, so that every size is allowed; before measuring, each size was served (200 \
         with a result) and `please DROP TABLE users` was still refused.",
        (largest * 2).max(1024)
    )];
    let mut points = Vec::new();
    for &size in &ctx.s.sizes {
        let text = text_of(size);
        for (proxy, series) in [(&b, "b: no filters"), (&i, "i: tool-rbac + arg-guard")] {
            load::probe(&proxy.endpoint, "echo", &text)
                .await
                .map_err(|e| anyhow::anyhow!("{series} refused a {size}-byte text: {e}"))?;
            let payload = Payload::echo(&text);
            points.push(
                ctx.measure(proxy, series, size as f64, ctx.s.connections, &payload)
                    .await?,
            );
        }
    }
    notes.push(format!(
        "{} calls in flight; the text is ASCII, so its size in bytes is its length.",
        ctx.s.connections
    ));
    Ok(Curve {
        key: "args",
        points,
        derived: BTreeMap::new(),
        notes,
    })
}

/// CPU per call against the length of the filter chain: the same
/// tool-rbac repeated under different names, plaintext.
async fn filters(ctx: &mut Ctx) -> anyhow::Result<Curve> {
    eprintln!("curve: filters in the chain");
    let up = upstream_port(ctx);
    let mut points = Vec::new();
    let mut notes = Vec::new();
    let mut proxies = Vec::new();
    for &n in &ctx.s.filter_counts.clone() {
        let chain: Vec<Filter> = (1..=n)
            .map(|k| Filter::ToolRbac {
                name: format!("tool-rbac-{k}"),
                principal: None,
                tools: &["echo"],
                fresh: false,
                reuse: false,
            })
            .collect();
        let cfg = configs::portcullis(false, None, Policy::Allow, &chain);
        let p = ctx
            .proxy(&format!("curve-filters-{n}"), &cfg, None, up)
            .await?;
        // With a filter, delete_file is refused (tool-rbac is in force);
        // with none, the default-allow policy serves it.
        let refused = load::probe(&p.endpoint, "delete_file", "x").await.is_err();
        if refused != (n > 0) {
            bail!(
                "{n} filters: delete_file refused = {refused}, expected {}",
                n > 0
            );
        }
        proxies.push((n, p));
    }
    for (n, p) in &proxies {
        points.push(
            ctx.measure(
                p,
                "tool-rbac × n, plaintext",
                *n as f64,
                ctx.s.connections,
                &Payload::echo(TEXT),
            )
            .await?,
        );
    }
    let mut derived = BTreeMap::new();
    let xy = |f: &dyn Fn(&Point) -> Option<f64>| -> Vec<(f64, f64)> {
        points.iter().filter_map(|p| Some((p.x, f(p)?))).collect()
    };
    let cpu = xy(&|p| p.cpu_us_per_call);
    if let Some(slope) = fit_slope(&cpu) {
        derived.insert("cpu_us_per_filter".into(), slope);
    }
    // The first filter also brings the chain's fixed costs (the call
    // handed to WASM at all); the slope over n ≥ 1 is what one more costs.
    let chained: Vec<(f64, f64)> = cpu.iter().copied().filter(|p| p.0 >= 1.0).collect();
    if let Some(slope) = fit_slope(&chained) {
        derived.insert("cpu_us_per_added_filter".into(), slope);
    }
    let at = |n: f64| cpu.iter().find(|p| p.0 == n).map(|p| p.1);
    if let (Some(y0), Some(y1)) = (at(0.0), at(1.0)) {
        derived.insert("cpu_us_first_filter".into(), y1 - y0);
    }
    if let Some(slope) = fit_slope(&xy(&|p| Some(p.p50_us as f64))) {
        derived.insert("p50_us_per_filter".into(), slope);
    }
    // The proxy's own view of one evaluation, on the longest chain.
    if let Some((n, p)) = proxies
        .iter()
        .max_by_key(|(n, _)| *n)
        .filter(|(n, _)| *n > 0)
    {
        match scrape::filter_costs(p.admin).await {
            Ok(costs) if !costs.is_empty() => {
                let mean = costs.iter().map(|c| c.mean_us).sum::<f64>() / costs.len() as f64;
                derived.insert("evaluation_mean_us".into(), mean);
                notes.push(format!(
                    "The proxy's own histogram (`portcullis_filter_duration_seconds`) on the \
                     {n}-filter chain: {mean:.1} µs per evaluation on average over its {} filters \
                     (warm-up included).",
                    costs.len()
                ));
            }
            Ok(_) => {}
            Err(e) => eprintln!("warning: reading filter costs: {e}"),
        }
    }
    notes.push(format!(
        "Each filter is tool-rbac as in configuration i (allows `echo` to anyone), hooks `request` \
         and `list`, with `reuse_decisions: false`, so that every call is evaluated by every \
         filter (with the default, all but the first call of each filter would reuse its \
         decision); the chain of 0 has the default-allow policy and no filter. {} calls in \
         flight. Slopes are least-squares fits over every point.",
        ctx.s.connections
    ));
    Ok(Curve {
        key: "filters",
        points,
        derived,
        notes,
    })
}

/// Least-squares slope of y on x; None with fewer than two distinct x.
pub fn fit_slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if n < 2.0 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// `tools/list` of N tools, filtered by tool-rbac on the list hook or not
/// filtered at all.
async fn list(ctx: &mut Ctx) -> anyhow::Result<Curve> {
    eprintln!("curve: tools/list size");
    let mut points = Vec::new();
    for &n in &ctx.s.list_sizes.clone() {
        let port = ctx.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child =
            targets::start_upstream_at(&ctx.paths, addr, Some(n), &format!("upstream-list-{n}"))
                .await?;
        ctx.upstreams.push(child);
        let plain = configs::portcullis(false, None, Policy::Allow, &[]);
        let filtered = configs::portcullis(
            false,
            None,
            Policy::Allow,
            &[Filter::ToolRbac {
                name: "tool-rbac".into(),
                principal: None,
                tools: &["echo", "read_*"],
                fresh: false,
                reuse: true,
            }],
        );
        let cases = [
            ("no filter", plain, n),
            (
                "tool-rbac on the list hook",
                filtered,
                Catalog::visible_to_readers(n),
            ),
        ];
        for (series, cfg, want) in cases {
            let name = format!(
                "curve-list-{n}-{}",
                if want == n { "plain" } else { "rbac" }
            );
            let p = ctx.proxy(&name, &cfg, None, port).await?;
            let got = list_len(&p.endpoint).await?;
            if got != want {
                bail!("{series}, {n} tools: the list had {got} tools, expected {want}");
            }
            points.push(
                ctx.measure(&p, series, n as f64, ctx.s.connections, &Payload::List)
                    .await?,
            );
        }
    }
    Ok(Curve {
        key: "list",
        points,
        derived: BTreeMap::new(),
        notes: vec![format!(
            "The upstream lists `echo`, `delete_file` and fillers alternately named `read_N` and \
             `write_N`; tool-rbac (hooks `request` and `list`, allowing `echo` and `read_*`) keeps \
             about half. Before measuring, each list was fetched and its length checked (N \
             unfiltered, 1 + the `read_` fillers filtered). {} calls in flight.",
            ctx.s.connections
        )],
    })
}

/// The number of tools in one `tools/list` answer.
async fn list_len(endpoint: &Endpoint) -> anyhow::Result<usize> {
    use http_body_util::BodyExt;
    let mut s = endpoint.connect().await?;
    let resp = s.send_request(load::list(endpoint, 1)?).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!(
            "tools/list: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    v["result"]["tools"]
        .as_array()
        .map(Vec::len)
        .with_context(|| format!("tools/list answered without tools: {v}"))
}

/// CPU per call and p99 against closed-loop connections, plain (b) and
/// mTLS (c).
async fn connections(ctx: &mut Ctx) -> anyhow::Result<Curve> {
    eprintln!("curve: connections");
    let up = upstream_port(ctx);
    let b = configs::portcullis(false, None, Policy::EchoOnly { caller: None }, &[]);
    let c = configs::portcullis(
        true,
        None,
        Policy::EchoOnly {
            caller: Some(configs::CLIENT),
        },
        &[],
    );
    let b = ctx.proxy("curve-conn-b", &b, None, up).await?;
    verify::enforces_policy(Kind::B, &b.endpoint).await?;
    let tls = Some(ctx.client_tls.clone());
    let c = ctx.proxy("curve-conn-c", &c, tls, up).await?;
    verify::enforces_policy(Kind::C, &c.endpoint).await?;
    let mut points = Vec::new();
    for &n in &ctx.s.concurrency {
        for (p, series) in [(&b, "b: plain"), (&c, "c: mTLS")] {
            points.push(
                ctx.measure(p, series, n as f64, n, &Payload::echo(TEXT))
                    .await?,
            );
        }
    }
    Ok(Curve {
        key: "connections",
        points,
        derived: BTreeMap::new(),
        notes: vec![
            "Closed loop: each connection sends its next call when the last is answered; \
             connections (and TLS handshakes) are opened in the warm-up, not the measured run."
                .into(),
        ],
    })
}

/// RSS per idle keep-alive connection, plain and mTLS, each on a proxy
/// of its own started for it.
async fn idle_memory(ctx: &mut Ctx, limit: u64) -> anyhow::Result<Vec<idle::Idle>> {
    eprintln!("idle connections");
    let up = upstream_port(ctx);
    // Both ends of each connection are in this machine's processes: this
    // one holds n descriptors, the proxy n more.
    let n = ctx.s.idle.min(limit.saturating_sub(1024) as usize);
    let max = Some(n * 2 + 1024);
    let b = configs::portcullis(false, max, Policy::EchoOnly { caller: None }, &[]);
    let c = configs::portcullis(
        true,
        max,
        Policy::EchoOnly {
            caller: Some(configs::CLIENT),
        },
        &[],
    );
    let mut out = Vec::new();
    let tls = Some(ctx.client_tls.clone());
    for (name, cfg, tls, series) in [
        ("curve-idle-b", b, None, "b: plain"),
        ("curve-idle-c", c, tls, "c: mTLS"),
    ] {
        let p = ctx.proxy(name, &cfg, tls, up).await?;
        // A short load first, so that the baseline includes the buffers
        // and pools any served connection brings.
        load::run(
            &p.endpoint,
            RunSpec {
                connections: 4,
                duration: ctx.s.warmup,
                pace: Pace::Closed,
            },
        )
        .await?;
        let m = idle::measure(series, &p.endpoint, p.pid()?, n).await?;
        eprintln!(
            "  {series}: {} connections held, RSS {:.1} -> {:.1} MiB, {:.1} KiB each",
            m.held, m.rss_before_mib, m.rss_held_mib, m.kib_per_connection
        );
        out.push(m);
    }
    Ok(out)
}

/// Hit rate of the warm-instance pool and CPU per call against the number
/// of distinct callers, through configuration d (isolation: caller, the
/// default) with tool-rbac allowing every caller of the bench domain.
async fn warm_pool(ctx: &mut Ctx) -> anyhow::Result<Curve> {
    eprintln!("curve: distinct callers (warm-instance pool)");
    let up = upstream_port(ctx);
    let most = ctx.s.callers.iter().copied().max().unwrap_or(1);
    let endpoints = mint_callers(ctx, most).await?;
    let chain = |fresh| {
        configs::portcullis(
            true,
            None,
            Policy::Allow,
            &[
                Filter::ToolRbac {
                    name: "tool-rbac".into(),
                    principal: Some(configs::ANY_BENCH_CALLER),
                    tools: &["echo"],
                    fresh,
                    reuse: false,
                },
                Filter::ArgGuard {
                    max_length: 1024,
                    fresh,
                },
            ],
        )
    };
    let warm = ctx
        .proxy("curve-callers-d", &chain(false), None, up)
        .await?;
    let fresh = ctx
        .proxy("curve-callers-d-fresh", &chain(true), None, up)
        .await?;
    let mut points = Vec::new();
    let payload = Payload::echo(TEXT);
    for &n in &ctx.s.callers {
        let mine: Vec<Endpoint> = endpoints
            .iter()
            .take(n)
            .map(|tls| Endpoint::mtls(warm.endpoint.addr, tls.clone()))
            .collect();
        for (p, series) in [
            (&warm, "d: isolation caller (default)"),
            (&fresh, "d: isolation call (reference)"),
        ] {
            let mine: Vec<Endpoint> = mine
                .iter()
                .map(|e| Endpoint {
                    addr: p.endpoint.addr,
                    tls: e.tls.clone(),
                })
                .collect();
            load::probe(&mine[0], "echo", TEXT)
                .await
                .map_err(|e| anyhow::anyhow!("{series}: echo refused: {e}"))?;
            if load::probe(&mine[0], "delete_file", "x").await.is_ok() {
                bail!("{series}: delete_file was served; tool-rbac must refuse it");
            }
            let pool = callers::Pool::open(&mine, ctx.s.connections)
                .await
                .map_err(|e| anyhow::anyhow!("{series}, {n} callers: {e}"))?;
            callers::run(&pool, ctx.s.connections, ctx.s.warmup, &payload).await?;
            let before = instance_counts(p.admin).await?;
            let evals0 = evaluations(p.admin).await;
            let pid = p.pid()?;
            let cpu0 = procstat::cpu_seconds(pid, ctx.ticks)?;
            let host0 = procstat::HostTicks::now().ok();
            let r = callers::run(&pool, ctx.s.connections, ctx.s.duration, &payload).await?;
            let host1 = procstat::HostTicks::now().ok();
            let cpu = procstat::cpu_seconds(pid, ctx.ticks)? - cpu0;
            let after = instance_counts(p.admin).await?;
            let evals1 = evaluations(p.admin).await;
            let mut point = Point::new(series, n as f64, &r, cpu);
            point.host_steal = procstat::steal_between(host0, host1, procstat::StealBasis::Wanted);
            point.filter_us = mean_between(&evals0, &evals1);
            for (filter, a) in &after {
                let b = before.get(filter).copied().unwrap_or_default();
                if let Some(h) = a.since(&b).hit_rate() {
                    point.hit_rate.insert(filter.clone(), h);
                }
            }
            progress(&point);
            points.push(point);
            drop(pool);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(Curve {
        key: "callers",
        points,
        derived: BTreeMap::new(),
        notes: warm_pool_notes(ctx.s.connections),
    })
}

/// Issues caller-1 … caller-n with `portcullis ca issue`, and a client
/// configuration for each.
async fn mint_callers(ctx: &Ctx, n: usize) -> anyhow::Result<Vec<Arc<rustls::ClientConfig>>> {
    let pki = ctx.paths.pki();
    let dir = pki.join("callers");
    std::fs::create_dir_all(&dir)?;
    let mut out = Vec::with_capacity(n);
    for i in 1..=n {
        let base = dir.join(format!("caller-{i}"));
        let args: Vec<std::ffi::OsString> = vec![
            "ca".into(),
            "issue".into(),
            "--dir".into(),
            pki.join("ca").into(),
            "--out".into(),
            base.clone().into(),
            "--id".into(),
            configs::caller_id(i).into(),
        ];
        targets::run_portcullis(&ctx.paths, &args).await?;
        out.push(Arc::new(conn::mtls_client(
            &pki.join("ca/ca.pem"),
            &base.with_extension("pem"),
            &base.with_extension("key"),
        )?));
    }
    Ok(out)
}

/// Each filter's `filter_instances_total` counters, as the proxy counts
/// them: every evaluation is served by a warm instance or a fresh one.
async fn instance_counts(
    admin: SocketAddr,
) -> anyhow::Result<BTreeMap<String, scrape::InstanceCounts>> {
    let text = scrape::metrics_text(admin)
        .await
        .map_err(|e| anyhow::anyhow!("metrics from {admin}: {e}"))?;
    Ok(["tool-rbac", "arg-guard"]
        .into_iter()
        .map(|f| (f.to_string(), scrape::instance_counts(&text, f)))
        .collect())
}

fn warm_pool_notes(workers: usize) -> Vec<String> {
    vec![
        format!(
            "{workers} calls in flight over max(callers, {workers}) mTLS connections, each call on \
             an idle connection picked at random; caller i holds connections i, i + callers, …. \
             Every caller has its own SVID (`spiffe://bench.local/ns/bench/sa/caller-i`, minted \
             with `portcullis ca issue`). tool-rbac allows `echo` to \
             `spiffe://bench.local/ns/bench/sa/*`, with `reuse_decisions: false` so that this \
             curve measures the instance pool (with the default, each caller's calls after its \
             first would reuse tool-rbac's decision); arg-guard is d's."
        ),
        "Hit rate: the share of the measured run's calls of the filter that needed no new \
         instance, counted by the proxy (`portcullis_filter_instances_total{filter,outcome=\"warm|fresh|cached\"}`; \
         `cached`, a reused decision, counts as a hit). \
         portcullis keeps up to half of `filter_engine.max_instances` (256 by default) warm, \
         shared equally among the filters with `isolation: caller`: 64 per filter here, least \
         recently used evicted first. With `isolation: call` every evaluation is fresh, so \
         arg-guard's hit rate there is 0 %."
            .to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_too_little() {
        let pts = [
            (0.0, 40.0),
            (1.0, 43.0),
            (2.0, 46.0),
            (4.0, 52.0),
            (8.0, 64.0),
        ];
        assert!((fit_slope(&pts).unwrap() - 3.0).abs() < 1e-9);
        assert!(fit_slope(&[(1.0, 2.0)]).is_none());
        assert!(fit_slope(&[(1.0, 2.0), (1.0, 3.0)]).is_none());
    }

    #[test]
    fn text_of_has_the_length_asked_and_nothing_arg_guard_refuses() {
        let t = text_of(10_000);
        assert_eq!(t.len(), 10_000);
        assert!(!t.to_lowercase().contains("drop"));
    }
}
