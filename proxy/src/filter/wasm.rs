//! One loaded filter: compiled once, pre-linked once (`FilterPre`), and
//! instantiated fresh for every evaluation so that nothing a filter saw for
//! one caller can leak to the next.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use wasmtime::{component::Component, Store};

use super::{
    bindings::{types, Filter, FilterPre},
    engine::{FilterEngine, TICK},
    host::{FilterShared, HostState},
    kv::KvStore,
    FilterError, Hook, OnError,
};

/// Why an evaluation produced no decision.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Fault {
    #[error("exceeded its {0:?} deadline")]
    Timeout(Duration),
    #[error("exceeded its memory limit")]
    Memory,
    #[error("trapped: {0}")]
    Trap(String),
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
    #[error("returned {0} bytes, more than the {1} allowed")]
    Oversize(usize, usize),
    #[error("returned invalid JSON: {0}")]
    BadJson(String),
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Memory => "memory",
            Self::Trap(_) => "trap",
            Self::Instantiate(_) => "instantiate",
            Self::Oversize(..) => "oversize",
            Self::BadJson(_) => "bad_json",
        }
    }
}

/// How one filter is to be run.
#[derive(Debug, Clone)]
pub struct Limits {
    pub timeout: Duration,
    pub memory: usize,
    /// The longest text (message, arguments, result) accepted back.
    pub max_output: usize,
}

pub struct WasmFilter {
    pub name: String,
    /// Keeps the engine's epoch ticker running while this filter exists:
    /// without it, deadlines would never fire.
    _engine: Arc<FilterEngine>,
    pub on_error: OnError,
    pub hooks: Vec<Hook>,
    pre: FilterPre<HostState>,
    config: String,
    shared: Arc<FilterShared>,
    limits: Limits,
}

impl WasmFilter {
    /// Compiles (or fetches from the cache), links, and checks the filter's
    /// exports and configuration. Any failure refuses the load.
    pub fn load(
        engine: &Arc<FilterEngine>,
        name: &str,
        path: &Path,
        config: String,
        limits: Limits,
        on_error: OnError,
        hooks: Vec<Hook>,
    ) -> Result<Self, FilterError> {
        let refuse = |reason: String| FilterError::Load {
            filter: name.to_string(),
            reason,
        };
        let bytes = std::fs::read(path)
            .map_err(|e| refuse(format!("cannot read {}: {e}", path.display())))?;
        let component = Component::new(engine.engine(), &bytes)
            .map_err(|e| refuse(format!("not a valid component: {e:#}")))?;
        let linked = engine
            .linker_for(&component)
            .and_then(|linker| linker.instantiate_pre(&component));
        let instance_pre = linked.map_err(|e| {
            refuse(format!(
                "imports do not match portcullis:policy@0.1.0: {e:#}"
            ))
        })?;
        let pre = FilterPre::new(instance_pre).map_err(|e| {
            refuse(format!(
                "exports do not match portcullis:policy@0.1.0: {e:#}"
            ))
        })?;
        let shared = Arc::new(FilterShared {
            name: name.to_string(),
            kv: KvStore::default(),
            epoch: Instant::now(),
        });
        let filter = Self {
            name: name.to_string(),
            _engine: engine.clone(),
            on_error,
            hooks,
            pre,
            config,
            shared,
            limits,
        };
        filter.validate_config().map_err(refuse)?;
        Ok(filter)
    }

    fn validate_config(&self) -> Result<(), String> {
        let verdict = self.run(|f, s, cfg| f.call_validate_config(s, cfg));
        match verdict {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(format!("configuration refused: {why}")),
            Err(fault) => Err(format!("validate-config {fault}")),
        }
    }

    pub fn handles(&self, hook: Hook) -> bool {
        self.hooks.contains(&hook)
    }

    pub fn on_request(&self, call: &types::Call) -> Result<types::Decision, Fault> {
        let decision = self.run(|f, s, cfg| f.call_on_request(s, cfg, call))?;
        match &decision {
            types::Decision::Deny(d) => self.bounded(d.message.len())?,
            types::Decision::RewriteArguments(a) => self.bounded(a.len())?,
            types::Decision::Allow => {}
        }
        Ok(decision)
    }

    pub fn on_result(
        &self,
        call: &types::Call,
        result: &str,
    ) -> Result<types::ResultDecision, Fault> {
        let decision = self.run(|f, s, cfg| f.call_on_result(s, cfg, call, result))?;
        match &decision {
            types::ResultDecision::Deny(d) => self.bounded(d.message.len())?,
            types::ResultDecision::Replace(r) => self.bounded(r.len())?,
            types::ResultDecision::Allow => {}
        }
        Ok(decision)
    }

    pub fn on_list(
        &self,
        caller: &types::Caller,
        kind: types::ListKind,
        items: &[types::ListItem],
    ) -> Result<Vec<bool>, Fault> {
        self.run(|f, s, cfg| f.call_on_list(s, cfg, caller, kind, items))
    }

    fn bounded(&self, len: usize) -> Result<(), Fault> {
        if len > self.limits.max_output {
            return Err(Fault::Oversize(len, self.limits.max_output));
        }
        Ok(())
    }

    /// One evaluation in a fresh store and instance, under the deadline and
    /// memory limit.
    fn run<R>(
        &self,
        f: impl FnOnce(&Filter, &mut Store<HostState>, &str) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        let mut store = Store::new(
            self.pre.engine(),
            HostState::new(self.shared.clone(), self.limits.memory),
        );
        store.limiter(|s| s.limits());
        let ticks = (self.limits.timeout.as_micros() / TICK.as_micros()).max(1);
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        store.epoch_deadline_trap();
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.classify(&e, true))?;
        f(&instance, &mut store, &self.config).map_err(|e| self.classify(&e, false))
    }

    fn classify(&self, e: &wasmtime::Error, instantiating: bool) -> Fault {
        if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
            if *trap == wasmtime::Trap::Interrupt {
                return Fault::Timeout(self.limits.timeout);
            }
        }
        let text = format!("{e:#}");
        if text.contains("memory") && (text.contains("grow") || text.contains("limit")) {
            return Fault::Memory;
        }
        if instantiating {
            return Fault::Instantiate(text);
        }
        Fault::Trap(text)
    }
}
