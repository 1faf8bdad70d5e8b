//! Pools the rounds of several full runs (`results.json` files) and checks
//! the CPU-per-call targets against all of them at once.
//!
//! On a shared 2-core VM single rounds of the filters' share ranged from
//! −0.42 to 0.49 (standard deviation 0.13; `bench/README.md`,
//! twenty-fourth pass), so a run's median of three rounds can land on
//! either side of a target its configurations meet on average, and a run
//! that checks eight such cells at once often misses one of them. Pooling keeps every run's pairing: a round is
//! still compared only with the other configuration's run of the same
//! round of the same file (rounds are renumbered, never merged), and the
//! verdict is the median over all of them. Rounds over the steal limit
//! stay out, as in a single run; but where no round of a pair is clean,
//! `report` falls back to every round of the whole pool, not of one run.
//! Only runs of the same loads (connections, open-loop rate) pool, and a
//! run is read once (by its path and by when it was taken).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::load::{self, HistogramError};
use crate::plan::{self, Mode, Sample};
use crate::report::{self, Goal};
use crate::targets::Kind;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0} is not a results.json of `portcullis-bench run`: {1}")]
    Parse(PathBuf, serde_json::Error),
    #[error("{0} holds no samples")]
    Empty(PathBuf),
    #[error("{0} is given twice")]
    Twice(PathBuf),
    #[error("{0} and {1} are the same run (both taken {2})")]
    SameRun(PathBuf, PathBuf, String),
    #[error("{0} and {1} were run at different loads (connections or open-loop rate)")]
    Loads(PathBuf, PathBuf),
    #[error(transparent)]
    Histogram(#[from] HistogramError),
}

/// What a pooled verdict needs of one stored run.
#[derive(Deserialize)]
struct Stored {
    machine: Machine,
    samples: Vec<StoredSample>,
}

#[derive(Deserialize)]
struct Machine {
    date: String,
}

#[derive(Deserialize)]
struct StoredSample {
    kind: Kind,
    mode: Mode,
    connections: usize,
    rate: Option<f64>,
    round: usize,
    ok: u64,
    errors: u64,
    secs: f64,
    proxy_cpu_secs: Option<f64>,
    host_steal: Option<f64>,
    /// Files from before the harness judged steal have no verdict: their
    /// runs are judged by the harness's default limit, and a run whose
    /// steal is unknown counts as clean (as `plan::StealRule` counts it).
    clean: Option<bool>,
}

/// `portcullis-bench run`'s default `--max-steal`, as a share.
const DEFAULT_MAX_STEAL: f64 = plan::DEFAULT_MAX_STEAL_PERCENT / 100.0;

/// One run as read: when it was taken and its samples.
pub struct Run {
    pub path: PathBuf,
    pub date: String,
    pub samples: Vec<Sample>,
}

impl Run {
    /// Rounds in the run (numbered from 0).
    fn rounds(&self) -> usize {
        self.samples.iter().map(|s| s.round + 1).max().unwrap_or(0)
    }

    /// The loads the run was taken at: mode, connections and rate.
    fn loads(&self) -> BTreeSet<(bool, usize, Option<u64>)> {
        self.samples
            .iter()
            .map(|s| {
                (
                    s.mode == Mode::Open,
                    s.connections,
                    s.rate.map(f64::to_bits),
                )
            })
            .collect()
    }
}

/// Reads every file, refusing one given twice (by another path, or a
/// copy: an archived run is a copy of what was `results.json`) and runs
/// of different loads (the report tells loads apart by mode and
/// connections, not rate, and would label a pooled open loop with the
/// first run's rate).
pub fn read_all(paths: &[PathBuf]) -> Result<Vec<Run>, PoolError> {
    let mut seen = BTreeSet::new();
    let mut runs: Vec<Run> = Vec::with_capacity(paths.len());
    for path in paths {
        let canonical =
            std::fs::canonicalize(path).map_err(|e| PoolError::Read(path.clone(), e))?;
        if !seen.insert(canonical) {
            return Err(PoolError::Twice(path.clone()));
        }
        let run = read(path)?;
        if let Some(same) = runs.iter().find(|r| r.date == run.date) {
            return Err(PoolError::SameRun(same.path.clone(), run.path, run.date));
        }
        if let Some(first) = runs.first() {
            if first.loads() != run.loads() {
                return Err(PoolError::Loads(first.path.clone(), run.path));
            }
        }
        runs.push(run);
    }
    Ok(runs)
}

