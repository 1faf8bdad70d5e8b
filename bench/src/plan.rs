//! The measurement schedule: every configuration once per round, rounds
//! interleaved (a b c … a b c …) so that drift in the machine's state hits
//! all of them alike, and each proxy's CPU and peak memory read around
//! every run.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::load::{self, Pace, RunSpec};
use crate::probe::{Probe, ProbeTimes};
use crate::procstat::{self, StealBasis};
use crate::targets::{Kind, Target};

#[derive(Clone, Debug)]
pub struct Plan {
    pub concurrency: Vec<usize>,
    pub rounds: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub open: Option<OpenLoop>,
    pub steal: StealRule,
}

/// What to do with a run during which the hypervisor took the machine's
/// CPU (steal time, `procstat::HostTicks`). On a shared VM this is where
/// most of the round-to-round spread comes from: while other guests run,
/// each proxy's CPU per call rises (cold caches after every preemption),
/// and not by the same factor for every proxy, so a ratio of two runs is
/// only as good as the quieter of the two.
#[derive(Clone, Copy, Debug)]
pub struct StealRule {
    /// The most steal over the run that leaves it clean: a share of the
    /// time the vCPUs wanted to run under the closed loop's saturating
    /// load, of all the machine's time under the open loop's light one
    /// (`procstat::StealBasis`).
    pub max: f64,
    /// How many times a run over `max` is taken again at once. Of all the
    /// attempts, the one with the least steal is kept: chosen by the
    /// machine's state, never by the figure measured.
    pub retries: u32,
}

/// `portcullis-bench run`'s default `--max-steal`, in percent.
pub const DEFAULT_MAX_STEAL_PERCENT: f64 = 5.0;

impl StealRule {
    /// A run whose steal is unknown (no /proc/stat, or no steal field)
    /// counts as clean: there the harness measures as it did before it
    /// read steal at all.
    pub fn is_clean(&self, steal: Option<f64>) -> bool {
        steal.is_none_or(|x| x <= self.max)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct OpenLoop {
    pub rate: f64,
    pub connections: usize,
    pub duration: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Closed,
    Open,
}

/// One run of one configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub kind: Kind,
    pub mode: Mode,
    pub connections: usize,
    pub rate: Option<f64>,
    pub round: usize,
    pub ok: u64,
    pub errors: u64,
    pub secs: f64,
    pub proxy_cpu_secs: Option<f64>,
    /// The proxy's threads' context switches over the run
    /// (`procstat::Switches`).
    #[serde(default)]
    pub proxy_switches: Option<procstat::Switches>,
    pub proxy_peak_rss_bytes: Option<u64>,
    /// The most private memory (`procstat::private_bytes`) seen during the
    /// run, sampled every 20 ms: the kernel keeps no peak of it.
    #[serde(default)]
    pub proxy_peak_private_bytes: Option<u64>,
    pub first_error: Option<String>,
    /// Steal time over the run (None where /proc/stat cannot tell): in
    /// the closed loop, a share of the time the vCPUs wanted to run; in
    /// the open loop, of all the machine's time (`procstat::StealBasis`).
    pub host_steal: Option<f64>,
    /// Attempts made before this run was kept (1: the first was clean).
    pub attempts: u32,
    /// Whether the run's steal was within the plan's limit.
    pub clean: bool,
    /// The noise probe (`probe::Probe`), the slower of its readings just
    /// before and just after the run: recorded, not used to judge.
    #[serde(default)]
    pub noise_probe: Option<ProbeTimes>,
    #[serde(skip)]
    pub latency_us: Histogram<u64>,
}

impl Sample {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.secs.max(1e-9)
    }

    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    /// The proxy's CPU (user + system, all threads) per answered call, in
    /// microseconds; None for direct or a run with no answer.
    pub fn cpu_us_per_call(&self) -> Option<f64> {
        let cpu = self.proxy_cpu_secs?;
        (self.ok > 0).then(|| cpu / self.ok as f64 * 1e6)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Histogram(#[from] load::HistogramError),
    #[error("configuration {0}: {1}")]
    Proc(Kind, procstat::ProcError),
    #[error("a run was given no attempt")]
    NoAttempt,
}

/// Runs the whole plan and returns every sample in the order taken.
pub async fn execute(
    plan: &Plan,
    targets: &[Target],
    mut progress: impl FnMut(&Sample),
) -> Result<Vec<Sample>, PlanError> {
    let ticks = procstat::clock_ticks();
    let probe = Probe::new(2);
    for t in targets {
        let spec = RunSpec {
            connections: 16,
            duration: plan.warmup,
            pace: Pace::Closed,
        };
        // Warm-up: connections, pools, filter instances and caches.
        load::run(&t.endpoint, spec).await?;
    }
    let mut samples = Vec::new();
    let mut steal = Retries::new(plan.steal);
    for spec in plan.runs() {
        for round in 0..plan.rounds {
            for t in targets {
                let s = measure_clean(t, spec, round, ticks, steal.rule(), &probe).await?;
                steal.after(&s);
                progress(&s);
                samples.push(s);
            }
        }
    }
    Ok(samples)
}

impl Plan {
    /// The loads in the order measured: closed loop at each concurrency,
    /// then the open loop. Each is run `rounds` times over every target.
    fn runs(&self) -> impl Iterator<Item = RunSpec> + '_ {
        let closed = self.concurrency.iter().map(|&connections| RunSpec {
            connections,
            duration: self.duration,
            pace: Pace::Closed,
        });
        let open = self.open.map(|open| RunSpec {
            connections: open.connections,
            duration: open.duration,
            pace: Pace::Open { rate: open.rate },
        });
        closed.chain(open)
    }
}

/// Whether runs are taken again now. A run still over the limit after
/// all its attempts shows a host that is busy for longer than a run:
/// taking the next runs again would triple the bench's time and find no
/// quieter minute, so they are taken once until a run is clean again.
struct Retries {
    rule: StealRule,
    host_busy: bool,
}

impl Retries {
    fn new(rule: StealRule) -> Self {
        Self {
            rule,
            host_busy: false,
        }
    }

