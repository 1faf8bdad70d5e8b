//! The one wasmtime `Engine` of the process: compiled-code cache on disk,
//! pooling instance allocator, epoch deadlines, and the `Linker` that every
//! filter is instantiated against.

use std::path::PathBuf;

use wasmtime::{
    component::{Component, HasSelf, Linker},
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};

use super::{
    bindings::{v0_1, v0_2, Filter},
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
    /// The pool's instance slots, which warm instances are sized from.
    max_instances: u32,
}

impl FilterEngine {
    pub fn new(opts: &EngineOptions) -> Result<Self, FilterError> {
        let layout = MemoryLayout::for_pool(opts.max_memory, opts.max_instances, address_budget());
        let engine = Engine::new(&engine_config(opts, layout, Pool::Reserved)?).map_err(|e| {
            // The pool's reservation is what fails under a small `ulimit -v`.
            let memories = u64::from(opts.max_instances.saturating_mul(MEMORIES_PER_INSTANCE));
            let gib = memories.saturating_mul(layout.reservation + layout.guard) >> 30;
            FilterError::Engine(format!(
                "{e:#} (the instance pool reserves about {gib} GiB of address space for \
                 filter_engine.max_instances {}: lower it, or raise ulimit -v)",
                opts.max_instances
            ))
        })?;
        let mut linker = Linker::new(&engine);
        Filter::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| FilterError::Engine(format!("{e:#}")))?;
        // Every contract's host functions: a component imports one of them.
        v0_2::Filter::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| FilterError::Engine(format!("{e:#}")))?;
        v0_1::Filter::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| FilterError::Engine(format!("{e:#}")))?;
        define_wasi_basics(&mut linker, WASI_VERSION)
            .map_err(|e| FilterError::Engine(format!("{e:#}")))?;
        let ticker = Ticker::start(engine.clone())?;
        Ok(Self {
            engine,
            linker,
            ticker,
            cache_dir: opts.cache_dir.clone(),
            child: ChildArgs {
                max_memory: opts.max_memory,
                max_instances: opts.max_instances,
                layout,
            },
            max_instances: opts.max_instances,
        })
    }

    /// Instances that may exist at once, across all filters.
    pub fn max_instances(&self) -> u32 {
        self.max_instances
    }

    /// An engine for `portcullis filter compile`: the sidecar's settings,
    /// no cache, no epoch clock, and no instance pool (it only compiles,
    /// so it reserves no address space). `layout` is the sidecar's when
    /// the sidecar runs it as its compile child: the artifact is then
    /// built for the engine that loads it, whatever this process's own
    /// limits are (a `prlimit` on the sidecar after it started changes
    /// the child's). Otherwise it is derived from this machine, as the
    /// sidecar derives its own.
    pub fn compiler(
        max_memory: usize,
        max_instances: u32,
        layout: Option<MemoryLayout>,
    ) -> Result<Engine, FilterError> {
        let opts = EngineOptions {
            cache_dir: None,
            max_instances,
            max_memory,
        };
        let layout = layout
            .unwrap_or_else(|| MemoryLayout::for_pool(max_memory, max_instances, address_budget()));
        Engine::new(&engine_config(&opts, layout, Pool::None)?)
            .map_err(|e| FilterError::Engine(format!("{e:#}")))
    }

    /// A compiled component from a filter file's bytes: compiled in a child
    /// process by the sidecar, in this one otherwise (see `compile`).
    /// `precompiled`: the file is an artifact the operator named as such
    /// (a `.cwasm` path), and only then may it be one. Its memory images
    /// are built before it is returned (`compile::prepare_images`).
    pub fn component(&self, bytes: &[u8], precompiled: bool) -> Result<Component, String> {
        let cache = match &self.cache_dir {
            Some(root) => Some(compile::cache_dir(root)?),
            None => None,
        };
        let component = compile::component(
            &self.engine,
            bytes,
            precompiled,
            cache.as_deref(),
            &self.child,
        )?;
        compile::prepare_images(&component)?;
        Ok(component)
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
        // A guest built by another toolchain imports another WASI 0.2
        // patch version. wasmtime would link it to ours (0.2 versions are
        // compatible), but the trapping stubs below are defined under the
        // exact name and would win: every call of such a filter would trap
        // and be denied. So the same functions go under its versions too.
        let mut versions: Vec<String> = Vec::new();
        for (name, _) in component.component_type().imports(&self.engine) {
            for interface in WASI_BASICS {
                let version = name
                    .strip_prefix(interface)
                    .and_then(|rest| rest.strip_prefix('@'));
                if let Some(v) = version.filter(|v| v.starts_with("0.2.") && *v != WASI_VERSION) {
                    if !versions.iter().any(|known| known == v) {
                        versions.push(v.to_string());
                    }
                }
            }
        }
        for v in &versions {
            define_wasi_basics(&mut linker, v)?;
        }
        linker.define_unknown_imports_as_traps(component)?;
        Ok(linker)
    }
}

