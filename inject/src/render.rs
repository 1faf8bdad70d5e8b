//! `portcullis-inject render`: the webhook's answer applied offline, for
//! GitOps pipelines and reviews (what `istioctl kube-inject` does).
//! Pods and the pod templates of workload kinds are injected; other
//! documents pass through untouched.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::mutate::{mutate, Decision, NamespaceInfo};
use crate::pod::PodObject;
use crate::settings::InjectSettings;
use crate::InjectError;

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("document {index}: not valid YAML: {source}")]
    Yaml {
        index: usize,
        source: serde_yaml_ng::Error,
    },
    #[error("document {index} ({name}): {source}")]
    Inject {
        index: usize,
        name: String,
        source: InjectError,
    },
    #[error("document {index}: the patch did not apply: {source}")]
    Patch {
        index: usize,
        source: json_patch::PatchError,
    },
}

pub struct Rendered {
    pub yaml: String,
    /// One line per document that was not injected, with the reason.
    pub notes: Vec<String>,
}

/// Where the pod template sits in a document of the given kind.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

pub fn render(
    text: &str,
    namespace: Option<&str>,
    settings: &InjectSettings,
) -> Result<Rendered, RenderError> {
    let mut docs = Vec::new();
    let mut notes = Vec::new();
    for (index, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let doc = Value::deserialize(de).map_err(|source| RenderError::Yaml { index, source })?;
        if doc.is_null() {
            continue;
        }
        docs.push(render_doc(index, doc, namespace, settings, &mut notes)?);
    }
    let mut yaml = String::new();
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            yaml.push_str("---\n");
        }
        // Values from YAML always serialize back.
        yaml.push_str(&serde_yaml_ng::to_string(d).unwrap_or_default());
    }
    Ok(Rendered { yaml, notes })
}

fn render_doc(
    index: usize,
    mut doc: Value,
    namespace: Option<&str>,
    settings: &InjectSettings,
    notes: &mut Vec<String>,
) -> Result<Value, RenderError> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string();
    let Some(ptr) = template_pointer(&kind) else {
        return Ok(doc);
    };
    let ns = namespace
        .or_else(|| doc.pointer("/metadata/namespace").and_then(Value::as_str))
        .unwrap_or("default")
        .to_string();
    let Some(template) = doc.pointer_mut(ptr) else {
        return Ok(doc);
    };
    // A template is a pod without apiVersion/kind; the typed view needs none.
    let mut pod_value = template.clone();
    if let Value::Object(m) = &mut pod_value {
        m.entry("metadata").or_insert_with(|| json!({}));
    }
    let inject_err = |source| RenderError::Inject {
        index,
        name: format!("{kind}/{name}"),
        source,
    };
    let pod = PodObject::from_value(pod_value).map_err(inject_err)?;
    let ns_info = NamespaceInfo::from_settings(&ns, settings);
    match mutate(&pod, &ns_info, settings).map_err(inject_err)? {
        Decision::Skip { reason, .. } => {
            notes.push(format!("{kind}/{name}: not injected: {reason}"))
        }
        Decision::Patch { ops, warnings } => {
            let mut injected = pod.into_raw();
            json_patch::patch(&mut injected, &ops)
                .map_err(|source| RenderError::Patch { index, source })?;
            *template = injected;
            notes.extend(warnings.into_iter().map(|w| format!("{kind}/{name}: {w}")));
        }
    }
    Ok(doc)
}
