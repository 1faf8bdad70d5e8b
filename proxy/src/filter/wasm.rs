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
    bindings::{types, v0_1, v0_2, Filter, FilterPre},
    convert,
    decisions::{DecidesOn, DecisionCache},
    engine::FilterEngine,
    host::{FilterShared, HostState},
    kv::KvStore,
    metrics::InstanceCounters,
    ticker, FilterError, Hook, OnError,
};
use crate::policy::{Mode, Request};

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
    /// A new instance refused the configuration the filter was loaded
    /// with (0.3's `configure`).
    #[error("refused its configuration: {0}")]
    Config(String),
    /// A new instance's `configure` (0.3) did not finish: it ran past the
    /// deadline, trapped or ran out of memory. Like a refusal, it denies
    /// whatever `on_error` says: an instance that could not be configured
    /// is not a filter breaking on some input, and failing open would pass
    /// the call unchecked. (A fault while instantiating, before
    /// `configure`, stays under `on_error`, as before.)
    #[error("could not be configured: {0}")]
    Unconfigured(Box<Fault>),
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
            Self::Config(_) => "config",
            // Counted as what happened (a configure that loops is a
            // timeout); `chain` denies it whatever `on_error` says.
            Self::Unconfigured(f) => f.kind(),
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
    /// (SPIFFE ID, JWT claims, or anonymous). A filter that declares what
    /// it decides on without the principal is shown no principal, so its
    /// instances are shared among callers (`decisions::DecidesOn`); its
    /// reused decisions are still kept per caller. The filter parses its
    /// configuration once per instance instead of once per call, which is
    /// most of the cost of a small filter. An instance that faults is
    /// thrown away, and none serves more than `MAX_CALLS` calls.
    #[default]
    Caller,
    /// A fresh instance for every evaluation.
    Call,
}

/// Warm instances kept per filter, across all callers, until the chain
/// sizes the pool ([`WasmFilter::with_warm_cap`], from [`warm_cap`]).
const DEFAULT_WARM: usize = 16;

/// How many warm instances each of `filters` caller-isolated filters may
/// keep: half the engine's instance slots, shared equally. The other half
/// is headroom for what is not warm: the instance of every evaluation that
/// misses (one per thread evaluating), `isolation: call` filters, and a
/// reload, whose new chain instantiates while the old chain's warm
/// instances live on until its last call ends. Without that headroom a
/// miss could find the pool full and have to evict a whole filter's warm
/// instances to get a slot. At least one, so a lone caller stays warm.
pub fn warm_cap(max_instances: u32, filters: usize) -> usize {
    let half = usize::try_from(max_instances / 2).unwrap_or(usize::MAX);
    (half / filters.max(1)).max(1)
}
/// Calls one instance serves before it is replaced, which bounds what a
/// leaky filter can accumulate.
const MAX_CALLS: u32 = 10_000;

/// How many instances the configuration check at load may try before a
/// deadline refuses the load (see `validate_config`).
const CHECK_TRIES: u32 = 3;

/// How long a warm instance must have been idle before a new caller's
/// instance may take its place in a full pool. Evicting an instance costs
/// about as much again as the fresh instance that replaces it: dropping it
/// resets its pool slot (a page-table scan, then a copy over every page it
/// dirtied), and by then those pages are out of the cache. With more
/// callers than the pool holds, replacing the least recently used one on
/// every miss paid that on each miss (a miss cost about twice a fresh
/// instance under `isolation: call`) and, with callers spread evenly, got
/// no more hits than keeping the pool as it is. So a newcomer's instance
/// is dropped after its call instead, still hot, unless the least
/// recently used instance's caller has been away this long; a caller that
/// leaves gives its place up after that, and `MAX_CALLS` retires
/// instances anyway.
const EVICT_IDLE: Duration = Duration::from_secs(1);

/// An instance kept for the next call of the same caller.
struct Warm<T> {
    caller: String,
    /// `caller`'s hash: the pool is scanned for a caller on every call, and
    /// SPIFFE IDs share long prefixes, so the scan compares hashes first.
    hash: u64,
    /// When the evaluation that last used it started. The clock is read
    /// once per evaluation, for its deadline and for this; an evaluation
    /// ends within its timeout (milliseconds), so this is early by at most
    /// that, which is noise against [`EVICT_IDLE`].
    idle_since: Instant,
    live: T,
}