/// The WASI version the host's shims are defined under, and the
/// interfaces they cover (see `define_wasi_basics`).
const WASI_VERSION: &str = "0.2.6";
const WASI_BASICS: [&str; 2] = ["wasi:cli/environment", "wasi:random/insecure-seed"];

/// Whether an engine gets the instance pool (and reserves its address
/// space). The pool does not change the compiled code: wasmtime's
/// artifact check compares the memory layout and the other tunables, not
/// the allocator, so a compile-only engine leaves it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    Reserved,
    None,
}

fn engine_config(
    opts: &EngineOptions,
    layout: MemoryLayout,
    pool: Pool,
) -> Result<Config, FilterError> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.memory_reservation(layout.reservation);
    config.memory_guard_size(layout.guard);
    config.memory_reservation_for_growth(0);
    config.memory_init_cow(true);
    // For profiling only: names the compiled filters' functions in
    // /tmp/perf-<pid>.map, so `perf report` can attribute guest time
    // (bench/README.md). Off by default: the file grows with every load.
    if std::env::var_os("PORTCULLIS_WASM_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if pool == Pool::Reserved {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(instance_pool(opts)));
    }
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

/// The pool every instance of every filter is allocated from.
fn instance_pool(opts: &EngineOptions) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(opts.max_instances)
        .total_core_instances(opts.max_instances.saturating_mul(8))
        .total_memories(opts.max_instances.saturating_mul(MEMORIES_PER_INSTANCE))
        .total_tables(opts.max_instances.saturating_mul(8))
        .max_memory_size(opts.max_memory)
        // A fresh instance per evaluation means a slot is reset after every
        // call. Keeping the first pages resident resets them with memset
        // instead of madvise + page faults on the next call, which is most
        // of the cost of a small filter.
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10)
        .pagemap_scan(wasmtime::Enabled::Auto);
    pool
}

/// Memory slots the pool keeps per instance slot; the memory layout is
/// sized from the same figure.
const MEMORIES_PER_INSTANCE: u32 = 2;

/// How each linear memory's slot in the pool is reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLayout {
    reservation: u64,
    guard: u64,
}

/// `RESERVATION:GUARD` in bytes: how the sidecar tells its compile child
/// the layout (`portcullis filter compile --memory-layout`).
impl std::fmt::Display for MemoryLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.reservation, self.guard)
    }
}

impl std::str::FromStr for MemoryLayout {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected RESERVATION:GUARD in bytes");
        let (r, g) = s.split_once(':').ok_or_else(bad)?;
        let (reservation, guard) = (r.parse().map_err(|_| bad())?, g.parse().map_err(|_| bad())?);
        Ok(Self { reservation, guard })
    }
}

/// The address space all of the pool's memory slots may reserve together
/// for the guard-page layout: an eighth of x86-64's 128 TiB of user space,
/// so that a few sidecar engines in one process (tests, embedders) fit.
/// Less where the machine gives less ([`address_budget`]).
const STATIC_BUDGET: u64 = 16 << 40;

/// The guard-page layout's budget on this machine: [`STATIC_BUDGET`], but
/// no more than an eighth of the user address space (an arm64 kernel with
/// 39-bit addresses has 512 GiB) and half of `ulimit -v`. Past it the
/// engine falls back to bounds checks instead of failing to start. The
/// compile child is handed the layout rather than deriving it under its
/// own limits ([`compile::ChildArgs`]).
fn address_budget() -> u64 {
    let mut budget = STATIC_BUDGET;
    if let Some(top) = user_space_top() {
        budget = budget.min(top / 8);
    }
    let limit = rustix::process::getrlimit(rustix::process::Resource::As);
    if let Some(bytes) = limit.current {
        budget = budget.min(bytes / 2);
    }
    budget
}

