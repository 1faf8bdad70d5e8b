//! Turns samples into the published results: one cell per configuration
//! and load, ratios computed pair by pair from runs of the same round, and
//! the targets checked against them.
//!
//! Goal texts say where their figure comes from: *paired* is the median
//! over rounds of a ratio of two runs of the same round (drift between
//! rounds cancels out); *cells* is the aggregate of every round, as the
//! tables show it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::plan::{Mode, Sample};
use crate::probe::ProbeTimes;
use crate::targets::Kind;

/// Aggregate of every round of one configuration at one load.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    pub kind: Kind,
    pub label: &'static str,
    pub mode: Mode,
    pub connections: usize,
    pub rate: Option<f64>,
    pub runs: usize,
    pub ok: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub proxy_cpu_s_per_10k: Option<f64>,
    pub proxy_peak_rss_mib: Option<f64>,
    /// The largest private memory (anonymous + shared-memory pages) seen.
    pub proxy_peak_private_mib: Option<f64>,
    /// The most host steal seen in one of the cell's runs (share of the
    /// time the vCPUs wanted to run), and how many runs were over the plan's limit.
    pub host_steal_max: Option<f64>,
    pub unclean_runs: usize,
    /// Median over rounds of this run's throughput over direct's.
    pub rps_vs_direct: Option<f64>,
    /// Median over rounds of this run's throughput over Envoy e's.
    pub rps_vs_envoy: Option<f64>,
    /// Open loop: median over rounds of p50/p99 minus direct's.
    pub added_p50_ms: Option<f64>,
    pub added_p99_ms: Option<f64>,
    pub first_error: Option<String>,
}

/// The load a sample was taken at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Load {
    mode: u8,
    connections: usize,
}

fn load_of(s: &Sample) -> Load {
    Load {
        mode: matches!(s.mode, Mode::Open) as u8,
        connections: s.connections,
    }
}

fn same(a: &Sample, b: &Sample) -> bool {
    load_of(a) == load_of(b) && a.round == b.round
}

/// Runs of `kind` at `like`'s load, each with `base`'s run of the same
/// round. Where some rounds have both runs clean (host steal within the
/// plan's limit, `plan::StealRule`), only those: a ratio with a run the
/// hypervisor slowed down says more about the host than about the proxy.
fn pairs<'a>(
    samples: &'a [Sample],
    kind: Kind,
    base: Kind,
    like: &'a Sample,
) -> Vec<(&'a Sample, &'a Sample)> {
    let all = all_pairs(samples, kind, base, like);
    if all.iter().any(|(s, b)| s.clean && b.clean) {
        all.into_iter()
            .filter(|(s, b)| s.clean && b.clean)
            .collect()
    } else {
        all
    }
}

/// How many of the rounds `pairs` would pair are clean on both sides, and
/// how many there are.
fn clean_rounds(samples: &[Sample], kind: Kind, base: Kind, like: &Sample) -> (usize, usize) {
    all_pairs(samples, kind, base, like)
        .into_iter()
        .fold((0, 0), |(clean, n), (s, b)| {
            (clean + usize::from(s.clean && b.clean), n + 1)
        })
}

/// Every run of `kind` at `like`'s load with `base`'s run of the same
/// round, clean or not.
fn all_pairs<'a>(
    samples: &'a [Sample],
    kind: Kind,
    base: Kind,
    like: &Sample,
) -> Vec<(&'a Sample, &'a Sample)> {
    samples
        .iter()
        .filter(|s| s.kind == kind && load_of(s) == load_of(like))
        .filter_map(|s| Some((s, samples.iter().find(|b| b.kind == base && same(b, s))?)))
        .collect()
}

/// Median over rounds of f(kind's run) / f(base's run), runs paired by
/// load and round.
pub fn paired(
    samples: &[Sample],
    kind: Kind,
    base: Kind,
    like: &Sample,
    f: impl Fn(&Sample) -> f64,
) -> Option<f64> {
    paired_by(samples, kind, base, like, |s| Some(f(s)))
}

/// As `paired`, for a figure some runs lack (proxy CPU: direct has none);
/// a pair with either side missing is left out.
fn paired_by(
    samples: &[Sample],
    kind: Kind,
    base: Kind,
    like: &Sample,
    f: impl Fn(&Sample) -> Option<f64>,
) -> Option<f64> {
    let mut ratios: Vec<f64> = pairs(samples, kind, base, like)
        .into_iter()
        .filter_map(|(s, b)| {
            let (x, y) = (f(s)?, f(b)?);
            (y > 0.0).then(|| x / y)
        })
        .collect();
    median(&mut ratios)
}

