//! What the capture listener counts: connections by route, and refusals
//! by reason.

use prometheus::{IntCounterVec, Opts, Registry};

use super::{Refused, Route};

#[derive(Clone)]
pub struct CaptureMetrics {
    connections: IntCounterVec,
    refused: IntCounterVec,
}

impl CaptureMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let connections = IntCounterVec::new(
            Opts::new(
                "capture_connections_total",
                "Connections accepted by the capture listener, by route (mcp, canary, refused)",
            ),
            &["route"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "capture_refused_total",
                "Captured connections refused, by reason (not_redirected, loop, port, error)",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        Ok(Self {
            connections,
            refused,
        })
    }

    pub fn route(&self, route: &Route) {
        let label = match route {
            Route::Mcp(_) => "mcp",
            Route::Canary(_) => "canary",
            Route::Refuse(why) => {
                self.refused.with_label_values(&[why.label()]).inc();
                "refused"
            }
        };
        self.connections.with_label_values(&[label]).inc();
    }

    /// Refusals counted for `reason`.
    pub fn refused(&self, reason: Refused) -> u64 {
        self.refused.with_label_values(&[reason.label()]).get()
    }
}
