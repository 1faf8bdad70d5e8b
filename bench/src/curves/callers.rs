//! The warm-instance pool curve's load: many distinct callers (one mTLS
//! client certificate each) over a fixed number of calls in flight, and
//! the pool's hit rate estimated from the proxy's filter histogram.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::conn::{Endpoint, Sender};
use crate::load::{self, HistogramError, Payload, RunResult, MAX_US};

/// A connection of one caller, connected before the run.
struct Slot {
    endpoint: Endpoint,
    sender: Option<Sender>,
}

/// max(callers, workers) connections, caller i on connection j when
/// j mod callers = i, so that one caller still gets `workers` calls in
/// flight and 256 callers each have their own connection.
pub struct Pool {
    idle: Mutex<Vec<Slot>>,
}

impl Pool {
    pub async fn open(callers: &[Endpoint], workers: usize) -> Result<Arc<Pool>, String> {
        let n = callers.len().max(workers);
        let mut slots = Vec::with_capacity(n);
        for j in 0..n {
            let endpoint = callers[j % callers.len().max(1)].clone();
            let sender = endpoint.connect().await.map_err(|e| e.to_string())?;
            slots.push(Slot {
                endpoint,
                sender: Some(sender),
            });
        }
        Ok(Arc::new(Pool {
            idle: Mutex::new(slots),
        }))
    }

    /// A poisoned lock only means a worker panicked; the slots are intact.
    fn lock(&self) -> MutexGuard<'_, Vec<Slot>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Closed loop: `workers` calls in flight, each on an idle connection
/// picked at random, so the callers' calls interleave as independent
/// agents' would (not in a fixed rotation, which an LRU pool either
/// always hits or always misses).
pub async fn run(
    pool: &Arc<Pool>,
    workers: usize,
    duration: Duration,
    payload: &Payload,
) -> Result<RunResult, HistogramError> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let pool = pool.clone();
        let payload = payload.clone();
        let hist = load::histogram()?;
        tasks.push(tokio::spawn(async move {
            worker(pool, payload, w, hist, deadline).await
        }));
    }
    let mut total = RunResult {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency_us: load::histogram()?,
        first_error: None,
    };
    for t in tasks {
        match t.await {
            Ok(r) => {
                total.ok += r.ok;
                total.errors += r.errors;
                // Same bounds on both sides, so adding cannot fail.
                let _ = total.latency_us.add(&r.latency_us);
                if let Some(e) = r.first_error {
                    total.first_error.get_or_insert(e);
                }
            }
            Err(e) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert(format!("worker panicked: {e}"));
            }
        }
    }
    total.elapsed = start.elapsed();
    Ok(total)
}

