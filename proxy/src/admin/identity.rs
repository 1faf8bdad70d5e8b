//! `GET /identity`: who this sidecar is, as JSON, for operators and for the
//! app beside it (the admin port is on loopback by default).
//!
//! The instance (see [`crate::instance`]), the SPIFFE ID it serves with and
//! when that SVID expires, and SHA-256 digests of the config file and of
//! every filter it names, as they are on disk now: hot reload applies them
//! within `filter_engine.reload_interval`.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{json, Value};

use crate::{
    config::Config,
    identity::svid::IdentityStore,
    instance::{file_digest, Instance},
};

pub struct IdentityReport {
    pub instance: Arc<Instance>,
    /// The SVID source, when mTLS is on.
    pub svid: Option<Arc<IdentityStore>>,
    /// The config file, when started from one.
    pub config_path: Option<PathBuf>,
    /// The config as started, for the filter list when there is no file.
    pub config: Arc<Config>,
    /// Sealed sessions, when configured: which keys are in force (so a
    /// rotation's propagation can be watched), never the keys.
    pub sessions: Option<Arc<crate::session::Sessions>>,
}

impl IdentityReport {
    pub fn render(&self) -> Value {
        let i = &self.instance;
        let mut out = json!({
            "instance_id": i.id,
            "instance_uuid": i.uuid.to_string(),
            "source": i.source,
            "stable": i.stable,
            "incarnation": i.incarnation,
            "namespace": i.namespace,
            "pod_name": i.pod_name,
            "started_at_unix": i.started_at_unix,
        });
        out["svid"] = self.svid();
        out["config_digest"] = json!(self.config_path.as_deref().and_then(file_digest));
        out["filters"] = self.filters();
        out["session_keys"] = match &self.sessions {
            Some(s) => s
                .keys()
                .into_iter()
                .map(|(kid, state)| json!({"kid": kid, "state": format!("{state:?}")}))
                .collect(),
            None => Value::Null,
        };
        out
    }

    fn svid(&self) -> Value {
        let Some(snapshot) = self.svid.as_ref().and_then(|s| s.current()) else {
            return Value::Null;
        };
        let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        json!({
            "spiffe_id": snapshot.id.to_string(),
            "trust_domain": snapshot.id.trust_domain(),
            "not_after_unix": unix(snapshot.not_after),
            "remaining_seconds": snapshot.remaining().as_secs(),
        })
    }

    /// The filters the config on disk names now (or the starting config's
    /// when there is no file, or it no longer loads).
    fn filters(&self) -> Value {
        let current = self
            .config_path
            .as_deref()
            .and_then(|p| Config::load(p).ok());
        let config = current.as_ref().unwrap_or(&self.config);
        config
            .filters
            .iter()
            .map(|f| json!({"name": f.name, "path": f.path, "sha256": file_digest(&f.path)}))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_instance_and_digests_the_filters() {
        let dir = std::env::temp_dir().join(format!("pc-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let wasm = dir.join("f.wasm");
        std::fs::write(&wasm, b"abc").unwrap();
        let yaml = format!(
            "upstream: {{url: http://127.0.0.1:1}}\nfilters:\n  - {{name: f, path: {}}}\n",
            wasm.display()
        );
        let report = IdentityReport {
            instance: Arc::new(Instance::resolve(Some("mcp-0"), |_| None)),
            svid: None,
            config_path: None,
            config: Arc::new(Config::from_yaml(&yaml).unwrap()),
            sessions: None,
        };
        let v = report.render();
        assert_eq!(v["instance_id"], "mcp-0");
        assert_eq!(v["stable"], true);
        assert_eq!(v["svid"], Value::Null);
        assert_eq!(
            v["filters"][0]["sha256"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
