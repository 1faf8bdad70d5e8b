//! A leaner shape: the configuration once per instance, and a call of the
//! declared parts only.
wit_bindgen::generate!({ path: "../wit/lean", world: "probe" });

use std::cell::RefCell;

use portcullis::probe_lean::types::Denial;

#[derive(serde::Deserialize)]
struct Config {
    allow: Vec<String>,
}

thread_local! {
    static PARSED: RefCell<Option<Config>> = const { RefCell::new(None) };
}

struct Probe;

impl Guest for Probe {
    fn configure(config: String) -> Result<(), String> {
        let c: Config = serde_json::from_str(&config).map_err(|e| e.to_string())?;
        PARSED.with(|p| *p.borrow_mut() = Some(c));
        Ok(())
    }

    fn on_request(call: Call) -> Decision {
        PARSED.with(|p| {
            let p = p.borrow();
            let Some(c) = p.as_ref() else {
                return Decision::Deny(Denial { code: 0, message: String::new() });
            };
            let tool = call.tool.as_deref();
            if call.method == "tools/call" && tool.is_some_and(|t| c.allow.iter().any(|a| a == t)) {
                Decision::Allow
            } else {
                Decision::Deny(Denial { code: 0, message: "not allowed".into() })
            }
        })
    }
}

export!(Probe);
