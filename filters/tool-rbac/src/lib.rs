//! `tool-rbac`: who may call, and see, which tools, prompts and resources.
//!
//! One rule set serves both calls and lists, so what an agent sees never
//! drifts from what it may call.

use std::collections::BTreeMap;

use portcullis_policy_sdk::{pattern, prelude::*};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    #[default]
    Deny,
}

/// Who a rule applies to. Empty means everyone; otherwise a caller matches
/// if its SPIFFE ID matches one pattern, or its JWT has every listed claim.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principals {
    #[serde(default)]
    pub spiffe: Vec<String>,
    #[serde(default)]
    pub claims: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub effect: Effect,
    #[serde(default)]
    pub principals: Principals,
    /// Tool name patterns this rule covers.
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub prompts: Vec<String>,
    /// Resource URI patterns.
    #[serde(default)]
    pub resources: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What happens to a target that no rule covers.
    #[serde(default)]
    pub default: Effect,
    pub rules: Vec<Rule>,
}

impl Principals {
    fn matches(&self, caller: &Caller) -> bool {
        if self.spiffe.is_empty() && self.claims.is_empty() {
            return true;
        }
        let by_id = caller
            .spiffe_id()
            .is_some_and(|id| pattern::any(&self.spiffe, id));
        let by_claims = !self.claims.is_empty()
            && self
                .claims
                .iter()
                .all(|(k, want)| claim_matches(caller.claim(k).as_ref(), want));
        by_id || by_claims
    }
}

/// A claim matches if it equals the wanted value, or, for an array claim
/// (`groups`, `roles`), if it contains it.
fn claim_matches(have: Option<&Value>, want: &Value) -> bool {
    match have {
        Some(Value::Array(items)) => items.contains(want),
        Some(v) => v == want,
        None => false,
    }
}

impl Rule {
    fn covers(&self, kind: TargetKind, name: &str) -> bool {
        let patterns = match kind {
            TargetKind::Tool => &self.tools,
            TargetKind::Prompt => &self.prompts,
            TargetKind::Resource => &self.resources,
        };
        pattern::any(patterns, name)
    }
}

impl Config {
    /// The effect for `caller` on a target, and the rule that decided.
    fn effect(&self, caller: &Caller, kind: TargetKind, name: &str) -> (Effect, Option<&str>) {
        self.rules
            .iter()
            .find(|r| r.covers(kind, name) && r.principals.matches(caller))
            .map_or((self.default, None), |r| (r.effect, Some(r.name.as_str())))
    }
}

pub struct ToolRbac;

impl Filter for ToolRbac {
    type Config = Config;

    fn validate(config: &Config) -> Result<(), String> {
        for r in &config.rules {
            if r.tools.is_empty() && r.prompts.is_empty() && r.resources.is_empty() {
                return Err(format!(
                    "rule {:?} names no tools, prompts or resources",
                    r.name
                ));
            }
        }
        Ok(())
    }

    fn on_request(config: &Config, call: &Call) -> Decision {
        let Some(target) = &call.target else {
            return Decision::Allow;
        };
        match config.effect(&call.caller, target.kind, &target.name) {
            (Effect::Allow, _) => Decision::Allow,
            (Effect::Deny, rule) => Decision::deny(format!(
                "{} may not use {} ({})",
                caller_text(&call.caller),
                target.name,
                rule.map_or_else(|| "no rule allows it".to_string(), |r| format!("rule {r}"))
            )),
        }
    }

    fn on_list(config: &Config, caller: &Caller, kind: ListKind, items: &[ListItem]) -> Vec<bool> {
        items
            .iter()
            .map(|i| config.effect(caller, kind.target_kind(), &i.name).0 == Effect::Allow)
            .collect()
    }
}

fn caller_text(c: &Caller) -> String {
    match c {
        Caller::Anonymous => "an anonymous caller".into(),
        Caller::Spiffe(id) => id.clone(),
        Caller::Jwt(_) => c
            .claim("sub")
            .and_then(|s| s.as_str().map(str::to_string))
            .unwrap_or_else(|| "a JWT caller".into()),
    }
}

