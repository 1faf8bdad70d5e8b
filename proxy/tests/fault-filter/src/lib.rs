//! Misbehaves on purpose, as its config says, on tools named `boom`:
//! loops forever, allocates 1 GiB, traps, or returns a 10 MB message.
//! A tool named `count` is denied with the number of calls this instance
//! has seen, which shows which calls shared an instance. In `show-args`
//! mode a tool named `args` is denied with the arguments the filter was
//! shown (it declares nothing, so it is shown the whole call). Every other call
//! is allowed, so the tests can check that the next call works after a
//! fault. In `refuse-later` mode the configuration is accepted by the
//! first instance (the host's check at load) and refused by every later
//! one, as a configuration whose check depends on something outside it.
//! In `slow-config` mode the first `slow` configurations loop forever (the
//! host's check at load, as first instances that are slow to start); in
//! `loop-later` mode every configuration but the first does.

use std::sync::atomic::{AtomicU32, Ordering};

use portcullis_policy_sdk::prelude::*;

#[derive(serde::Deserialize)]
pub struct Config {
    pub mode: String,
    #[serde(default)]
    pub slow: i64,
}

pub struct Fault;

impl Filter for Fault {
    type Config = Config;

    fn validate(config: &Config) -> Result<(), String> {
        match config.mode.as_str() {
            "loop" | "alloc" | "trap" | "big" | "none" | "show-args" => Ok(()),
            "slow-config" => match host::counter_add("configured", 1, 0) {
                n if n <= config.slow => spin(),
                _ => Ok(()),
            },
            "loop-later" => match host::counter_add("configured", 1, 0) {
                1 => Ok(()),
                _ => spin(),
            },
            "reject" => Err("this configuration is refused on purpose".into()),
            "refuse-later" => match host::counter_add("configured", 1, 0) {
                1 => Ok(()),
                n => Err(format!("refused on purpose by instance {n}")),
            },
            other => Err(format!("unknown mode {other}")),
        }
    }

    fn on_request(config: &Config, call: &Call) -> Decision {
        static SEEN: AtomicU32 = AtomicU32::new(0);
        let seen = SEEN.fetch_add(1, Ordering::Relaxed) + 1;
        if call.tool_name() == Some("count") {
            return Decision::deny(format!("call {seen} of this instance"));
        }
        if config.mode == "show-args" && call.tool_name() == Some("args") {
            let shown = call.arguments.as_deref().unwrap_or("none");
            return Decision::deny(format!("shown {shown}"));
        }
        if call.tool_name() != Some("boom") {
            return Decision::Allow;
        }
        match config.mode.as_str() {
            "loop" => spin(),
            "alloc" => {
                let v = vec![1u8; 1 << 30];
                Decision::deny(format!(
                    "allocated {}",
                    v.iter().map(|b| *b as usize).sum::<usize>()
                ))
            }
            "trap" => panic!("fault filter traps on purpose"),
            "big" => Decision::deny("x".repeat(10 << 20)),
            _ => Decision::Allow,
        }
    }
}

/// Never returns: the host's deadline stops it.
fn spin<T>() -> T {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

export_filter!(Fault);