/// One sample of each load, in the order they were run: the `like` that
/// `paired` finds a load's runs by.
fn loads(samples: &[Sample]) -> Vec<&Sample> {
    let mut out: Vec<&Sample> = Vec::new();
    for s in samples {
        if !out.iter().any(|o| load_of(o) == load_of(s)) {
            out.push(s);
        }
    }
    out
}

/// Median over rounds of f(kind's run) − f(base's run).
fn paired_diff(
    samples: &[Sample],
    kind: Kind,
    base: Kind,
    like: &Sample,
    f: impl Fn(&Sample) -> f64,
) -> Option<f64> {
    let mut diffs: Vec<f64> = pairs(samples, kind, base, like)
        .into_iter()
        .map(|(s, b)| f(s) - f(b))
        .collect();
    median(&mut diffs)
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

pub fn cells(samples: &[Sample]) -> Vec<Cell> {
    let mut groups: BTreeMap<(u8, usize, Kind), Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        let l = load_of(s);
        groups
            .entry((l.mode, l.connections, s.kind))
            .or_default()
            .push(s);
    }
    groups
        .into_values()
        .filter_map(|runs| cell(samples, &runs))
        .collect()
}

fn cell(all: &[Sample], runs: &[&Sample]) -> Option<Cell> {
    let first = *runs.first()?;
    let mut hist = first.latency_us.clone();
    for r in &runs[1..] {
        // Every histogram is made with the same bounds.
        let _ = hist.add(&r.latency_us);
    }
    let ok: u64 = runs.iter().map(|r| r.ok).sum();
    let secs: f64 = runs.iter().map(|r| r.secs).sum();
    let cpu: Option<f64> = runs.iter().map(|r| r.proxy_cpu_secs).sum();
    let rss = runs.iter().filter_map(|r| r.proxy_peak_rss_bytes).max();
    let private = runs.iter().filter_map(|r| r.proxy_peak_private_bytes).max();
    let q = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let open = first.mode == Mode::Open;
    let vs = |base: Kind| {
        (first.kind != base)
            .then(|| paired(all, first.kind, base, first, Sample::rps))
            .flatten()
    };
    let added = |quant: f64| {
        (open && first.kind != Kind::A)
            .then(|| paired_diff(all, first.kind, Kind::A, first, |s| s.quantile_ms(quant)))
            .flatten()
    };
    Some(Cell {
        kind: first.kind,
        label: first.kind.label(),
        mode: first.mode,
        connections: first.connections,
        rate: first.rate,
        runs: runs.len(),
        ok,
        errors: runs.iter().map(|r| r.errors).sum(),
        rps: ok as f64 / secs.max(1e-9),
        p50_ms: q(0.5),
        p90_ms: q(0.9),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        proxy_cpu_s_per_10k: cpu.filter(|_| ok > 0).map(|c| c / ok as f64 * 10_000.0),
        proxy_peak_rss_mib: rss.map(|b| b as f64 / (1024.0 * 1024.0)),
        proxy_peak_private_mib: private.map(|b| b as f64 / (1024.0 * 1024.0)),
        host_steal_max: runs
            .iter()
            .filter_map(|r| r.host_steal)
            .max_by(|a, b| a.total_cmp(b)),
        unclean_runs: runs.iter().filter(|r| !r.clean).count(),
        rps_vs_direct: vs(Kind::A),
        rps_vs_envoy: vs(Kind::E),
        added_p50_ms: added(0.5),
        added_p99_ms: added(0.99),
        first_error: runs.iter().find_map(|r| r.first_error.clone()),
    })
}

/// One of the targets, as measured.
#[derive(Clone, Debug, Serialize)]
pub struct Goal {
    pub what: String,
    pub target: String,
    pub measured: String,
    pub met: Option<bool>,
}