/// A filter's instance and what it has served.
struct Live {
    store: Store<HostState>,
    instance: Instance,
    calls: u32,
}

/// Takes `caller`'s warm instance out of the pool, if it has one: only
/// ever an instance of that same caller.
fn take<T>(pool: &mut VecDeque<Warm<T>>, key: InstanceKey<'_>, hash: u64) -> Option<Warm<T>> {
    // From the most recently used end: a caller that is back soon is
    // found sooner.
    let i = pool
        .iter()
        .rposition(|w| w.hash == hash && key.matches(&w.caller))?;
    pool.remove(i)
}

/// Puts `w` back as the most recently used, within `cap` (see
/// [`EVICT_IDLE`]). Returns the instance that is not kept, the evicted one
/// or `w` itself, for the caller to drop once the pool's lock is released.
fn keep<T>(
    pool: &mut VecDeque<Warm<T>>,
    mut w: Warm<T>,
    cap: usize,
    now: Instant,
) -> Option<Warm<T>> {
    w.idle_since = now;
    if pool.len() < cap {
        pool.push_back(w);
        return None;
    }
    let lru_away = pool
        .front()
        .is_some_and(|lru| now.saturating_duration_since(lru.idle_since) >= EVICT_IDLE);
    if !lru_away {
        return Some(w);
    }
    let evicted = pool.pop_front();
    pool.push_back(w);
    evicted
}

/// A filter pre-linked against the contract version it was built for.
enum Pre {
    Current(FilterPre<HostState>),
    V0_2(v0_2::FilterPre<HostState>),
    V0_1(v0_1::FilterPre<HostState>),
}

impl Pre {
    /// The contract `pre`'s exports were built against. Their types say
    /// which: the three differ in `call` and in the hooks' parameters, so
    /// no component can match two.
    fn of(pre: wasmtime::component::InstancePre<HostState>) -> Result<Self, String> {
        let current = match FilterPre::new(pre.clone()) {
            Ok(pre) => return Ok(Self::Current(pre)),
            Err(e) => e,
        };
        if let Ok(pre) = v0_2::FilterPre::new(pre.clone()) {
            return Ok(Self::V0_2(pre));
        }
        if let Ok(pre) = v0_1::FilterPre::new(pre) {
            return Ok(Self::V0_1(pre));
        }
        Err(format!(
            "exports match none of portcullis:policy@0.3.0, @0.2.0 or @0.1.0: {current:#}"
        ))
    }

    fn engine(&self) -> &wasmtime::Engine {
        match self {
            Self::Current(p) => p.engine(),
            Self::V0_2(p) => p.engine(),
            Self::V0_1(p) => p.engine(),
        }
    }

    fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Instance> {
        Ok(match self {
            Self::Current(p) => Instance::Current(p.instantiate(store)?),
            Self::V0_2(p) => Instance::V0_2(p.instantiate(store)?),
            Self::V0_1(p) => Instance::V0_1(p.instantiate(store)?),
        })
    }
}

/// One instance, spoken to in the current contract's types: a filter of a
/// frozen contract is handed the configuration with every call, gets the
/// call translated down and its answer read back (`convert::v0_2`,
/// `convert::v0_1`).
enum Instance {
    Current(Filter),
    V0_2(v0_2::Filter),
    V0_1(v0_1::Filter),
}

