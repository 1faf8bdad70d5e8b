//! The HTTP path's metrics: decisions, latency, refusals, upstream errors,
//! hidden list items and requests in flight.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Registry};

use crate::metrics::counter;

/// Tool names come from clients, so an attacker could mint label values
/// without end. Past this many distinct names they are reported as `other`.
const MAX_TOOL_LABELS: usize = 256;

#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
    upstream_errors: IntCounterVec,
    rejected: IntCounterVec,
    list_items_hidden: IntCounterVec,
    denials: IntCounterVec,
    inflight: IntGauge,
    tool_labels: Arc<Mutex<HashSet<String>>>,
}

impl HttpMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from receiving a POST to sending its response headers, refusals included",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["method"],
        )?;
        registry.register(Box::new(latency.clone()))?;
        let inflight = IntGauge::new("inflight_requests", "HTTP requests being served")?;
        registry.register(Box::new(inflight.clone()))?;
        Ok(Self {
            requests: counter(
                registry,
                "requests_total",
                "JSON-RPC messages by method, target and decision",
                &["method", "tool", "decision"],
            )?,
            latency,
            upstream_errors: counter(
                registry,
                "upstream_errors_total",
                "Upstream failures by kind",
                &["kind"],
            )?,
            rejected: counter(
                registry,
                "rejected_total",
                "Requests refused before policy, by reason",
                &["reason"],
            )?,
            list_items_hidden: counter(
                registry,
                "list_items_hidden_total",
                "List entries removed by policy",
                &["kind"],
            )?,
            denials: counter(
                registry,
                "denials_total",
                "Denied messages and results by the rule or filter that decided",
                &["by"],
            )?,
            inflight,
            tool_labels: Arc::default(),
        })
    }

    pub fn record_decision(&self, method: &str, tool: Option<&str>, decision: &str) {
        let tool = self.tool_label(tool.unwrap_or(""));
        self.requests
            .with_label_values(&[method_label(method), tool, decision])
            .inc();
    }

    /// `label` is a [`method_label`].
    pub fn observe_latency(&self, label: &'static str, seconds: f64) {
        self.latency.with_label_values(&[label]).observe(seconds);
    }

    /// `by` names a rule or filter from the config (`static:<rule>`,
    /// `filter:<name>`), so its values are bounded by the config.
    pub fn denied(&self, by: &str) {
        self.denials.with_label_values(&[by]).inc();
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

    pub fn inflight(&self) -> &IntGauge {
        &self.inflight
    }

    /// The tool's own name while fewer than `MAX_TOOL_LABELS` are known,
    /// then `other`; borrowed, so a known name costs no copy per call.
    fn tool_label<'t>(&self, tool: &'t str) -> &'t str {
        let Ok(mut seen) = self.tool_labels.lock() else {
            return "other";
        };
        if seen.contains(tool) || (seen.len() < MAX_TOOL_LABELS && seen.insert(tool.to_string())) {
            tool
        } else {
            "other"
        }
    }
}

/// Methods are a fixed vocabulary in MCP; anything else is folded so that a
/// client cannot create label values at will.
pub fn method_label(method: &str) -> &'static str {
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
    match KNOWN.iter().find(|known| **known == method) {
        Some(&"") => "response",
        Some(known) => known,
        None => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_decisions_and_caps_tool_labels() {
        let m = crate::metrics::Metrics::new().unwrap();
        m.http.record_decision("tools/call", Some("echo"), "allow");
        m.http.record_decision("evil/method", Some("x"), "deny");
        for i in 0..(MAX_TOOL_LABELS + 10) {
            m.http
                .record_decision("tools/call", Some(&format!("t{i}")), "allow");
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
