//! The native test harness: run a filter in `cargo test` without wasm.
//!
//! ```
//! use portcullis_policy_sdk::prelude::*;
//! # struct AllowAll;
//! # impl Filter for AllowAll { type Config = serde_json::Value; }
//! let h = Harness::<AllowAll>::new("{}").unwrap();
//! let call = CallBuilder::tool("echo").spiffe("spiffe://td/ns/a/sa/b").args(serde_json::json!({"x": 1})).build();
//! h.request(&call).assert_allowed();
//! ```

use std::marker::PhantomData;

use serde_json::Value;

use crate::{
    load_config, Call, Decision, Filter, Header, ListItem, ListKind, MessageKind, Principal,
    ResultDecision, Target, TargetKind, Token, TokenKind,
};

/// A loaded filter, as the host would hold it.
pub struct Harness<F: Filter> {
    config: F::Config,
    _filter: PhantomData<F>,
}

impl<F: Filter> Harness<F> {
    /// Loads the filter with a JSON configuration, as the host does.
    pub fn new(config_json: &str) -> Result<Self, String> {
        Ok(Self {
            config: load_config::<F>(config_json)?,
            _filter: PhantomData,
        })
    }

    /// Runs `on_request` on what the host would show the filter: only the
    /// parts it declared in [`Filter::DECIDES_ON`], if it declared any.
    pub fn request(&self, call: &Call) -> Decision {
        match F::DECIDES_ON {
            Some(inputs) => F::on_request(&self.config, &call.narrowed(inputs)),
            None => F::on_request(&self.config, call),
        }
    }

    pub fn result(&self, call: &Call, result: &Value) -> ResultDecision {
        F::on_result(&self.config, call, &result.to_string())
    }

    /// Runs the list hook on item names; returns the visible names.
    pub fn visible(&self, principal: &Principal, kind: ListKind, names: &[&str]) -> Vec<String> {
        let items: Vec<ListItem> = names
            .iter()
            .map(|n| ListItem {
                name: (*n).to_string(),
                annotations: None,
            })
            .collect();
        let verdicts = F::on_list(&self.config, principal, kind, &items);
        items
            .into_iter()
            .zip(verdicts)
            .filter(|(_, v)| *v)
            .map(|(i, _)| i.name)
            .collect()
    }
}

/// Builds calls for tests.
#[derive(Debug, Clone)]
pub struct CallBuilder {
    call: Call,
}

impl CallBuilder {
    pub fn method(method: &str) -> Self {
        Self {
            call: Call {
                kind: MessageKind::Request,
                method: method.to_string(),
                id: Some("1".into()),
                target: None,
                arguments: None,
                principal: Principal::default(),
                session: None,
                instance: "test-instance".into(),
                era: "2025-11-25".into(),
                headers: Vec::new(),
                annotations: None,
            },
        }
    }

    /// A `tools/call` of `name`.
    pub fn tool(name: &str) -> Self {
        Self::method("tools/call").target(TargetKind::Tool, name)
    }

    pub fn prompt(name: &str) -> Self {
        Self::method("prompts/get").target(TargetKind::Prompt, name)
    }

    pub fn resource(uri: &str) -> Self {
        Self::method("resources/read").target(TargetKind::Resource, uri)
    }

    pub fn target(mut self, kind: TargetKind, name: &str) -> Self {
        self.call.target = Some(Target {
            kind,
            name: name.to_string(),
        });
        self
    }

    pub fn args(mut self, args: Value) -> Self {
        self.call.arguments = Some(args.to_string());
        self
    }

    /// The mTLS peer, keeping any token already set.
    pub fn spiffe(mut self, id: &str) -> Self {
        let token = self.call.principal.token.take();
        self.call.principal = Principal::new(Some(id.to_string()), token);
        self
    }

    /// A verified access token with these claims, keeping any peer already
    /// set. `sub`, `iss`, `scope` (space-separated) or `scp` (an array),
    /// and `exp` (seconds) fill the token's fields as the host would.
    pub fn jwt(self, claims: Value) -> Self {
        let text = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
        let scopes = match (claims.get("scope"), claims.get("scp")) {
            (Some(Value::String(s)), _) => s.split(' ').map(str::to_string).collect(),
            (_, Some(Value::Array(a))) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let token = Token {
            kind: TokenKind::AccessToken,
            issuer: text("iss").unwrap_or_else(|| "test-issuer".into()),
            subject: text("sub").unwrap_or_default(),
            scopes,
            actor: claims
                .pointer("/act/sub")
                .and_then(Value::as_str)
                .map(str::to_string),
            expires_at_ms: claims
                .get("exp")
                .and_then(Value::as_u64)
                .map_or(u64::MAX, |s| s.saturating_mul(1000)),
            claims: claims.to_string(),
        };
        self.token(token)
    }

    /// A verified token, keeping any peer already set.
    pub fn token(mut self, token: Token) -> Self {
        let peer = self.call.principal.peer.take();
        self.call.principal = Principal::new(peer, Some(token));
        self
    }

    pub fn annotations(mut self, annotations: Value) -> Self {
        self.call.annotations = Some(annotations.to_string());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.call.headers.push(Header {
            name: name.to_string(),
            value: value.to_string(),
        });
        self
    }

    pub fn era(mut self, era: &str) -> Self {
        self.call.era = era.to_string();
        self
    }

    pub fn build(self) -> Call {
        self.call
    }
}

/// Moves the native stand-in's clock forward.
#[cfg(not(target_arch = "wasm32"))]
pub fn advance_clock(ms: u64) {
    native::STATE.with(|s| s.borrow_mut().now += ms);
}

/// Forgets every counter and stored value of the native stand-in.
#[cfg(not(target_arch = "wasm32"))]
pub fn reset_host() {
    native::STATE.with(|s| *s.borrow_mut() = native::State::default());
}

#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
pub mod native {
    //! The in-memory host used natively. Per thread, so tests running in
    //! parallel do not see each other's counters.
    use std::{cell::RefCell, collections::HashMap};

