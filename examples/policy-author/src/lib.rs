//! Destructive tools need a change ticket: a call to a tool the server
//! marks `destructiveHint` must carry a `ticket` argument like `CHG-1234`.

use portcullis_policy_sdk::prelude::*;

#[derive(serde::Deserialize)]
pub struct Config {
    /// The ticket prefix, e.g. "CHG-".
    prefix: String,
}

#[derive(serde::Deserialize)]
struct Args {
    ticket: Option<String>,
}

pub struct RequireTicket;

impl Filter for RequireTicket {
    type Config = Config;

    fn on_request(config: &Config, call: &Call) -> Decision {
        if call.annotation("destructiveHint") != Some(true) {
            return Decision::Allow;
        }
        let ticket = call.args::<Args>().ok().and_then(|a| a.ticket);
        match ticket {
            Some(t) if t.starts_with(&config.prefix) && t.len() > config.prefix.len() => {
                host::log(
                    host::Level::Info,
                    &format!("{t} authorizes {:?}", call.tool_name()),
                );
                Decision::Allow
            }
            _ => Decision::deny(format!(
                "destructive tools need a ticket argument starting with {}",
                config.prefix
            )),
        }
    }
}

export_filter!(RequireTicket);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn destructive_calls_need_a_ticket() {
        let h = Harness::<RequireTicket>::new(r#"{"prefix": "CHG-"}"#).unwrap();
        let destructive = json!({"destructiveHint": true});
        let call = |args| {
            CallBuilder::tool("delete_file")
                .annotations(destructive.clone())
                .args(args)
                .build()
        };
        h.request(&call(json!({"path": "/x"})))
            .assert_denied("CHG-");
        h.request(&call(json!({"path": "/x", "ticket": "CHG-42"})))
            .assert_allowed();
        h.request(&CallBuilder::tool("echo").args(json!({})).build())
            .assert_allowed();
    }
}
