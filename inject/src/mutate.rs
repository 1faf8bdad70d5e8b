//! The pure core: from a pod, its namespace and the settings, decide whether
//! to inject and build the JSON Patch.

use std::collections::BTreeMap;

use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use serde_json::{json, Map, Value};

use crate::capture_args::CaptureArgs;
use crate::containers::{self, ProxyInputs};
use crate::overrides::{PodOverrides, INJECT_LABEL, STATUS};
use crate::pod::PodObject;
use crate::pointer::path;
use crate::probes::{self, ProbeRewrite};
use crate::settings::{CaptureMode, InjectSettings, INIT_NAME, PROXY_NAME};
use crate::skip::skip_reason;
use crate::InjectError;

pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";
pub const DEFAULT_LOGS_CONTAINER: &str = "kubectl.kubernetes.io/default-logs-container";

/// What the webhook knows about the pod's namespace.
#[derive(Debug, Clone, Default)]
pub struct NamespaceInfo {
    pub name: String,
    /// Default `portcullis.dev/*` annotations for the namespace's pods.
    pub annotations: BTreeMap<String, String>,
}

impl NamespaceInfo {
    /// Namespace defaults come from the injector settings: the webhook makes
    /// no API calls on the request path.
    pub fn from_settings(name: &str, settings: &InjectSettings) -> Self {
        Self {
            name: name.to_string(),
            annotations: settings
                .namespace_defaults
                .get(name)
                .cloned()
                .unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Inject: apply `ops`. `warnings` go to the user via the response.
    Patch {
        ops: Vec<PatchOperation>,
        warnings: Vec<String>,
    },
    /// Admit unchanged. `warn` says whether the user should hear about it.
    Skip { reason: String, warn: bool },
}

/// Everything the patch adds, computed before any op is built.
struct Plan {
    annotations: Vec<(String, Value)>,
    init_containers: Vec<Value>,
    volumes: Vec<Value>,
    probes: Vec<ProbeRewrite>,
    warnings: Vec<String>,
}

pub fn mutate(
    pod: &PodObject,
    ns: &NamespaceInfo,
    settings: &InjectSettings,
) -> Result<Decision, InjectError> {
    if let Some(skip) = skip_reason(pod)? {
        return Ok(skip);
    }
    let mut overrides = PodOverrides::from_settings(settings);
    overrides.apply(&ns.annotations, "namespace default")?;
    overrides.apply(&pod.annotations(), "pod")?;
    overrides
        .check_consistency(&sidecar_ports(settings))
        .map_err(InjectError::Conflict)?;
    check_conflicts(pod, settings)?;
    let plan = plan(pod, &overrides, settings)?;
    let ops = build_ops(
        pod.raw(),
        plan.annotations,
        plan.init_containers,
        plan.volumes,
        plan.probes,
    );
    Ok(Decision::Patch {
        ops,
        warnings: plan.warnings,
    })
}

/// Ports the sidecar listens on or redirects to; no app may use them.
fn sidecar_ports(s: &InjectSettings) -> Vec<u16> {
    vec![
        s.capture_port,
        s.outbound_capture_port,
        s.canary_port,
        s.admin_port,
        s.explicit_port,
    ]
}

/// Things that would make the injected pod invalid or ambiguous.
fn check_conflicts(pod: &PodObject, s: &InjectSettings) -> Result<(), InjectError> {
    if pod.container_names().any(|n| n == INIT_NAME) {
        return Err(InjectError::Conflict(format!(
            "the pod already has a container named {INIT_NAME}"
        )));
    }
    if let Some(v) = pod.volume_names().find(|v| v.starts_with("portcullis-")) {
        return Err(InjectError::Conflict(format!(
            "the pod already has a volume named {v}; portcullis-* volume names are reserved"
        )));
    }
    let reserved = sidecar_ports(s);
    let all = pod
        .init_containers()
        .iter()
        .chain(pod.spec().containers.iter());
    for c in all {
        for p in c.ports.iter().flatten() {
            if u16::try_from(p.container_port).is_ok_and(|n| reserved.contains(&n)) {
                return Err(InjectError::Conflict(format!(
                    "container {} uses port {}, which the portcullis sidecar reserves ({:?})",
                    c.name, p.container_port, reserved
                )));
            }
        }
    }
    Ok(())
}

fn plan(pod: &PodObject, o: &PodOverrides, s: &InjectSettings) -> Result<Plan, InjectError> {
    let inbound_ports = match &o.inbound_ports {
        Some(p) => p.clone(),
        None => derive_mcp_ports(pod, &o.exclude_inbound_ports)?,
    };
    check_proxy_uid(pod, o, s)?;
    let capturing = o.capture_mode != CaptureMode::None;
    let mut warnings = Vec::new();
    let mut app_probes = Map::new();
    let probe_rewrites = if capturing && o.rewrite_probes {
        probes::rewrite_all(
            pod.raw_containers(),
            s.admin_port,
            &o.exclude_inbound_ports,
            &mut app_probes,
        )
        .map_err(InjectError::Conflict)?
    } else {
        if capturing && has_network_probes(pod) {
            warnings.push(
                "portcullis: probe rewriting is off; httpGet/tcpSocket/grpc probes on captured \
                 ports will fail"
                    .to_string(),
            );
        }
        Vec::new()
    };
    if capturing {
        warnings.extend(refused_port_warnings(
            pod,
            &inbound_ports,
            &o.exclude_inbound_ports,
        ));
    }
    let proxy = containers::proxy_container(&ProxyInputs {
        settings: s,
        overrides: o,
        inbound_ports: &inbound_ports,
        app_probes: &app_probes,
    });
    let mut init_containers = Vec::new();
    if capturing {
        let args = capture_args(o, s);
        // Refuse here what the init container would refuse at pod start.
        args.check()
            .map_err(|e| InjectError::Conflict(format!("capture settings: {e}")))?;
        init_containers.push(containers::init_container(s, &args));
    }
    init_containers.push(proxy);
    let volumes = containers::volumes(o);
    let annotations = annotations(pod, o, &init_containers, &volumes);
    Ok(Plan {
        annotations,
        init_containers,
        volumes,
        probes: probe_rewrites,
        warnings,
    })
}

fn capture_args(o: &PodOverrides, s: &InjectSettings) -> CaptureArgs {
    let mut exclude = vec![s.admin_port];
    exclude.extend(
        o.exclude_inbound_ports
            .iter()
            .filter(|p| **p != s.admin_port),
    );
    CaptureArgs {
        mode: o.capture_mode,
        capture_port: s.capture_port,
        outbound_capture_port: s.outbound_capture_port,
        canary_port: s.canary_port,
        proxy_uid: s.proxy_uid,
        proxy_gid: s.proxy_gid,
        exclude_inbound_ports: exclude,
        exclude_outbound_ports: o.exclude_outbound_ports.clone(),
        exclude_outbound_cidrs: o.exclude_outbound_cidrs.clone(),
    }
}

/// Without an annotation: app container ports named `mcp*`, else every TCP
/// port of the app containers, minus the excluded ones. None at all is a
/// denial: a sidecar with nothing to forward is a misconfiguration.
fn derive_mcp_ports(pod: &PodObject, excluded: &[u16]) -> Result<Vec<u16>, InjectError> {
    let tcp: Vec<(String, u16)> = pod
        .spec()
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| {
            Some((
                p.name.clone().unwrap_or_default(),
                u16::try_from(p.container_port).ok()?,
            ))
        })
        .filter(|(_, n)| !excluded.contains(n))
        .collect();
    let named: Vec<u16> = tcp
        .iter()
        .filter(|(n, _)| n.starts_with("mcp"))
        .map(|(_, p)| *p)
        .collect();
    let mut ports = if named.is_empty() {
        tcp.iter().map(|(_, p)| *p).collect()
    } else {
        named
    };
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() {
        return Err(InjectError::Conflict(format!(
            "no MCP port: declare a TCP containerPort or set {}",
            crate::overrides::INBOUND_PORTS
        )));
    }
    Ok(ports)
}

/// Ports the app declares that capture will send to the sidecar, which
/// refuses them (default-deny): a metrics port scraped from outside the pod
/// is the usual case. Admitted, but the user hears about it.
fn refused_port_warnings(pod: &PodObject, inbound: &[u16], excluded: &[u16]) -> Vec<String> {
    let mut out = Vec::new();
    for c in &pod.spec().containers {
        for p in c.ports.iter().flatten() {
            let Ok(port) = u16::try_from(p.container_port) else {
                continue;
            };
            let tcp = p.protocol.as_deref().unwrap_or("TCP") == "TCP";
            if tcp && !inbound.contains(&port) && !excluded.contains(&port) {
                out.push(format!(
                    "portcullis: port {port} of container {} is captured but is not an MCP port, so \
                     connections to it will be refused; list it in {} to let it bypass the sidecar",
                    c.name,
                    crate::overrides::EXCLUDE_INBOUND
                ));
            }
        }
    }
    out
}

/// In outbound mode the owner match exempts the proxy uid/gid; an app
/// running as that uid would send its egress around the capture.
fn check_proxy_uid(
    pod: &PodObject,
    o: &PodOverrides,
    s: &InjectSettings,
) -> Result<(), InjectError> {
    if o.capture_mode != CaptureMode::InboundOutbound {
        return Ok(());
    }
    let pod_uid = pod
        .spec()
        .security_context
        .as_ref()
        .and_then(|c| c.run_as_user);
    for c in &pod.spec().containers {
        let uid = c
            .security_context
            .as_ref()
            .and_then(|sc| sc.run_as_user)
            .or(pod_uid);
        if uid == Some(i64::from(s.proxy_uid)) {
            return Err(InjectError::Conflict(format!(
                "container {} runs as uid {}, the proxy's uid; in inbound+outbound mode its \
                 egress would bypass capture",
                c.name, s.proxy_uid
            )));
        }
    }
    Ok(())
}

fn has_network_probes(pod: &PodObject) -> bool {
    pod.spec().containers.iter().any(|c| {
        [&c.liveness_probe, &c.readiness_probe, &c.startup_probe]
            .into_iter()
            .flatten()
            .any(|p| p.http_get.is_some() || p.tcp_socket.is_some() || p.grpc.is_some())
    })
}

/// The status annotation (no timestamps: the same pod must give the same
/// patch) and kubectl's default container, if the user set none.
fn annotations(
    pod: &PodObject,
    o: &PodOverrides,
    init_containers: &[Value],
    volumes: &[Value],
) -> Vec<(String, Value)> {
    let names = |v: &[Value]| -> Vec<Value> { v.iter().map(|c| c["name"].clone()).collect() };
    let status = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "captureMode": o.capture_mode.as_str(),
        "initContainers": names(init_containers),
        "volumes": names(volumes),
    });
    let mut out = vec![(
        STATUS.to_string(),
        json!(crate::canonical::to_string(&status)),
    )];
    let existing = pod.annotations();
    let first_app = pod
        .spec()
        .containers
        .first()
        .map(|c| c.name.clone())
        .unwrap_or_default();
    for key in [DEFAULT_CONTAINER, DEFAULT_LOGS_CONTAINER] {
        if !existing.contains_key(key) {
            out.push((key.to_string(), json!(first_app)));
        }
    }
    out
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: path(tokens),
        value,
    })
}

