//! The warm-instance pool curve's load: many distinct callers (one mTLS
//! client certificate each) over a fixed number of calls in flight, and
//! the pool's hit rate counted by the proxy (`filter_instances_total`).

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
