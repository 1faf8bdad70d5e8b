//! The policy host: WASM filters written against `portcullis:policy`,
//! run by wasmtime with instances isolated per caller (see
//! [`Isolation`]), chained after the static rules, and reloaded when their
//! files or the config change.

pub(crate) mod bindings;
pub(crate) mod chain;
pub mod compile;
mod convert;
mod decisions;
mod engine;
mod host;
mod kv;
mod metrics;
mod ticker;
mod wasm;

use std::{path::PathBuf, sync::Arc, time::Duration};

use serde::Deserialize;

pub use self::{
    chain::FilterChain,
    engine::{EngineOptions, FilterEngine, MemoryLayout},
    metrics::FilterMetrics,
    wasm::{Fault, Isolation, Limits, WasmFilter},
};
use crate::policy::{Mode, StaticRules};

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("filter engine: {0}")]
    Engine(String),
    #[error("filter {filter:?} refused: {reason}")]
    Load { filter: String, reason: String },
}

/// What a filter does when it fails (trap, deadline, memory, bad output).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Deny the message (fail closed). The default.
    #[default]
    Deny,
    /// Let it through with a loud error log (fail open).
    Allow,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Request,
    Result,
    List,
}

fn all_hooks() -> Vec<Hook> {
    vec![Hook::Request, Hook::Result, Hook::List]
}

fn default_timeout() -> Duration {
    Duration::from_millis(10)
}

fn default_memory() -> usize {
    32 << 20
}

fn default_max_output() -> usize {
    1 << 20
}

/// One filter in the config, in chain order.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// Shown in denials as `filter:<name>`, in logs and metrics.
    pub name: String,
    /// The `.wasm` component; a relative path is made relative to the
    /// config file's folder when the config is loaded.
    pub path: PathBuf,
    /// Handed to the filter as JSON.
    #[serde(default)]
    pub config: serde_json::Value,
    /// Top-level keys of `config` read from files when the filter loads
    /// (and reloaded when a file changes): a `.json` file is parsed as
    /// JSON, any other file is a string (a Cedar or Rego policy, say).
    /// Relative to the config file's folder.
    #[serde(default)]
    pub config_files: std::collections::BTreeMap<String, PathBuf>,
    #[serde(default)]
    pub on_error: OnError,
    /// `shadow`: evaluated on every message that reaches it, its would-be
    /// denials, rewrites, hidden items and faults logged and counted, but
    /// never applied.
    #[serde(default)]
    pub mode: Mode,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_memory")]
    pub memory_limit_bytes: usize,
    /// The longest message, argument or result text accepted back.
    #[serde(default = "default_max_output")]
    pub max_output_bytes: usize,
    /// Which hooks to run; fewer hooks, fewer evaluations.
    #[serde(default = "all_hooks")]
    pub hooks: Vec<Hook>,
    /// `caller` (default): an instance is kept warm for the same caller
    /// identity only. `call`: a fresh instance for every evaluation.
    #[serde(default)]
    pub isolation: Isolation,
    /// For a filter that declares what its request decision depends on
    /// (tool-rbac does), reuse a decision for a call equal in those parts
    /// instead of evaluating again. `false` evaluates every call; the
    /// filter still sees only what it declared.
    #[serde(default = "yes")]
    pub reuse_decisions: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Where compiled filters are cached, by content hash. Unset: no cache.
    pub cache_dir: Option<PathBuf>,
    /// How often filter files and the config are checked for changes.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Filter instances that may exist at once. Half of them may be kept
    /// warm (`isolation: caller`), shared equally among those filters;
    /// raise it when more distinct callers should find a warm instance.
    pub max_instances: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            reload_interval: Duration::from_secs(1),
            max_instances: 256,
        }
    }
}

impl FilterSpec {
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("name must not be empty".into());
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(5) {
            return Err(format!("{}: timeout must be between 1ms and 5s", self.name));
        }
        if !(1 << 20..=1 << 30).contains(&self.memory_limit_bytes) {
            return Err(format!(
                "{}: memory_limit_bytes must be between 1 MiB and 1 GiB",
                self.name
            ));
        }
        Ok(())
    }
}

/// A filter's config may hold credentials (an API key for a lookup, say),
/// so it is never printed: only its size.
impl std::fmt::Debug for FilterSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterSpec")
            .field("name", &self.name)
            .field("path", &self.path)
            .field(
                "config",
                &format_args!("<redacted, {} bytes>", self.config.to_string().len()),
            )
            .field("config_files", &self.config_files)
            .field("on_error", &self.on_error)
            .field("mode", &self.mode)
            .field("timeout", &self.timeout)
            .field("memory_limit_bytes", &self.memory_limit_bytes)
            .field("max_output_bytes", &self.max_output_bytes)
            .field("hooks", &self.hooks)
            .field("isolation", &self.isolation)
            .field("reuse_decisions", &self.reuse_decisions)
            .finish()
    }
}

impl EngineOptions {
    pub fn new(engine: &EngineConfig, filters: &[FilterSpec]) -> Self {
        Self {
            cache_dir: engine.cache_dir.clone(),
            max_instances: engine.max_instances,
            max_memory: filters
                .iter()
                .map(|f| f.memory_limit_bytes)
                .max()
                .unwrap_or(default_memory()),
        }
    }
}

/// What a chain is built from: the config's `policy`, `filters` and JSON
/// depth limit.
#[derive(Debug, Clone, Copy)]
pub struct ChainSpec<'a> {
    pub rules: &'a StaticRules,
    pub filters: &'a [FilterSpec],
    pub max_json_depth: usize,
}

/// Loads every filter of `spec` and builds the chain. Compiling happens
/// here, so callers on the request path must not call this.
/// Filters loaded (and, cold, compiled) side by side.
const LOAD_AT_ONCE: usize = 2;

