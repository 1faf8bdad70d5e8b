//! Steady open-loop load for the whole run: calls are due on a fixed
//! schedule spread over the connections, latency counts from when a call
//! was due (bench's convention), and every outcome is kept with its time so
//! that latency can be cut into windows and errors set against restarts.
//! The requests and the answer check are bench's (`load::call`,
//! `load::exchange`).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use portcullis_bench::conn::{Endpoint, Sender};
use portcullis_bench::load::{self, HistogramError, MAX_US, TEXT};
use serde::Serialize;
use tokio::time::Instant;

use crate::stats::{classify, window_of, ErrorClass};

/// One failed call: when it was seen, in seconds from the start.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ErrorEvent {
    pub t_s: f64,
    pub class: ErrorClass,
}

/// Messages kept per class, so that the report can show what they said.
const EXAMPLES: usize = 3;

pub struct Recorder {
    width_s: f64,
    empty: Histogram<u64>,
    pub latency_us: Vec<Histogram<u64>>,
    pub errors_per_window: Vec<u64>,
    pub errors: Vec<ErrorEvent>,
    pub examples: BTreeMap<ErrorClass, Vec<String>>,
}

impl Recorder {
    pub fn new(window: Duration) -> Result<Self, HistogramError> {
        Ok(Self {
            width_s: window.as_secs_f64(),
            empty: load::histogram()?,
            latency_us: Vec::new(),
            errors_per_window: Vec::new(),
            errors: Vec::new(),
            examples: BTreeMap::new(),
        })
    }

    fn grow(&mut self, i: usize) {
        while self.latency_us.len() <= i {
            self.latency_us.push(self.empty.clone());
            self.errors_per_window.push(0);
        }
    }

    fn ok(&mut self, due_s: f64, us: u64) {
        let i = window_of(due_s, self.width_s);
        self.grow(i);
        // Above the bound only if a call took > 60 s; clamped.
        let _ = self.latency_us[i].record(us.clamp(1, MAX_US));
    }

    fn fail(&mut self, t_s: f64, message: String) {
        let class = classify(&message);
        let i = window_of(t_s, self.width_s);
        self.grow(i);
        self.errors_per_window[i] += 1;
        self.errors.push(ErrorEvent { t_s, class });
        let kept = self.examples.entry(class).or_default();
        if kept.len() < EXAMPLES {
            kept.push(message);
        }
    }

    fn merge(&mut self, other: Recorder) {
        self.grow(other.latency_us.len().saturating_sub(1));
        for (i, h) in other.latency_us.iter().enumerate() {
            // Same bounds on both sides, so adding cannot fail.
            let _ = self.latency_us[i].add(h);
            self.errors_per_window[i] += other.errors_per_window[i];
        }
        self.errors.extend(other.errors);
        for (class, msgs) in other.examples {
            let kept = self.examples.entry(class).or_default();
            kept.extend(msgs.into_iter().take(EXAMPLES.saturating_sub(kept.len())));
        }
    }

    pub fn ok_total(&self) -> u64 {
        self.latency_us.iter().map(|h| h.len()).sum()
    }
}

#[derive(Clone, Copy)]
pub struct Schedule {
    pub rate: f64,
    pub connections: usize,
    pub start: Instant,
    pub duration: Duration,
    pub window: Duration,
}

/// Runs the load until the schedule ends and returns every outcome.
pub async fn run(endpoint: Endpoint, plan: Schedule) -> Result<Recorder, HistogramError> {
    let mut tasks = Vec::with_capacity(plan.connections);
    for index in 0..plan.connections {
        let rec = Recorder::new(plan.window)?;
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(worker(rec, endpoint, plan, index)));
    }
    let mut total = Recorder::new(plan.window)?;
    for t in tasks {
        match t.await {
            Ok(rec) => total.merge(rec),
            Err(e) => total.fail(plan.duration.as_secs_f64(), format!("worker panicked: {e}")),
        }
    }
    Ok(total)
}

async fn worker(mut rec: Recorder, endpoint: Endpoint, plan: Schedule, index: usize) -> Recorder {
    let deadline = plan.start + plan.duration;
    let since = |t: Instant| t.duration_since(plan.start).as_secs_f64();
    let text = load::json_string(TEXT);
    let mut sender: Option<Sender> = None;
    for seq in 0u64.. {
        // This worker owns calls index, index + n, index + 2n, ...
        let nth = index as f64 + seq as f64 * plan.connections as f64;
        let due = plan.start + Duration::from_secs_f64(nth / plan.rate);
        if due >= deadline {
            break;
        }
        let mut from = due;
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
            // On schedule: count from the send, not the timer's slack.
            from = Instant::now();
        }
        let id = (index as u64) << 32 | seq;
        match one_call(&endpoint, &mut sender, id, &text).await {
            Ok(()) => rec.ok(since(due), from.elapsed().as_micros() as u64),
            Err(e) => {
                rec.fail(since(Instant::now()), e);
                // The connection may be broken; the next call opens a new one.
                sender = None;
            }
        }
    }
    rec
}

async fn one_call(
    endpoint: &Endpoint,
    sender: &mut Option<Sender>,
    id: u64,
    text: &str,
) -> Result<(), String> {
    let s = match sender {
        Some(s) => s,
        None => sender.insert(endpoint.connect().await.map_err(|e| e.to_string())?),
    };
    let req = load::call(endpoint, id, "echo", text).map_err(|e| e.to_string())?;
    load::exchange(s, req, id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_recorders_keep_windows_errors_and_few_examples() {
        let w = Duration::from_secs(10);
        let mut a = Recorder::new(w).unwrap();
        let mut b = Recorder::new(w).unwrap();
        a.ok(1.0, 1000);
        b.ok(25.0, 2000);
        for _ in 0..5 {
            b.fail(12.0, "HTTP 502 Bad Gateway: x".into());
        }
        a.merge(b);
        assert_eq!(a.latency_us.len(), 3);
        assert_eq!(a.ok_total(), 2);
        assert_eq!(a.errors_per_window, vec![0, 5, 0]);
        assert_eq!(a.errors.len(), 5);
        assert_eq!(a.examples[&ErrorClass::Http(502)].len(), EXAMPLES);
    }
}
