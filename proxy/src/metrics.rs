//! Prometheus metrics. The owner of each metric registers it here, once,
//! and the handles are cheap to clone into the data path.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Tool names come from clients, so an attacker could mint label values
/// without end. Past this many distinct names they are reported as `other`.
const MAX_TOOL_LABELS: usize = 256;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    upstream_errors: IntCounterVec,
    rejected: IntCounterVec,
    list_items_hidden: IntCounterVec,
    inflight: IntGauge,
    filter_evals: IntCounterVec,
    filter_latency: HistogramVec,
    filter_faults: IntCounterVec,
    filter_reloads: IntCounterVec,
    connections: IntCounterVec,
    svid_expiry: prometheus::Gauge,
    tool_labels: Arc<Mutex<HashSet<String>>>,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("portcullis".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "JSON-RPC messages by method, target and decision",
            ),
            &["method", "tool", "decision"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from receiving a POST to sending its response headers",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["method"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new("upstream_errors_total", "Upstream failures by kind"),
            &["kind"],
        )?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "rejected_total",
                "Requests refused before policy, by reason",
            ),
            &["reason"],
        )?;
        let list_items_hidden = IntCounterVec::new(
            Opts::new("list_items_hidden_total", "List entries removed by policy"),
            &["kind"],
        )?;
        let inflight = IntGauge::new("inflight_requests", "HTTP requests being served")?;
        let filter_evals = IntCounterVec::new(
            Opts::new(
                "filter_evaluations_total",
                "WASM filter evaluations by filter, hook and outcome",
            ),
            &["filter", "hook", "outcome"],
        )?;
        let filter_latency = HistogramVec::new(
            HistogramOpts::new(
                "filter_duration_seconds",
                "Time of one WASM filter evaluation, instantiation included",
            )
            .buckets(vec![
                0.000_005, 0.00001, 0.000_025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                0.01,
            ]),
            &["filter"],
        )?;
        let filter_faults = IntCounterVec::new(
            Opts::new(
                "filter_faults_total",
                "WASM filter failures (trap, deadline, memory, output) by filter and kind",
            ),
            &["filter", "kind"],
        )?;
        let filter_reloads = IntCounterVec::new(
            Opts::new("filter_reloads_total", "Filter chain reloads by result"),
            &["result"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(list_items_hidden.clone()))?;
        let connections = IntCounterVec::new(
            Opts::new(
                "connections_total",
                "Inbound connections by TLS mode and outcome (mtls, plaintext, rejected)",
            ),
            &["mode", "outcome"],
        )?;
        let svid_expiry = prometheus::Gauge::new(
            "svid_expiry_seconds",
            "Seconds until this sidecar's SVID expires",
        )?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(svid_expiry.clone()))?;
        registry.register(Box::new(inflight.clone()))?;
        registry.register(Box::new(filter_evals.clone()))?;
        registry.register(Box::new(filter_latency.clone()))?;
        registry.register(Box::new(filter_faults.clone()))?;
        registry.register(Box::new(filter_reloads.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            upstream_errors,
            rejected,
            list_items_hidden,
            inflight,
            filter_evals,
            filter_latency,
            filter_faults,
            filter_reloads,
            connections,
            svid_expiry,
            tool_labels: Arc::default(),
        })
    }

    pub fn record_decision(&self, method: &str, tool: Option<&str>, decision: &str) {
        let tool = self.tool_label(tool.unwrap_or(""));
        self.requests
            .with_label_values(&[method_label(method), &tool, decision])
            .inc();
    }

    pub fn observe_latency(&self, method: &str, seconds: f64) {
        self.latency
            .with_label_values(&[method_label(method)])
            .observe(seconds);
    }

    pub fn upstream_error(&self, kind: &str) {
        self.upstream_errors.with_label_values(&[kind]).inc();
    }

    pub fn rejected(&self, reason: &str) {
        self.rejected.with_label_values(&[reason]).inc();
    }

    pub fn hidden(&self, kind: &str, n: usize) {
        self.list_items_hidden
            .with_label_values(&[kind])
            .inc_by(n as u64);
    }

    pub fn filter_evaluated(&self, filter: &str, hook: &str, outcome: &str, seconds: f64) {
        self.filter_evals
            .with_label_values(&[filter, hook, outcome])
            .inc();
        self.filter_latency
            .with_label_values(&[filter])
            .observe(seconds);
    }

    pub fn filter_fault(&self, filter: &str, kind: &str) {
        self.filter_faults.with_label_values(&[filter, kind]).inc();
    }

    pub fn filter_reload(&self, result: &str) {
        self.filter_reloads.with_label_values(&[result]).inc();
    }

    pub fn connection(&self, mode: &str, outcome: &str) {
        self.connections.with_label_values(&[mode, outcome]).inc();
    }

    pub fn svid_expiry(&self, seconds: f64) {
        self.svid_expiry.set(seconds);
    }

    pub fn inflight(&self) -> &IntGauge {
        &self.inflight
    }

    fn tool_label(&self, tool: &str) -> String {
        let Ok(mut seen) = self.tool_labels.lock() else {
            return "other".into();
        };
        if seen.contains(tool) || (seen.len() < MAX_TOOL_LABELS && seen.insert(tool.to_string())) {
            tool.to_string()
        } else {
            "other".into()
        }
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

/// Methods are a fixed vocabulary in MCP; anything else is folded so that a
/// client cannot create label values at will.
fn method_label(method: &str) -> &str {
    const KNOWN: &[&str] = &[
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "resources/subscribe",
        "resources/unsubscribe",
        "subscriptions/listen",
        "completion/complete",
        "logging/setLevel",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
        "",
    ];
    if KNOWN.contains(&method) {
        if method.is_empty() {
            "response"
        } else {
            method
        }
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_decisions_and_caps_tool_labels() {
        let m = Metrics::new().unwrap();
        m.record_decision("tools/call", Some("echo"), "allow");
        m.record_decision("evil/method", Some("x"), "deny");
        for i in 0..(MAX_TOOL_LABELS + 10) {
            m.record_decision("tools/call", Some(&format!("t{i}")), "allow");
        }
        let text = String::from_utf8(m.render().unwrap()).unwrap();
        assert!(text.contains(
            r#"portcullis_requests_total{decision="allow",method="tools/call",tool="echo"} 1"#
        ));
        assert!(text.contains(r#"method="other""#));
        assert!(text.contains(r#"tool="other""#));
        assert!(text.contains("portcullis_inflight_requests 0"));
    }
}
