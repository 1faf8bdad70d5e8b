//! `portcullis-inject render`, through the library and the real binary.

use std::process::Command;

use portcullis_inject::render::render;
use portcullis_inject::InjectSettings;
use serde::Deserialize;
use serde_json::Value;

const WORKLOADS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: untouched}
data: {a: b}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: mcp, namespace: tools}
spec:
  selector: {matchLabels: {app: mcp}}
  template:
    metadata: {labels: {app: mcp}}
    spec:
      containers:
      - name: server
        image: server:1
        ports: [{name: mcp, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /ready, port: mcp}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "@daily"
  jobTemplate:
    spec:
      template:
        metadata: {labels: {portcullis.dev/inject: "false"}}
        spec:
          restartPolicy: OnFailure
          containers: [{name: job, image: job:1}]
"#;

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

#[test]
fn injects_templates_and_passes_other_documents_through() {
    let out = render(WORKLOADS, None, &InjectSettings::default()).unwrap();
    let d = docs(&out.yaml);
    assert_eq!(d.len(), 3);
    assert_eq!(d[0], docs(WORKLOADS)[0], "ConfigMap must be unchanged");
    let tpl = &d[1]["spec"]["template"];
    let inits: Vec<&str> = tpl["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(inits, ["portcullis-init", "portcullis-proxy"]);
    assert_eq!(
        tpl["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"],
        "/app-health/server/readyz"
    );
    assert_eq!(
        d[2],
        docs(WORKLOADS)[2],
        "opted-out CronJob must be unchanged"
    );
    assert!(
        out.notes
            .iter()
            .any(|n| n.contains("CronJob/nightly") && n.contains("opted out")),
        "{:?}",
        out.notes
    );
}

#[test]
fn rendering_twice_changes_nothing() {
    let once = render(WORKLOADS, None, &InjectSettings::default())
        .unwrap()
        .yaml;
    let twice = render(&once, None, &InjectSettings::default())
        .unwrap()
        .yaml;
    assert_eq!(docs(&once), docs(&twice));
}

#[test]
fn invalid_annotation_is_an_error_naming_the_document() {
    let bad = WORKLOADS.replace(
        "metadata: {labels: {app: mcp}}",
        "metadata: {labels: {app: mcp}, annotations: {portcullis.dev/capture-mode: all}}",
    );
    let err = render(&bad, None, &InjectSettings::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("Deployment/mcp") && err.contains("portcullis.dev/capture-mode"),
        "{err}"
    );
}

#[test]
fn binary_renders_a_file_and_fails_on_bad_input() {
    let dir = std::env::temp_dir().join(format!("portcullis-inject-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(&good, WORKLOADS).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis-inject"))
        .args(["render", "-f"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("name: portcullis-proxy"));

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        WORKLOADS.replace("containerPort: 8080", "containerPort: 15120"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis-inject"))
        .args(["render", "-f"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reserves"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
