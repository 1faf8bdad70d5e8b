//! The pod under review: the raw JSON the apiserver sent (patched, never
//! re-serialized) and a typed k8s-openapi view of it (read, for decisions).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use serde_json::Value;

use crate::InjectError;

#[derive(Debug, Clone)]
pub struct PodObject {
    raw: Value,
    typed: Pod,
}

impl PodObject {
    pub fn from_value(raw: Value) -> Result<Self, InjectError> {
        if !raw.is_object() {
            return Err(InjectError::Malformed(
                "the object is not a JSON object".into(),
            ));
        }
        let typed: Pod = serde_json::from_value(raw.clone())
            .map_err(|e| InjectError::Malformed(format!("the object is not a valid Pod: {e}")))?;
        let pod = Self { raw, typed };
        if pod.spec().containers.is_empty() {
            return Err(InjectError::Malformed("the pod has no containers".into()));
        }
        Ok(pod)
    }

    pub fn raw(&self) -> &Value {
        &self.raw
    }

    pub fn into_raw(self) -> Value {
        self.raw
    }

    pub fn spec(&self) -> &PodSpec {
        static EMPTY: std::sync::OnceLock<PodSpec> = std::sync::OnceLock::new();
        self.typed
            .spec
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(PodSpec::default))
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        self.typed.metadata.labels.clone().unwrap_or_default()
    }

    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.typed.metadata.annotations.clone().unwrap_or_default()
    }

    pub fn init_containers(&self) -> &[Container] {
        self.spec().init_containers.as_deref().unwrap_or_default()
    }

    /// Every container name, init and app.
    pub fn container_names(&self) -> impl Iterator<Item = &str> {
        self.init_containers()
            .iter()
            .chain(self.spec().containers.iter())
            .map(|c| c.name.as_str())
    }

    pub fn volume_names(&self) -> impl Iterator<Item = &str> {
        self.spec()
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
    }

    /// `namespace/name`, or `namespace/generateName*` for controller-made
    /// pods, which have no name yet at admission.
    pub fn display_name(&self, namespace: &str) -> String {
        let m = &self.typed.metadata;
        match (&m.name, &m.generate_name) {
            (Some(n), _) if !n.is_empty() => format!("{namespace}/{n}"),
            (_, Some(g)) => format!("{namespace}/{g}*"),
            _ => format!("{namespace}/<unnamed>"),
        }
    }

    /// The raw JSON of the app containers, for probe rewriting.
    pub fn raw_containers(&self) -> &[Value] {
        self.raw
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}