pub fn read(path: &Path) -> Result<Run, PoolError> {
    let text = std::fs::read_to_string(path).map_err(|e| PoolError::Read(path.into(), e))?;
    let stored: Stored =
        serde_json::from_str(&text).map_err(|e| PoolError::Parse(path.into(), e))?;
    if stored.samples.is_empty() {
        return Err(PoolError::Empty(path.into()));
    }
    let samples = stored
        .samples
        .into_iter()
        .map(|s| {
            Ok(Sample {
                kind: s.kind,
                mode: s.mode,
                connections: s.connections,
                rate: s.rate,
                round: s.round,
                ok: s.ok,
                errors: s.errors,
                secs: s.secs,
                proxy_cpu_secs: s.proxy_cpu_secs,
                proxy_switches: None,
                proxy_peak_rss_bytes: None,
                proxy_peak_private_bytes: None,
                first_error: None,
                host_steal: s.host_steal,
                attempts: 1,
                clean: s
                    .clean
                    .unwrap_or_else(|| s.host_steal.is_none_or(|x| x <= DEFAULT_MAX_STEAL)),
                noise_probe: None,
                // Latency is not pooled: only CPU per call is judged here.
                latency_us: load::histogram()?,
            })
        })
        .collect::<Result<Vec<_>, PoolError>>()?;
    Ok(Run {
        path: path.into(),
        date: stored.machine.date,
        samples,
    })
}

/// Every run's samples in one list, each run's rounds numbered after the
/// last one's, so that no round of one run is paired with another's.
pub fn pool(runs: &[Run]) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut offset = 0;
    for run in runs {
        out.extend(run.samples.iter().map(|s| Sample {
            round: s.round + offset,
            ..s.clone()
        }));
        offset += run.rounds();
    }
    out
}

/// The CPU-per-call targets checked against the pooled rounds.
pub fn goals(samples: &[Sample]) -> Vec<Goal> {
    report::cpu_goals(samples, &report::cells(samples))
}

