//! Session metrics: what makes the claim "sessions survive a restart"
//! checkable from outside.

use prometheus::{IntCounterVec, IntGauge, Registry};

use crate::metrics::counter;

#[derive(Clone)]
pub struct SessionMetrics {
    rejects: IntCounterVec,
    rebinds: IntCounterVec,
    retries: IntCounterVec,
    issued: IntCounterVec,
    resumes: IntCounterVec,
    active: IntGauge,
    /// 1 while the shared store answers, 0 when it does not.
    pub store_up: IntGauge,
}

impl SessionMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let active = IntGauge::new(
            "sessions_active",
            "Client sessions Portcullis holds a record of",
        )?;
        r.register(Box::new(active.clone()))?;
        let store_up = IntGauge::new(
            "store_up",
            "Whether the shared session store answered the last operation (1) or not (0)",
        )?;
        r.register(Box::new(store_up.clone()))?;
        Ok(Self {
            rejects: counter(
                r,
                "sid_reject_total",
                "Client session ids refused (each answered the same 404), by reason",
                &["reason"],
            )?,
            rebinds: counter(
                r,
                "session_rebinds_total",
                "Upstream sessions re-established under a client session, by reason and outcome",
                &["reason", "outcome"],
            )?,
            retries: counter(
                r,
                "request_retries_total",
                "Requests sent again after a rebind, by cause",
                &["cause"],
            )?,
            issued: counter(
                r,
                "sessions_issued_total",
                "Sealed session ids issued",
                &["kind"],
            )?,
            resumes: counter(
                r,
                "stream_resumes_total",
                "GET streams resumed with a Last-Event-ID of Portcullis's: replayed, gap (missed events no longer kept), overrun (a client too slow for the log lost its stream), forged (another session's id: 404)",
                &["outcome"],
            )?,
            active,
            store_up,
        })
    }

    pub fn reject(&self, reason: &str) {
        self.rejects.with_label_values(&[reason]).inc();
    }

    pub fn rebind(&self, reason: &str, outcome: &str) {
        self.rebinds.with_label_values(&[reason, outcome]).inc();
    }

    pub fn retry(&self, cause: &str) {
        self.retries.with_label_values(&[cause]).inc();
    }

    pub fn issued(&self, kind: &str) {
        self.issued.with_label_values(&[kind]).inc();
    }

    pub fn resume(&self, outcome: &str) {
        self.resumes.with_label_values(&[outcome]).inc();
    }

    pub fn set_active(&self, n: usize) {
        self.active.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}
