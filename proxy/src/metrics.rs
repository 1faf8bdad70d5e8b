//! Prometheus metrics. Each owner registers its own group (linkerd's way):
//! the HTTP path in [`crate::service::HttpMetrics`], filters in
//! [`crate::filter::FilterMetrics`], identity in
//! [`crate::identity::IdentityMetrics`]. This module only gathers them in
//! one registry under the `portcullis_` prefix, and renders it.

use prometheus::{Encoder, Registry, TextEncoder};

/// A counter family, registered: what every metrics module needs first.
pub(crate) fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<prometheus::IntCounterVec> {
    let c = prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

use crate::{filter::FilterMetrics, identity::IdentityMetrics, service::HttpMetrics};

/// Every metric group, cheap to clone into the data path.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http: HttpMetrics,
    pub filter: FilterMetrics,
    pub identity: IdentityMetrics,
    pub capture: crate::capture::CaptureMetrics,
    pub admission: crate::admission::AdmissionMetrics,
    pub session: crate::session::SessionMetrics,
    pub auth: crate::auth::AuthMetrics,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("portcullis".into()), None)?;
        Ok(Self {
            http: HttpMetrics::register(&registry)?,
            filter: FilterMetrics::register(&registry)?,
            identity: IdentityMetrics::register(&registry)?,
            capture: crate::capture::CaptureMetrics::register(&registry)?,
            admission: crate::admission::AdmissionMetrics::register(&registry)?,
            session: crate::session::SessionMetrics::register(&registry)?,
            auth: crate::auth::AuthMetrics::register(&registry)?,
            registry,
        })
    }

    /// `portcullis_instance_info`, once the instance is resolved.
    pub fn register_instance(
        &self,
        instance: &crate::instance::Instance,
    ) -> prometheus::Result<()> {
        instance.register(&self.registry)
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_is_rendered_under_one_prefix() {
        let m = Metrics::new().unwrap();
        m.http.record_decision("tools/call", Some("echo"), "allow");
        m.filter.reload("success");
        m.identity.connection("strict", "mtls");
        let text = String::from_utf8(m.render().unwrap()).unwrap();
        for name in [
            "portcullis_requests_total",
            "portcullis_filter_reloads_total",
            "portcullis_connections_total",
            "portcullis_inflight_requests 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
