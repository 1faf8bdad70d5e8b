//! Rewriting app probes so the kubelet's probes still work under capture.
//!
//! The kubelet probes the pod IP from the node, so an httpGet, tcpSocket or
//! grpc probe on a captured port lands on the sidecar's capture listener,
//! which refuses it (not an MCP port) or demands mTLS (an MCP port). Like
//! Istio, the probe is pointed at the sidecar's admin port, which is never
//! captured, at `/app-health/<container>/<kind>`; the original handler goes
//! to the sidecar in `PORTCULLIS_APP_PROBES` and the sidecar runs it against
//! 127.0.0.1. exec probes run inside the container and are left alone.

use serde_json::{json, Map, Value};

const PROBES: [(&str, &str); 3] = [
    ("livenessProbe", "livez"),
    ("readinessProbe", "readyz"),
    ("startupProbe", "startupz"),
];
const HANDLERS: [&str; 3] = ["httpGet", "tcpSocket", "grpc"];

/// One probe to replace: `/spec/containers/<index>/<field>` gets `probe`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRewrite {
    pub index: usize,
    pub field: &'static str,
    pub probe: Value,
}

/// Computes the rewrites for all app containers and fills `app_probes`.
/// Probes whose port bypasses capture are left as they are.
pub fn rewrite_all(
    containers: &[Value],
    admin_port: u16,
    bypass_ports: &[u16],
    app_probes: &mut Map<String, Value>,
) -> Result<Vec<ProbeRewrite>, String> {
    let mut out = Vec::new();
    for (index, c) in containers.iter().enumerate() {
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        for (field, kind) in PROBES {
            let Some(probe) = c.get(field).and_then(Value::as_object) else {
                continue;
            };
            let Some(handler) = original_handler(c, probe)? else {
                continue;
            };
            if bypass_ports.contains(&handler.port) {
                continue;
            }
            let path = format!("/app-health/{name}/{kind}");
            let mut new_probe = probe.clone();
            new_probe.remove(handler.key);
            new_probe.insert(
                "httpGet".into(),
                json!({"path": path, "port": admin_port, "scheme": "HTTP"}),
            );
            let mut saved = Map::new();
            saved.insert(handler.key.into(), handler.resolved);
            if let Some(t) = probe.get("timeoutSeconds") {
                saved.insert("timeoutSeconds".into(), t.clone());
            }
            app_probes.insert(path, Value::Object(saved));
            out.push(ProbeRewrite {
                index,
                field,
                probe: Value::Object(new_probe),
            });
        }
    }
    Ok(out)
}

/// A probe's network handler: its key, the handler with the port resolved
/// to a number, and that port.
struct Handler {
    key: &'static str,
    resolved: Value,
    port: u16,
}

/// The probe's network handler, or None for exec probes and httpGet probes
/// aimed at another host.
fn original_handler(
    container: &Value,
    probe: &Map<String, Value>,
) -> Result<Option<Handler>, String> {
    for key in HANDLERS {
        let Some(handler) = probe.get(key).and_then(Value::as_object) else {
            continue;
        };
        let host = handler.get("host").and_then(Value::as_str).unwrap_or("");
        if key == "httpGet" && !host.is_empty() {
            return Ok(None);
        }
        let port = resolve_port(container, handler.get("port"))?;
        let mut resolved = handler.clone();
        resolved.insert("port".into(), json!(port));
        return Ok(Some(Handler {
            key,
            resolved: Value::Object(resolved),
            port,
        }));
    }
    Ok(None)
}

/// A probe port is a number or the name of one of the container's ports.
fn resolve_port(container: &Value, port: Option<&Value>) -> Result<u16, String> {
    let cname = container.get("name").and_then(Value::as_str).unwrap_or("?");
    match port {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n != 0)
            .ok_or_else(|| format!("container {cname}: probe port {n} is out of range")),
        Some(Value::String(name)) => container
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
            .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| {
                format!("container {cname}: probe port {name:?} names no port of the container")
            }),
        _ => Err(format!("container {cname}: probe has no port")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> Value {
        json!({
            "name": "app",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 3, "futureField": 1},
            "livenessProbe": {"exec": {"command": ["true"]}},
            "startupProbe": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 2},
        })
    }

    #[test]
    fn rewrites_http_and_tcp_keeps_exec_and_other_fields() {
        let mut probes = Map::new();
        let r = rewrite_all(&[app()], 15120, &[], &mut probes).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].field, "readinessProbe");
        assert_eq!(r[0].probe["httpGet"]["path"], "/app-health/app/readyz");
        assert_eq!(r[0].probe["periodSeconds"], 3);
        assert_eq!(r[0].probe["futureField"], 1);
        assert!(r[1].probe.get("tcpSocket").is_none());
        assert_eq!(probes["/app-health/app/readyz"]["httpGet"]["port"], 8080);
        assert_eq!(probes["/app-health/app/startupz"]["timeoutSeconds"], 2);
    }

    #[test]
    fn bypassed_port_is_not_rewritten() {
        let mut probes = Map::new();
        let r = rewrite_all(&[app()], 15120, &[8080], &mut probes).unwrap();
        assert!(r.is_empty() && probes.is_empty());
    }

    #[test]
    fn unknown_named_port_is_an_error() {
        let c = json!({"name": "a", "readinessProbe": {"httpGet": {"port": "nope"}}});
        let err = rewrite_all(&[c], 15120, &[], &mut Map::new()).unwrap_err();
        assert!(err.contains("\"nope\""), "{err}");
    }
}