/// Only `add` ops on paths (plus `replace` of rewritten probes): arrays the
/// user wrote are appended to, never replaced, and a missing parent is
/// created first because `add /a/-` fails when `/a` does not exist.
fn build_ops(
    raw: &Value,
    annotations: Vec<(String, Value)>,
    init_containers: Vec<Value>,
    volumes: Vec<Value>,
    probes: Vec<ProbeRewrite>,
) -> Vec<PatchOperation> {
    let mut ops = Vec::new();
    if !raw
        .pointer("/metadata/annotations")
        .is_some_and(Value::is_object)
    {
        ops.push(add(&["metadata", "annotations"], json!({})));
    }
    for (k, v) in annotations {
        ops.push(add(&["metadata", "annotations", &k], v));
    }
    if raw
        .pointer("/spec/initContainers")
        .is_some_and(Value::is_array)
    {
        // Ours go first: capture rules, then the proxy, then user init
        // containers, which therefore run with the proxy up.
        for (i, c) in init_containers.into_iter().enumerate() {
            ops.push(add(&["spec", "initContainers", &i.to_string()], c));
        }
    } else {
        ops.push(add(
            &["spec", "initContainers"],
            Value::Array(init_containers),
        ));
    }
    if !raw.pointer("/spec/volumes").is_some_and(Value::is_array) {
        ops.push(add(&["spec", "volumes"], json!([])));
    }
    for v in volumes {
        ops.push(add(&["spec", "volumes", "-"], v));
    }
    for p in probes {
        ops.push(PatchOperation::Replace(ReplaceOperation {
            path: path(&["spec", "containers", &p.index.to_string(), p.field]),
            value: p.probe,
        }));
    }
    ops
}

