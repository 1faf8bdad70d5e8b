//! The soak's results: one summary, written as RESULTS.md and
//! results.json (and drawn by chart.rs).

use std::collections::BTreeMap;
use std::path::Path;

use portcullis_bench::machine::Machine;
use serde::Serialize;

use crate::chaos::{Chaos, Event, Kind};
use crate::load::Recorder;
use crate::sampler::Sample;
use crate::stats::{self, in_restart, ErrorClass, Span, WindowRow};
use crate::Args;

/// Growth per hour, after the warm-up, above which a long run is called a
/// leak. Runs shorter than `JUDGED_FROM_S` are too short to tell.
const RSS_MIB_PER_H: f64 = 5.0;
const FDS_PER_H: f64 = 10.0;
const JUDGED_FROM_S: f64 = 1800.0;
/// The first tenth of the run (filter compilation, allocator and pool
/// warm-up) is left out of the leak slope.
const WARMUP_FRACTION: f64 = 0.1;
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Serialize)]
pub struct ErrorRow {
    pub class: String,
    pub inside_restart: bool,
    pub count: u64,
    pub examples: Vec<String>,
}

#[derive(Serialize, Default)]
pub struct Applied {
    pub attempted: usize,
    pub applied: usize,
    pub median_ms: f64,
    pub max_ms: f64,
}

#[derive(Serialize)]
pub struct Range {
    pub start: f64,
    pub end: f64,
    pub max: f64,
    /// Least-squares slope per hour, whole run and after the warm-up.
    pub slope_per_h: Option<f64>,
    pub slope_per_h_after_warmup: Option<f64>,
}

#[derive(Serialize)]
pub struct Summary {
    pub machine: Machine,
    pub commit: String,
    pub duration_s: f64,
    pub rate: f64,
    pub connections: usize,
    pub intervals_s: BTreeMap<&'static str, f64>,
    pub calls: u64,
    pub ok: u64,
    pub errors_inside_restarts: u64,
    pub errors_outside_restarts: u64,
    pub errors: Vec<ErrorRow>,
    pub reloads: Applied,
    pub rotations: Applied,
    pub restarts: Applied,
    pub restart_spans: Vec<Span>,
    pub warmup_s: f64,
    pub rss_mib: Option<Range>,
    pub fds: Option<Range>,
    pub leak_verdict: String,
    pub proxy_alive: bool,
    pub windows: Vec<WindowRow>,
    pub failures: Vec<String>,
    pub events: Vec<Event>,
    pub samples: Vec<Sample>,
}

pub fn summarize(
    args: &Args,
    machine: Machine,
    rec: &Recorder,
    chaos: &Chaos,
    samples: Vec<Sample>,
    proxy_alive: bool,
) -> Summary {
    let duration_s = args.duration.as_secs_f64();
    let grace_s = args.grace.as_secs_f64();
    let errors = error_rows(rec, &chaos.restarts, grace_s);
    let inside = |yes: bool| {
        errors
            .iter()
            .filter(|r| r.inside_restart == yes)
            .map(|r| r.count)
            .sum()
    };
    let warmup_s = duration_s * WARMUP_FRACTION;
    let rss_mib = range(&samples, warmup_s, |s| s.rss_bytes as f64 / MIB);
    let fds = range(&samples, warmup_s, |s| s.fds as f64);
    let ok = rec.ok_total();
    let mut s = Summary {
        machine,
        commit: git_commit(),
        duration_s,
        rate: args.rate,
        connections: args.connections,
        intervals_s: BTreeMap::from([
            ("reload", args.reload_every.as_secs_f64()),
            ("rotation", args.rotate_every.as_secs_f64()),
            ("restart", args.restart_every.as_secs_f64()),
            ("restart_downtime", args.downtime.as_secs_f64()),
            ("restart_grace", grace_s),
            ("window", args.window.as_secs_f64()),
        ]),
        calls: ok + rec.errors.len() as u64,
        ok,
        errors_inside_restarts: inside(true),
        errors_outside_restarts: inside(false),
        errors,
        reloads: applied(&chaos.events, Kind::Reload),
        rotations: applied(&chaos.events, Kind::Rotation),
        restarts: applied(&chaos.events, Kind::Restart),
        restart_spans: chaos.restarts.clone(),
        warmup_s,
        leak_verdict: leak_verdict(duration_s, &rss_mib, &fds),
        rss_mib,
        fds,
        proxy_alive,
        windows: stats::window_rows(
            &rec.latency_us,
            &rec.errors_per_window,
            args.window.as_secs_f64(),
            duration_s,
        ),
        failures: Vec::new(),
        events: chaos.events.clone(),
        samples,
    };
    s.failures = failures(&s);
    s
}

