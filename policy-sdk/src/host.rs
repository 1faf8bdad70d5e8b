//! What the sidecar lends a filter: a log, a monotonic clock, and a
//! per-filter counter and key-value store that outlive one evaluation.
//!
//! Built for wasm, these call the host. Built natively (for `cargo test`),
//! they use an in-memory stand-in that [`crate::testing`] can reset and
//! whose clock it can move.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Level;
    use crate::guest::host as h;

    pub fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => h::Level::Trace,
            Level::Debug => h::Level::Debug,
            Level::Info => h::Level::Info,
            Level::Warn => h::Level::Warn,
            Level::Error => h::Level::Error,
        };
        h::log(level, message);
    }
    pub fn now_ms() -> u64 {
        h::now_ms()
    }
    pub fn counter_add(key: &str, delta: i64, ttl_ms: u64) -> i64 {
        h::counter_add(key, delta, ttl_ms)
    }
    pub fn kv_get(key: &str) -> Option<String> {
        h::kv_get(key)
    }
    pub fn kv_compare_and_swap(
        key: &str,
        expected: Option<&str>,
        value: &str,
        ttl_ms: u64,
    ) -> bool {
        h::kv_compare_and_swap(key, expected, value, ttl_ms)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    pub use crate::testing::native::{counter_add, kv_compare_and_swap, kv_get, log, now_ms};
}

/// Writes to the sidecar's log, tagged with the filter's name.
pub fn log(level: Level, message: &str) {
    imp::log(level, message);
}

/// Monotonic milliseconds.
pub fn now_ms() -> u64 {
    imp::now_ms()
}

/// Adds `delta` to a counter and returns its new value; a new counter
/// starts at 0 and expires after `ttl_ms` (0: never, until reload).
pub fn counter_add(key: &str, delta: i64, ttl_ms: u64) -> i64 {
    imp::counter_add(key, delta, ttl_ms)
}

pub fn kv_get(key: &str) -> Option<String> {
    imp::kv_get(key)
}

/// Stores `value` if the current value equals `expected` (`None`: absent).
pub fn kv_compare_and_swap(key: &str, expected: Option<&str>, value: &str, ttl_ms: u64) -> bool {
    imp::kv_compare_and_swap(key, expected, value, ttl_ms)
}