pub fn goals(samples: &[Sample], cells: &[Cell]) -> Vec<Goal> {
    let mut out = Vec::new();
    // Throughput only means something in the closed loop: the open loop
    // sends at a fixed rate whatever the proxy.
    let closed = loads(samples)
        .into_iter()
        .filter(|s| s.mode == Mode::Closed);
    for like in closed {
        for (base, want) in [(Kind::E, 1.0), (Kind::F, 1.5)] {
            if let Some(r) = paired(samples, Kind::D, base, like, Sample::rps) {
                out.push(Goal {
                    what: format!(
                        "throughput d / {base} at {} connections (paired)",
                        like.connections
                    ),
                    target: format!("≥ {want:.1}"),
                    measured: format!("{r:.2}"),
                    met: Some(r >= want),
                });
            }
        }
        // Like for like, with no target of their own: mTLS against mTLS,
        // plaintext + WASM against plaintext + WASM. CPU per call is the
        // measure with targets; these are context.
        for (kind, base, what) in [
            (Kind::C, Kind::G, "both mTLS"),
            (Kind::I, Kind::F, "both plaintext + WASM"),
        ] {
            if let Some(r) = paired(samples, kind, base, like, Sample::rps) {
                out.push(Goal {
                    what: format!(
                        "throughput {kind} / {base} ({what}) at {} connections (paired)",
                        like.connections
                    ),
                    target: "–".into(),
                    measured: format!("{r:.2}"),
                    met: None,
                });
            }
        }
    }
    if let Some(like) = samples
        .iter()
        .find(|s| s.mode == Mode::Open && s.kind == Kind::D)
    {
        for base in [Kind::E, Kind::G] {
            if let Some(r) = paired(samples, Kind::D, base, like, |s| s.quantile_ms(0.99)) {
                out.push(Goal {
                    what: format!(
                        "p99 d / {base} at {:.0} rps (paired)",
                        like.rate.unwrap_or_default()
                    ),
                    target: "≤ 1.00".into(),
                    measured: format!("{r:.2}"),
                    met: Some(r <= 1.0),
                });
            }
        }
    }
    out.extend(cpu_goals(samples, cells));
    let peak = |k: Kind, of: fn(&Cell) -> Option<f64>| {
        cells
            .iter()
            .filter(|c| c.kind == k)
            .filter_map(of)
            .reduce(f64::max)
    };
    let rss = |c: &Cell| c.proxy_peak_rss_mib;
    for base in [Kind::E, Kind::F, Kind::G] {
        if let (Some(d), Some(e)) = (peak(Kind::D, rss), peak(base, rss)) {
            out.push(Goal {
                what: format!("peak RSS d / {base} (cells)"),
                target: "≤ 0.33".into(),
                measured: format!("{:.2} ({d:.1} MiB vs {e:.1} MiB)", d / e),
                met: Some(d / e <= 1.0 / 3.0),
            });
        }
    }
    // Context for the RSS goal: RSS counts the pages of each binary, which
    // are page cache shared by every pod mapping the same image file; this
    // is the memory each sidecar adds on its own.
    let private = |c: &Cell| c.proxy_peak_private_mib;
    if let (Some(d), Some(e)) = (peak(Kind::D, private), peak(Kind::E, private)) {
        out.push(Goal {
            what: "peak private memory (anonymous + shared memory) d / e (cells)".into(),
            target: "–".into(),
            measured: format!("{:.2} ({d:.1} MiB vs {e:.1} MiB)", d / e),
            met: None,
        });
    }
    out.extend(filter_cost(cells));
    out
}

/// How a CPU goal compares its two configurations.
#[derive(Clone, Copy, Debug)]
enum Form {
    /// kind / base.
    Ratio,
    /// (kind − base) / base: what kind adds to base.
    Added,
}

