//! The stable instance identity: a name for *this* sidecar that survives a
//! restart or a reschedule of its pod, so that sessions, durable app state
//! and observers can be keyed by it.
//!
//! It is never the pod IP or UID (both change when a pod is rescheduled).
//! First match wins:
//! 1. `instance:` in the config file, or `PORTCULLIS_INSTANCE_ID`
//!    (`PORTCULLIS_INSTANCE`, its old name, too): explicit is best;
//! 2. `PORTCULLIS_STATEFULSET_POD_NAME`: the pod's
//!    `statefulset.kubernetes.io/pod-name` label through the downward API
//!    (a StatefulSet pod keeps its name across reschedules);
//! 3. `PORTCULLIS_SANDBOX_NAME`: the agent-sandbox name
//!    (`agents.x-k8s.io/pod-name`);
//! 4. the host name, marked *not stable*: a Deployment's pod name changes on
//!    every reschedule, and the `/identity` endpoint and the
//!    `portcullis_instance_info{stable="false"}` metric say so.
//!
//! The *incarnation* changes on every start (pod UID and start time), so an
//! observer can tell "same instance, new process". The external form is a
//! UUIDv5 in OpenTelemetry's `service.instance.id` namespace over
//! `<cluster>/<namespace>/<id>`: opaque, and the same for the same name.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{IntGaugeVec, Opts, Registry};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// OpenTelemetry's namespace for UUIDv5 `service.instance.id` values.
const OTEL_INSTANCE_NAMESPACE: Uuid = Uuid::from_u128(0x4d63009a_8d0f_11ee_aad7_4c796ed8e320);

/// Where the instance id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Config,
    Env,
    StatefulSet,
    Sandbox,
    /// Not stable across reschedules.
    Hostname,
    /// Nothing at all was set (tests, a bare process).
    Default,
}

impl Source {
    pub fn is_stable(self) -> bool {
        !matches!(self, Self::Hostname | Self::Default)
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Env => "env",
            Self::StatefulSet => "statefulset",
            Self::Sandbox => "sandbox",
            Self::Hostname => "hostname",
            Self::Default => "default",
        }
    }
}

/// This sidecar's identity as an instance.
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    pub id: String,
    /// The opaque external form (UUIDv5).
    pub uuid: Uuid,
    pub source: Source,
    pub stable: bool,
    /// Changes on every start.
    pub incarnation: String,
    pub namespace: Option<String>,
    pub pod_name: Option<String>,
    pub started_at_unix: u64,
}

impl Instance {
    /// Resolves the identity from the config's `instance:` and the
    /// environment (`env` is `std::env::var` outside tests).
    pub fn resolve(configured: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let (id, source) = configured
            .filter(|v| !v.trim().is_empty())
            .map(|v| (v.to_string(), Source::Config))
            .or_else(|| var("PORTCULLIS_INSTANCE_ID").map(|v| (v, Source::Env)))
            .or_else(|| var("PORTCULLIS_INSTANCE").map(|v| (v, Source::Env)))
            .or_else(|| var("PORTCULLIS_STATEFULSET_POD_NAME").map(|v| (v, Source::StatefulSet)))
            .or_else(|| var("PORTCULLIS_SANDBOX_NAME").map(|v| (v, Source::Sandbox)))
            .or_else(|| var("HOSTNAME").map(|v| (v, Source::Hostname)))
            .unwrap_or_else(|| ("portcullis".to_string(), Source::Default));
        let namespace = var("POD_NAMESPACE");
        let cluster = var("PORTCULLIS_CLUSTER").unwrap_or_default();
        let name = format!("{cluster}/{}/{id}", namespace.as_deref().unwrap_or(""));
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let incarnation = incarnation(var("POD_UID").as_deref(), started.as_nanos());
        Self {
            uuid: Uuid::new_v5(&OTEL_INSTANCE_NAMESPACE, name.as_bytes()),
            stable: source.is_stable(),
            id,
            source,
            incarnation,
            namespace,
            pod_name: var("POD_NAME").or_else(|| var("HOSTNAME")),
            started_at_unix: started.as_secs(),
        }
    }

    /// From the process environment.
    pub fn from_env(configured: Option<&str>) -> Self {
        let instance = Self::resolve(configured, |name| std::env::var(name).ok());
        if !instance.stable {
            tracing::warn!(
                id = %instance.id,
                "instance identity is not stable: it will change when the pod is rescheduled \
                 (set PORTCULLIS_INSTANCE_ID or run in a StatefulSet)"
            );
        }
        instance
    }

