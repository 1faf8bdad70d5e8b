//! `rego`: MCP calls and lists decided by Rego policies, evaluated by
//! regorus (a Rust Rego interpreter) inside the component.
//!
//! The entry point is `data.portcullis.allow`: a call is allowed exactly
//! when it is `true`. `data.portcullis.reason`, when defined, is the
//! message a denied client reads. The input document is the call (see
//! the README); `data` is the filter config's `data`. Policies are parsed,
//! and the entry point evaluated once against an empty input, when the
//! filter loads: a syntax error or a missing `allow` rule refuses the load
//! with regorus's message.

use std::cell::RefCell;

use portcullis_policy_sdk::{prelude::*, Header};
use regorus::{Engine, Value as RegoValue};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The rule that decides.
const ALLOW: &str = "data.portcullis.allow";
/// The denial message, when the policy gives one.
const REASON: &str = "data.portcullis.reason";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Rego modules by file name, or one module as a string.
    policies: Policies,
    /// The `data` document.
    #[serde(default)]
    data: Option<Value>,
    /// Rego v0 syntax (no `if`/`contains` keywords). Default: v1, as OPA 1.x.
    #[serde(default)]
    rego_v0: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Policies {
    One(String),
    Many(std::collections::BTreeMap<String, String>),
}

/// A loaded engine. Evaluation needs `&mut`, and a filter instance is
/// single-threaded, hence the `RefCell`.
#[derive(Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct Config {
    engine: RefCell<Engine>,
}

impl TryFrom<RawConfig> for Config {
    type Error = String;

    fn try_from(raw: RawConfig) -> Result<Self, String> {
        let mut engine = Engine::new();
        engine.set_rego_v0(raw.rego_v0);
        // OPA's behaviour: a builtin that fails (a bad regex, a bad base64
        // string) makes its expression undefined rather than aborting the
        // whole query. An undefined `allow` still denies.
        engine.set_strict_builtin_errors(false);
        let modules = match raw.policies {
            Policies::One(text) => vec![("policy.rego".to_string(), text)],
            Policies::Many(map) => map.into_iter().collect(),
        };
        if modules.is_empty() {
            return Err("no Rego policies given".into());
        }
        for (name, text) in modules {
            engine
                .add_policy(name.clone(), text)
                .map_err(|e| format!("rego policy {name}: {e}"))?;
        }
        if let Some(data) = raw.data {
            engine
                .add_data_json(&data.to_string())
                .map_err(|e| format!("rego data: {e}"))?;
        }
        // The entry point must exist: evaluating an undefined rule path is
        // an error, so a typo in the package name refuses the load.
        engine.set_input(RegoValue::new_object());
        engine
            .eval_rule(ALLOW.to_string())
            .map_err(|e| format!("rego policies must define {ALLOW}: {e}"))?;
        Ok(Self {
            engine: RefCell::new(engine),
        })
    }
}

/// What a request is about, for `input.kind`.
#[derive(Clone, Copy)]
enum Kind {
    Call,
    List,
    Related,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Call => "call",
            Self::List => "list",
            Self::Related => "related",
        }
    }
}

fn target_kind(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Tool => "tool",
        TargetKind::Prompt => "prompt",
        TargetKind::Resource => "resource",
    }
}

/// `input.principal`: the agent (SPIFFE ID, split) and the user (the
/// access token's facts), each absent when unknown.
fn principal(p: &Principal) -> Value {
    let mut out = Map::new();
    if let Some(id) = p.spiffe_id() {
        let rest = id.strip_prefix("spiffe://").unwrap_or(id);
        let (td, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        out.insert(
            "agent".into(),
            json!({"spiffe_id": id, "trust_domain": td, "path": path}),
        );
    }
    if let Some(t) = p
        .token
        .as_ref()
        .filter(|t| t.kind == TokenKind::AccessToken)
    {
        let claims: Value = serde_json::from_str(&t.claims).unwrap_or(Value::Null);
        out.insert(
            "user".into(),
            json!({
                "subject": t.subject,
                "issuer": t.issuer,
                "scopes": t.scopes,
                "actor": t.actor,
                "claims": claims,
            }),
        );
    }
    out.insert("key".into(), Value::String(p.key.clone()));
    Value::Object(out)
}

/// The input document for one question.
struct Input<'a> {
    kind: Kind,
    method: &'a str,
    target: TargetKind,
    name: &'a str,
    arguments: Option<&'a str>,
    annotations: Option<&'a str>,
    principal: &'a Principal,
    era: &'a str,
    instance: &'a str,
    headers: &'a [Header],
}