async fn worker(
    pool: Arc<Pool>,
    payload: Payload,
    index: usize,
    hist: Histogram<u64>,
    deadline: Instant,
) -> RunResult {
    let mut r = RunResult {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency_us: hist,
        first_error: None,
    };
    // xorshift64, seeded per worker: the pick needs no cryptographic
    // quality, and the crate has no rand dependency.
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ ((index as u64 + 1) << 17);
    let mut seq = 0u64;
    while Instant::now() < deadline {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let picked = {
            let mut idle = pool.lock();
            let n = idle.len();
            (n > 0).then(|| idle.swap_remove((rng % n as u64) as usize))
        };
        // With at least as many connections as workers one is always idle;
        // this only guards the invariant.
        let Some(mut slot) = picked else {
            tokio::task::yield_now().await;
            continue;
        };
        seq += 1;
        let id = (index as u64) << 32 | seq;
        let from = Instant::now();
        let outcome = match slot.sender.as_mut() {
            Some(s) => match payload.request(&slot.endpoint, id) {
                Ok(req) => load::exchange(s, req, id).await,
                Err(e) => Err(e.to_string()),
            },
            None => match slot.endpoint.connect().await {
                // Reconnected: this call is not measured, the next one is.
                Ok(s) => {
                    slot.sender = Some(s);
                    pool.lock().push(slot);
                    continue;
                }
                Err(e) => Err(e.to_string()),
            },
        };
        match outcome {
            Ok(()) => {
                r.ok += 1;
                let us = from.elapsed().as_micros().max(1) as u64;
                let _ = r.latency_us.record(us.min(MAX_US));
            }
            Err(e) => {
                r.errors += 1;
                r.first_error.get_or_insert(e);
                slot.sender = None;
                // Do not spin on a refused port.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        pool.lock().push(slot);
    }
    r
}

/// Cumulative histogram buckets (upper bound, count), as scraped.
pub type Buckets = Vec<(f64, f64)>;

/// `after − before`, bucket by bucket (the proxy's counters only grow).
pub fn delta(before: &Buckets, after: &Buckets) -> Buckets {
    after
        .iter()
        .map(|(le, n)| {
            let was = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, (n - was).max(0.0))
        })
        .collect()
}

/// Share of evaluations at or under `le`.
fn share_under(b: &Buckets, le: f64) -> Option<f64> {
    let total = b.last()?.1;
    let under = b.iter().find(|(x, _)| *x == le)?.1;
    (total > 0.0).then(|| under / total)
}

/// How a filter's evaluations look when every one finds a warm instance
/// (`warm`: one caller) and when none does (`fresh`: `isolation: call`).
/// The bucket bound that separates the two best is the threshold.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Calibration {
    pub threshold_s: f64,
    pub warm_under: f64,
    pub fresh_under: f64,
}

/// None when the two distributions do not separate (less than half the
/// evaluations apart at any bound): the estimate would be noise.
pub fn calibrate(warm: &Buckets, fresh: &Buckets) -> Option<Calibration> {
    warm.iter()
        .filter(|(le, _)| le.is_finite())
        .filter_map(|(le, _)| {
            Some(Calibration {
                threshold_s: *le,
                warm_under: share_under(warm, *le)?,
                fresh_under: share_under(fresh, *le)?,
            })
        })
        .max_by(|a, b| (a.warm_under - a.fresh_under).total_cmp(&(b.warm_under - b.fresh_under)))
        .filter(|c| c.warm_under - c.fresh_under >= 0.5)
}

/// The hit rate h that mixes the two: share under the threshold =
/// h × warm + (1 − h) × fresh, clamped to [0, 1].
pub fn hit_rate(c: &Calibration, observed: &Buckets) -> Option<f64> {
    let f = share_under(observed, c.threshold_s)?;
    Some(((f - c.fresh_under) / (c.warm_under - c.fresh_under)).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    #[test]
    fn a_half_warm_mix_is_read_as_half() {
        // Warm: 95 % under 10 µs; fresh: 5 % under 10 µs, most over 25 µs.
        let warm = vec![(5e-6, 60.0), (1e-5, 95.0), (2.5e-5, 99.0), (INF, 100.0)];
        let fresh = vec![(5e-6, 0.0), (1e-5, 5.0), (2.5e-5, 20.0), (INF, 100.0)];
        let c = calibrate(&warm, &fresh).unwrap();
        assert_eq!(c.threshold_s, 1e-5);
        let mix = vec![(5e-6, 30.0), (1e-5, 50.0), (2.5e-5, 60.0), (INF, 100.0)];
        assert!((hit_rate(&c, &mix).unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(hit_rate(&c, &warm), Some(1.0));
        assert_eq!(hit_rate(&c, &fresh), Some(0.0));
    }

    #[test]
    fn no_separation_no_estimate() {
        let same = vec![(1e-5, 50.0), (INF, 100.0)];
        assert!(calibrate(&same, &same).is_none());
    }

    #[test]
    fn delta_subtracts_bucket_by_bucket() {
        let before = vec![(1e-5, 10.0), (INF, 20.0)];
        let after = vec![(1e-5, 15.0), (INF, 40.0)];
        assert_eq!(delta(&before, &after), vec![(1e-5, 5.0), (INF, 20.0)]);
    }
}
