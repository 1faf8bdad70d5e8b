//! The epoch clock that filter deadlines are counted in. wasmtime checks
//! the engine's epoch in guest code; a thread advances it every `TICK`.
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

use wasmtime::Engine;

use super::FilterError;

/// One epoch tick.
pub const TICK: Duration = Duration::from_millis(5);

/// Ticks without an evaluation after which the clock parks (100 ms): a
/// steady stream of calls keeps it ticking at 200 Hz and never wakes it,
/// an idle sidecar has no timer at all.
const LINGER_TICKS: u32 = 20;

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

    /// The deadline, in ticks, for `timeout`: never less than `timeout`
    /// (the first tick may come at once), at most two ticks more.
    pub fn ticks(timeout: Duration) -> u64 {
        let n = timeout.as_micros().div_ceil(TICK.as_micros()) + 1;
        u64::try_from(n).unwrap_or(u64::MAX)
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
    use super::*;

    #[test]
    fn deadlines_are_never_shorter_than_the_timeout() {
        assert_eq!(Ticker::ticks(Duration::from_millis(10)), 3);
        assert_eq!(Ticker::ticks(Duration::from_millis(11)), 4);
        assert_eq!(Ticker::ticks(Duration::from_micros(1)), 2);
        for ms in [1u64, 5, 9, 10, 50, 2000] {
            let t = Ticker::ticks(Duration::from_millis(ms));
            // The first tick may come at once: t - 1 full ticks remain.
            assert!((t - 1) * TICK.as_millis() as u64 >= ms, "{ms} ms: {t}");
        }
    }
}
