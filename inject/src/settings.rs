//! Global injector settings: the "values" an operator puts in the
//! injector's ConfigMap. Pod and namespace annotations override a subset of
//! them (see `overrides`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// Names of the things the webhook adds, fixed so that idempotency checks and
/// the offline checker can find them.
pub const PROXY_NAME: &str = "portcullis-proxy";
pub const INIT_NAME: &str = "portcullis-init";
pub const CONFIG_VOLUME: &str = "portcullis-config";
pub const SVID_VOLUME: &str = "portcullis-svid";
pub const XTABLES_VOLUME: &str = "portcullis-xtables";
pub const CONFIG_MOUNT: &str = "/etc/portcullis";
pub const CONFIG_FILE: &str = "/etc/portcullis/config.yaml";

/// How traffic reaches the sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum CaptureMode {
    /// nat PREROUTING redirect of every inbound TCP port except excludes.
    #[serde(rename = "inbound")]
    Inbound,
    /// Inbound plus nat OUTPUT redirect with the proxy uid/gid exempted.
    #[serde(rename = "inbound+outbound")]
    InboundOutbound,
    /// No init container: clients dial the explicit listener.
    #[serde(rename = "none")]
    None,
}

impl CaptureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::InboundOutbound => "inbound+outbound",
            Self::None => "none",
        }
    }
}

impl fmt::Display for CaptureMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CaptureMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inbound" => Ok(Self::Inbound),
            "inbound+outbound" => Ok(Self::InboundOutbound),
            "none" => Ok(Self::None),
            _ => Err("expected one of inbound, inbound+outbound, none".into()),
        }
    }
}

/// Log level handed to the sidecar; a closed set so a typo is a denial, not
/// a sidecar that crash-loops on start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "error" => Ok(Self::Error),
            "warn" => Ok(Self::Warn),
            "info" => Ok(Self::Info),
            "debug" => Ok(Self::Debug),
            "trace" => Ok(Self::Trace),
            _ => Err("expected one of error, warn, info, debug, trace".into()),
        }
    }
}

/// Where the sidecar gets its X.509 SVID.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SvidSource {
    /// SPIFFE Workload API socket mounted by a CSI driver (csi.spiffe.io).
    Csi {
        #[serde(default = "default_csi_driver")]
        driver: String,
    },
    /// cert/key/bundle files from a Secret (cert-manager csi-driver-spiffe,
    /// or files written by another tool).
    Secret {
        #[serde(rename = "secretName")]
        secret_name: String,
    },
}

fn default_csi_driver() -> String {
    "csi.spiffe.io".into()
}

/// Everything the webhook needs to build a patch. Loaded from YAML with
/// camelCase keys; every field has a default so an empty file is valid.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct InjectSettings {
    pub proxy_image: String,
    /// The capture rules run from the same image (`portcullis capture`).
    pub init_image: String,
    pub image_pull_policy: Option<String>,
    pub proxy_uid: u32,
    pub proxy_gid: u32,
    pub capture_port: u16,
    pub outbound_capture_port: u16,
    pub canary_port: u16,
    pub admin_port: u16,
    /// Only used under `capture-mode: none`, where clients dial the sidecar.
    pub explicit_port: u16,
    pub capture_mode: CaptureMode,
    pub exclude_inbound_ports: Vec<u16>,
    pub exclude_outbound_ports: Vec<u16>,
    pub exclude_outbound_cidrs: Vec<String>,
    /// Default ConfigMap holding `config.yaml` (and policy) for the sidecar.
    pub policy_config_map: String,
    pub log_level: LogLevel,
    pub rewrite_probes: bool,
    pub svid: SvidSource,
    /// Worker threads for every sidecar (`PORTCULLIS_WORKERS`), unless a
    /// pod's `portcullis.dev/proxy-workers` says otherwise. Unset: the
    /// sidecar decides (one per CPU of its CPU limit, one without a limit).
    pub proxy_workers: Option<u16>,
    pub proxy_resources: serde_json::Value,
    pub init_resources: serde_json::Value,
    /// Per-namespace default annotations, keyed by namespace name. The
    /// webhook makes no API calls on the request path, so namespace defaults
    /// live here rather than on the Namespace object.
    pub namespace_defaults: BTreeMap<String, BTreeMap<String, String>>,
}

