//! The epoch clock that filter deadlines are checked on. wasmtime checks
//! the engine's epoch in guest code; a thread advances it every `TICK`.
//! Each store's deadline is the next tick, and at each tick the store's
//! callback compares the clock with the evaluation's own deadline: it
//! stops the evaluation past it, and lets it run to the next tick before.
//! So an evaluation is stopped no earlier than its timeout and about one
//! tick after (more when the host is loaded: the clock thread oversleeps,
//! and a host call in progress delays the check). (Counting the deadline in ticks instead took two ticks of
//! slack, since the first tick may come at once; a 5 ms tick kept that
//! under 10 ms, at twice the wakeups: about 14 µs of the proxy's CPU each
//! on a 2-core VM, 2.8 µs per call at 1000 calls/s.)
//!
//! The thread runs while evaluations are in progress, and for
//! [`LINGER_TICKS`] ticks after the last one, then parks. On a VM every
//! timer wakeup is expensive: ticking at 1 kHz around the clock cost about
//! 10 % of a core and 40 µs of latency per call at one connection, with no
//! filter doing any work. Parking the moment no evaluation was running was
//! worse under load: evaluations take microseconds, so almost every one
//! found the clock parked and woke it (a futex wake, a cross-CPU IPI and a
//! context switch per evaluation, about 1.5 µs of the proxy's CPU each, and
//! the clock parked again at once).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread::Thread,
    time::Duration,
};

use std::time::Instant;

use wasmtime::{Engine, Store, StoreContextMut, UpdateDeadline};

use super::{host::HostState, FilterError};

/// One epoch tick: about how late past its timeout an evaluation is
/// stopped.
pub const TICK: Duration = Duration::from_millis(10);

/// Ticks without an evaluation after which the clock parks (100 ms): a
/// steady stream of calls keeps it ticking at 100 Hz and never wakes it,
/// an idle sidecar has no timer at all.
const LINGER_TICKS: u32 = 10;

/// Makes `store`'s evaluations stop at the deadlines [`arm`] sets.
pub fn install(store: &mut Store<HostState>) {
    store.epoch_deadline_callback(at_tick);
}

/// Starts an evaluation's deadline: it may run for `timeout` from now.
pub fn arm(store: &mut Store<HostState>, timeout: Duration) {
    arm_from(store, Instant::now(), timeout);
}

/// [`arm`] for an evaluation that started at `start` (just read: its
/// caller reuses the reading).
pub fn arm_from(store: &mut Store<HostState>, start: Instant, timeout: Duration) {
    store.data_mut().set_deadline(start.checked_add(timeout));
    store.set_epoch_deadline(1);
}

/// At a tick during an evaluation: past its deadline it stops (a trap
/// that classifies as a timeout), else it runs on to the next tick.
fn at_tick(cx: StoreContextMut<'_, HostState>) -> wasmtime::Result<UpdateDeadline> {
    if cx.data().expired(Instant::now()) {
        return Ok(UpdateDeadline::Interrupt);
    }
    Ok(UpdateDeadline::Continue(1))
}

struct Shared {
    active: AtomicUsize,
    /// Set by every evaluation, cleared by the clock at each tick: whether
    /// there was one since the last tick.
    entered: AtomicBool,
    stop: AtomicBool,
}

pub struct Ticker {
    shared: Arc<Shared>,
    thread: Thread,
}

