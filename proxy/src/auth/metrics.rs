//! Authorization metrics: every decision by issuer, outcome and reason, and
//! the health of each issuer's keys.

use prometheus::{IntCounterVec, IntGaugeVec, Registry};

use crate::metrics::counter;

#[derive(Clone)]
pub struct AuthMetrics {
    decisions: IntCounterVec,
    refreshes: IntCounterVec,
    keys: IntGaugeVec,
}

impl AuthMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let keys = IntGaugeVec::new(
            prometheus::Opts::new("jwks_keys", "Verification keys held, by issuer"),
            &["issuer"],
        )?;
        r.register(Box::new(keys.clone()))?;
        Ok(Self {
            decisions: counter(
                r,
                "auth_decisions_total",
                "Bearer token decisions, by issuer (configured name, or none), outcome (allow, challenge, refuse, unavailable) and reason",
                &["issuer", "outcome", "reason"],
            )?,
            refreshes: counter(
                r,
                "jwks_refresh_total",
                "JWKS reads, by issuer, trigger (startup, interval, kid_miss) and result (ok, error, rate_limited)",
                &["issuer", "trigger", "result"],
            )?,
            keys,
        })
    }

    pub fn decision(&self, issuer: &str, outcome: &str, reason: &str) {
        self.decisions
            .with_label_values(&[issuer, outcome, reason])
            .inc();
    }

    pub fn jwks_refresh(&self, issuer: &str, trigger: &str, result: &str) {
        self.refreshes
            .with_label_values(&[issuer, trigger, result])
            .inc();
    }

    pub fn jwks_keys(&self, issuer: &str, n: usize) {
        self.keys
            .with_label_values(&[issuer])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}