    /// `portcullis_instance_info{...} 1`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        let info = IntGaugeVec::new(
            Opts::new("instance_info", "This sidecar's stable instance identity"),
            &[
                "instance_id",
                "instance_uuid",
                "incarnation",
                "source",
                "stable",
            ],
        )?;
        info.with_label_values(&[
            self.id.as_str(),
            &self.uuid.to_string(),
            &self.incarnation,
            self.source.label(),
            if self.stable { "true" } else { "false" },
        ])
        .set(1);
        registry.register(Box::new(info))
    }
}

/// 16 hex digits of SHA-256 over the pod UID and the start time: changes
/// on every start, tells nothing of either.
fn incarnation(pod_uid: Option<&str>, started_nanos: u128) -> String {
    let mut h = Sha256::new();
    h.update(pod_uid.unwrap_or("").as_bytes());
    h.update(started_nanos.to_be_bytes());
    hex(&h.finalize()[..8])
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file, in hex, or `None` when it cannot be read.
pub fn file_digest(path: &std::path::Path) -> Option<String> {
    // Streamed, like the reload fingerprint: filter files are large.
    let mut file = std::fs::File::open(path).ok()?;
    let mut h = Sha256::new();
    std::io::copy(&mut file, &mut h).ok()?;
    Some(hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_first_source_set_wins() {
        let all = [
            ("PORTCULLIS_INSTANCE_ID", "from-env"),
            ("PORTCULLIS_STATEFULSET_POD_NAME", "mcp-0"),
            ("PORTCULLIS_SANDBOX_NAME", "sandbox-a"),
            ("HOSTNAME", "mcp-7d9f-abcde"),
        ];
        let i = Instance::resolve(Some("configured"), env(&all));
        assert_eq!((i.id.as_str(), i.source), ("configured", Source::Config));
        let i = Instance::resolve(None, env(&all));
        assert_eq!((i.id.as_str(), i.source), ("from-env", Source::Env));
        let i = Instance::resolve(None, env(&all[1..]));
        assert_eq!((i.id.as_str(), i.source), ("mcp-0", Source::StatefulSet));
        let i = Instance::resolve(None, env(&all[2..]));
        assert_eq!((i.id.as_str(), i.source), ("sandbox-a", Source::Sandbox));
        let i = Instance::resolve(None, env(&all[3..]));
        assert_eq!(
            (i.id.as_str(), i.source),
            ("mcp-7d9f-abcde", Source::Hostname)
        );
        assert!(!i.stable, "a Deployment pod name is not stable");
        let i = Instance::resolve(Some("  "), env(&[("PORTCULLIS_INSTANCE_ID", "")]));
        assert_eq!(i.source, Source::Default, "blank values are not identities");
    }

    #[test]
    fn the_uuid_is_stable_for_a_name_and_the_incarnation_is_not() {
        let e = [
            ("PORTCULLIS_STATEFULSET_POD_NAME", "mcp-0"),
            ("POD_NAMESPACE", "tools"),
            ("POD_UID", "u-1"),
        ];
        let a = Instance::resolve(None, env(&e));
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = Instance::resolve(None, env(&e));
        assert_eq!(a.uuid, b.uuid, "same name, same UUID across restarts");
        assert_ne!(
            a.incarnation, b.incarnation,
            "a new start is a new incarnation"
        );
        assert_eq!(a.uuid.get_version_num(), 5);
        let other_ns = Instance::resolve(
            None,
            env(&[
                ("PORTCULLIS_STATEFULSET_POD_NAME", "mcp-0"),
                ("POD_NAMESPACE", "other"),
            ]),
        );
        assert_ne!(a.uuid, other_ns.uuid, "the namespace is part of the name");
        // The UUID is the documented derivation, so others can compute it.
        let expected = Uuid::new_v5(&OTEL_INSTANCE_NAMESPACE, b"/tools/mcp-0");
        assert_eq!(a.uuid, expected);
    }

    #[test]
    fn the_info_metric_names_the_instance() {
        let registry = Registry::new();
        let i = Instance::resolve(Some("mcp-0"), env(&[]));
        i.register(&registry).unwrap();
        let families = registry.gather();
        let m = &families[0].get_metric()[0];
        let labels: HashMap<_, _> = m
            .get_label()
            .iter()
            .map(|l| (l.name().to_string(), l.value().to_string()))
            .collect();
        assert_eq!(labels["instance_id"], "mcp-0");
        assert_eq!(labels["stable"], "true");
        assert_eq!(labels["instance_uuid"], i.uuid.to_string());
    }
}
