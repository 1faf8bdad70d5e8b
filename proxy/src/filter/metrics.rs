//! The filter engine's metrics: evaluations, their latency, faults,
//! reloads, and whether each evaluation found a warm instance.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Registry};

use crate::{metrics::counter, policy::Mode};

/// The hooks as `filter_evaluations_total` names them.
const HOOKS: [&str; 3] = ["request", "result", "list"];

#[derive(Clone)]
pub struct FilterMetrics {
    evals: IntCounterVec,
    latency: HistogramVec,
    faults: IntCounterVec,
    reloads: IntCounterVec,
    decisions: IntCounterVec,
    /// `decisions_total{mode="enforce",decision="allow",by=""}`, resolved
    /// once: it is counted on almost every message.
    allowed: IntCounter,
    instances: IntCounterVec,
}

/// One filter's `filter_instances_total` counters, resolved once so that
/// counting an evaluation costs no label lookup.
#[derive(Clone)]
pub struct InstanceCounters {
    /// An instance kept warm for the same caller served the evaluation.
    pub warm: IntCounter,
    /// A new instance was made for it (a miss, or `isolation: call`).
    pub fresh: IntCounter,
    /// No instance: a filter that declares what it decides on had already
    /// decided a call equal in those parts.
    pub cached: IntCounter,
    /// `filter_evaluations_total{hook,outcome="ok"}` for the request,
    /// result and list hooks, and `filter_duration_seconds`: counted on
    /// every call of the filter, so resolved once too.
    ok: [IntCounter; 3],
    latency: Histogram,
}

impl FilterMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let evals = counter(
            registry,
            "filter_evaluations_total",
            "WASM filter evaluations by filter, hook and outcome",
            &["filter", "hook", "outcome"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "filter_duration_seconds",
                "Time of one WASM filter call: an evaluation (instantiation included), or a \
                 decision reused for an equal call (filter_instances_total outcome cached)",
            )
            .buckets(vec![
                0.000_005, 0.00001, 0.000_025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                0.01,
            ]),
            &["filter"],
        )?;
        registry.register(Box::new(latency.clone()))?;
        let faults = counter(
            registry,
            "filter_faults_total",
            "WASM filter failures (trap, deadline, memory, output) by filter and kind",
            &["filter", "kind"],
        )?;
        let reloads = counter(
            registry,
            "filter_reloads_total",
            "Filter chain reloads by result",
            &["result"],
        )?;
        let decisions = counter(
            registry,
            "decisions_total",
            "Policy decisions on messages and results by mode (enforce, or shadow: \
             what a shadow rule or filter would have done), decision and the rule or \
             filter that decided",
            &["mode", "decision", "by"],
        )?;
        let instances = counter(
            registry,
            "filter_instances_total",
            "Instances that served WASM filter evaluations by filter and outcome: warm \
             (kept for the same caller), fresh (instantiated for the evaluation) or \
             cached (none: a decision made for an equal call of a filter that declares \
             what it decides on was reused)",
            &["filter", "outcome"],
        )?;
        Ok(Self {
            evals,
            latency,
            faults,
            reloads,
            allowed: decisions.with_label_values(&[Mode::Enforce.label(), "allow", ""]),
            decisions,
            instances,
        })
    }

    pub fn instance_counters(&self, filter: &str) -> InstanceCounters {
        InstanceCounters {
            warm: self.instances.with_label_values(&[filter, "warm"]),
            fresh: self.instances.with_label_values(&[filter, "fresh"]),
            cached: self.instances.with_label_values(&[filter, "cached"]),
            ok: HOOKS.map(|hook| self.evals.with_label_values(&[filter, hook, "ok"])),
            latency: self.latency.with_label_values(&[filter]),
        }
    }

    /// One call of a filter: with its resolved counters (a filter the
    /// chain loaded), a successful one costs no label lookup.
    pub fn evaluated(
        &self,
        counters: Option<&InstanceCounters>,
        filter: &str,
        hook: &str,
        outcome: &str,
        seconds: f64,
    ) {
        let hook_at = HOOKS.iter().position(|h| *h == hook);
        match (counters, hook_at) {
            (Some(c), Some(i)) if outcome == "ok" => {
                c.ok[i].inc();
                c.latency.observe(seconds);
            }
            _ => {
                self.evals.with_label_values(&[filter, hook, outcome]).inc();
                self.latency.with_label_values(&[filter]).observe(seconds);
            }
        }
    }

    pub fn fault(&self, filter: &str, kind: &str) {
        self.faults.with_label_values(&[filter, kind]).inc();
    }

    /// An enforced plain allow.
    pub fn allowed(&self) {
        self.allowed.inc();
    }

    /// One decision: `by` is the rule or filter (empty for a plain allow).
    pub fn decided(&self, mode: Mode, decision: &str, by: &str) {
        self.decisions
            .with_label_values(&[mode.label(), decision, by])
            .inc();
    }

    pub fn reload(&self, result: &str) {
        self.reloads.with_label_values(&[result]).inc();
    }
}
