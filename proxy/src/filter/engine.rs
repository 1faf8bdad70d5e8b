//! The one wasmtime `Engine` of the process: compiled-code cache on disk,
//! pooling instance allocator, epoch deadlines, and the `Linker` that every
//! filter is instantiated against.

use std::path::PathBuf;

use wasmtime::{
    component::{Component, HasSelf, Linker},
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};

use super::{
    bindings::{v0_1, Filter},
    compile::{self, ChildArgs},
    host::HostState,
    ticker::{Active, Ticker},
    FilterError,
};

/// Sizing of the engine, from the config.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub cache_dir: Option<PathBuf>,
    /// Instances that may exist at once across all filters.
    pub max_instances: u32,
    /// The largest memory limit of any filter.
    pub max_memory: usize,
}

pub struct FilterEngine {
    engine: Engine,
    linker: Linker<HostState>,
    ticker: Ticker,
    /// Where compiled filters are cached, if anywhere (see `compile`).
    cache_dir: Option<PathBuf>,
    child: ChildArgs,
}

impl FilterEngine {
    pub fn new(opts: &EngineOptions) -> Result<Self, FilterError> {
        let engine = Engine::new(&engine_config(opts)?)
            .map_err(|e| FilterError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        Filter::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| FilterError::Engine(format!("{e:#}")))?;
        // Both contracts' host functions: a component imports one of them.
        v0_1::Filter::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| FilterError::Engine(format!("{e:#}")))?;
        define_wasi_basics(&mut linker).map_err(|e| FilterError::Engine(format!("{e:#}")))?;
        let ticker = Ticker::start(engine.clone())?;
        Ok(Self {
            engine,
            linker,
            ticker,
            cache_dir: opts.cache_dir.clone(),
            child: ChildArgs {
                max_memory: opts.max_memory,
                max_instances: opts.max_instances,
            },
        })
    }

    /// An engine for `portcullis filter compile`: the sidecar's settings,
    /// no cache, no epoch clock needed.
    pub fn compiler(max_memory: usize, max_instances: u32) -> Result<Engine, FilterError> {
        let opts = EngineOptions {
            cache_dir: None,
            max_instances,
            max_memory,
        };
        Engine::new(&engine_config(&opts)?).map_err(|e| FilterError::Engine(format!("{e:#}")))
    }

    /// A compiled component from a filter file's bytes: compiled in a child
    /// process by the sidecar, in this one otherwise (see `compile`).
    /// `precompiled`: the file is an artifact the operator named as such
    /// (a `.cwasm` path), and only then may it be one.
    pub fn component(&self, bytes: &[u8], precompiled: bool) -> Result<Component, String> {
        let cache = match &self.cache_dir {
            Some(root) => Some(compile::cache_dir(root)?),
            None => None,
        };
        compile::component(
            &self.engine,
            bytes,
            precompiled,
            cache.as_deref(),
            &self.child,
        )
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Keeps the epoch clock running for one evaluation.
    pub fn evaluating(&self) -> Active<'_> {
        self.ticker.enter()
    }

    /// A linker for one component: the shared definitions, plus a trapping
    /// stub for every other import it names (see `define_wasi_basics`).
    pub fn linker_for(&self, component: &Component) -> wasmtime::Result<Linker<HostState>> {
        let mut linker = self.linker.clone();
        linker.define_unknown_imports_as_traps(component)?;
        Ok(linker)
    }
}

fn engine_config(opts: &EngineOptions) -> Result<Config, FilterError> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // Small reservations: filters are tiny and there may be hundreds of
    // slots; bounds checks are explicit instead of guard-page based.
    let reservation = (opts.max_memory as u64).next_power_of_two().max(1 << 20);
    config.memory_reservation(reservation);
    config.memory_guard_size(64 << 10);
    config.memory_reservation_for_growth(0);
    config.memory_init_cow(true);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(opts.max_instances)
        .total_core_instances(opts.max_instances.saturating_mul(8))
        .total_memories(opts.max_instances.saturating_mul(2))
        .total_tables(opts.max_instances.saturating_mul(8))
        .max_memory_size(opts.max_memory)
        // A fresh instance per evaluation means a slot is reset after every
        // call. Keeping the first pages resident resets them with memset
        // instead of madvise + page faults on the next call, which is most
        // of the cost of a small filter.
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10)
        .pagemap_scan(wasmtime::Enabled::Auto);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if let Some(dir) = &opts.cache_dir {
        let mut cache = CacheConfig::new();
        cache.with_directory(dir.clone());
        let cache = Cache::new(cache).map_err(|e| {
            FilterError::Engine(format!("compile cache at {}: {e:#}", dir.display()))
        })?;
        config.cache(Some(cache));
    }
    Ok(config)
}

/// The WASI a filter gets. Guests built for `wasm32-wasip2` import a few
/// WASI interfaces through Rust's standard library. A filter gets an empty
/// environment and random seeds; everything else it imports (standard
/// streams, exit, files, sockets, clocks) is a stub that traps, so a filter
/// that tries to print, exit or reach outside is stopped and its call is
/// denied. This is also what keeps evaluation synchronous: no WASI stream
/// ever needs the async runtime.
fn define_wasi_basics(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut env = linker.instance("wasi:cli/environment@0.2.6")?;
    env.func_wrap("get-environment", |_, (): ()| {
        Ok((Vec::<(String, String)>::new(),))
    })?;
    env.func_wrap("get-arguments", |_, (): ()| Ok((Vec::<String>::new(),)))?;
    env.func_wrap("initial-cwd", |_, (): ()| Ok((None::<String>,)))?;
    let mut seed = linker.instance("wasi:random/insecure-seed@0.2.6")?;
    seed.func_wrap("insecure-seed", |_, (): ()| {
        Ok(((random_u64(), random_u64()),))
    })?;
    Ok(())
}

/// Seeds for a guest's hash maps: fresh per call, from std's own
/// per-process random keys.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x706f_7274_6375_6c6c);
    h.finish()
}
