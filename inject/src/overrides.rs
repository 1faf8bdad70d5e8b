//! Per-namespace and per-pod overrides, read from `portcullis.dev/*`
//! annotations. Layering: global settings, then the namespace defaults from
//! the injector config, then the pod's own annotations.
//!
//! Every value is validated here so that a typo becomes an admission denial
//! with a message naming the annotation, never a pod whose sidecar or init
//! container fails at runtime.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::settings::{CaptureMode, InjectSettings, LogLevel, SvidSource};

pub const PREFIX: &str = "portcullis.dev/";
pub const STATUS: &str = "portcullis.dev/status";
pub const INJECT_LABEL: &str = "portcullis.dev/inject";
pub const INBOUND_PORTS: &str = "portcullis.dev/inbound-ports";
pub const POLICY: &str = "portcullis.dev/policy";
pub const CAPTURE_MODE: &str = "portcullis.dev/capture-mode";
pub const EXCLUDE_INBOUND: &str = "portcullis.dev/exclude-inbound-ports";
pub const EXCLUDE_OUTBOUND: &str = "portcullis.dev/exclude-outbound-ports";
pub const EXCLUDE_CIDRS: &str = "portcullis.dev/exclude-outbound-cidrs";
pub const LOG_LEVEL: &str = "portcullis.dev/log-level";
pub const REWRITE_PROBES: &str = "portcullis.dev/rewrite-probes";
pub const SVID_SOURCE: &str = "portcullis.dev/svid-source";
pub const PROXY_WORKERS: &str = "portcullis.dev/proxy-workers";
/// The most worker threads a pod may ask for; the sidecar refuses more.
pub const MAX_PROXY_WORKERS: u16 = 512;

/// An override that could not be applied; becomes `allowed: false`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {origin} annotation {key}={value:?}: {reason}")]
pub struct OverrideError {
    pub origin: &'static str,
    pub key: String,
    pub value: String,
    pub reason: String,
}

/// The settings that may differ per pod, after layering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodOverrides {
    pub capture_mode: CaptureMode,
    /// `None`: derive the MCP ports from the app containers' ports.
    pub inbound_ports: Option<Vec<u16>>,
    pub exclude_inbound_ports: Vec<u16>,
    pub exclude_outbound_ports: Vec<u16>,
    pub exclude_outbound_cidrs: Vec<String>,
    pub policy_config_map: String,
    pub log_level: LogLevel,
    pub rewrite_probes: bool,
    pub svid: SvidSource,
    /// The sidecar's runtime worker threads (`PORTCULLIS_WORKERS`);
    /// `None` leaves the choice to the sidecar (one per CPU of its CPU
    /// limit, one without a limit).
    pub proxy_workers: Option<u16>,
}

impl PodOverrides {
    pub fn from_settings(s: &InjectSettings) -> Self {
        Self {
            capture_mode: s.capture_mode,
            inbound_ports: None,
            exclude_inbound_ports: s.exclude_inbound_ports.clone(),
            exclude_outbound_ports: s.exclude_outbound_ports.clone(),
            exclude_outbound_cidrs: s.exclude_outbound_cidrs.clone(),
            policy_config_map: s.policy_config_map.clone(),
            log_level: s.log_level,
            rewrite_probes: s.rewrite_probes,
            svid: s.svid.clone(),
            proxy_workers: s.proxy_workers,
        }
    }

    /// Applies one layer of annotations (namespace defaults or the pod's).
    pub fn apply(
        &mut self,
        annotations: &BTreeMap<String, String>,
        origin: &'static str,
    ) -> Result<(), OverrideError> {
        for (key, value) in annotations {
            if !key.starts_with(PREFIX) || key == STATUS {
                continue;
            }
            self.apply_one(key, value).map_err(|reason| OverrideError {
                origin,
                key: key.clone(),
                value: value.clone(),
                reason,
            })?;
        }
        Ok(())
    }

