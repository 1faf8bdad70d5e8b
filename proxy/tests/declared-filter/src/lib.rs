//! Declares that it decides on the target alone, and then, on some tools,
//! does what such a filter must not, so the host's tests can check what it
//! does about it:
//!
//! - `logged`: writes a log line, then allows (a host call: never reused);
//! - `clocked`: reads the host's clock, then allows (likewise);
//! - `whoami`: denies with what it saw of the caller and the method, which
//!   must be nothing (the host shows only the target);
//! - `count`: denies with the number of calls its instance has seen, which
//!   shows whether it was evaluated or its decision reused.
//!
//! Every other tool is allowed.

use std::sync::atomic::{AtomicU32, Ordering};

use portcullis_policy_sdk::prelude::*;

pub struct Declared;

impl Filter for Declared {
    type Config = serde_json::Value;

    const DECIDES_ON: Option<&'static [Input]> = Some(&[Input::Target]);

    fn on_request(_config: &serde_json::Value, call: &Call) -> Decision {
        static SEEN: AtomicU32 = AtomicU32::new(0);
        let seen = SEEN.fetch_add(1, Ordering::Relaxed) + 1;
        let Some(target) = &call.target else {
            return Decision::Allow;
        };
        match target.name.as_str() {
            "logged" => {
                host::log(host::Level::Info, "declared-filter saw logged");
                Decision::Allow
            }
            "clocked" => {
                let _ = host::now_ms();
                Decision::Allow
            }
            "whoami" => Decision::deny(format!(
                "peer={:?} key={:?} method={:?} args={:?}",
                call.principal.peer, call.principal.key, call.method, call.arguments
            )),
            "count" => Decision::deny(format!("evaluation {seen} of this instance")),
            _ => Decision::Allow,
        }
    }
}

export_filter!(Declared);

#[cfg(test)]
mod tests {
    use super::*;

    /// The native harness shows the filter what the host would.
    #[test]
    fn the_harness_narrows_the_call() {
        let h = Harness::<Declared>::new("{}").unwrap();
        let call = CallBuilder::tool("whoami")
            .spiffe("spiffe://td/ns/a/sa/b")
            .args(serde_json::json!({"x": 1}))
            .build();
        h.request(&call)
            .assert_denied(r#"peer=None key="" method="" args=None"#);
    }
}