impl Input<'_> {
    fn to_json(&self) -> Result<String, String> {
        let parse = |what: &str, text: Option<&str>| -> Result<Value, String> {
            match text {
                Some(t) => serde_json::from_str(t).map_err(|e| format!("{what}: {e}")),
                None => Ok(Value::Null),
            }
        };
        let headers: Map<String, Value> = self
            .headers
            .iter()
            .map(|h| (h.name.clone(), Value::String(h.value.clone())))
            .collect();
        let doc = json!({
            "kind": self.kind.as_str(),
            "method": self.method,
            "target": {"kind": target_kind(self.target), "name": self.name},
            "arguments": parse("arguments", self.arguments)?,
            "annotations": parse("annotations", self.annotations)?,
            "principal": principal(self.principal),
            "era": self.era,
            "instance": self.instance,
            "headers": headers,
        });
        Ok(doc.to_string())
    }
}

/// Allowed exactly when `allow` is `true`; anything else (false,
/// undefined, another value, an error) denies.
fn decide(config: &Config, input: &Input<'_>) -> Result<(), String> {
    let mut engine = config
        .engine
        .try_borrow_mut()
        .map_err(|_| "rego engine busy".to_string())?;
    engine
        .set_input_json(&input.to_json()?)
        .map_err(|e| format!("rego input: {e}"))?;
    let allow = engine
        .eval_rule(ALLOW.to_string())
        .map_err(|e| format!("rego evaluation failed, so the call is denied: {e}"))?;
    if allow == RegoValue::from(true) {
        return Ok(());
    }
    let reason = engine
        .eval_rule(REASON.to_string())
        .ok()
        .and_then(|v| v.as_string().ok().map(|s| s.to_string()));
    Err(reason.unwrap_or_else(|| {
        format!(
            "{ALLOW} is not true for {} on {} {}",
            input.principal.describe(),
            input.method,
            input.name
        )
    }))
}

pub struct Rego;

impl Filter for Rego {
    type Config = Config;

    fn on_request(config: &Config, call: &Call) -> Decision {
        let Some(target) = &call.target else {
            // Nothing to authorize: initialize, ping, lists (filtered item
            // by item), notifications.
            return Decision::Allow;
        };
        let own_call = call.is_target_call();
        let input = Input {
            kind: if own_call { Kind::Call } else { Kind::Related },
            method: &call.method,
            target: target.kind,
            name: &target.name,
            arguments: if own_call {
                call.arguments.as_deref()
            } else {
                None
            },
            annotations: call.annotations.as_deref(),
            principal: &call.principal,
            era: &call.era,
            instance: &call.instance,
            headers: &call.headers,
        };
        match decide(config, &input) {
            Ok(()) => Decision::Allow,
            Err(why) => Decision::deny(why),
        }
    }

    fn on_list(
        config: &Config,
        principal: &Principal,
        kind: ListKind,
        items: &[ListItem],
    ) -> Vec<bool> {
        let target = kind.target_kind();
        let method = target.call_method();
        items
            .iter()
            .map(|item| {
                let input = Input {
                    kind: Kind::List,
                    method,
                    target,
                    name: &item.name,
                    arguments: None,
                    annotations: item.annotations.as_deref(),
                    principal,
                    era: "",
                    instance: "",
                    headers: &[],
                };
                decide(config, &input).is_ok()
            })
            .collect()
    }
}

export_filter!(Rego);

#[cfg(test)]
mod tests;