/// The size of the user address space, from the main thread's stack,
/// which Linux maps just below its top: the stack's end rounded up to a
/// power of two. None where `/proc/self/maps` does not say.
fn user_space_top() -> Option<u64> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    stack_top(&maps)
}

fn stack_top(maps: &str) -> Option<u64> {
    let line = maps.lines().find(|l| l.trim_end().ends_with("[stack]"))?;
    let range = line.split_whitespace().next()?;
    let (_, end) = range.split_once('-')?;
    u64::from_str_radix(end, 16)
        .ok()?
        .checked_next_power_of_two()
}

impl MemoryLayout {
    /// A 32-bit guest address is below 4 GiB, so with 4 GiB reserved per
    /// memory (plus a guard for the constant offsets of loads and stores,
    /// up to 2 MiB) every such access lands in the memory's own slot, and
    /// Cranelift leaves out the bounds check, and the Spectre mask that
    /// goes with it, that it otherwise compiles into every load and store
    /// (larger offsets and bulk memory operations keep their checks). That
    /// made arg-guard's evaluation 8 % faster in criterion and about 15 %
    /// in the sidecar under load (bench/README.md, sixteenth pass): the code is
    /// smaller as well as shorter. The reservation is address space only
    /// (`PROT_NONE`, no RSS, no page tables until touched), 2 TiB for the
    /// default 256 instances. Past the budget, or where pointers
    /// are not 64-bit, each memory gets a small reservation and explicit
    /// bounds checks instead. Access past a memory's end traps either way.
    /// (That layout still reserves `max_memory` rounded up to a power of
    /// two, plus 64 KiB, per memory slot: 16 GiB for 256 instances of
    /// 32 MiB.)
    ///
    /// The layout changes the compiled code, so it is a function of the
    /// engine's options and the machine's `budget` ([`address_budget`]):
    /// `portcullis filter compile` on the same machine derives the same one
    /// from the same options, and the sidecar's compile child is handed it.
    fn for_pool(max_memory: usize, max_instances: u32, budget: u64) -> Self {
        const FOUR_GIB: u64 = 4 << 30;
        const STATIC_GUARD: u64 = 2 << 20;
        // Memory slots in the pool (`engine_config`). wasmtime puts a guard
        // after each slot and one before the whole pool; counting two per
        // slot overstates the total a little, on the safe side.
        let memories = u64::from(max_instances.saturating_mul(MEMORIES_PER_INSTANCE));
        let per_slot = FOUR_GIB + 2 * STATIC_GUARD;
        let fits = memories.saturating_mul(per_slot) <= budget;
        if cfg!(target_pointer_width = "64") && fits && (max_memory as u64) <= FOUR_GIB {
            return Self {
                reservation: FOUR_GIB,
                guard: STATIC_GUARD,
            };
        }
        Self {
            reservation: (max_memory as u64).next_power_of_two().max(1 << 20),
            guard: 64 << 10,
        }
    }
}

