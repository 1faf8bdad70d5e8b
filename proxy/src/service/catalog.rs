//! What the sidecar has learned about the upstream's tools, taken from
//! `tools/list` answers: their annotations, so that policies can use them
//! on later calls, and their `x-mcp-header` parameters, so that the
//! `Mcp-Param-*` headers of a call can be checked. Bounded, because the
//! upstream names the tools.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use serde_json::value::RawValue;

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

    /// Records a listed tool's annotations, as the server's JSON text.
    pub fn record(&self, tool: &str, annotations: &RawValue) {
        let text = annotations.get();
        self.annotations
            .update(tool, text, |old, new| &**old == *new, Arc::from);
    }

    /// Forgets a tool's annotations: it was listed without any.
    pub fn forget(&self, tool: &str) {
        self.annotations.remove(tool);
    }

    /// The tool's declared `Mcp-Param-*` headers; `None` when no
    /// `tools/list` answer has described the tool (or the catalog was full).
    pub fn params(&self, tool: &str) -> Option<Arc<ParamHeaders>> {
        self.params.get(tool)
    }

    /// Records the `x-mcp-header` annotations of a listed tool's
    /// `inputSchema`. A tool without any is recorded too: its schema is
    /// then known to declare none.
    pub fn record_params(&self, tool: &str, input_schema: Option<&RawValue>) {
        let params = ParamHeaders::from_raw_schema(input_schema);
        self.params
            .update(tool, params, |old, new| **old == *new, Arc::new);
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

    /// Sets `tool`'s entry unless it is `same` already. Every list answer
    /// names every tool again and most are unchanged: those cost a read
    /// lock and a comparison, not a key and a value allocated and freed.
    fn update<T>(
        &self,
        tool: &str,
        new: T,
        same: impl FnOnce(&V, &T) -> bool,
        make: impl FnOnce(T) -> V,
    ) {
        let unchanged = self
            .0
            .read()
            .ok()
            .and_then(|map| map.get(tool).map(|old| same(old, &new)));
        if unchanged != Some(true) {
            self.insert(tool, make(new));
        }
    }

    fn remove(&self, tool: &str) {
        let known = self.0.read().is_ok_and(|map| map.contains_key(tool));
        if known {
            if let Ok(mut map) = self.0.write() {
                map.remove(tool);
            }
        }
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
        let raw = |s: &str| RawValue::from_string(s.to_string()).unwrap();
        c.record("t", &raw(r#"{"destructiveHint": true}"#));
        assert_eq!(
            c.annotations("t").as_deref(),
            Some(r#"{"destructiveHint": true}"#)
        );
        let first = c.annotations("t").unwrap();
        c.record("t", &raw(r#"{"destructiveHint": true}"#));
        // Unchanged: the entry is the one recorded first.
        assert!(Arc::ptr_eq(&first, &c.annotations("t").unwrap()));
        c.record("t", &raw(r#"{"destructiveHint":false}"#));
        assert_eq!(
            c.annotations("t").as_deref(),
            Some(r#"{"destructiveHint":false}"#)
        );
    }

    #[test]
    fn records_param_headers() {
        let c = ToolCatalog::default();
        assert!(c.params("t").is_none());
        let schema = RawValue::from_string(
            r#"{"properties": {"region": {"type": "string", "x-mcp-header": "Region"}}}"#
                .to_string(),
        )
        .unwrap();
        c.record_params("t", Some(&schema));
        assert_eq!(c.params("t").unwrap().argument("REGION"), Some("region"));
        c.record_params("plain", None);
        assert!(c.params("plain").unwrap().is_empty());
        // A tool whose schema stops declaring the header is updated.
        c.record_params("t", None);
        assert!(c.params("t").unwrap().is_empty());
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
        let schema = RawValue::from_string(
            r#"{"properties": {"r": {"type": "string", "x-mcp-header": "R"}}}"#.to_string(),
        )
        .unwrap();
        c.record_params("t0", Some(&schema));
        assert!(!c.params("t0").unwrap().is_empty());
    }
}
