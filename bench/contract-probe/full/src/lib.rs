//! The 0.2 contract's shape: the whole call record and the configuration
//! text with every call, compared with the one parsed before.
wit_bindgen::generate!({ path: "../wit/full", world: "probe" });

use std::cell::RefCell;

use portcullis::probe_full::types::Denial;

#[derive(serde::Deserialize)]
struct Config {
    allow: Vec<String>,
}

thread_local! {
    static PARSED: RefCell<Option<(String, Config)>> = const { RefCell::new(None) };
}

struct Probe;

impl Guest for Probe {
    fn on_request(config: String, call: Call) -> Decision {
        PARSED.with(|p| {
            let mut p = p.borrow_mut();
            if p.as_ref().is_none_or(|(text, _)| *text != config) {
                match serde_json::from_str::<Config>(&config) {
                    Ok(c) => *p = Some((config, c)),
                    Err(e) => {
                        return Decision::Deny(Denial { code: 0, message: e.to_string() })
                    }
                }
            }
            let Some((_, c)) = p.as_ref() else {
                return Decision::Deny(Denial { code: 0, message: String::new() });
            };
            let tool = call.target.as_ref().map(|t| t.name.as_str());
            if call.method == "tools/call" && tool.is_some_and(|t| c.allow.iter().any(|a| a == t)) {
                Decision::Allow
            } else {
                Decision::Deny(Denial { code: 0, message: "not allowed".into() })
            }
        })
    }
}

export!(Probe);