/// The WASI a filter gets. Guests built for `wasm32-wasip2` import a few
/// WASI interfaces through Rust's standard library. A filter gets an empty
/// environment and random seeds; everything else it imports (standard
/// streams, exit, files, sockets, clocks) is a stub that traps, so a filter
/// that tries to print, exit or reach outside is stopped and its call is
/// denied. This is also what keeps evaluation synchronous: no WASI stream
/// ever needs the async runtime.
fn define_wasi_basics(linker: &mut Linker<HostState>, version: &str) -> wasmtime::Result<()> {
    let mut env = linker.instance(&format!("wasi:cli/environment@{version}"))?;
    env.func_wrap("get-environment", |_, (): ()| {
        Ok((Vec::<(String, String)>::new(),))
    })?;
    env.func_wrap("get-arguments", |_, (): ()| Ok((Vec::<String>::new(),)))?;
    env.func_wrap("initial-cwd", |_, (): ()| Ok((None::<String>,)))?;
    let mut seed = linker.instance(&format!("wasi:random/insecure-seed@{version}"))?;
    // Randomness is an input like the clock: an evaluation that drew it is
    // not reused (filter::decisions).
    seed.func_wrap(
        "insecure-seed",
        |mut caller: wasmtime::StoreContextMut<'_, HostState>, (): ()| {
            caller.data_mut().mark_called();
            Ok(((random_u64(), random_u64()),))
        },
    )?;
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

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Instant};

    use wasmtime::Store;

    use super::*;
    use crate::filter::host::FilterShared;

    /// A component that asks the host for random seeds through
    /// `wasi:random/insecure-seed` at `version`, as Rust's standard library
    /// does for its first hash map.
    fn seeding(version: &str) -> String {
        format!(
            r#"(component
              (import "wasi:random/insecure-seed@{version}" (instance $seed
                (export "insecure-seed" (func (result (tuple u64 u64))))))
              (core module $libc (memory (export "mem") 1))
              (core instance $libc (instantiate $libc))
              (core func $lowered (canon lower (func $seed "insecure-seed") (memory (core memory $libc "mem"))))
              (core module $m
                (import "host" "seed" (func $seed (param i32)))
                (func (export "run") (result i32) (call $seed (i32.const 16)) (i32.const 7)))
              (core instance $i (instantiate $m (with "host" (instance (export "seed" (func $lowered))))))
              (func (export "run") (result u32) (canon lift (core func $i "run"))))"#
        )
    }

    fn run(engine: &FilterEngine, wat: &str) -> wasmtime::Result<u32> {
        let component = Component::new(engine.engine(), wat)?;
        let linker = engine.linker_for(&component)?;
        let shared = Arc::new(FilterShared {
            name: "t".into(),
            kv: Default::default(),
            epoch: Instant::now(),
        });
        let mut store = Store::new(engine.engine(), HostState::new(shared, 16 << 20));
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = linker.instantiate(&mut store, &component)?;
        let run = instance.get_typed_func::<(), (u32,)>(&mut store, "run")?;
        Ok(run.call(&mut store, ())?.0)
    }

    /// A component whose `run` reads the byte at `addr` + `offset` of its
    /// one-page (64 KiB) memory.
    fn reading(addr: u32, offset: u32) -> String {
        format!(
            r#"(component
              (core module $m
                (memory 1)
                (func (export "run") (result i32)
                  (i32.load8_u offset={offset} (i32.const {addr}))))
              (core instance $i (instantiate $m))
              (func (export "run") (result u32) (canon lift (core func $i "run"))))"#
        )
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn memories_get_guard_pages_while_the_pool_fits_the_budget() {
        let four_gib = 4 << 30;
        let layout = MemoryLayout::for_pool(32 << 20, 256, STATIC_BUDGET);
        assert_eq!(layout.reservation, four_gib);
        // 2 × 2046 slots of 4 GiB and two 2 MiB guards: within 16 TiB.
        let pool = |instances, budget| MemoryLayout::for_pool(32 << 20, instances, budget);
        assert_eq!(pool(2046, STATIC_BUDGET).reservation, four_gib);
        let past = pool(2047, STATIC_BUDGET);
        assert_eq!((past.reservation, past.guard), (32 << 20, 64 << 10));
        // A memory limit past 4 GiB cannot be a 32-bit memory's anyway.
        assert_eq!(
            MemoryLayout::for_pool(8 << 30, 8, STATIC_BUDGET).reservation,
            8 << 30
        );
        assert_eq!(
            MemoryLayout::for_pool(100, 8, STATIC_BUDGET).reservation,
            four_gib
        );
        // A 39-bit address space: an eighth is 64 GiB, just under 16
        // slots: 7 instances' 14 memories fit, 8 instances' 16 do not.
        let budget = (1u64 << 39) / 8;
        assert_eq!(pool(7, budget).reservation, four_gib);
        assert_eq!(pool(8, budget).reservation, 32 << 20);
        assert_eq!(pool(256, budget).reservation, 32 << 20);
    }

    #[test]
    fn the_layout_handed_to_the_compile_child_reads_back_as_it_was() {
        for layout in [
            MemoryLayout::for_pool(32 << 20, 256, STATIC_BUDGET),
            MemoryLayout::for_pool(32 << 20, 4096, STATIC_BUDGET),
        ] {
            assert_eq!(layout.to_string().parse(), Ok(layout));
        }
        for bad in [
            "",
            "4294967296",
            "4294967296:",
            ":2097152",
            "1:2:3",
            "-1:0",
            "4 GiB:0",
        ] {
            assert!(bad.parse::<MemoryLayout>().is_err(), "{bad:?}");
        }
    }

    /// A compile-only engine (the child's) has no pool, so its layout
    /// costs no address space, and its artifacts load into the pooled
    /// engine with the same layout.
    #[test]
    fn the_compile_engine_builds_for_the_layout_it_is_given() {
        let pooled = FilterEngine::new(&EngineOptions {
            cache_dir: None,
            max_instances: 4,
            max_memory: 16 << 20,
        })
        .unwrap();
        let layout = MemoryLayout::for_pool(16 << 20, 4, address_budget());
        let wat = reading(0, 0);
        let same = FilterEngine::compiler(16 << 20, 4, Some(layout)).unwrap();
        let artifact = same.precompile_component(wat.as_bytes()).unwrap();
        let load =
            |bytes: &[u8]| compile::component(pooled.engine(), bytes, true, None, &pooled.child);
        assert!(load(&artifact).is_ok());
        let other = MemoryLayout {
            reservation: 32 << 20,
            guard: 64 << 10,
        };
        assert_ne!(layout, other);
        let compiled_other = FilterEngine::compiler(16 << 20, 4, Some(other))
            .unwrap()
            .precompile_component(wat.as_bytes())
            .unwrap();
        let refused = load(&compiled_other).err().unwrap_or_default();
        assert!(refused.contains("memory reservation"), "{refused}");
    }

    #[test]
    fn the_address_space_is_read_from_the_stack_mapping() {
        let x86 = "55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0          [heap]\n\
                   7ffd5e3a1000-7ffd5e3c2000 rw-p 00000000 00:00 0          [stack]\n\
                   ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]\n";
        assert_eq!(stack_top(x86), Some(128 << 40));
        let arm39 = "7fe1c3d000-7fe1c5e000 rw-p 00000000 00:00 0 [stack]\n";
        assert_eq!(stack_top(arm39), Some(512 << 30));
        assert_eq!(stack_top("no stack here\n"), None);
        assert_eq!(stack_top("zz-yy rw-p 0 0:0 0 [stack]"), None);
        // This machine: never more than the static budget.
        assert!(address_budget() <= STATIC_BUDGET);
        assert!(user_space_top().is_some_and(|top| top >= 1 << 39));
    }

    /// Whatever the layout, a read past the memory's end traps: inside the
    /// 4 GiB reservation, past a guard-sized offset, and at the top.
    #[test]
    fn a_read_past_the_memory_traps_in_both_layouts() {
        for max_instances in [8, 4096] {
            let engine = FilterEngine::new(&EngineOptions {
                cache_dir: None,
                max_instances,
                max_memory: 16 << 20,
            })
            .unwrap();
            let read = |addr: u32, offset: u32| run(&engine, &reading(addr, offset));
            assert_eq!(read(65535, 0).map_err(|e| format!("{e:#}")), Ok(0));
            for (addr, offset) in [
                (65536, 0),
                (0, 65536),
                (0xC000_0000, 0),
                (0, 3 << 20),
                (0xFFFF_FFFF, 0),
                (0xFFFF_FFFF, 0xFFFF_FFFF),
            ] {
                let err = read(addr, offset).expect_err("out of bounds");
                let trap = err.downcast_ref::<wasmtime::Trap>();
                assert_eq!(
                    trap,
                    Some(&wasmtime::Trap::MemoryOutOfBounds),
                    "{max_instances} instances, {addr:#x}+{offset:#x}: {err:#}"
                );
            }
        }
    }

    /// Guests built by other toolchains import other WASI 0.2 patch
    /// versions; each must get the host's seeds, not a trapping stub.
    #[test]
    fn every_wasi_0_2_version_gets_the_host_functions() {
        let engine = FilterEngine::new(&EngineOptions {
            cache_dir: None,
            max_instances: 8,
            max_memory: 16 << 20,
        })
        .unwrap();
        for version in ["0.2.6", "0.2.0", "0.2.3", "0.2.12"] {
            let got = run(&engine, &seeding(version));
            assert_eq!(got.map_err(|e| format!("{e:#}")), Ok(7), "@{version}");
        }
    }
}