/// An evaluation in progress; the clock runs until every one is dropped.
pub struct Active<'a>(&'a Shared);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Ticker {
    pub fn start(engine: Engine) -> Result<Self, FilterError> {
        let shared = Arc::new(Shared {
            active: AtomicUsize::new(0),
            entered: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let state = shared.clone();
        let handle = std::thread::Builder::new()
            .name("portcullis-epoch".into())
            .spawn(move || run(&engine, &state))
            .map_err(|e| FilterError::Engine(format!("epoch thread: {e}")))?;
        Ok(Self {
            shared,
            thread: handle.thread().clone(),
        })
    }

    /// Marks an evaluation as running, waking the clock if it was parked.
    pub fn enter(&self) -> Active<'_> {
        self.shared.entered.store(true, Ordering::Relaxed);
        if self.shared.active.fetch_add(1, Ordering::AcqRel) == 0 {
            // An unpark before the thread parks is not lost: its park
            // then returns at once.
            self.thread.unpark();
        }
        Active(&self.shared)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

fn run(engine: &Engine, shared: &Shared) {
    let mut idle = 0;
    while !shared.stop.load(Ordering::Acquire) {
        let entered = shared.entered.swap(false, Ordering::Relaxed);
        if !entered && shared.active.load(Ordering::Acquire) == 0 {
            if idle >= LINGER_TICKS {
                idle = 0;
                std::thread::park();
                continue;
            }
            idle += 1;
        } else {
            idle = 0;
        }
        std::thread::sleep(TICK);
        engine.increment_epoch();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use wasmtime::component::{Component, Linker};

    use super::*;
    use crate::filter::{
        engine::{EngineOptions, FilterEngine},
        host::FilterShared,
    };

    /// `spin(n)` counts down from `n`; `spin(0)` wraps and counts 2^32
    /// (seconds: no deadline test waits that long, and a broken deadline
    /// cannot hang the test).
    const SPIN: &str = r#"(component
      (core module $m
        (func (export "spin") (param $n i32) (result i32)
          (loop $l
            (local.set $n (i32.sub (local.get $n) (i32.const 1)))
            (br_if $l (i32.ne (local.get $n) (i32.const 0))))
          (i32.const 7)))
      (core instance $i (instantiate $m))
      (func (export "spin") (param "n" u32) (result u32) (canon lift (core func $i "spin"))))"#;

    /// Runs `spin(n)` under `timeout` with the clock running; the result
    /// and how long it took.
    fn spin(engine: &FilterEngine, n: u32, timeout: Duration) -> (wasmtime::Result<u32>, Duration) {
        let component = Component::new(engine.engine(), SPIN).unwrap();
        let linker: Linker<HostState> = Linker::new(engine.engine());
        let shared = Arc::new(FilterShared {
            name: "t".into(),
            kv: Default::default(),
            epoch: Instant::now(),
        });
        let mut store = Store::new(engine.engine(), HostState::new(shared, 16 << 20));
        install(&mut store);
        arm(&mut store, Duration::from_secs(60));
        let instance = linker.instantiate(&mut store, &component).unwrap();
        let f = instance
            .get_typed_func::<(u32,), (u32,)>(&mut store, "spin")
            .unwrap();
        let _clock = engine.evaluating();
        let t = Instant::now();
        arm(&mut store, timeout);
        let out = f.call(&mut store, (n,)).map(|(r,)| r);
        (out, t.elapsed())
    }

    fn engine() -> FilterEngine {
        FilterEngine::new(&EngineOptions {
            cache_dir: None,
            max_instances: 8,
            max_memory: 16 << 20,
        })
        .unwrap()
    }

    #[test]
    fn an_endless_evaluation_stops_at_its_deadline_and_not_before() {
        let engine = engine();
        for timeout in [Duration::from_millis(3), Duration::from_millis(25)] {
            let mut best = Duration::MAX;
            for _ in 0..5 {
                let (out, took) = spin(&engine, 0, timeout);
                let err = out.expect_err("an endless loop must be stopped");
                assert_eq!(
                    err.downcast_ref::<wasmtime::Trap>(),
                    Some(&wasmtime::Trap::Interrupt),
                    "{err:#}"
                );
                assert!(
                    took >= timeout,
                    "stopped after {took:?}, before {timeout:?}"
                );
                best = best.min(took);
            }
            // About one tick late: the best of five, so that one slow
            // wakeup of a loaded machine does not fail it.
            assert!(best < timeout + 3 * TICK, "{timeout:?}: {best:?}");
        }
    }

    /// Ticks come during an evaluation shorter than its timeout: each one
    /// lets it run on.
    #[test]
    fn an_evaluation_across_many_ticks_within_its_timeout_completes() {
        let engine = engine();
        let mut n: u32 = 1 << 20;
        loop {
            let (out, took) = spin(&engine, n, Duration::from_secs(30));
            assert_eq!(out.map_err(|e| format!("{e:#}")), Ok(7));
            if took >= TICK * 4 {
                break;
            }
            n = n.saturating_mul(2);
            assert!(n < u32::MAX, "spin({n}) is still shorter than four ticks");
        }
    }
}
