//! The state each evaluation's store carries, and the host functions a
//! filter may import. WASI is not provided beyond an empty environment and
//! random seeds (see `engine::define_wasi_basics`).

use std::{sync::Arc, time::Instant};

use wasmtime::{StoreLimits, StoreLimitsBuilder};

use super::{
    bindings::{host, types, v0_1, v0_2},
    kv::KvStore,
};

/// Longest log line a filter may write; longer ones are cut.
const MAX_LOG_BYTES: usize = 2048;

/// What every evaluation of one filter shares.
pub struct FilterShared {
    pub name: String,
    pub kv: KvStore,
    /// The origin of the monotonic clock filters see.
    pub epoch: Instant,
}

pub struct HostState {
    shared: Arc<FilterShared>,
    limits: StoreLimits,
    /// Whether the guest called a host function since the last
    /// [`HostState::take_called`]: an evaluation that did is not a pure
    /// function of its inputs, and its decision is not reused.
    called: bool,
    /// When the evaluation in progress must stop (`ticker::arm`).
    deadline: Option<Instant>,
}

impl HostState {
    pub fn new(shared: Arc<FilterShared>, memory_limit: usize) -> Self {
        Self {
            shared,
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_limit)
                .trap_on_grow_failure(true)
                .build(),
            called: false,
            deadline: None,
        }
    }

    /// `None` (a deadline past the clock's range) stops the evaluation
    /// at the first tick: fail closed.
    pub fn set_deadline(&mut self, at: Option<Instant>) {
        self.deadline = at;
    }

    /// Whether the evaluation in progress has run past its deadline (or
    /// was never given one).
    pub fn expired(&self, now: Instant) -> bool {
        self.deadline.is_none_or(|d| now >= d)
    }

    /// Notes a call of a host function (the WASI shims count too).
    pub fn mark_called(&mut self) {
        self.called = true;
    }

    /// Whether a host function was called since the last time this was
    /// asked.
    pub fn take_called(&mut self) -> bool {
        std::mem::take(&mut self.called)
    }

    pub fn limits(&mut self) -> &mut StoreLimits {
        &mut self.limits
    }
}

impl types::Host for HostState {}
impl v0_2::types::Host for HostState {}
impl v0_1::types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, message: String) {
        self.called = true;
        let mut message = message;
        if message.len() > MAX_LOG_BYTES {
            let mut cut = MAX_LOG_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let filter = self.shared.name.as_str();
        match level {
            host::Level::Trace => {
                tracing::trace!(target: "portcullis::filter", filter, "{message}")
            }
            host::Level::Debug => {
                tracing::debug!(target: "portcullis::filter", filter, "{message}")
            }
            host::Level::Info => tracing::info!(target: "portcullis::filter", filter, "{message}"),
            host::Level::Warn => tracing::warn!(target: "portcullis::filter", filter, "{message}"),
            host::Level::Error => {
                tracing::error!(target: "portcullis::filter", filter, "{message}")
            }
        }
    }

    fn now_ms(&mut self) -> u64 {
        self.called = true;
        u64::try_from(self.shared.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn counter_add(&mut self, key: String, delta: i64, ttl_ms: u64) -> i64 {
        self.called = true;
        self.shared.kv.counter_add(&key, delta, ttl_ms)
    }

    fn kv_get(&mut self, key: String) -> Option<String> {
        self.called = true;
        self.shared.kv.get(&key)
    }

    fn kv_compare_and_swap(
        &mut self,
        key: String,
        expected: Option<String>,
        value: String,
        ttl_ms: u64,
    ) -> bool {
        self.called = true;
        self.shared
            .kv
            .compare_and_swap(&key, expected.as_deref(), value, ttl_ms)
    }
}

/// 0.1 lends the same functions under its own package name.
/// A frozen contract's host functions are the current ones under its own
/// names: the same state, the same limits.
macro_rules! frozen_host {
    ($v:ident) => {
        impl $v::host::Host for HostState {
            fn log(&mut self, level: $v::host::Level, message: String) {
                let level = match level {
                    $v::host::Level::Trace => host::Level::Trace,
                    $v::host::Level::Debug => host::Level::Debug,
                    $v::host::Level::Info => host::Level::Info,
                    $v::host::Level::Warn => host::Level::Warn,
                    $v::host::Level::Error => host::Level::Error,
                };
                host::Host::log(self, level, message)
            }

            fn now_ms(&mut self) -> u64 {
                host::Host::now_ms(self)
            }

            fn counter_add(&mut self, key: String, delta: i64, ttl_ms: u64) -> i64 {
                host::Host::counter_add(self, key, delta, ttl_ms)
            }

            fn kv_get(&mut self, key: String) -> Option<String> {
                host::Host::kv_get(self, key)
            }

            fn kv_compare_and_swap(
                &mut self,
                key: String,
                expected: Option<String>,
                value: String,
                ttl_ms: u64,
            ) -> bool {
                host::Host::kv_compare_and_swap(self, key, expected, value, ttl_ms)
            }
        }
    };
}

frozen_host!(v0_2);
frozen_host!(v0_1);