    fn rule(&self) -> StealRule {
        StealRule {
            retries: if self.host_busy { 0 } else { self.rule.retries },
            ..self.rule
        }
    }

    fn after(&mut self, s: &Sample) {
        self.host_busy = !s.clean;
    }
}

/// One run, taken again while the hypervisor took more of the machine
/// than `rule` allows (see [`StealRule`]).
async fn measure_clean(
    t: &Target,
    spec: RunSpec,
    round: usize,
    ticks: f64,
    rule: StealRule,
    probe: &Probe,
) -> Result<Sample, PlanError> {
    let mut kept: Option<Sample> = None;
    for attempt in 1..=rule.retries.saturating_add(1) {
        let mut s = measure(t, spec, round, ticks, probe).await?;
        s.attempts = attempt;
        s.clean = rule.is_clean(s.host_steal);
        let clean = s.clean;
        if !clean {
            eprintln!(
                "  {} {:>3} conn round {round}: host steal {:.0} % (over {:.0} %), attempt {attempt}",
                t.kind,
                spec.connections,
                s.host_steal.unwrap_or(0.0) * 100.0,
                rule.max * 100.0
            );
        }
        kept = Some(keep(kept, s));
        if clean {
            break;
        }
    }
    // `retries + 1` is at least one attempt.
    kept.ok_or(PlanError::NoAttempt)
}

/// Of the attempt kept so far and a new one, the one with less steal
/// (the earlier on a tie), counting the new attempt in either case. The
/// choice looks at the steal alone, never at the figures measured.
fn keep(kept: Option<Sample>, new: Sample) -> Sample {
    let steal = |s: &Sample| s.host_steal.unwrap_or(0.0);
    match kept {
        Some(k) if steal(&k) <= steal(&new) => Sample {
            attempts: new.attempts,
            ..k
        },
        _ => new,
    }
}

async fn measure(
    t: &Target,
    spec: RunSpec,
    round: usize,
    ticks: f64,
    probe: &Probe,
) -> Result<Sample, PlanError> {
    let proc_err = |e| PlanError::Proc(t.kind, e);
    let (mode, rate, basis) = match spec.pace {
        Pace::Closed => (Mode::Closed, None, StealBasis::Wanted),
        Pace::Open { rate } => (Mode::Open, Some(rate), StealBasis::Capacity),
    };
    // Before the proxy's CPU is read: the probe's threads are the
    // harness's, but they share the machine with the proxy's.
    let probe_before = probe.time();
    let before = match t.pid() {
        Some(pid) => {
            procstat::reset_peak_rss(pid).map_err(proc_err)?;
            Some((
                procstat::cpu_seconds(pid, ticks).map_err(proc_err)?,
                procstat::switches(pid).map_err(proc_err)?,
            ))
        }
        None => None,
    };
    let private = t.pid().map(PrivatePeak::watch);
    let host0 = procstat::HostTicks::now().ok();
    let r = load::run(&t.endpoint, spec).await;
    let host_steal = procstat::steal_between(host0, procstat::HostTicks::now().ok(), basis);
    let private = match private {
        Some(p) => p.stop().await.map_err(proc_err)?,
        None => None,
    };
    let r = r?;
    let (cpu, switches, rss) = match (t.pid(), before) {
        (Some(pid), Some((cpu0, switches0))) => (
            Some(procstat::cpu_seconds(pid, ticks).map_err(proc_err)? - cpu0),
            Some(procstat::switches(pid).map_err(proc_err)?.since(switches0)),
            Some(procstat::peak_rss(pid).map_err(proc_err)?),
        ),
        _ => (None, None, None),
    };
    // Let the sockets of the finished run close before the next one
    // starts, then time the probe again on the machine at rest.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let noise_probe = Some(probe_before.slower(probe.time()));
    Ok(Sample {
        kind: t.kind,
        mode,
        connections: spec.connections,
        rate,
        round,
        ok: r.ok,
        errors: r.errors,
        secs: r.elapsed.as_secs_f64(),
        proxy_cpu_secs: cpu,
        proxy_switches: switches,
        proxy_peak_rss_bytes: rss,
        proxy_peak_private_bytes: private,
        first_error: r.first_error,
        host_steal,
        attempts: 1,
        clean: true,
        noise_probe,
        latency_us: r.latency_us,
    })
}

/// Samples a process's private memory until stopped, keeping the largest.
struct PrivatePeak {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<u64, procstat::ProcError>>,
}

impl PrivatePeak {
    fn watch(pid: u32) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut peak = procstat::private_bytes(pid)?;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => peak = peak.max(procstat::private_bytes(pid)?),
                }
            }
            Ok(peak.max(procstat::private_bytes(pid)?))
        });
        Self { stop, task }
    }

    /// The peak; None if the sampler did not finish (it was cancelled).
    async fn stop(self) -> Result<Option<u64>, procstat::ProcError> {
        let _ = self.stop.send(());
        self.task.await.ok().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(steal: f64, max: f64) -> Sample {
        Sample {
            kind: Kind::B,
            mode: Mode::Closed,
            connections: 16,
            rate: None,
            round: 0,
            ok: 1,
            errors: 0,
            secs: 1.0,
            proxy_cpu_secs: None,
            proxy_switches: None,
            proxy_peak_rss_bytes: None,
            proxy_peak_private_bytes: None,
            first_error: None,
            host_steal: Some(steal),
            attempts: 1,
            clean: steal <= max,
            noise_probe: None,
            latency_us: load::histogram().unwrap(),
        }
    }

    #[test]
    fn the_attempt_with_the_least_steal_is_kept_and_every_attempt_counted() {
        let rule = StealRule {
            max: 0.05,
            retries: 2,
        };
        let attempt = |n: u32, steal: f64, ok: u64| Sample {
            attempts: n,
            ok,
            clean: rule.is_clean(Some(steal)),
            ..run(steal, rule.max)
        };
        // The second attempt is less stolen; the third more: the second
        // is kept, whatever its figures, and three attempts are counted.
        let k = keep(None, attempt(1, 0.30, 100));
        let k = keep(Some(k), attempt(2, 0.10, 50));
        let k = keep(Some(k), attempt(3, 0.20, 500));
        assert_eq!(
            (k.host_steal, k.ok, k.attempts, k.clean),
            (Some(0.10), 50, 3, false)
        );
        // A tie keeps the earlier one.
        let k = keep(Some(attempt(1, 0.2, 1)), attempt(2, 0.2, 2));
        assert_eq!((k.ok, k.attempts), (1, 2));
        // A clean attempt is always kept over an unclean one.
        let k = keep(Some(attempt(1, 0.3, 1)), attempt(2, 0.01, 2));
        assert_eq!((k.ok, k.clean), (2, true));
        // Unknown steal counts as clean.
        assert!(rule.is_clean(None));
        assert!(!rule.is_clean(Some(0.051)));
    }

    #[test]
    fn a_host_busy_past_all_attempts_stops_the_retries_until_a_clean_run() {
        let rule = StealRule {
            max: 0.05,
            retries: 2,
        };
        let mut r = Retries::new(rule);
        assert_eq!(r.rule().retries, 2);
        // Over the limit after every attempt: the next run is taken once.
        r.after(&run(0.3, rule.max));
        assert_eq!(r.rule().retries, 0);
        assert_eq!(r.rule().max, 0.05);
        r.after(&run(0.2, rule.max));
        assert_eq!(r.rule().retries, 0);
        // A clean run: retries are back.
        r.after(&run(0.01, rule.max));
        assert_eq!(r.rule().retries, 2);
    }
}
