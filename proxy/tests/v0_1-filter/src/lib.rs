//! Built straight from `policy-sdk/wit-0.1`, as a filter compiled before
//! the 0.2 bump would have been. It tells the tests what it was shown:
//! a `tools/call` of `whoami` is denied with the caller it saw, and a list
//! item named `agents-only` is hidden unless the caller is a SPIFFE ID.
//! Everything else is allowed.

#[cfg(target_arch = "wasm32")]
#[allow(clippy::too_many_arguments)]
mod guest {
    wit_bindgen::generate!({
        path: "../../../policy-sdk/wit-0.1",
        world: "filter",
    });

    use portcullis::policy::types::Denial;

    fn seen(c: &Caller) -> String {
        match c {
            Caller::Anonymous => "anonymous".into(),
            Caller::Spiffe(id) => format!("spiffe({id})"),
            Caller::Jwt(claims) => format!("jwt({claims})"),
        }
    }

    struct V01;

    impl Guest for V01 {
        fn validate_config(config: String) -> Result<(), String> {
            match config.trim() {
                "" | "{}" | "null" => Ok(()),
                other => Err(format!("takes no configuration, got {other}")),
            }
        }

        fn on_request(_config: String, call: Call) -> Decision {
            let whoami = call.method == "tools/call"
                && call.target.as_ref().is_some_and(|t| t.name == "whoami");
            if whoami {
                return Decision::Deny(Denial {
                    code: 0,
                    message: format!("0.1 saw {}", seen(&call.caller)),
                });
            }
            Decision::Allow
        }

        fn on_result(_config: String, _call: Call, _result: String) -> ResultDecision {
            ResultDecision::Allow
        }

        fn on_list(
            _config: String,
            caller: Caller,
            _kind: ListKind,
            items: Vec<ListItem>,
        ) -> Vec<bool> {
            let agent = matches!(caller, Caller::Spiffe(_));
            items
                .iter()
                .map(|i| agent || i.name != "agents-only")
                .collect()
        }
    }

    export!(V01);
}
