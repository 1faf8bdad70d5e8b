//! The containers and volumes the webhook adds, as raw JSON.
//!
//! Built as `serde_json::Value` rather than k8s-openapi structs so the
//! patch shows exactly the fields we mean (no `null`s, no defaults the
//! apiserver would add anyway).

use serde_json::{json, Map, Value};

use crate::capture_args::CaptureArgs;
use crate::overrides::PodOverrides;
use crate::settings::{
    CaptureMode, InjectSettings, SvidSource, CONFIG_FILE, CONFIG_MOUNT, CONFIG_VOLUME, INIT_NAME,
    PROXY_NAME, SVID_VOLUME, XTABLES_VOLUME,
};

pub const SPIFFE_SOCKET_DIR: &str = "/spiffe-workload-api";
pub const SVID_FILES_DIR: &str = "/var/run/portcullis/svid";

/// What is per-pod about the proxy container.
pub struct ProxyInputs<'a> {
    pub settings: &'a InjectSettings,
    pub overrides: &'a PodOverrides,
    pub inbound_ports: &'a [u16],
    /// `PORTCULLIS_APP_PROBES`: rewritten probe path -> original probe.
    pub app_probes: &'a Map<String, Value>,
}

/// The sidecar as a native sidecar: an init container that keeps running.
pub fn proxy_container(p: &ProxyInputs<'_>) -> Value {
    let s = p.settings;
    let mut c = json!({
        "name": PROXY_NAME,
        "image": s.proxy_image,
        "args": ["run", "--config", CONFIG_FILE],
        // What makes it a native sidecar (K8s >= 1.29 beta, GA 1.33).
        "restartPolicy": "Always",
        "ports": proxy_ports(s, p.overrides.capture_mode),
        "env": proxy_env(p),
        "resources": s.proxy_resources,
        "securityContext": proxy_security_context(s),
        "volumeMounts": proxy_mounts(&p.overrides.svid),
        // The kubelet starts the app only after this succeeds: certificates
        // loaded and policy compiled.
        "startupProbe": admin_probe(s, "/readyz", 1, 600),
        "readinessProbe": readiness_probe(s, p.overrides.capture_mode),
        "livenessProbe": admin_probe(s, "/healthz", 10, 3),
    });
    if let (Some(policy), Value::Object(m)) = (&s.image_pull_policy, &mut c) {
        m.insert("imagePullPolicy".into(), json!(policy));
    }
    c
}

fn proxy_ports(s: &InjectSettings, mode: CaptureMode) -> Value {
    let mut ports =
        vec![json!({"name": "pc-admin", "containerPort": s.admin_port, "protocol": "TCP"})];
    if mode == CaptureMode::None {
        ports.push(json!({"name": "pc-mcp", "containerPort": s.explicit_port, "protocol": "TCP"}));
    }
    Value::Array(ports)
}

fn proxy_env(p: &ProxyInputs<'_>) -> Value {
    let o = p.overrides;
    let ports = p
        .inbound_ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut env = vec![
        json!({"name": "PORTCULLIS_CAPTURE_MODE", "value": o.capture_mode.as_str()}),
        json!({"name": "PORTCULLIS_INBOUND_PORTS", "value": ports}),
        json!({"name": "PORTCULLIS_LOG_LEVEL", "value": o.log_level.as_str()}),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("POD_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        // A StatefulSet pod keeps this name when it is rescheduled: the
        // sidecar's stable instance id. Empty (ignored) in other pods.
        field_env(
            "PORTCULLIS_STATEFULSET_POD_NAME",
            "metadata.labels['statefulset.kubernetes.io/pod-name']",
        ),
    ];
    match &o.svid {
        SvidSource::Csi { .. } => env.push(json!({
            "name": "SPIFFE_ENDPOINT_SOCKET",
            "value": format!("unix://{SPIFFE_SOCKET_DIR}/spire-agent.sock"),
        })),
        SvidSource::Secret { .. } => {
            env.push(json!({"name": "PORTCULLIS_SVID_DIR", "value": SVID_FILES_DIR}))
        }
    }
    if let Some(n) = o.proxy_workers {
        env.push(json!({"name": "PORTCULLIS_WORKERS", "value": n.to_string()}));
    }
    if !p.app_probes.is_empty() {
        // Compact JSON; the key order is fixed (sorted map) so re-running
        // the webhook gives byte-identical output.
        let text = crate::canonical::to_string(&Value::Object(p.app_probes.clone()));
        env.push(json!({"name": "PORTCULLIS_APP_PROBES", "value": text}));
    }
    Value::Array(env)
}

fn field_env(name: &str, path: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}})
}

