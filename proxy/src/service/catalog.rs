//! What the sidecar has learned about the upstream's tools: their
//! annotations, taken from `tools/list` answers, so that policies can use
//! them on later calls. Bounded, because the upstream names the tools.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

const MAX_TOOLS: usize = 4096;

#[derive(Default)]
pub struct ToolCatalog {
    annotations: RwLock<HashMap<String, Arc<str>>>,
}

impl ToolCatalog {
    pub fn annotations(&self, tool: &str) -> Option<Arc<str>> {
        self.annotations.read().ok()?.get(tool).cloned()
    }

    pub fn record(&self, tool: &str, annotations: &serde_json::Value) {
        let Ok(mut map) = self.annotations.write() else {
            return;
        };
        if map.len() >= MAX_TOOLS && !map.contains_key(tool) {
            return;
        }
        map.insert(tool.to_string(), Arc::from(annotations.to_string()));
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
}