fn error_rows(rec: &Recorder, restarts: &[Span], grace_s: f64) -> Vec<ErrorRow> {
    let mut counts: BTreeMap<(bool, ErrorClass), u64> = BTreeMap::new();
    for e in &rec.errors {
        *counts
            .entry((in_restart(e.t_s, restarts, grace_s), e.class))
            .or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((inside_restart, class), count)| ErrorRow {
            class: class.label(),
            inside_restart,
            count,
            examples: rec.examples.get(&class).cloned().unwrap_or_default(),
        })
        .collect()
}

fn applied(events: &[Event], kind: Kind) -> Applied {
    let of_kind: Vec<&Event> = events.iter().filter(|e| e.kind == kind).collect();
    let mut took: Vec<f64> = of_kind
        .iter()
        .filter(|e| e.applied)
        .map(|e| e.took_ms)
        .collect();
    took.sort_by(f64::total_cmp);
    Applied {
        attempted: of_kind.len(),
        applied: took.len(),
        median_ms: took.get(took.len() / 2).copied().unwrap_or(0.0),
        max_ms: took.last().copied().unwrap_or(0.0),
    }
}

fn range(samples: &[Sample], warmup_s: f64, value: impl Fn(&Sample) -> f64) -> Option<Range> {
    let points: Vec<(f64, f64)> = samples.iter().map(|s| (s.t_s, value(s))).collect();
    let after: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.0 >= warmup_s).collect();
    let per_h = |p: &[(f64, f64)]| stats::slope(p).map(|s| s * 3600.0);
    Some(Range {
        start: points.first()?.1,
        end: points.last()?.1,
        max: points.iter().map(|p| p.1).fold(f64::MIN, f64::max),
        slope_per_h: per_h(&points),
        slope_per_h_after_warmup: per_h(&after),
    })
}

fn leak_verdict(duration_s: f64, rss: &Option<Range>, fds: &Option<Range>) -> String {
    let slope = |r: &Option<Range>| r.as_ref().and_then(|r| r.slope_per_h_after_warmup);
    let (Some(rss), Some(fds)) = (slope(rss), slope(fds)) else {
        return "no samples".into();
    };
    if duration_s < JUDGED_FROM_S {
        return format!(
            "not judged: a run under {} min is too short to tell growth from noise",
            JUDGED_FROM_S / 60.0
        );
    }
    if rss > RSS_MIB_PER_H || fds > FDS_PER_H {
        format!("LEAK? growth above {RSS_MIB_PER_H} MiB/h or {FDS_PER_H} fds/h after the warm-up")
    } else {
        format!(
            "no leak: growth after the warm-up below {RSS_MIB_PER_H} MiB/h and {FDS_PER_H} fds/h"
        )
    }
}

fn failures(s: &Summary) -> Vec<String> {
    let mut out = Vec::new();
    if s.ok == 0 {
        out.push("no call was answered".into());
    }
    if s.errors_outside_restarts > 0 {
        out.push(format!(
            "{} errors outside restart windows",
            s.errors_outside_restarts
        ));
    }
    for (what, a) in [
        ("reloads", &s.reloads),
        ("SVID rotations", &s.rotations),
        ("upstream restarts", &s.restarts),
    ] {
        if a.applied < a.attempted {
            out.push(format!("{what}: {} of {} applied", a.applied, a.attempted));
        }
    }
    if !s.proxy_alive {
        out.push("the proxy was not running at the end".into());
    }
    if s.leak_verdict.starts_with("LEAK") {
        out.push(s.leak_verdict.clone());
    }
    out
}

fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub fn write(out: &Path, s: &Summary) -> anyhow::Result<()> {
    std::fs::write(out.join("RESULTS.md"), crate::report::markdown(s))?;
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(s)?)?;
    Ok(())
}

mod markdown;
pub use markdown::markdown;