impl Instance {
    /// Hands a 0.3 instance its configuration, once; checks it for the
    /// frozen contracts (called then only when the filter is loaded, as
    /// they are handed it with every call).
    fn configure(
        &self,
        s: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Self::Current(f) => f.call_configure(s, config),
            Self::V0_2(f) => f.call_validate_config(s, config),
            Self::V0_1(f) => f.call_validate_config(s, config),
        }
    }

    fn on_request(
        &self,
        s: &mut Store<HostState>,
        config: &str,
        call: &types::Call<'_>,
    ) -> wasmtime::Result<types::Decision> {
        match self {
            Self::Current(f) => f.call_on_request(s, call.clone()),
            Self::V0_2(f) => f
                .call_on_request(s, config, &convert::v0_2::call(call))
                .map(convert::v0_2::decision),
            Self::V0_1(f) => f
                .call_on_request(s, config, &convert::v0_1::call(call))
                .map(convert::v0_1::decision),
        }
    }

    fn on_result(
        &self,
        s: &mut Store<HostState>,
        config: &str,
        call: &types::Call<'_>,
        result: &str,
    ) -> wasmtime::Result<types::ResultDecision> {
        match self {
            Self::Current(f) => f.call_on_result(s, call.clone(), result),
            Self::V0_2(f) => f
                .call_on_result(s, config, &convert::v0_2::call(call), result)
                .map(convert::v0_2::result_decision),
            Self::V0_1(f) => f
                .call_on_result(s, config, &convert::v0_1::call(call), result)
                .map(convert::v0_1::result_decision),
        }
    }

    fn on_list(
        &self,
        s: &mut Store<HostState>,
        config: &str,
        principal: &types::Principal<'_>,
        kind: types::ListKind,
        items: &[types::ListItem<'_>],
    ) -> wasmtime::Result<Vec<bool>> {
        match self {
            Self::Current(f) => f.call_on_list(s, principal.clone(), kind, items),
            Self::V0_2(f) => f.call_on_list(
                s,
                config,
                &convert::v0_2::principal(principal),
                convert::v0_2::list_kind(kind),
                &convert::v0_2::list_items(items),
            ),
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
    warm: Mutex<VecDeque<Warm<Live>>>,
    /// The most warm instances kept.
    warm_cap: usize,
    /// Counts each evaluation's instance as warm or fresh, once the chain
    /// that runs this filter hands it its counters.
    instances: Option<InstanceCounters>,
    /// What `on-request` decides on, if the component declares it (see
    /// [`super::decisions`]); its decisions, kept until this filter is
    /// replaced by a reload.
    decides_on: Option<DecidesOn>,
    decisions: DecisionCache,
    /// `reuse_decisions` in the filter's config.
    reuse: bool,
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
        // A precompiled artifact is native code, not a component: it
        // carries no declaration, so its calls are all evaluated.
        // A component given as text is read as the engine read it.
        let decides_on = if precompiled {
            None
        } else {
            let binary = wat::parse_bytes(&bytes).map_err(|e| refuse(e.to_string()))?;
            DecidesOn::read(&binary).map_err(refuse)?
        };
        let linked = engine
            .linker_for(&component)
            .and_then(|linker| linker.instantiate_pre(&component));
        let instance_pre = linked.map_err(|e| {
            refuse(format!(
                "imports match none of portcullis:policy@0.3.0, @0.2.0 or @0.1.0: {e:#}"
            ))
        })?;
        let pre = Pre::of(instance_pre).map_err(refuse)?;
        let shared = Arc::new(FilterShared {
            name: name.to_string(),
            kv: KvStore::default(),
            epoch: Instant::now(),
        });
        // The SDK writes the declaration since 0.2; 0.1's never did.
        let decides_on = decides_on.filter(|_| !matches!(pre, Pre::V0_1(_)));
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
            warm_cap: DEFAULT_WARM,
            instances: None,
            decides_on,
            decisions: DecisionCache::default(),
            reuse: true,
        };
        filter.validate_config().map_err(refuse)?;
        Ok(filter)
    }

    /// A first instance, configured (0.3) or asked to check the
    /// configuration (0.2, 0.1), and dropped. One that runs past the
    /// deadline is tried again, twice at most: the first instance after a
    /// load also pays for faulting in the filter's code and the pages of
    /// its memory image, which the next one finds resident. The Python
    /// require-ticket example's check ran past the default 10 ms in 4 of
    /// 99 loads on a busy 2-core VM (and in 5 of 20 at 5 ms), and each
    /// such load was refused: a sidecar with the filter failed to start.
    /// A check that never finishes in time still refuses the load, after
    /// three deadlines.
    fn validate_config(&self) -> Result<(), String> {
        let mut tries = 0;
        let verdict = loop {
            tries += 1;
            let verdict = match self.pre {
                // `instantiate` configures it.
                Pre::Current(_) => self.run(None, |_, _, _| Ok(Ok(()))),
                _ => self.run(None, |f, s, cfg| f.configure(s, cfg)),
            };
            // 0.3 configures in `instantiate`; 0.2 and 0.1 check in a call.
            let verdict = verdict.map_err(|f| match f {
                Fault::Unconfigured(f) => *f,
                f => f,
            });
            match verdict {
                Err(Fault::Timeout(t)) if tries < CHECK_TRIES => {
                    tracing::warn!(filter = %self.name, timeout = ?t, tries, "configuration check ran past the deadline; trying again");
                }
                other => break other,
            }
        };
        match verdict {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) | Err(Fault::Config(why)) => Err(format!("configuration refused: {why}")),
            Err(fault) => Err(format!("configuration check {fault}")),
        }
    }

    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Whether decisions of a declaring filter are reused (they are by
    /// default); see [`super::decisions`].
    pub fn with_decision_reuse(mut self, reuse: bool) -> Self {
        self.reuse = reuse;
        self
    }

    /// Sizes the warm pool (see [`warm_cap`]).
    pub fn with_warm_cap(mut self, cap: usize) -> Self {
        self.warm_cap = cap.max(1);
        self
    }

    /// Counts every evaluation's instance as warm or fresh.
    pub fn with_instance_counters(mut self, counters: InstanceCounters) -> Self {
        self.instances = Some(counters);
        self
    }

    pub fn handles(&self, hook: Hook) -> bool {
        self.hooks.contains(&hook)
    }

    /// `arguments` stand for the call's (a filter earlier in the chain may
    /// have rewritten them). A warm instance serves only
    /// calls of the same caller ([`crate::identity::Principal::key`]).
    ///
    /// A filter that declares what it decides on is shown only that, and a
    /// call equal in it gets the decision already made.
    pub fn on_request(
        &self,
        req: &Request<'_>,
        arguments: Option<&str>,
    ) -> Result<types::Decision, Fault> {
        let key = req.principal.key();
        let lists = convert::Lists::new(req, self.decides_on);
        let Some(on) = self.decides_on else {
            let call = convert::call(req, arguments, &lists);
            return self
                .evaluate_request(&call, InstanceKey::caller(key))
                .map(|(d, _)| d);
        };
        let call = convert::call(req, arguments, &lists);
        let reuse = if self.reuse { on.key(&call, key) } else { None };
        if let Some(d) = reuse.as_deref().and_then(|k| self.decisions.get(k)) {
            self.count(|c| &c.cached);
            return Ok(d);
        }
        let (decision, called_host) = self.evaluate_request(&call, on.instance_key(key))?;
        if let (Some(k), false) = (reuse, called_host) {
            self.decisions.put(k, &decision);
        }
        Ok(decision)
    }

    /// The decision, and whether the evaluation called the host.
    fn evaluate_request(
        &self,
        call: &types::Call<'_>,
        key: InstanceKey<'_>,
    ) -> Result<(types::Decision, bool), Fault> {
        let (decision, called_host) =
            self.run_with(Some(key), |f, s, cfg| f.on_request(s, cfg, call))?;
        match &decision {
            types::Decision::Deny(d) => self.bounded(d.message.len())?,
            types::Decision::RewriteArguments(a) => self.bounded(a.len())?,
            types::Decision::Allow => {}
        }
        Ok((decision, called_host))
    }

    pub fn on_result(
        &self,
        call: &types::Call<'_>,
        result: &str,
        key: &str,
    ) -> Result<types::ResultDecision, Fault> {
        let key = InstanceKey::caller(key);
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
        principal: &types::Principal<'_>,
        key: &str,
        kind: types::ListKind,
        items: &[types::ListItem<'_>],
    ) -> Result<Vec<bool>, Fault> {
        self.run(Some(InstanceKey::caller(key)), |f, s, cfg| {
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
        key: Option<InstanceKey<'_>>,
        f: impl FnOnce(&Instance, &mut Store<HostState>, &str) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        self.run_with(key, f).map(|(out, _)| out)
    }

    /// [`Self::run`], also saying whether the guest called the host during
    /// the evaluation.
    fn run_with<R>(
        &self,
        key: Option<InstanceKey<'_>>,
        f: impl FnOnce(&Instance, &mut Store<HostState>, &str) -> wasmtime::Result<R>,
    ) -> Result<(R, bool), Fault> {
        let _clock = self.engine.evaluating();
        let key = key.filter(|_| self.limits.isolation == Isolation::Caller);
        let hash = key.map(|k| k.hash()).unwrap_or_default();
        let mut warm = match key.and_then(|k| self.take_warm(k, hash)) {
            Some(w) => {
                self.count(|c| &c.warm);
                w
            }
            None => {
                let owned = key.map(InstanceKey::to_key).unwrap_or_default();
                let w = self.instantiate_or_evict(owned, hash)?;
                self.count(|c| &c.fresh);
                w
            }
        };
        // The deadline counts from now, whether the instance is new or not.
        let live = &mut warm.live;
        // One reading of the clock for the deadline and for when the
        // instance was last used (which only matters to the second).
        let start = Instant::now();
        ticker::arm_from(&mut live.store, start, self.limits.timeout);
        live.store.data_mut().take_called();
        // On a fault the instance is dropped here: its state is suspect.
        let out = f(&live.instance, &mut live.store, &self.config)
            .map_err(|e| self.classify(&e, false))?;
        let called_host = live.store.data_mut().take_called();
        live.calls += 1;
        if key.is_some() && live.calls < MAX_CALLS {
            self.keep_warm(warm, start);
        }
        Ok((out, called_host))
    }

    /// Warm instances hold pool slots; when the pool is full, they are
    /// given back before a caller is refused an instance.
    fn instantiate_or_evict(&self, caller: String, hash: u64) -> Result<Warm<Live>, Fault> {
        match self.instantiate(caller.clone(), hash) {
            Err(Fault::Instantiate(_)) if self.evict_all() > 0 => self.instantiate(caller, hash),
            other => other,
        }
    }

    /// This filter's resolved counters, once the chain has handed them.
    pub fn counters(&self) -> Option<&InstanceCounters> {
        self.instances.as_ref()
    }

    fn count(&self, which: impl FnOnce(&InstanceCounters) -> &prometheus::IntCounter) {
        if let Some(c) = &self.instances {
            which(c).inc();
        }
    }

    fn evict_all(&self) -> usize {
        // Taken out under the lock, dropped after it: dropping an instance
        // resets its pool slot, which other evaluations must not wait for.
        let evicted = self
            .warm
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default();
        evicted.len()
    }

    fn instantiate(&self, caller: String, hash: u64) -> Result<Warm<Live>, Fault> {
        let mut store = Store::new(
            self.pre.engine(),
            HostState::new(self.shared.clone(), self.limits.memory),
        );
        store.limiter(|s| s.limits());
        ticker::install(&mut store);
        ticker::arm(&mut store, self.limits.timeout);
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.classify(&e, true))?;
        // A 0.3 instance is configured once, under the deadline armed
        // above for instantiating it (the call gets its own after). A
        // fault here is the filter's, not the pool's: not
        // `Fault::Instantiate`, which evicts warm instances and tries
        // again; and not a plain fault either, which `on_error: allow`
        // would let through with no policy.
        if let Instance::Current(_) = instance {
            match instance.configure(&mut store, &self.config) {
                Ok(Ok(())) => {}
                Ok(Err(why)) => return Err(Fault::Config(why)),
                Err(e) => return Err(Fault::Unconfigured(Box::new(self.classify(&e, false)))),
            }
        }
        Ok(Warm {
            caller,
            hash,
            idle_since: Instant::now(),
            live: Live {
                store,
                instance,
                calls: 0,
            },
        })
    }

    /// A poisoned lock only means another evaluation panicked; the queue
    /// is then skipped (fresh instances) rather than trusted.
    fn take_warm(&self, key: InstanceKey<'_>, hash: u64) -> Option<Warm<Live>> {
        take(&mut *self.warm.lock().ok()?, key, hash)
    }

    /// Puts `w` back, as used at `now`.
    fn keep_warm(&self, w: Warm<Live>, now: Instant) {
        // What is not kept is dropped after the lock is released: dropping
        // an instance resets its pool slot, and the other threads' calls of
        // this filter must not queue behind that.
        let not_kept = match self.warm.lock() {
            Ok(mut q) => keep(&mut q, w, self.warm_cap, now),
            Err(_) => Some(w),
        };
        drop(not_kept);
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

/// Which warm instances an evaluation may run in: `prefix` then `caller`,
/// compared piece by piece, so that no key is built per call (a narrowed
/// evaluation's key used to be formatted for every call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceKey<'a> {
    prefix: &'static str,
    caller: &'a str,
}

impl<'a> InstanceKey<'a> {
    /// The caller's own instances (every hook, whole calls).
    pub fn caller(caller: &'a str) -> Self {
        Self { prefix: "", caller }
    }

    pub fn prefixed(prefix: &'static str, caller: &'a str) -> Self {
        Self { prefix, caller }
    }

    fn matches(&self, kept: &str) -> bool {
        kept.strip_prefix(self.prefix) == Some(self.caller)
    }

    /// The key's hash for the warm pool's scan: FNV-1a over its bytes. Not
    /// a secret and not a guard: a match is confirmed by comparing the
    /// keys themselves (SipHash cost more than the rest of the scan).
    fn hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.prefix.bytes().chain(self.caller.bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    /// The key as one string, as a kept instance stores it.
    pub fn to_key(self) -> String {
        [self.prefix, self.caller].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warm(caller: &str, live: u32) -> Warm<u32> {
        Warm {
            caller: caller.to_string(),
            hash: InstanceKey::caller(caller).hash(),
            idle_since: Instant::now(),
            live,
        }
    }

    fn callers(pool: &VecDeque<Warm<u32>>) -> Vec<&str> {
        pool.iter().map(|w| w.caller.as_str()).collect()
    }

    /// A prefixed key is compared and hashed as the whole string a kept
    /// instance stores, and never matches the caller's own instances.
    #[test]
    fn a_prefixed_key_is_its_whole_string() {
        let narrowed = InstanceKey::prefixed("\0narrowed ", "alice");
        assert_eq!(narrowed.to_key(), "\0narrowed alice");
        let mut pool = VecDeque::new();
        let now = Instant::now();
        let mut kept = warm(&narrowed.to_key(), 1);
        kept.hash = narrowed.hash();
        assert!(keep(&mut pool, kept, 4, now).is_none());
        let own = InstanceKey::caller("alice");
        assert!(take(&mut pool, own, own.hash()).is_none());
        let other = InstanceKey::prefixed("\0narrowed ", "bob");
        assert!(take(&mut pool, other, narrowed.hash()).is_none());
        assert!(take(&mut pool, narrowed, narrowed.hash()).is_some());
        // The hash is the whole string's, however it is split.
        assert_eq!(
            InstanceKey::prefixed("\0narrowed", "").hash(),
            InstanceKey::caller("\0narrowed").hash()
        );
        assert_ne!(narrowed.hash(), own.hash());
    }

    #[test]
    fn an_instance_is_taken_only_by_its_own_caller() {
        let mut pool = VecDeque::new();
        let now = Instant::now();
        assert!(keep(&mut pool, warm("alice", 1), 4, now).is_none());
        assert!(take(
            &mut pool,
            InstanceKey::caller("bob"),
            InstanceKey::caller("bob").hash()
        )
        .is_none());
        // A hash that matches is not enough: the key must match too.
        assert!(take(
            &mut pool,
            InstanceKey::caller("bob"),
            InstanceKey::caller("alice").hash()
        )
        .is_none());
        let got = take(
            &mut pool,
            InstanceKey::caller("alice"),
            InstanceKey::caller("alice").hash(),
        )
        .map(|w| w.live);
        assert_eq!(got, Some(1));
        assert!(pool.is_empty());
    }

    #[test]
    fn a_full_pool_keeps_its_active_callers() {
        let mut pool = VecDeque::new();
        let now = Instant::now();
        for (i, who) in ["a", "b"].into_iter().enumerate() {
            assert!(keep(&mut pool, warm(who, i as u32), 2, now).is_none());
        }
        // "a" was used just now: the newcomer's instance is not kept.
        let later = now + EVICT_IDLE / 2;
        let back = keep(&mut pool, warm("c", 9), 2, later).map(|w| w.caller);
        assert_eq!(back.as_deref(), Some("c"));
        assert_eq!(callers(&pool), ["a", "b"]);
    }

    #[test]
    fn a_caller_away_long_enough_makes_room() {
        let mut pool = VecDeque::new();
        let now = Instant::now();
        assert!(keep(&mut pool, warm("a", 0), 2, now).is_none());
        assert!(keep(&mut pool, warm("b", 1), 2, now + EVICT_IDLE).is_none());
        // "a" has been idle EVICT_IDLE, "b" not: "a" goes, least recent.
        let evicted = keep(&mut pool, warm("c", 2), 2, now + EVICT_IDLE).map(|w| w.caller);
        assert_eq!(evicted.as_deref(), Some("a"));
        assert_eq!(callers(&pool), ["b", "c"]);
    }

    #[test]
    fn the_warm_pool_is_half_the_slots_shared_out() {
        assert_eq!(warm_cap(256, 2), 64);
        assert_eq!(warm_cap(256, 1), 128);
        assert_eq!(warm_cap(256, 0), 128);
        assert_eq!(warm_cap(16, 64), 1);
    }
}