    use crate::host::Level;

    #[derive(Default)]
    pub struct State {
        pub now: u64,
        values: HashMap<String, (String, Option<u64>)>,
    }

    impl State {
        fn live(&mut self, key: &str) -> Option<&String> {
            let now = self.now;
            if matches!(self.values.get(key), Some((_, Some(exp))) if *exp <= now) {
                self.values.remove(key);
            }
            self.values.get(key).map(|(v, _)| v)
        }

        fn put(&mut self, key: &str, value: String, ttl_ms: u64) {
            let expiry = (ttl_ms > 0).then(|| self.now + ttl_ms);
            self.values.insert(key.to_string(), (value, expiry));
        }
    }

    thread_local! {
        pub static STATE: RefCell<State> = RefCell::new(State::default());
    }

    pub fn log(level: Level, message: &str) {
        eprintln!("[filter {level:?}] {message}");
    }

    pub fn now_ms() -> u64 {
        STATE.with(|s| s.borrow().now)
    }

    pub fn counter_add(key: &str, delta: i64, ttl_ms: u64) -> i64 {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let current = s.live(key).and_then(|v| v.parse::<i64>().ok());
            let next = current.unwrap_or(0).saturating_add(delta);
            match current {
                // An existing counter keeps its expiry.
                Some(_) => {
                    if let Some(entry) = s.values.get_mut(key) {
                        entry.0 = next.to_string();
                    }
                }
                None => s.put(key, next.to_string(), ttl_ms),
            }
            next
        })
    }

    pub fn kv_get(key: &str) -> Option<String> {
        STATE.with(|s| s.borrow_mut().live(key).cloned())
    }

    pub fn kv_compare_and_swap(
        key: &str,
        expected: Option<&str>,
        value: &str,
        ttl_ms: u64,
    ) -> bool {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            if s.live(key).map(String::as_str) != expected {
                return false;
            }
            s.put(key, value.to_string(), ttl_ms);
            true
        })
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::host;

    #[test]
    fn native_host_counts_and_expires() {
        reset_host();
        assert_eq!(host::counter_add("k", 1, 100), 1);
        assert_eq!(host::counter_add("k", 2, 100), 3);
        advance_clock(100);
        assert_eq!(
            host::counter_add("k", 1, 100),
            1,
            "expired counter restarts"
        );
        assert!(host::kv_compare_and_swap("v", None, "a", 0));
        assert!(!host::kv_compare_and_swap("v", None, "b", 0));
        assert!(host::kv_compare_and_swap("v", Some("a"), "b", 0));
        assert_eq!(host::kv_get("v").as_deref(), Some("b"));
    }

    struct DenyAll;
    impl Filter for DenyAll {
        type Config = Value;
        fn on_request(_: &Value, call: &Call) -> Decision {
            Decision::deny(format!("no {}", call.method))
        }
    }

    #[test]
    fn harness_runs_hooks() {
        let h = Harness::<DenyAll>::new("").unwrap();
        h.request(&CallBuilder::tool("x").build())
            .assert_denied("no tools/call");
        let visible = h.visible(&Principal::default(), ListKind::Tools, &["a", "b"]);
        assert_eq!(visible, vec!["a", "b"], "default on_list shows everything");
    }

    #[test]
    fn call_helpers() {
        let c = CallBuilder::tool("t")
            .args(serde_json::json!({"path": "/a"}))
            .annotations(serde_json::json!({"destructiveHint": true}))
            .jwt(serde_json::json!({"sub": "alice"}))
            .build();
        assert_eq!(c.tool_name(), Some("t"));
        assert_eq!(c.task_tool(), None);
        assert_eq!(c.prompt_name(), None);
        let task = CallBuilder::method("tasks/get")
            .target(TargetKind::Tool, "t")
            .build();
        assert_eq!(task.tool_name(), None, "a task poll is not a call of t");
        assert_eq!(task.task_tool(), Some("t"));
        assert_eq!(c.args_value()["path"], "/a");
        assert_eq!(c.annotation("destructiveHint"), Some(true));
        assert_eq!(c.principal.claim("sub"), Some(serde_json::json!("alice")));
    }
}
