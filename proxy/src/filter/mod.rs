//! The policy host: WASM filters written against `portcullis:policy`,
//! run by wasmtime with instances isolated per caller (see
//! [`Isolation`]), chained after the static rules, and reloaded when their
//! files or the config change.

mod bindings;
mod chain;
mod convert;
mod engine;
mod host;
mod kv;
pub mod reload;
mod ticker;
mod wasm;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::Deserialize;

pub use self::{
    chain::FilterChain,
    engine::{EngineOptions, FilterEngine},
    wasm::{Fault, Isolation, Limits, WasmFilter},
};
use crate::{config::Config, metrics::Metrics};

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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// Shown in denials as `filter:<name>`, in logs and metrics.
    pub name: String,
    /// The `.wasm` component; relative paths are relative to the config file.
    pub path: PathBuf,
    /// Handed to the filter as JSON.
    #[serde(default)]
    pub config: serde_json::Value,
    #[serde(default)]
    pub on_error: OnError,
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Where compiled filters are cached, by content hash. Unset: no cache.
    pub cache_dir: Option<PathBuf>,
    /// How often filter files and the config are checked for changes.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Filter instances that may exist at once.
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
    pub fn resolved_path(&self, base: Option<&Path>) -> PathBuf {
        match base {
            Some(dir) if self.path.is_relative() => dir.join(&self.path),
            _ => self.path.clone(),
        }
    }

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

impl EngineOptions {
    pub fn from_config(config: &Config) -> Self {
        Self {
            cache_dir: config
                .filter_engine
                .cache_dir
                .as_ref()
                .map(|d| match &config.base_dir {
                    Some(base) if d.is_relative() => base.join(d),
                    _ => d.clone(),
                }),
            max_instances: config.filter_engine.max_instances,
            max_memory: config
                .filters
                .iter()
                .map(|f| f.memory_limit_bytes)
                .max()
                .unwrap_or(default_memory()),
        }
    }
}

/// Loads every filter of `config` and builds the chain. Compiling happens
/// here, so callers on the request path must not call this.
pub fn build_chain(
    engine: &Arc<FilterEngine>,
    config: &Config,
    metrics: &Metrics,
) -> Result<FilterChain, FilterError> {
    let filters = config
        .filters
        .iter()
        .map(|spec| load(engine, spec, config.base_dir.as_deref()).map(Arc::new))
        .collect::<Result<Vec<_>, _>>();
    // Compiling a component (a cache miss) takes tens of MiB of heap that
    // is freed at once but that the allocator would otherwise keep for
    // the life of the process.
    crate::memory::release_free_heap();
    let filters = filters?;
    Ok(FilterChain::new(
        config.policy.clone(),
        filters,
        metrics.clone(),
        config.limits.max_json_depth,
    ))
}

fn load(
    engine: &Arc<FilterEngine>,
    spec: &FilterSpec,
    base: Option<&Path>,
) -> Result<WasmFilter, FilterError> {
    let limits = Limits {
        timeout: spec.timeout,
        memory: spec.memory_limit_bytes,
        max_output: spec.max_output_bytes,
        isolation: spec.isolation,
    };
    let config = spec.config.to_string();
    let config = if spec.config.is_null() {
        "{}".to_string()
    } else {
        config
    };
    WasmFilter::load(
        engine,
        &spec.name,
        &spec.resolved_path(base),
        config,
        limits,
        spec.on_error,
        spec.hooks.clone(),
    )
}