/// Used by the skip checks; kept here so all label handling is in one place.
pub(crate) fn opted_out(pod: &PodObject) -> Result<bool, InjectError> {
    match pod.labels().get(INJECT_LABEL).map(String::as_str) {
        None | Some("true") | Some("enabled") => Ok(false),
        Some("false") | Some("disabled") => Ok(true),
        Some(other) => Err(InjectError::Conflict(format!(
            "invalid pod label {INJECT_LABEL}={other:?}: expected \"true\" or \"false\""
        ))),
    }
}

/// Whether the pod already went through this webhook.
pub(crate) fn already_injected(pod: &PodObject) -> Result<bool, InjectError> {
    let has_proxy = pod.container_names().any(|n| n == PROXY_NAME);
    let has_status = pod.annotations().contains_key(STATUS);
    match (has_status, has_proxy) {
        (_, true) => Ok(true),
        (true, false) => Err(InjectError::Conflict(format!(
            "the pod carries {STATUS} but has no {PROXY_NAME} container; remove the annotation \
             so the pod can be injected"
        ))),
        (false, false) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(spec_extra: Value, annotations: Value) -> PodObject {
        let mut spec = json!({"containers": [{"name": "app", "image": "app",
            "ports": [{"name": "mcp", "containerPort": 8080}, {"containerPort": 9090}]}]});
        if let (Value::Object(s), Value::Object(extra)) = (&mut spec, spec_extra) {
            s.extend(extra);
        }
        PodObject::from_value(json!({"metadata": {"annotations": annotations}, "spec": spec}))
            .unwrap()
    }

    fn ops(p: &PodObject) -> (Vec<String>, Vec<String>) {
        let ns = NamespaceInfo::default();
        match mutate(p, &ns, &InjectSettings::default()).unwrap() {
            Decision::Patch { ops, warnings } => (
                ops.iter()
                    .map(|o| {
                        format!(
                            "{} {}",
                            serde_json::to_value(o).unwrap()["op"].as_str().unwrap(),
                            o.path()
                        )
                    })
                    .collect(),
                warnings,
            ),
            other => panic!("expected a patch, got {other:?}"),
        }
    }

    #[test]
    fn same_pod_same_patch() {
        let p = pod(json!({}), json!({}));
        let a = mutate(&p, &NamespaceInfo::default(), &InjectSettings::default()).unwrap();
        let b = mutate(&p, &NamespaceInfo::default(), &InjectSettings::default()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn ours_go_before_user_init_containers() {
        let p = pod(
            json!({"initContainers": [{"name": "user", "image": "u"}]}),
            json!({}),
        );
        let (ops, _) = ops(&p);
        assert!(
            ops.contains(&"add /spec/initContainers/0".to_string()),
            "{ops:?}"
        );
        assert!(
            ops.contains(&"add /spec/initContainers/1".to_string()),
            "{ops:?}"
        );
        assert!(
            ops.contains(&"add /spec/volumes".to_string()),
            "volumes absent: created first"
        );
    }

    #[test]
    fn capture_none_adds_only_the_proxy_and_no_warnings() {
        let p = pod(json!({}), json!({"portcullis.dev/capture-mode": "none"}));
        let (ops, warnings) = ops(&p);
        assert!(ops.contains(&"add /spec/initContainers".to_string()));
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn captured_non_mcp_port_is_warned_about_unless_excluded() {
        let (_, warnings) = ops(&pod(json!({}), json!({})));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("port 9090"), "{warnings:?}");
        let (_, warnings) = ops(&pod(
            json!({}),
            json!({"portcullis.dev/exclude-inbound-ports": "9090"}),
        ));
        assert!(warnings.is_empty(), "{warnings:?}");
    }
}