/// POOLED.md: the runs pooled and the targets over all their rounds.
pub fn markdown(runs: &[Run], goals: &[Goal]) -> String {
    let mut md = String::from("# Pooled CPU-per-call targets\n\n");
    md.push_str(
        "Written by `portcullis-bench pool`: every round of the runs below, each still paired \
         with the other configuration's run of the same round of the same run; a figure is \
         the median over all those rounds (rounds over the steal limit left out, as in one \
         run). *Cells* here aggregate every pooled round.\n\n",
    );
    for r in runs {
        let _ = writeln!(
            md,
            "- {} ({}, {} rounds)",
            r.path.display(),
            r.date,
            r.rounds()
        );
    }
    md.push('\n');
    report::goal_table(&mut md, goals);
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: Kind, round: usize, cpu_us: f64) -> Sample {
        Sample {
            kind,
            mode: Mode::Closed,
            connections: 64,
            rate: None,
            round,
            ok: 1_000_000,
            errors: 0,
            secs: 5.0,
            proxy_cpu_secs: Some(cpu_us),
            proxy_switches: None,
            proxy_peak_rss_bytes: None,
            proxy_peak_private_bytes: None,
            first_error: None,
            host_steal: Some(0.0),
            attempts: 1,
            clean: true,
            noise_probe: None,
            latency_us: load::histogram().unwrap(),
        }
    }

    fn run(date: &str, rounds: &[(f64, f64)]) -> Run {
        let samples = rounds
            .iter()
            .enumerate()
            .flat_map(|(r, &(b, i))| [sample(Kind::B, r, b), sample(Kind::I, r, i)])
            .collect();
        Run {
            path: PathBuf::from(date),
            date: date.into(),
            samples,
        }
    }

    fn share(goals: &[Goal]) -> &Goal {
        goals
            .iter()
            .find(|g| g.what.starts_with("proxy CPU per call (i − b) / b"))
            .unwrap()
    }

    /// Each run's rounds stay paired within it: pooled by round number
    /// alone, run one's b would meet run two's i.
    #[test]
    fn rounds_of_different_runs_are_never_paired() {
        // Run one: i / b 1.30. Run two: 1.10 and 1.10 (b's CPU twice
        // run one's, as on a slower hour).
        let runs = [
            run("one", &[(10.0, 13.0)]),
            run("two", &[(20.0, 22.0), (10.0, 11.0)]),
        ];
        let pooled = pool(&runs);
        let rounds: Vec<usize> = pooled.iter().map(|s| s.round).collect();
        assert_eq!(rounds, [0, 0, 1, 1, 2, 2]);
        let g = goals(&pooled);
        let g = share(&g);
        assert!(g.measured.starts_with("0.10"), "{}", g.measured);
        assert_eq!(g.met, Some(true));
    }

    #[test]
    fn a_pooled_miss_is_reported() {
        let runs = [
            run("one", &[(10.0, 13.0), (10.0, 12.5)]),
            run("two", &[(10.0, 11.0)]),
        ];
        let g = goals(&pool(&runs));
        let g = share(&g);
        assert!(g.measured.starts_with("0.25"), "{}", g.measured);
        assert_eq!(g.met, Some(false));
        let md = markdown(&runs, std::slice::from_ref(g));
        assert!(md.contains("| **no** |"), "{md}");
        assert!(md.contains("- one (one, 2 rounds)"), "{md}");
    }

    /// A round stolen by the host is left out of the pooled median, as it
    /// is out of one run's.
    #[test]
    fn a_stolen_round_stays_out_of_the_pool() {
        let mut stolen = run("two", &[(10.0, 15.0)]);
        for s in &mut stolen.samples {
            s.clean = false;
        }
        let runs = [run("one", &[(10.0, 11.0), (10.0, 11.2)]), stolen];
        let g = goals(&pool(&runs));
        let g = share(&g);
        // With the stolen round: median of 0.10, 0.12 and 0.50 is 0.12.
        assert!(g.measured.starts_with("0.11"), "{}", g.measured);
        assert_eq!(g.met, Some(true));
    }

    /// A one-sample run taken at `date`: closed loop at `connections`,
    /// or, with a `rate`, open loop.
    fn write_run(
        dir: &Path,
        name: &str,
        date: &str,
        connections: usize,
        rate: Option<f64>,
    ) -> PathBuf {
        let path = dir.join(name);
        let (mode, rate) = match rate {
            Some(r) => ("open", r.to_string()),
            None => ("closed", "null".to_string()),
        };
        let text = format!(
            r#"{{"machine": {{"date": "{date}"}}, "samples": [
              {{"kind": "B", "mode": "{mode}", "connections": {connections}, "rate": {rate},
                "round": 0, "ok": 100, "errors": 0, "secs": 5.0, "proxy_cpu_secs": 0.004,
                "host_steal": 0.0, "clean": true}}]}}"#
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn only_distinct_runs_of_the_same_loads_pool() {
        let dir = std::env::temp_dir().join(format!("pool-all-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = write_run(&dir, "a.json", "01:00", 64, None);
        let b = write_run(&dir, "b.json", "02:00", 64, None);
        let c = write_run(&dir, "c.json", "03:00", 16, None);
        assert_eq!(read_all(&[a.clone(), b.clone()]).unwrap().len(), 2);
        // A copy of a run (an archived results.json) is the same run.
        let copy = write_run(&dir, "copy.json", "01:00", 64, None);
        assert!(matches!(
            read_all(&[a.clone(), copy]),
            Err(PoolError::SameRun(..))
        ));
        // Open loops pool only at the same rate.
        let fast = write_run(&dir, "fast.json", "04:00", 32, Some(1000.0));
        let slow = write_run(&dir, "slow.json", "05:00", 32, Some(500.0));
        let fast_too = write_run(&dir, "fast2.json", "06:00", 32, Some(1000.0));
        assert!(read_all(&[fast.clone(), fast_too]).is_ok());
        assert!(matches!(read_all(&[fast, slow]), Err(PoolError::Loads(..))));
        // The same file by another spelling is still the same file.
        let again = dir.join(".").join("a.json");
        assert!(matches!(
            read_all(&[a.clone(), again]),
            Err(PoolError::Twice(_))
        ));
        assert!(matches!(read_all(&[a, c]), Err(PoolError::Loads(..))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stored_run_is_read_back() {
        let dir = std::env::temp_dir().join(format!("pool-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.json");
        let text = r#"{"machine": {"date": "2026-12-05 04:23 UTC", "cpu": "x"},
            "samples": [
              {"kind": "B", "mode": "closed", "connections": 64, "rate": null, "round": 0,
               "ok": 100, "errors": 0, "secs": 5.0, "proxy_cpu_secs": 0.004,
               "host_steal": 0.01, "clean": true, "attempts": 1},
              {"kind": "I", "mode": "open", "connections": 32, "rate": 1000.0, "round": 2,
               "ok": 100, "errors": 0, "secs": 5.0, "proxy_cpu_secs": null,
               "host_steal": null},
              {"kind": "I", "mode": "closed", "connections": 64, "rate": null, "round": 0,
               "ok": 100, "errors": 0, "secs": 5.0, "proxy_cpu_secs": 0.005,
               "host_steal": 0.01, "clean": false},
              {"kind": "C", "mode": "closed", "connections": 64, "rate": null, "round": 0,
               "ok": 100, "errors": 0, "secs": 5.0, "proxy_cpu_secs": 0.005,
               "host_steal": 0.3}
            ]}"#;
        std::fs::write(&path, text).unwrap();
        let r = read(&path).unwrap();
        assert_eq!(r.date, "2026-12-05 04:23 UTC");
        assert_eq!(r.samples.len(), 4);
        assert_eq!(r.samples[0].cpu_us_per_call(), Some(40.0));
        assert_eq!((r.samples[1].mode, r.samples[1].round), (Mode::Open, 2));
        // Unknown steal is clean; a stored verdict is kept; with no
        // verdict, steal over the default limit is not clean.
        let clean: Vec<bool> = r.samples.iter().map(|s| s.clean).collect();
        assert_eq!(clean, [true, true, false, false]);
        std::fs::write(&path, r#"{"machine": {"date": "x"}, "samples": []}"#).unwrap();
        assert!(matches!(read(&path), Err(PoolError::Empty(_))));
        std::fs::write(&path, "{}").unwrap();
        assert!(matches!(read(&path), Err(PoolError::Parse(..))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
