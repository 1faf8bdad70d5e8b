//! What the sidecar has learned about the upstream's tools, taken from
//! `tools/list` answers: their annotations, so that policies can use them
//! on later calls, and their `x-mcp-header` parameters, so that the
//! `Mcp-Param-*` headers of a call can be checked. Bounded, because the
//! upstream names the tools.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use crate::mcp::param_headers::ParamHeaders;

const MAX_TOOLS: usize = 4096;

#[derive(Default)]
pub struct ToolCatalog {
    annotations: Bounded<Arc<str>>,
    params: Bounded<Arc<ParamHeaders>>,
}

impl ToolCatalog {
    pub fn annotations(&self, tool: &str) -> Option<Arc<str>> {
        self.annotations.get(tool)
    }

    pub fn record(&self, tool: &str, annotations: &serde_json::Value) {
        self.annotations
            .insert(tool, Arc::from(annotations.to_string()));
    }

    /// The tool's declared `Mcp-Param-*` headers; `None` when no
    /// `tools/list` answer has described the tool (or the catalog was full).
    pub fn params(&self, tool: &str) -> Option<Arc<ParamHeaders>> {
        self.params.get(tool)
    }

    /// Records the `x-mcp-header` annotations of a listed tool's
    /// `inputSchema`. A tool without any is recorded too: its schema is
    /// then known to declare none.
    pub fn record_params(&self, tool: &str, input_schema: Option<&serde_json::Value>) {
        self.params
            .insert(tool, Arc::new(ParamHeaders::from_schema(input_schema)));
    }
}

/// A map by tool name that stops growing at [`MAX_TOOLS`]; a tool already
/// in it is still updated.
struct Bounded<V>(RwLock<HashMap<String, V>>);

impl<V> Default for Bounded<V> {
    fn default() -> Self {
        Self(RwLock::default())
    }
}

impl<V: Clone> Bounded<V> {
    fn get(&self, tool: &str) -> Option<V> {
        self.0.read().ok()?.get(tool).cloned()
    }

    fn insert(&self, tool: &str, value: V) {
        let Ok(mut map) = self.0.write() else {
            return;
        };
        if map.len() >= MAX_TOOLS && !map.contains_key(tool) {
            return;
        }
        map.insert(tool.to_string(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_reads() {
        let c = ToolCatalog::default();
        assert!(c.annotations("t").is_none());
        c.record("t", &serde_json::json!({"destructiveHint": true}));
        assert_eq!(
            c.annotations("t").as_deref(),
            Some(r#"{"destructiveHint":true}"#)
        );
    }

    #[test]
    fn records_param_headers() {
        let c = ToolCatalog::default();
        assert!(c.params("t").is_none());
        let schema = serde_json::json!({"properties": {
            "region": {"type": "string", "x-mcp-header": "Region"}
        }});
        c.record_params("t", Some(&schema));
        assert_eq!(c.params("t").unwrap().argument("REGION"), Some("region"));
        c.record_params("plain", None);
        assert!(c.params("plain").unwrap().is_empty());
    }

    #[test]
    fn stops_growing_at_the_bound() {
        let c = ToolCatalog::default();
        for i in 0..MAX_TOOLS {
            c.record_params(&format!("t{i}"), None);
        }
        c.record_params("late", None);
        assert!(c.params("late").is_none());
        // A known tool is still updated.
        let schema = serde_json::json!({"properties": {
            "r": {"type": "string", "x-mcp-header": "R"}
        }});
        c.record_params("t0", Some(&schema));
        assert!(!c.params("t0").unwrap().is_empty());
    }
}