pub fn build_chain(
    engine: &Arc<FilterEngine>,
    spec: &ChainSpec<'_>,
    metrics: &FilterMetrics,
) -> Result<FilterChain, FilterError> {
    // The warm pool is shared out among the filters that keep instances.
    let keeping = spec
        .filters
        .iter()
        .filter(|f| f.isolation == Isolation::Caller)
        .count();
    let warm = wasm::warm_cap(engine.max_instances(), keeping);
    // Filters load two at a time: a cold start compiles each in a child
    // process, and two of them run side by side on two cores without
    // stacking every compiler's memory in the pod at once.
    let filters = spec
        .filters
        .chunks(LOAD_AT_ONCE)
        .flat_map(|group| {
            std::thread::scope(|scope| {
                let loading: Vec<_> = group
                    .iter()
                    .map(|f| {
                        scope.spawn(move || {
                            load(engine, f).map(|w| {
                                let counters = metrics.instance_counters(&w.name);
                                Arc::new(w.with_warm_cap(warm).with_instance_counters(counters))
                            })
                        })
                    })
                    .collect();
                // Every thread is joined, even after an error.
                loading
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(FilterError::Engine(
                                "a filter's loading thread panicked".into(),
                            ))
                        })
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect::<Result<Vec<_>, _>>();
    // Compiling a component (a cache miss) takes tens of MiB of heap that
    // is freed at once but that the allocator would otherwise keep for
    // the life of the process.
    crate::memory::release_free_heap();
    let filters = filters?;
    Ok(FilterChain::new(
        spec.rules.clone(),
        filters,
        metrics.clone(),
        spec.max_json_depth,
    ))
}

/// The JSON handed to the filter: `config`, with each of `config_files`
/// read in under its key. A key given both ways is refused: which one
/// wins would be a guess.
fn filter_config(spec: &FilterSpec) -> Result<String, String> {
    if spec.config_files.is_empty() {
        return Ok(if spec.config.is_null() {
            "{}".to_string()
        } else {
            spec.config.to_string()
        });
    }
    let mut object = match &spec.config {
        serde_json::Value::Null => serde_json::Map::new(),
        serde_json::Value::Object(map) => map.clone(),
        _ => return Err("config must be an object to take config_files".into()),
    };
    for (key, path) in &spec.config_files {
        if object.contains_key(key) {
            return Err(format!("{key} is given both in config and in config_files"));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("config_files.{key}: {}: {e}", path.display()))?;
        let value = if path.extension().is_some_and(|x| x == "json") {
            let bad = |e: String| format!("config_files.{key}: {}: {e}", path.display());
            // Strict JSON, as everywhere else: duplicate keys are refused,
            // not resolved one way here and another in the filter.
            crate::mcp::json::validate(text.as_bytes(), 128).map_err(|e| bad(e.to_string()))?;
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?
        } else {
            serde_json::Value::String(text)
        };
        object.insert(key.clone(), value);
    }
    Ok(serde_json::Value::Object(object).to_string())
}

fn load(engine: &Arc<FilterEngine>, spec: &FilterSpec) -> Result<WasmFilter, FilterError> {
    let limits = Limits {
        timeout: spec.timeout,
        memory: spec.memory_limit_bytes,
        max_output: spec.max_output_bytes,
        isolation: spec.isolation,
    };
    let config = filter_config(spec).map_err(|reason| FilterError::Load {
        filter: spec.name.clone(),
        reason,
    })?;
    WasmFilter::load(
        engine,
        &spec.name,
        &spec.path,
        config,
        limits,
        spec.on_error,
        spec.hooks.clone(),
    )
    .map(|f| {
        f.with_mode(spec.mode)
            .with_decision_reuse(spec.reuse_decisions)
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn spec(config: serde_json::Value, files: &[(&str, &Path)]) -> FilterSpec {
        let yaml = format!("name: f\npath: f.wasm\nconfig: {config}\n");
        let mut spec: FilterSpec = serde_yaml_ng::from_str(&yaml).unwrap();
        spec.config_files = files
            .iter()
            .map(|(k, p)| (k.to_string(), p.to_path_buf()))
            .collect();
        spec
    }

    #[test]
    fn config_files_are_read_in_under_their_keys() {
        let dir = std::env::temp_dir().join(format!("pcx-config-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let policy = dir.join("p.cedar");
        let entities = dir.join("e.json");
        let twice = dir.join("twice.json");
        std::fs::write(&policy, "permit (principal, action, resource);").unwrap();
        std::fs::write(&entities, r#"[{"uid": {"type": "G", "id": "a"}}]"#).unwrap();
        std::fs::write(&twice, r#"{"a": 1, "a": 2}"#).unwrap();

        let s = spec(
            serde_json::json!({"x": 1}),
            &[("policies", &policy), ("entities", &entities)],
        );
        let got: serde_json::Value = serde_json::from_str(&filter_config(&s).unwrap()).unwrap();
        assert_eq!(got["x"], 1);
        assert_eq!(got["policies"], "permit (principal, action, resource);");
        assert_eq!(got["entities"][0]["uid"]["id"], "a");

        let both = spec(
            serde_json::json!({"policies": ""}),
            &[("policies", &policy)],
        );
        assert!(filter_config(&both).unwrap_err().contains("both"));
        let not_object = spec(serde_json::json!([1]), &[("policies", &policy)]);
        assert!(filter_config(&not_object).is_err());
        let missing = spec(serde_json::Value::Null, &[("p", &dir.join("nope"))]);
        assert!(filter_config(&missing).unwrap_err().contains("nope"));
        let dup = spec(serde_json::Value::Null, &[("d", &twice)]);
        assert!(filter_config(&dup).is_err(), "duplicate keys are refused");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
