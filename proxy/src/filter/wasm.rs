//! One loaded filter: compiled once, pre-linked once (`FilterPre`), and
//! instantiated under an isolation rule: by default an instance serves
//! only one caller identity (kept warm between that caller's calls), so
//! nothing a filter saw for one caller can reach another's evaluation.

use std::{
    collections::VecDeque,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use wasmtime::Store;

use super::{
    bindings::{types, v0_1, Filter, FilterPre},
    convert,
    engine::FilterEngine,
    host::{FilterShared, HostState},
    kv::KvStore,
    ticker::Ticker,
    FilterError, Hook, OnError,
};
use crate::policy::Mode;

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
    pub isolation: Isolation,
}

/// Which evaluations may share an instance (and so its memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// An instance is reused only for calls of the same caller identity
    /// (SPIFFE ID, JWT claims, or anonymous). The filter parses its
    /// configuration once per instance instead of once per call, which is
    /// most of the cost of a small filter. An instance that faults is
    /// thrown away, and none serves more than `MAX_CALLS` calls.
    #[default]
    Caller,
    /// A fresh instance for every evaluation.
    Call,
}

/// Warm instances kept per filter, across all callers.
const MAX_WARM: usize = 16;
/// Calls one instance serves before it is replaced, which bounds what a
/// leaky filter can accumulate.
const MAX_CALLS: u32 = 10_000;

/// An instance kept for the next call of the same caller.
struct Warm {
    caller: String,
    store: Store<HostState>,
    instance: Instance,
    calls: u32,
}

/// A filter pre-linked against the contract version it was built for.
enum Pre {
    Current(FilterPre<HostState>),
    V0_1(v0_1::FilterPre<HostState>),
}

impl Pre {
    fn engine(&self) -> &wasmtime::Engine {
        match self {
            Self::Current(p) => p.engine(),
            Self::V0_1(p) => p.engine(),
        }
    }

    fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Instance> {
        Ok(match self {
            Self::Current(p) => Instance::Current(p.instantiate(store)?),
            Self::V0_1(p) => Instance::V0_1(p.instantiate(store)?),
        })
    }
}

/// One instance, spoken to in the current contract's types: a 0.1 filter
/// gets the call translated down and its answer read back
/// (`convert::v0_1`).
enum Instance {
    Current(Filter),
    V0_1(v0_1::Filter),
}

impl Instance {
    fn validate_config(
        &self,
        s: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Self::Current(f) => f.call_validate_config(s, config),
            Self::V0_1(f) => f.call_validate_config(s, config),
        }
    }

    fn on_request(
        &self,
        s: &mut Store<HostState>,
        config: &str,
        call: &types::Call,
    ) -> wasmtime::Result<types::Decision> {
        match self {
            Self::Current(f) => f.call_on_request(s, config, call),
            Self::V0_1(f) => f
                .call_on_request(s, config, &convert::v0_1::call(call))
                .map(convert::v0_1::decision),
        }
    }

    fn on_result(
        &self,
        s: &mut Store<HostState>,
        config: &str,
        call: &types::Call,
        result: &str,
    ) -> wasmtime::Result<types::ResultDecision> {
        match self {
            Self::Current(f) => f.call_on_result(s, config, call, result),
            Self::V0_1(f) => f
                .call_on_result(s, config, &convert::v0_1::call(call), result)
                .map(convert::v0_1::result_decision),
        }
    }

    fn on_list(
        &self,
        s: &mut Store<HostState>,
        config: &str,
        principal: &types::Principal,
        kind: types::ListKind,
        items: &[types::ListItem],
    ) -> wasmtime::Result<Vec<bool>> {
        match self {
            Self::Current(f) => f.call_on_list(s, config, principal, kind, items),
            Self::V0_1(f) => f.call_on_list(
                s,
                config,
                &convert::v0_1::caller(principal),
                convert::v0_1::list_kind(kind),
                &convert::v0_1::list_items(items),
            ),
        }
    }
}

