//! A fixed piece of work timed around every run: a noise check that does
//! not depend on the hypervisor's accounting.
//!
//! Steal time (`procstat::HostTicks`) counts only the time a vCPU was
//! descheduled. A neighbour on the sibling hyperthread, or one sweeping
//! the shared last-level cache or memory bandwidth, slows a vCPU that is
//! running, and /proc/stat shows nothing. In the eleventh pass the
//! mTLS and WASM configurations cost a third more per call in one round
//! than in the round before, all runs clean of steal. The probe times two
//! things the same way each time, so a slow round shows as a slow probe:
//!
//! - **compute**: a multiply-xorshift chain in registers, sensitive to the
//!   core's clock and to a sibling thread sharing the core;
//! - **memory**: a dependent walk through a random cycle of 32 MiB, far
//!   beyond the per-core L2, sensitive to what others do to the shared
//!   cache and memory.
//!
//! Both run on one thread per vCPU at once, as the measured load does,
//! and report the slower thread.

use std::hint::black_box;
use std::time::Instant;

use serde::Serialize;

/// Steps of the compute chain per thread: about 10 ms on the 2-core VMs.
const COMPUTE_STEPS: u64 = 2_500_000;
/// Entries (u32) of the memory cycle: 32 MiB.
const CYCLE_LEN: usize = 8 << 20;
/// Dependent loads per thread per probe: about 12 ms (about 250 ns each
/// on the Xeon VM: the walk misses the TLB as well as the caches).
const WALK_STEPS: usize = 50_000;

/// One probe's times, in milliseconds (the slower thread of each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ProbeTimes {
    pub compute_ms: f64,
    pub memory_ms: f64,
}

impl ProbeTimes {
    /// The slower of two readings, part by part: a run is judged by the
    /// worse of the readings before and after it.
    pub fn slower(self, other: ProbeTimes) -> ProbeTimes {
        ProbeTimes {
            compute_ms: self.compute_ms.max(other.compute_ms),
            memory_ms: self.memory_ms.max(other.memory_ms),
        }
    }
}

/// The probe's memory: one random cycle through every entry, built once
/// (it takes about 250 ms) and walked before and after every run.
pub struct Probe {
    cycle: Vec<u32>,
    threads: usize,
}

impl Probe {
    pub fn new(threads: usize) -> Self {
        Self {
            cycle: random_cycle(CYCLE_LEN),
            threads: threads.max(1),
        }
    }

    /// Times the compute chain, then the memory walk, on `threads`
    /// threads at once. It blocks for about 20 ms.
    pub fn time(&self) -> ProbeTimes {
        ProbeTimes {
            compute_ms: self.slowest(|seed| compute(seed, COMPUTE_STEPS)),
            memory_ms: self.slowest(|seed| walk(&self.cycle, seed as usize, WALK_STEPS) as u64),
        }
    }

    fn slowest(&self, work: impl Fn(u64) -> u64 + Sync) -> f64 {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..self.threads)
                .map(|t| {
                    let work = &work;
                    s.spawn(move || {
                        let start = Instant::now();
                        black_box(work(black_box(t as u64 * 7919 + 1)));
                        start.elapsed().as_secs_f64() * 1e3
                    })
                })
                .collect();
            handles
                .into_iter()
                // A thread that panicked (it cannot: no indexing out of
                // bounds, see `walk`) would read as no time.
                .map(|h| h.join().unwrap_or(0.0))
                .fold(0.0, f64::max)
        })
    }
}

/// A chain of dependent multiply-xorshift steps: each needs the last, so
/// it runs at the core's latency whatever the compiler does.
fn compute(mut x: u64, steps: u64) -> u64 {
    for _ in 0..steps {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    x
}

/// Follows the cycle `steps` times from `start`: every load's address is
/// the previous load's value, so none can be prefetched.
fn walk(cycle: &[u32], start: usize, steps: usize) -> u32 {
    let mut i = start % cycle.len().max(1);
    for _ in 0..steps {
        // Every entry is an index below the length (`random_cycle`).
        i = cycle.get(i).copied().unwrap_or(0) as usize;
    }
    i as u32
}

/// A single cycle through all `len` entries in random order (Sattolo's
/// algorithm), from a fixed seed so every run walks the same one.
fn random_cycle(len: usize) -> Vec<u32> {
    let mut cycle: Vec<u32> = (0..len as u32).collect();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in (1..len).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = (x % i as u64) as usize;
        cycle.swap(i, j);
    }
    cycle
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cycle_visits_every_entry_once() {
        let cycle = random_cycle(1000);
        let mut seen = vec![false; 1000];
        let mut i = 0usize;
        for _ in 0..1000 {
            assert!(!seen[i], "entry {i} visited twice");
            seen[i] = true;
            i = cycle[i] as usize;
        }
        assert_eq!(i, 0, "the walk is one cycle back to its start");
        assert!(seen.iter().all(|&s| s));
        // Not the identity's neighbour order.
        assert!((0..999).filter(|&k| cycle[k] as usize == k + 1).count() < 10);
    }

    #[test]
    fn the_probe_reports_the_slower_reading_of_each_part() {
        let a = ProbeTimes {
            compute_ms: 10.0,
            memory_ms: 30.0,
        };
        let b = ProbeTimes {
            compute_ms: 12.0,
            memory_ms: 20.0,
        };
        assert_eq!(
            a.slower(b),
            ProbeTimes {
                compute_ms: 12.0,
                memory_ms: 30.0
            }
        );
    }

    #[test]
    fn a_probe_takes_time_on_every_part() {
        let p = Probe {
            cycle: random_cycle(1 << 16),
            threads: 2,
        };
        let t = p.time();
        assert!(t.compute_ms > 0.0 && t.memory_ms > 0.0, "{t:?}");
        // The walk's result depends on the cycle: the same start, the
        // same end.
        assert_eq!(walk(&p.cycle, 5, 1000), walk(&p.cycle, 5, 1000));
    }
}