    fn apply_one(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            INBOUND_PORTS => self.inbound_ports = Some(non_empty(parse_ports(value)?)?),
            POLICY => self.policy_config_map = parse_dns_subdomain(value)?,
            CAPTURE_MODE => self.capture_mode = value.trim().parse()?,
            EXCLUDE_INBOUND => self.exclude_inbound_ports = parse_ports(value)?,
            EXCLUDE_OUTBOUND => self.exclude_outbound_ports = parse_ports(value)?,
            EXCLUDE_CIDRS => self.exclude_outbound_cidrs = parse_cidrs(value)?,
            LOG_LEVEL => self.log_level = value.trim().parse()?,
            REWRITE_PROBES => self.rewrite_probes = parse_bool(value)?,
            SVID_SOURCE => self.svid = parse_svid(value)?,
            PROXY_WORKERS => self.proxy_workers = parse_workers(value)?,
            INJECT_LABEL => {
                return Err(
                    "opt-out is a pod label (portcullis.dev/inject: \"false\"), \
                            not an annotation"
                        .into(),
                )
            }
            _ => return Err("unknown portcullis.dev annotation (typo?)".into()),
        }
        Ok(())
    }

    /// Checks that hold across annotations, e.g. an MCP port must never be
    /// excluded from capture, or its traffic would bypass the policy.
    pub fn check_consistency(&self, sidecar_ports: &[u16]) -> Result<(), String> {
        if let Some(ports) = &self.inbound_ports {
            for p in ports {
                if self.exclude_inbound_ports.contains(p) {
                    return Err(format!(
                        "port {p} is both an MCP port ({INBOUND_PORTS}) and excluded from \
                         capture ({EXCLUDE_INBOUND}); its traffic would bypass the policy"
                    ));
                }
                if sidecar_ports.contains(p) {
                    return Err(format!(
                        "MCP port {p} ({INBOUND_PORTS}) collides with a port the sidecar uses"
                    ));
                }
            }
        }
        Ok(())
    }
}

fn non_empty(ports: Vec<u16>) -> Result<Vec<u16>, String> {
    if ports.is_empty() {
        return Err("at least one port is required".into());
    }
    Ok(ports)
}

/// Comma-separated TCP ports, 1-65535. An empty value means "none".
pub fn parse_ports(value: &str) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let port: u16 = item
            .parse()
            .map_err(|_| format!("{item:?} is not a port number (1-65535)"))?;
        if port == 0 {
            return Err("port 0 is not a valid port".into());
        }
        if !out.contains(&port) {
            out.push(port);
        }
    }
    Ok(out)
}

fn parse_cidrs(value: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (addr, prefix) = item
            .split_once('/')
            .ok_or_else(|| format!("{item:?} is not a CIDR (address/prefix)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{item:?} has an invalid address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        match prefix.parse::<u8>() {
            Ok(p) if p <= max => out.push(item.to_string()),
            _ => return Err(format!("{item:?} has an invalid prefix length")),
        }
    }
    Ok(out)
}

/// A worker count the sidecar accepts: 1 to [`MAX_PROXY_WORKERS`]. Checked
/// here so that a bad value is a denied pod, not a sidecar that exits at
/// start.
pub fn check_workers(n: Option<u16>) -> Result<u16, String> {
    match n {
        Some(n) if (1..=MAX_PROXY_WORKERS).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a number of worker threads from 1 to {MAX_PROXY_WORKERS}, or auto"
        )),
    }
}