pub struct WasmFilter {
    pub name: String,
    /// The engine whose epoch clock this filter's deadlines count in.
    engine: Arc<FilterEngine>,
    pub on_error: OnError,
    /// A shadow filter's decisions are reported, never applied.
    pub mode: Mode,
    pub hooks: Vec<Hook>,
    pre: Pre,
    config: String,
    shared: Arc<FilterShared>,
    limits: Limits,
    warm: Mutex<VecDeque<Warm>>,
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
        // Native code only where the operator's config says so.
        let precompiled = path.extension().is_some_and(|e| e == "cwasm");
        let component = engine.component(&bytes, precompiled).map_err(refuse)?;
        let linked = engine
            .linker_for(&component)
            .and_then(|linker| linker.instantiate_pre(&component));
        let instance_pre = linked.map_err(|e| {
            refuse(format!(
                "imports match neither portcullis:policy@0.2.0 nor @0.1.0: {e:#}"
            ))
        })?;
        // The exports' types say which contract the component was built
        // against; the two differ in `call` and `on-list`, so no component
        // can match both.
        let pre = match FilterPre::new(instance_pre.clone()) {
            Ok(pre) => Pre::Current(pre),
            Err(current) => match v0_1::FilterPre::new(instance_pre) {
                Ok(pre) => Pre::V0_1(pre),
                Err(_) => {
                    return Err(refuse(format!(
                        "exports match neither portcullis:policy@0.2.0 nor @0.1.0: {current:#}"
                    )))
                }
            },
        };
        let shared = Arc::new(FilterShared {
            name: name.to_string(),
            kv: KvStore::default(),
            epoch: Instant::now(),
        });
        let filter = Self {
            name: name.to_string(),
            engine: engine.clone(),
            on_error,
            mode: Mode::Enforce,
            hooks,
            pre,
            config,
            shared,
            limits,
            warm: Mutex::new(VecDeque::new()),
        };
        filter.validate_config().map_err(refuse)?;
        Ok(filter)
    }

    fn validate_config(&self) -> Result<(), String> {
        let verdict = self.run(None, |f, s, cfg| f.validate_config(s, cfg));
        match verdict {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(format!("configuration refused: {why}")),
            Err(fault) => Err(format!("validate-config {fault}")),
        }
    }

    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    pub fn handles(&self, hook: Hook) -> bool {
        self.hooks.contains(&hook)
    }

    /// `key` names the caller ([`crate::identity::Principal::key`]): a
    /// warm instance serves only calls with the same key.
    pub fn on_request(&self, call: &types::Call, key: &str) -> Result<types::Decision, Fault> {
        let decision = self.run(Some(key), |f, s, cfg| f.on_request(s, cfg, call))?;
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
        key: &str,
    ) -> Result<types::ResultDecision, Fault> {
        let decision = self.run(Some(key), |f, s, cfg| f.on_result(s, cfg, call, result))?;
        match &decision {
            types::ResultDecision::Deny(d) => self.bounded(d.message.len())?,
            types::ResultDecision::Replace(r) => self.bounded(r.len())?,
            types::ResultDecision::Allow => {}
        }
        Ok(decision)
    }

    pub fn on_list(
        &self,
        principal: &types::Principal,
        key: &str,
        kind: types::ListKind,
        items: &[types::ListItem],
    ) -> Result<Vec<bool>, Fault> {
        self.run(Some(key), |f, s, cfg| {
            f.on_list(s, cfg, principal, kind, items)
        })
    }

    fn bounded(&self, len: usize) -> Result<(), Fault> {
        if len > self.limits.max_output {
            return Err(Fault::Oversize(len, self.limits.max_output));
        }
        Ok(())
    }

    /// One evaluation under the deadline and memory limit, in a warm
    /// instance of the same caller if there is one, else a fresh one.
    /// `key: None` always gets a fresh instance and never keeps it.
    fn run<R>(
        &self,
        key: Option<&str>,
        f: impl FnOnce(&Instance, &mut Store<HostState>, &str) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        let _clock = self.engine.evaluating();
        let key = key.filter(|_| self.limits.isolation == Isolation::Caller);
        let mut warm = match key.and_then(|k| self.take_warm(k)) {
            Some(w) => w,
            None => self.instantiate_or_evict(key.unwrap_or_default().to_string())?,
        };
        // The deadline counts from now, whether the instance is new or not.
        warm.store
            .set_epoch_deadline(Ticker::ticks(self.limits.timeout));
        // On a fault the instance is dropped here: its state is suspect.
        let out = f(&warm.instance, &mut warm.store, &self.config)
            .map_err(|e| self.classify(&e, false))?;
        warm.calls += 1;
        if key.is_some() && warm.calls < MAX_CALLS {
            self.keep_warm(warm);
        }
        Ok(out)
    }

    /// Warm instances hold pool slots; when the pool is full, they are
    /// given back before a caller is refused an instance.
    fn instantiate_or_evict(&self, caller: String) -> Result<Warm, Fault> {
        match self.instantiate(caller.clone()) {
            Err(Fault::Instantiate(_)) if self.evict_all() > 0 => self.instantiate(caller),
            other => other,
        }
    }

    fn evict_all(&self) -> usize {
        self.warm
            .lock()
            .map(|mut q| q.drain(..).count())
            .unwrap_or(0)
    }

    fn instantiate(&self, caller: String) -> Result<Warm, Fault> {
        let mut store = Store::new(
            self.pre.engine(),
            HostState::new(self.shared.clone(), self.limits.memory),
        );
        store.limiter(|s| s.limits());
        store.epoch_deadline_trap();
        store.set_epoch_deadline(Ticker::ticks(self.limits.timeout));
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.classify(&e, true))?;
        Ok(Warm {
            caller,
            store,
            instance,
            calls: 0,
        })
    }

    /// A poisoned lock only means another evaluation panicked; the queue
    /// is then skipped (fresh instances) rather than trusted.
    fn take_warm(&self, caller: &str) -> Option<Warm> {
        let mut q = self.warm.lock().ok()?;
        let i = q.iter().position(|w| w.caller == caller)?;
        q.remove(i)
    }

    fn keep_warm(&self, w: Warm) {
        if let Ok(mut q) = self.warm.lock() {
            q.push_back(w);
            // The least recently used instance makes room.
            while q.len() > MAX_WARM {
                q.pop_front();
            }
        }
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