fn proxy_security_context(s: &InjectSettings) -> Value {
    // Meets Pod Security "restricted" on its own.
    json!({
        "runAsUser": s.proxy_uid,
        "runAsGroup": s.proxy_gid,
        "runAsNonRoot": true,
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

fn proxy_mounts(svid: &SvidSource) -> Value {
    let svid_path = match svid {
        SvidSource::Csi { .. } => SPIFFE_SOCKET_DIR,
        SvidSource::Secret { .. } => SVID_FILES_DIR,
    };
    json!([
        {"name": CONFIG_VOLUME, "mountPath": CONFIG_MOUNT, "readOnly": true},
        {"name": SVID_VOLUME, "mountPath": svid_path, "readOnly": true},
    ])
}

fn admin_probe(s: &InjectSettings, path: &str, period: u32, failures: u32) -> Value {
    json!({
        "httpGet": {"path": path, "port": s.admin_port, "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 1,
        "failureThreshold": failures,
    })
}

/// Under capture the readiness probe targets the canary port, which only
/// answers through the redirect: a pod whose capture rules are missing never
/// becomes Ready. Without capture there is nothing to prove, so /readyz.
fn readiness_probe(s: &InjectSettings, mode: CaptureMode) -> Value {
    match mode {
        CaptureMode::None => admin_probe(s, "/readyz", 5, 3),
        _ => json!({
            "httpGet": {"path": "/", "port": s.canary_port, "scheme": "HTTP"},
            "periodSeconds": 5,
            "timeoutSeconds": 1,
            "failureThreshold": 3,
        }),
    }
}

/// The init container that installs the capture rules. Root only for
/// iptables: NET_ADMIN and NET_RAW, everything else dropped.
pub fn init_container(s: &InjectSettings, args: &CaptureArgs) -> Value {
    let mut c = json!({
        "name": INIT_NAME,
        "image": s.init_image,
        "command": ["portcullis"],
        "args": args.to_args(),
        "resources": s.init_resources,
        "securityContext": {
            // Explicit, so a pod-level runAsNonRoot does not block it.
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        // iptables needs a writable /run for xtables.lock.
        "volumeMounts": [{"name": XTABLES_VOLUME, "mountPath": "/run"}],
    });
    if let (Some(policy), Value::Object(m)) = (&s.image_pull_policy, &mut c) {
        m.insert("imagePullPolicy".into(), json!(policy));
    }
    c
}

/// Volumes, in the order they are appended.
pub fn volumes(o: &PodOverrides) -> Vec<Value> {
    let mut v = vec![json!({
        "name": CONFIG_VOLUME,
        "configMap": {"name": o.policy_config_map},
    })];
    v.push(match &o.svid {
        SvidSource::Csi { driver } => json!({
            "name": SVID_VOLUME,
            "csi": {"driver": driver, "readOnly": true},
        }),
        SvidSource::Secret { secret_name } => json!({
            "name": SVID_VOLUME,
            "secret": {"secretName": secret_name},
        }),
    });
    if o.capture_mode != CaptureMode::None {
        v.push(json!({"name": XTABLES_VOLUME, "emptyDir": {"medium": "Memory"}}));
    }
    v
}