/// A count, or `auto`: the sidecar chooses (undoing a namespace default or
/// the global setting).
fn parse_workers(value: &str) -> Result<Option<u16>, String> {
    match value.trim() {
        "auto" => Ok(None),
        n => check_workers(n.parse().ok()).map(Some),
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn parse_svid(value: &str) -> Result<SvidSource, String> {
    let value = value.trim();
    if value == "csi" {
        return Ok(SvidSource::Csi {
            driver: "csi.spiffe.io".into(),
        });
    }
    match value.strip_prefix("secret:") {
        Some(name) => Ok(SvidSource::Secret {
            secret_name: parse_dns_subdomain(name)?,
        }),
        None => Err("expected \"csi\" or \"secret:<secret-name>\"".into()),
    }
}

/// A ConfigMap/Secret name: an RFC 1123 DNS subdomain.
pub fn parse_dns_subdomain(value: &str) -> Result<String, String> {
    let v = value.trim();
    let ok_chars = v
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ends_ok = v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric());
    if v.is_empty() || v.len() > 253 || !ok_chars || !ends_ok {
        return Err("expected a lowercase DNS-1123 name (a-z, 0-9, '-', '.')".into());
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn base() -> PodOverrides {
        PodOverrides::from_settings(&InjectSettings::default())
    }

    #[test]
    fn pod_layer_wins_over_namespace_layer() {
        let mut o = base();
        o.apply(
            &layer(&[(LOG_LEVEL, "debug"), (CAPTURE_MODE, "none")]),
            "namespace",
        )
        .unwrap();
        o.apply(&layer(&[(LOG_LEVEL, "trace")]), "pod").unwrap();
        assert_eq!(o.log_level, LogLevel::Trace);
        assert_eq!(o.capture_mode, CaptureMode::None);
    }

    #[test]
    fn invalid_values_name_the_annotation() {
        let cases = [
            (CAPTURE_MODE, "outbound"),
            (INBOUND_PORTS, "80,http"),
            (INBOUND_PORTS, ""),
            (EXCLUDE_INBOUND, "70000"),
            (EXCLUDE_INBOUND, "0"),
            (EXCLUDE_CIDRS, "10.0.0.0/33"),
            (EXCLUDE_CIDRS, "10.0.0.0"),
            (LOG_LEVEL, "loud"),
            (POLICY, "Bad_Name"),
            (SVID_SOURCE, "secret:"),
            (REWRITE_PROBES, "yes"),
            (PROXY_WORKERS, "0"),
            (PROXY_WORKERS, "513"),
            (PROXY_WORKERS, "two"),
            (PROXY_WORKERS, ""),
            ("portcullis.dev/captur-mode", "none"),
            (INJECT_LABEL, "false"),
        ];
        for (k, v) in cases {
            let err = base().apply(&layer(&[(k, v)]), "pod").unwrap_err();
            assert_eq!(err.key, k);
            assert!(err.to_string().contains(k), "{err}");
        }
    }

    #[test]
    fn proxy_workers_is_a_count_or_auto() {
        let mut o = base();
        o.apply(&layer(&[(PROXY_WORKERS, " 3 ")]), "namespace")
            .unwrap();
        assert_eq!(o.proxy_workers, Some(3));
        // A pod hands the choice back to the sidecar.
        o.apply(&layer(&[(PROXY_WORKERS, "auto")]), "pod").unwrap();
        assert_eq!(o.proxy_workers, None);
    }

    #[test]
    fn other_prefixes_and_status_are_ignored() {
        let mut o = base();
        o.apply(
            &layer(&[
                (STATUS, "{}"),
                ("example.com/x", "y"),
                ("portcullis.devx/y", "z"),
            ]),
            "pod",
        )
        .unwrap();
        assert_eq!(o, base());
    }

    #[test]
    fn excluded_mcp_port_is_inconsistent() {
        let mut o = base();
        o.apply(
            &layer(&[(INBOUND_PORTS, "8080"), (EXCLUDE_INBOUND, "8080")]),
            "pod",
        )
        .unwrap();
        assert!(o.check_consistency(&[15106]).is_err());
        let mut o = base();
        o.apply(&layer(&[(INBOUND_PORTS, "15106")]), "pod").unwrap();
        assert!(o.check_consistency(&[15106]).is_err());
    }

    #[test]
    fn ports_and_cidrs_parse() {
        assert_eq!(parse_ports(" 80, 443,80 ").unwrap(), vec![80, 443]);
        assert_eq!(parse_ports("").unwrap(), Vec::<u16>::new());
        assert_eq!(
            parse_cidrs("10.0.0.0/8, fd00::/8").unwrap(),
            vec!["10.0.0.0/8".to_string(), "fd00::/8".to_string()]
        );
    }
}