impl Default for InjectSettings {
    fn default() -> Self {
        Self {
            proxy_image: "ghcr.io/portcullis/portcullis:0.1.0".into(),
            init_image: "ghcr.io/portcullis/portcullis:0.1.0".into(),
            image_pull_policy: None,
            proxy_uid: 1338,
            proxy_gid: 1338,
            capture_port: 15106,
            outbound_capture_port: 15101,
            canary_port: 15122,
            admin_port: 15120,
            explicit_port: 15101,
            capture_mode: CaptureMode::Inbound,
            exclude_inbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_cidrs: Vec::new(),
            policy_config_map: "portcullis-config".into(),
            log_level: LogLevel::Info,
            rewrite_probes: true,
            svid: SvidSource::Csi {
                driver: default_csi_driver(),
            },
            proxy_workers: None,
            proxy_resources: serde_json::json!({
                "requests": {"cpu": "50m", "memory": "32Mi"},
                "limits": {"memory": "128Mi"}
            }),
            init_resources: serde_json::json!({
                "requests": {"cpu": "10m", "memory": "16Mi"},
                "limits": {"memory": "64Mi"}
            }),
            namespace_defaults: BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading injector settings {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing injector settings {path}: {source}")]
    Parse {
        path: String,
        source: serde_yaml_ng::Error,
    },
    #[error("injector settings {path}: {reason}")]
    Invalid { path: String, reason: String },
}

impl InjectSettings {
    pub fn from_yaml(text: &str, path: &str) -> Result<Self, SettingsError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let settings: Self =
            serde_yaml_ng::from_str(text).map_err(|source| SettingsError::Parse {
                path: path.into(),
                source,
            })?;
        // Checked as the annotation is, so that a bad global value stops
        // the injector at start rather than every sidecar it injects.
        if let Some(n) = settings.proxy_workers {
            crate::overrides::check_workers(Some(n)).map_err(|reason| SettingsError::Invalid {
                path: path.into(),
                reason: format!("proxyWorkers: {reason}"),
            })?;
        }
        // A namespace default is applied to every pod of its namespace: a
        // typo there would deny them all, one admission at a time. Refused
        // once, here, instead.
        for (namespace, annotations) in &settings.namespace_defaults {
            crate::overrides::PodOverrides::from_settings(&settings)
                .apply(annotations, "namespace default")
                .map_err(|e| SettingsError::Invalid {
                    path: path.into(),
                    reason: format!("namespaceDefaults.{namespace}: {e}"),
                })?;
        }
        Ok(settings)
    }

    pub fn load(path: &str) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.into(),
            source,
        })?;
        Self::from_yaml(&text, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let s = InjectSettings::from_yaml("", "x").unwrap();
        assert_eq!(s.proxy_uid, 1338);
        assert_eq!(s.capture_mode, CaptureMode::Inbound);
    }

    #[test]
    fn yaml_overrides_and_rejects_typos() {
        let s = InjectSettings::from_yaml(
            "captureMode: none\nsvid: {kind: secret, secretName: svid}\n",
            "x",
        )
        .unwrap();
        assert_eq!(s.capture_mode, CaptureMode::None);
        assert_eq!(
            s.svid,
            SvidSource::Secret {
                secret_name: "svid".into()
            }
        );
        assert!(InjectSettings::from_yaml("captureMod: none\n", "x").is_err());
    }

    #[test]
    fn a_bad_namespace_default_is_refused_at_load() {
        let good = "namespaceDefaults:\n  team-b:\n    portcullis.dev/proxy-workers: \"2\"\n";
        assert!(InjectSettings::from_yaml(good, "x").is_ok());
        let bad = "namespaceDefaults:\n  team-b:\n    portcullis.dev/log-level: loud\n";
        let err = InjectSettings::from_yaml(bad, "x").unwrap_err().to_string();
        assert!(err.contains("team-b") && err.contains("log-level"), "{err}");
    }

    #[test]
    fn proxy_workers_must_be_a_count_the_sidecar_accepts() {
        let s = InjectSettings::from_yaml("proxyWorkers: 1\n", "x").unwrap();
        assert_eq!(s.proxy_workers, Some(1));
        for bad in [
            "proxyWorkers: 0\n",
            "proxyWorkers: 513\n",
            "proxyWorkers: two\n",
        ] {
            assert!(InjectSettings::from_yaml(bad, "x").is_err(), "{bad}");
        }
    }
}
