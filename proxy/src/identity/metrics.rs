//! Identity metrics: inbound connections by TLS outcome, and how long our
//! SVID has left.

use prometheus::{Gauge, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct IdentityMetrics {
    connections: IntCounterVec,
    svid_expiry: Gauge,
}

impl IdentityMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let connections = IntCounterVec::new(
            Opts::new(
                "connections_total",
                "Inbound connections by TLS mode and outcome (mtls, plaintext, rejected)",
            ),
            &["mode", "outcome"],
        )?;
        let svid_expiry = Gauge::new(
            "svid_expiry_seconds",
            "Seconds until this sidecar's SVID expires",
        )?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(svid_expiry.clone()))?;
        Ok(Self {
            connections,
            svid_expiry,
        })
    }

    pub fn connection(&self, mode: &str, outcome: &str) {
        self.connections.with_label_values(&[mode, outcome]).inc();
    }

    pub fn svid_expiry(&self, seconds: f64) {
        self.svid_expiry.set(seconds);
    }
}