export_filter!(ToolRbac);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CONFIG: &str = r#"{
        "default": "deny",
        "rules": [
            {"name": "no-delete", "effect": "deny", "tools": ["delete_*"]},
            {"name": "agents", "effect": "allow",
             "principals": {"spiffe": ["spiffe://demo.local/ns/agents/sa/*"]},
             "tools": ["*"], "prompts": ["*"]},
            {"name": "readers", "effect": "allow",
             "principals": {"claims": {"groups": "readers"}},
             "tools": ["read_*", "echo"], "resources": ["file:///public/*"]}
        ]
    }"#;

    fn harness() -> Harness<ToolRbac> {
        Harness::new(CONFIG).unwrap()
    }

    const AGENT: &str = "spiffe://demo.local/ns/agents/sa/planner";

    #[test]
    fn spiffe_pattern_grants_and_first_rule_wins() {
        let h = harness();
        h.request(&CallBuilder::tool("echo").spiffe(AGENT).build())
            .assert_allowed();
        h.request(&CallBuilder::tool("delete_file").spiffe(AGENT).build())
            .assert_denied("rule no-delete");
    }

    #[test]
    fn unknown_callers_fall_to_the_default() {
        let h = harness();
        h.request(&CallBuilder::tool("echo").build())
            .assert_denied("no rule allows it");
        h.request(
            &CallBuilder::tool("echo")
                .spiffe("spiffe://other/ns/x/sa/y")
                .build(),
        )
        .assert_denied("spiffe://other/ns/x/sa/y");
    }

    #[test]
    fn jwt_claims_match_scalars_and_arrays() {
        let h = harness();
        let reader = json!({"sub": "alice", "groups": ["staff", "readers"]});
        h.request(&CallBuilder::tool("read_file").jwt(reader.clone()).build())
            .assert_allowed();
        h.request(
            &CallBuilder::resource("file:///public/a")
                .jwt(reader.clone())
                .build(),
        )
        .assert_allowed();
        h.request(
            &CallBuilder::resource("file:///secret/a")
                .jwt(reader.clone())
                .build(),
        )
        .assert_denied("alice");
        h.request(&CallBuilder::tool("slow_count").jwt(reader).build())
            .assert_denied("alice");
        let other = json!({"sub": "bob", "groups": "writers"});
        h.request(&CallBuilder::tool("read_file").jwt(other).build())
            .assert_denied("bob");
    }

    #[test]
    fn lists_follow_the_same_rules() {
        let h = harness();
        let agent = Caller::Spiffe(AGENT.into());
        let tools = ["echo", "read_file", "delete_file"];
        assert_eq!(
            h.visible(&agent, ListKind::Tools, &tools),
            vec!["echo", "read_file"]
        );
        assert!(h
            .visible(&Caller::Anonymous, ListKind::Tools, &tools)
            .is_empty());
        let reader = Caller::Jwt(json!({"groups": ["readers"]}).to_string());
        assert_eq!(
            h.visible(&reader, ListKind::Tools, &tools),
            vec!["echo", "read_file"]
        );
        assert!(h.visible(&reader, ListKind::Prompts, &["p"]).is_empty());
    }

    /// The proxy aims a task call at the tool that created the task: a
    /// caller denied the tool is denied its task.
    #[test]
    fn task_calls_follow_their_tool() {
        let h = harness();
        let task = |tool: &str| {
            CallBuilder::method("tasks/get")
                .target(TargetKind::Tool, tool)
                .spiffe(AGENT)
                .build()
        };
        h.request(&task("echo")).assert_allowed();
        h.request(&task("delete_file"))
            .assert_denied("rule no-delete");
    }

    #[test]
    fn untargeted_methods_pass() {
        harness()
            .request(&CallBuilder::method("tools/list").build())
            .assert_allowed();
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(
            Harness::<ToolRbac>::new(r#"{"rules": [{"name": "x", "effect": "allow"}]}"#)
                .err()
                .unwrap()
                .contains("names no tools")
        );
        assert!(Harness::<ToolRbac>::new(r#"{"rules": [], "defualt": "allow"}"#).is_err());
        assert!(Harness::<ToolRbac>::new(
            r#"{"rules": [{"name": "x", "effect": "maybe", "tools": ["*"]}]}"#
        )
        .is_err());
    }

    /// Issue 13: `*` in a principal pattern stays within one segment.
    #[test]
    fn spiffe_star_stays_within_one_segment() {
        let h = Harness::<ToolRbac>::new(
            r#"{"default": "deny", "rules": [
                {"name": "readers", "effect": "allow",
                 "principals": {"spiffe": ["spiffe://demo.local/ns/*/sa/reader"]},
                 "tools": ["*"]},
                {"name": "team", "effect": "allow",
                 "principals": {"spiffe": ["spiffe://demo.local/team/**"]},
                 "tools": ["*"]}
            ]}"#,
        )
        .unwrap();
        let call = |id: &str| h.request(&CallBuilder::tool("echo").spiffe(id).build());
        call("spiffe://demo.local/ns/a/sa/reader").assert_allowed();
        call("spiffe://demo.local/team/a/b/c").assert_allowed();
        for id in [
            "spiffe://demo.local/ns/a/b/sa/reader",
            "spiffe://demo.local/ns/evil/sa/x/sa/reader",
            "spiffe://demo.local/ns/a/sa/reader/sa/reader",
        ] {
            call(id).assert_denied("no rule allows it");
        }
        let visible = h.visible(
            &Caller::Spiffe("spiffe://demo.local/ns/a/b/sa/reader".into()),
            ListKind::Tools,
            &["echo"],
        );
        assert!(visible.is_empty(), "{visible:?}");
    }

    #[test]
    fn resource_star_stays_within_one_segment() {
        let h = Harness::<ToolRbac>::new(
            r#"{"default": "deny", "rules": [
                {"name": "public", "effect": "allow",
                 "resources": ["file:///public/*", "file:///docs/**"]}
            ]}"#,
        )
        .unwrap();
        let read = |uri: &str| h.request(&CallBuilder::resource(uri).build());
        read("file:///public/a.txt").assert_allowed();
        read("file:///docs/a/b/c.md").assert_allowed();
        read("file:///public/sub/a.txt").assert_denied("no rule allows it");
        read("file:///public/../secret/key").assert_denied("no rule allows it");
    }

    /// `*` alone covers every name, `/` included, so that a deny rule on
    /// `*` misses nothing.
    #[test]
    fn lone_star_covers_names_with_slashes() {
        let h = Harness::<ToolRbac>::new(
            r#"{"default": "allow", "rules": [
                {"name": "freeze", "effect": "deny", "tools": ["*"]}
            ]}"#,
        )
        .unwrap();
        h.request(&CallBuilder::tool("github/create_issue").build())
            .assert_denied("rule freeze");
    }
}