/// A goal on proxy CPU per call, checked at every load.
struct CpuGoal {
    kind: Kind,
    base: Kind,
    form: Form,
    /// The bound the figure must not exceed, and the table's text for it;
    /// None for a figure shown as context.
    max: Option<(f64, &'static str)>,
    why: &'static str,
}

/// CPU per call is what the proxy costs whatever the machine shares it
/// with, so it carries the targets; throughput on 2 shared cores moves
/// with the load generator and upstream too.
const CPU_GOALS: [CpuGoal; 6] = [
    CpuGoal {
        kind: Kind::I,
        base: Kind::F,
        form: Form::Ratio,
        max: Some((2.0 / 3.0, "≤ 0.67 (⅔)")),
        why: "like for like: plaintext + WASM",
    },
    CpuGoal {
        kind: Kind::D,
        base: Kind::C,
        form: Form::Added,
        max: Some((0.20, "≤ 0.20")),
        why: "two WASM filters over native rules, mTLS",
    },
    CpuGoal {
        kind: Kind::I,
        base: Kind::B,
        form: Form::Added,
        max: Some((0.20, "≤ 0.20")),
        why: "two WASM filters over native rules, plaintext",
    },
    CpuGoal {
        kind: Kind::B,
        base: Kind::H,
        form: Form::Ratio,
        max: Some((1.5, "≤ 1.50")),
        why: "portcullis plaintext over the bare forwarder",
    },
    CpuGoal {
        kind: Kind::C,
        base: Kind::H,
        form: Form::Ratio,
        max: None,
        why: "portcullis mTLS over the bare forwarder",
    },
    CpuGoal {
        kind: Kind::D,
        base: Kind::E,
        form: Form::Ratio,
        max: Some((1.0, "≤ 1.00")),
        why: "portcullis d against Envoy e",
    },
];

/// The CPU-per-call goals at every load, closed and open: the paired
/// median decides, the cells' µs per call are shown beside it.
pub fn cpu_goals(samples: &[Sample], cells: &[Cell]) -> Vec<Goal> {
    let loads = loads(samples);
    let cell_us = |k: Kind, like: &Sample| {
        cells
            .iter()
            .find(|c| c.kind == k && c.mode == like.mode && c.connections == like.connections)
            .and_then(|c| c.proxy_cpu_s_per_10k)
            // CPU seconds per 10k calls → µs per call.
            .map(|x| x * 100.0)
    };
    let mut out = Vec::new();
    for g in &CPU_GOALS {
        for like in &loads {
            let Some(r) = paired_by(samples, g.kind, g.base, like, Sample::cpu_us_per_call) else {
                continue;
            };
            let (value, expr) = match g.form {
                Form::Ratio => (r, format!("{} / {}", g.kind, g.base)),
                Form::Added => (r - 1.0, format!("({} − {}) / {}", g.kind, g.base, g.base)),
            };
            let context = match (cell_us(g.kind, like), cell_us(g.base, like)) {
                (Some(a), Some(b)) => {
                    format!(" (cells: {} {a:.1} µs, {} {b:.1} µs)", g.kind, g.base)
                }
                _ => String::new(),
            };
            let rounds = match clean_rounds(samples, g.kind, g.base, like) {
                (clean, n) if clean == n => String::new(),
                (0, n) => format!("; none of {n} rounds clean of host steal"),
                (clean, n) => format!("; {clean} of {n} rounds clean of host steal"),
            };
            out.push(Goal {
                what: format!(
                    "proxy CPU per call {expr}, {}: {} (paired)",
                    describe_load(like.mode, like.rate, like.connections),
                    g.why
                ),
                target: g.max.map_or_else(|| "–".into(), |(_, t)| t.into()),
                measured: format!("{value:.2}{context}{rounds}"),
                met: g.max.map(|(m, _)| value <= m),
            });
        }
    }
    out
}

/// What the two WASM filters cost in proxy CPU at each load: d minus c
/// (mTLS) and i minus b (plaintext), from the cells.
fn filter_cost(cells: &[Cell]) -> Vec<Goal> {
    let find = |k: Kind, c: &Cell| {
        cells
            .iter()
            .find(|x| x.kind == k && x.mode == c.mode && x.connections == c.connections)
            .and_then(|x| x.proxy_cpu_s_per_10k)
    };
    let mut out = Vec::new();
    for (kind, base) in [(Kind::D, Kind::C), (Kind::I, Kind::B)] {
        out.extend(cells.iter().filter(|c| c.kind == kind).filter_map(|c| {
            let (with, without) = (find(kind, c)?, find(base, c)?);
            // CPU seconds per 10k requests → µs per request.
            let per_call_us = (with - without) * 100.0;
            Some(Goal {
                what: format!(
                    "CPU of the two WASM filters ({kind} − {base}), {} (cells)",
                    load_name(c)
                ),
                target: "visible".into(),
                measured: format!(
                    "{per_call_us:.1} µs per call ({:.1} µs per filter)",
                    per_call_us / 2.0
                ),
                met: None,
            })
        }));
    }
    out
}

pub fn load_name(c: &Cell) -> String {
    describe_load(c.mode, c.rate, c.connections)
}

fn describe_load(mode: Mode, rate: Option<f64>, connections: usize) -> String {
    match (mode, rate) {
        (Mode::Open, Some(r)) => format!("open loop {r:.0} rps over {connections} connections"),
        _ => format!("{connections} connections"),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

/// The tables of RESULTS.md.
pub fn markdown(cells: &[Cell], goals: &[Goal]) -> String {
    let mut md = String::new();
    let mut last: Option<String> = None;
    for c in cells {
        let name = load_name(c);
        if last.as_deref() != Some(name.as_str()) {
            let _ = writeln!(md, "\n### {}\n", capitalise(&name));
            if c.mode == Mode::Open {
                md.push_str("| config | achieved rps | p50 ms | p90 ms | p99 ms | p99.9 ms | added p50 ms | added p99 ms | errors | proxy CPU s / 10k | proxy peak RSS MiB | proxy peak private MiB | host steal % |\n");
                md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            } else {
                md.push_str("| config | rps | × direct | × Envoy e | p50 ms | p90 ms | p99 ms | p99.9 ms | errors | proxy CPU s / 10k | proxy peak RSS MiB | proxy peak private MiB | host steal % |\n");
                md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            }
            last = Some(name);
        }
        let id = format!("{} {}", c.kind, c.label);
        let tail = format!(
            "{:.3} | {:.3} | {:.3} | {:.3} | ",
            c.p50_ms, c.p90_ms, c.p99_ms, c.p999_ms
        );
        let cost = format!(
            "{} | {} | {} | {} | {} |",
            c.errors,
            opt(c.proxy_cpu_s_per_10k, 2),
            opt(c.proxy_peak_rss_mib, 1),
            opt(c.proxy_peak_private_mib, 1),
            steal(c)
        );
        if c.mode == Mode::Open {
            let _ = writeln!(
                md,
                "| {id} | {:.0} | {tail}{} | {} | {cost}",
                c.rps,
                opt(c.added_p50_ms, 3),
                opt(c.added_p99_ms, 3)
            );
        } else {
            let _ = writeln!(
                md,
                "| {id} | {:.0} | {} | {} | {tail}{cost}",
                c.rps,
                opt(c.rps_vs_direct, 2),
                opt(c.rps_vs_envoy, 2)
            );
        }
    }
    md.push_str(
        "\n### Targets\n\n\
         *Paired*: median over rounds of the ratio of two runs of the same round \
         (only the rounds where both runs were clean of host steal, when there are any). \
         *Cells*: the aggregate of every round, as in the tables above. \
         CPU per call: µs of proxy CPU per answered call (CPU s / 10k × 100).\n\n",
    );
    goal_table(&mut md, goals);
    md
}

/// The targets as a markdown table (`RESULTS.md`, `POOLED.md`).
pub fn goal_table(md: &mut String, goals: &[Goal]) {
    md.push_str("| what | target | measured | met |\n|---|---|---|---|\n");
    for g in goals {
        let met = match g.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let _ = writeln!(md, "| {} | {} | {} | {met} |", g.what, g.target, g.measured);
    }
}

/// The noise probe (`probe::Probe`) per load and round: the fastest and
/// slowest reading among the round's runs. A round whose probe is slower
/// than the others was a slower machine, whatever its steal said.
pub fn probe_table(samples: &[Sample]) -> String {
    let mut rows: BTreeMap<(Load, usize), Vec<ProbeTimes>> = BTreeMap::new();
    let mut names: BTreeMap<Load, String> = BTreeMap::new();
    for s in samples {
        if let Some(p) = s.noise_probe {
            rows.entry((load_of(s), s.round)).or_default().push(p);
            names
                .entry(load_of(s))
                .or_insert_with(|| describe_load(s.mode, s.rate, s.connections));
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "\n### Noise probe\n\n\
         A fixed piece of work timed on both vCPUs just before and just after every run (the slower \
         reading kept): a register-bound chain (*compute*, the core's speed and its sibling thread) and \
         a dependent walk through 32 MiB (*memory*, the shared cache and memory). Steal time misses \
         what slows a vCPU that is running; this does not. Fastest and slowest run of each round, ms.\n\n\
         | load | round | runs | compute ms | memory ms |\n|---|---:|---:|---:|---:|\n",
    );
    for ((load, round), probes) in &rows {
        let span = |f: fn(&ProbeTimes) -> f64| {
            let lo = probes.iter().map(f).fold(f64::INFINITY, f64::min);
            let hi = probes.iter().map(f).fold(0.0, f64::max);
            format!("{lo:.1}–{hi:.1}")
        };
        let _ = writeln!(
            md,
            "| {} | {round} | {} | {} | {} |",
            names.get(load).map(String::as_str).unwrap_or("–"),
            probes.len(),
            span(|p| p.compute_ms),
            span(|p| p.memory_ms),
        );
    }
    md
}

/// The cell's largest steal in percent, with how many of its runs were
/// over the limit when any were.
fn steal(c: &Cell) -> String {
    let max = opt(c.host_steal_max.map(|x| x * 100.0), 1);
    match c.unclean_runs {
        0 => max,
        n => format!("{max} ({n} of {} over)", c.runs),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::histogram;

    fn sample(kind: Kind, round: usize, ok: u64, p_us: u64) -> Sample {
        let mut h = histogram().unwrap();
        h.record_n(p_us, ok).unwrap();
        Sample {
            kind,
            mode: Mode::Closed,
            connections: 16,
            rate: None,
            round,
            ok,
            errors: 0,
            secs: 1.0,
            proxy_cpu_secs: (kind != Kind::A).then_some(ok as f64 / 10_000.0),
            proxy_switches: None,
            proxy_peak_rss_bytes: (kind != Kind::A).then_some(10 << 20),
            proxy_peak_private_bytes: (kind != Kind::A).then_some(4 << 20),
            first_error: None,
            host_steal: Some(0.0),
            attempts: 1,
            clean: true,
            noise_probe: None,
            latency_us: h,
        }
    }

    #[test]
    fn ratios_pair_runs_of_the_same_round() {
        // Round 1 is twice as fast for everyone: a per-round ratio is
        // unaffected, a ratio of totals would be too.
        let s = vec![
            sample(Kind::A, 0, 1000, 100),
            sample(Kind::D, 0, 500, 200),
            sample(Kind::A, 1, 2000, 100),
            sample(Kind::D, 1, 1000, 200),
            sample(Kind::A, 2, 1000, 100),
            sample(Kind::D, 2, 900, 200),
        ];
        let like = &s[1];
        assert_eq!(paired(&s, Kind::D, Kind::A, like, Sample::rps), Some(0.5));
        let cells = cells(&s);
        assert_eq!(cells.len(), 2);
        let d = cells.iter().find(|c| c.kind == Kind::D).unwrap();
        assert_eq!(d.rps_vs_direct, Some(0.5));
        assert_eq!(d.ok, 2400);
        assert!((d.proxy_cpu_s_per_10k.unwrap() - 1.0).abs() < 1e-9);
        assert!((d.p50_ms - 0.2).abs() < 0.001, "{}", d.p50_ms);
        assert_eq!(d.rps_vs_envoy, None);
    }

    #[test]
    fn goals_report_shortfalls_honestly() {
        let s = vec![
            sample(Kind::D, 0, 900, 200),
            sample(Kind::E, 0, 1000, 150),
            sample(Kind::F, 0, 500, 300),
        ];
        let g = goals(&s, &cells(&s));
        let vs_e = g
            .iter()
            .find(|g| g.what.starts_with("throughput d / e"))
            .unwrap();
        assert_eq!(vs_e.met, Some(false));
        assert_eq!(vs_e.measured, "0.90");
        let vs_f = g
            .iter()
            .find(|g| g.what.starts_with("throughput d / f"))
            .unwrap();
        assert_eq!(vs_f.met, Some(true));
        let md = markdown(&cells(&s), &g);
        assert!(
            md.contains("| d portcullis mTLS + 2 WASM filters | 900 |"),
            "{md}"
        );
        assert!(md.contains("**no**"));
    }

    /// `s` with the proxy spending `us` of CPU per call.
    fn cpu(mut s: Sample, us: f64) -> Sample {
        s.proxy_cpu_secs = Some(s.ok as f64 * us / 1e6);
        s
    }

    fn open(mut s: Sample) -> Sample {
        s.mode = Mode::Open;
        s.connections = 32;
        s.rate = Some(1000.0);
        s
    }

    fn goal<'a>(g: &'a [Goal], prefix: &str) -> &'a Goal {
        g.iter()
            .find(|g| g.what.starts_with(prefix))
            .unwrap_or_else(|| panic!("no goal {prefix:?} in {g:#?}"))
    }

    /// One round of b … i at one load, CPU per call in µs as given.
    fn round(r: usize, us: [(Kind, f64); 7], load: fn(Sample) -> Sample) -> Vec<Sample> {
        us.into_iter()
            .map(|(k, us)| load(cpu(sample(k, r, 1000, 200), us)))
            .collect()
    }

    const MET: [(Kind, f64); 7] = [
        (Kind::B, 50.0),
        (Kind::C, 60.0),
        (Kind::D, 66.0),
        (Kind::E, 80.0),
        (Kind::F, 100.0),
        (Kind::H, 40.0),
        (Kind::I, 55.0),
    ];

    #[test]
    fn cpu_goals_are_met_at_every_load() {
        let mut s = round(0, MET, |s| s);
        s.extend(round(0, MET, open));
        let g = goals(&s, &cells(&s));
        for load in ["16 connections", "open loop 1000 rps over 32 connections"] {
            let at = |expr: &str| goal(&g, &format!("proxy CPU per call {expr}, {load}:"));
            let i_f = at("i / f");
            assert_eq!(
                (i_f.met, i_f.measured.as_str()),
                (Some(true), "0.55 (cells: i 55.0 µs, f 100.0 µs)")
            );
            assert_eq!(
                at("(d − c) / c").measured,
                "0.10 (cells: d 66.0 µs, c 60.0 µs)"
            );
            assert_eq!(at("(d − c) / c").met, Some(true));
            assert_eq!(at("(i − b) / b").met, Some(true));
            assert_eq!(
                (at("b / h").met, &at("b / h").measured[..4]),
                (Some(true), "1.25")
            );
            // Context only: reported, no target.
            assert_eq!((at("c / h").met, at("c / h").target.as_str()), (None, "–"));
            assert_eq!(at("d / e").met, Some(true));
        }
        let t = goal(&g, "throughput i / f");
        assert_eq!((t.met, t.measured.as_str()), (None, "1.00"));
        // No throughput goal in the open loop: its rate is fixed.
        assert!(!g
            .iter()
            .any(|g| g.what.starts_with("throughput") && g.what.contains("rps")));
        let md = markdown(&cells(&s), &g);
        // Equal throughput and memory miss their own targets here; every
        // CPU goal is met.
        assert!(
            g.iter()
                .filter(|g| g.what.starts_with("proxy CPU"))
                .all(|g| g.met != Some(false)),
            "{md}"
        );
        assert!(md.contains("| h bare forwarder (floor) |"), "{md}");
    }

    #[test]
    fn cpu_goals_report_a_miss() {
        let missed = [
            (Kind::B, 70.0),
            (Kind::C, 60.0),
            (Kind::D, 90.0),
            (Kind::E, 80.0),
            (Kind::F, 100.0),
            (Kind::H, 40.0),
            (Kind::I, 80.0),
        ];
        let s = round(0, missed, |s| s);
        let g = goals(&s, &cells(&s));
        let at = |expr: &str| goal(&g, &format!("proxy CPU per call {expr}, 16 connections:"));
        assert_eq!(
            (at("i / f").met, &at("i / f").measured[..4]),
            (Some(false), "0.80")
        );
        assert_eq!(
            (at("(d − c) / c").met, &at("(d − c) / c").measured[..4]),
            (Some(false), "0.50")
        );
        // i − b = 10 µs on 70: within 20 % although i misses against f.
        assert_eq!(at("(i − b) / b").met, Some(true));
        assert_eq!(
            (at("b / h").met, &at("b / h").measured[..4]),
            (Some(false), "1.75")
        );
        assert_eq!(at("d / e").met, Some(false));
        let md = markdown(&cells(&s), &g);
        assert!(md.contains("| **no** |"), "{md}");
    }

    #[test]
    fn cpu_goals_pair_runs_of_the_same_round() {
        // Round 1 costs everyone twice the CPU (a noisy neighbour); the
        // per-round ratios are unaffected. Round 2 alone misses: the
        // median of three rounds is still met.
        let mut s = round(0, MET, |s| s);
        s.extend(round(1, MET.map(|(k, us)| (k, us * 2.0)), |s| s));
        s.extend(round(
            2,
            MET.map(|(k, us)| (k, if k == Kind::I { 90.0 } else { us })),
            |s| s,
        ));
        let g = goals(&s, &cells(&s));
        let i_f = goal(&g, "proxy CPU per call i / f, 16 connections:");
        assert_eq!(i_f.met, Some(true));
        assert!(i_f.measured.starts_with("0.55 "), "{}", i_f.measured);
        // The cells aggregate all rounds: i (55 + 110 + 90) over f (100 + 200 + 100).
        assert!(
            i_f.measured.contains("i 85.0 µs, f 133.3 µs"),
            "{}",
            i_f.measured
        );
    }

    /// `s` taken while the hypervisor took `share` of the machine, over
    /// a limit of 5 %.
    fn stolen(mut s: Sample, share: f64) -> Sample {
        s.host_steal = Some(share);
        s.clean = share <= 0.05;
        s
    }

    #[test]
    fn rounds_with_host_steal_are_left_out_of_the_pairs() {
        // Rounds 1 and 2 ran while other guests held the host: b pays
        // more for it than h, so their ratios miss. Round 0 is clean and
        // alone decides; the cells still hold every round.
        let mut s = round(0, MET, |s| s);
        for r in [1, 2] {
            s.extend(
                round(
                    r,
                    MET.map(|(k, _)| (k, if k == Kind::B { 150.0 } else { 80.0 })),
                    |s| s,
                )
                .into_iter()
                .map(|x| stolen(x, 0.4)),
            );
        }
        let g = goals(&s, &cells(&s));
        let b_h = goal(&g, "proxy CPU per call b / h, 16 connections:");
        assert_eq!(b_h.met, Some(true), "{}", b_h.measured);
        assert!(b_h.measured.starts_with("1.25 "), "{}", b_h.measured);
        assert!(
            b_h.measured
                .ends_with("; 1 of 3 rounds clean of host steal"),
            "{}",
            b_h.measured
        );
        let c = cells(&s);
        let b = c.iter().find(|c| c.kind == Kind::B).unwrap();
        assert_eq!((b.unclean_runs, b.runs), (2, 3));
        assert_eq!(b.host_steal_max, Some(0.4));
        assert!(markdown(&c, &g).contains("| 40.0 (2 of 3 over) |"));

        // With no clean round at all, every round counts, and it is said.
        let dirty: Vec<Sample> = s.into_iter().filter(|x| x.round != 0).collect();
        let g = goals(&dirty, &cells(&dirty));
        let b_h = goal(&g, "proxy CPU per call b / h, 16 connections:");
        assert_eq!(b_h.met, Some(false));
        assert!(
            b_h.measured
                .ends_with("; none of 2 rounds clean of host steal"),
            "{}",
            b_h.measured
        );
    }

    #[test]
    fn goals_without_their_configurations_are_left_out() {
        // b, h, i alone (no Envoy, no mTLS): b / h and (i − b) / b only.
        let s: Vec<Sample> = round(0, MET, |s| s)
            .into_iter()
            .filter(|s| matches!(s.kind, Kind::B | Kind::H | Kind::I))
            .collect();
        let g = goals(&s, &cells(&s));
        let cpu: Vec<&str> = g
            .iter()
            .filter(|g| g.met.is_some())
            .map(|g| g.what.as_str())
            .collect();
        assert_eq!(cpu.len(), 2, "{cpu:?}");
        assert!(
            cpu[0].starts_with("proxy CPU per call (i − b) / b"),
            "{cpu:?}"
        );
        assert!(cpu[1].starts_with("proxy CPU per call b / h"), "{cpu:?}");
        let visible = goal(&g, "CPU of the two WASM filters (i − b)");
        assert_eq!(visible.measured, "5.0 µs per call (2.5 µs per filter)");
    }

    #[test]
    fn the_probe_table_spans_each_round_and_load() {
        let probed = |s: Sample, compute_ms: f64, memory_ms: f64| Sample {
            noise_probe: Some(ProbeTimes {
                compute_ms,
                memory_ms,
            }),
            ..s
        };
        // Round 1 of the closed loop ran on a slower machine; the open
        // loop's round 0 is listed after every closed-loop row.
        let s = vec![
            probed(sample(Kind::B, 0, 1000, 200), 10.0, 20.0),
            probed(sample(Kind::H, 0, 1000, 200), 11.0, 21.5),
            probed(sample(Kind::B, 1, 1000, 200), 14.0, 30.0),
            probed(open(sample(Kind::B, 0, 1000, 200)), 10.2, 20.1),
            // A run without a probe reading is left out.
            sample(Kind::H, 1, 1000, 200),
        ];
        let md = probe_table(&s);
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(
            rows[1..],
            [
                "| 16 connections | 0 | 2 | 10.0–11.0 | 20.0–21.5 |",
                "| 16 connections | 1 | 1 | 14.0–14.0 | 30.0–30.0 |",
                "| open loop 1000 rps over 32 connections | 0 | 1 | 10.2–10.2 | 20.1–20.1 |",
            ],
            "{md}"
        );
        assert_eq!(probe_table(&[sample(Kind::B, 0, 1000, 200)]), "");
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
