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

/// Who a rule applies to, in two parts: the agent (the workload's SPIFFE
/// ID: the mTLS peer, else a JWT-SVID subject) and the user (the verified
/// token's subject, scopes and claims). Empty means everyone.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principals {
    /// Patterns on the agent's SPIFFE ID.
    #[serde(default)]
    pub spiffe: Vec<String>,
    /// Patterns on the token's subject.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// The token's issuer (its configured name) must be one of these. With
    /// more than one issuer, name it: a `sub` is unique only per issuer.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Scopes the token must grant, all of them.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Claims the token must carry, all of them.
    #[serde(default)]
    pub claims: BTreeMap<String, Value>,
    /// `either` (the default): the agent part or the user part matching is
    /// enough. `both`: every part that is listed must match, so "agent X
    /// may call T only for users with scope S" is `{spiffe: [X], scopes:
    /// [S], require: both}`.
    #[serde(default)]
    pub require: Require,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Require {
    #[default]
    Either,
    Both,
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
    fn matches(&self, p: &Principal) -> bool {
        let names_agent = !self.spiffe.is_empty();
        let names_user = !self.subjects.is_empty()
            || !self.issuers.is_empty()
            || !self.scopes.is_empty()
            || !self.claims.is_empty();
        if !names_agent && !names_user {
            return true;
        }
        let agent = names_agent
            && p.spiffe_id()
                .is_some_and(|id| pattern::any(&self.spiffe, id));
        // A user is an access token's subject. A JWT-SVID names a workload,
        // already the agent part: it must not also pass for the user, or
        // `require: both` would hold with no user at all.
        let user_token = p
            .token
            .as_ref()
            .filter(|t| t.kind == TokenKind::AccessToken);
        let user = names_user && user_token.is_some() && self.user_matches(p);
        match self.require {
            Require::Either => agent || user,
            Require::Both => (agent || !names_agent) && (user || !names_user),
        }
    }

    fn user_matches(&self, p: &Principal) -> bool {
        let subject = p.subject().unwrap_or_default();
        let issuer = p.token.as_ref().map_or("", |t| t.issuer.as_str());
        (self.issuers.is_empty() || self.issuers.iter().any(|i| i == issuer))
            && (self.subjects.is_empty() || pattern::any(&self.subjects, subject))
            && self.scopes.iter().all(|s| p.has_scope(s))
            && self
                .claims
                .iter()
                .all(|(k, want)| claim_matches(p.claim(k).as_ref(), want))
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
    /// The effect for `principal` on a target, and the rule that decided.
    fn effect(
        &self,
        principal: &Principal,
        kind: TargetKind,
        name: &str,
    ) -> (Effect, Option<&str>) {
        self.rules
            .iter()
            .find(|r| r.covers(kind, name) && r.principals.matches(principal))
            .map_or((self.default, None), |r| (r.effect, Some(r.name.as_str())))
    }
}

pub struct ToolRbac;

impl Filter for ToolRbac {
    type Config = Config;

    /// The rules read the principal and the target, nothing else, and
    /// keep no state: the host may reuse a decision for the same principal
    /// and target until the filter reloads.
    const DECIDES_ON: Option<&'static [Input]> = Some(&[Input::Principal, Input::Target]);

    fn validate(config: &Config) -> Result<(), String> {
        for r in &config.rules {
            if r.tools.is_empty() && r.prompts.is_empty() && r.resources.is_empty() {
                return Err(format!(
                    "rule {:?} names no tools, prompts or resources",
                    r.name
                ));
            }
            let p = &r.principals;
            let parts = usize::from(!p.spiffe.is_empty())
                + usize::from(
                    !(p.subjects.is_empty() && p.scopes.is_empty() && p.claims.is_empty()),
                );
            if p.require == Require::Both && parts < 2 {
                return Err(format!(
                    "rule {:?} says require: both but does not name both an agent (spiffe) and a user (subjects, scopes or claims)",
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
        match config.effect(&call.principal, target.kind, &target.name) {
            (Effect::Allow, _) => Decision::Allow,
            (Effect::Deny, rule) => Decision::deny(format!(
                "{} may not use {} ({})",
                call.principal.describe(),
                target.name,
                rule.map_or_else(|| "no rule allows it".to_string(), |r| format!("rule {r}"))
            )),
        }
    }

    fn on_list(
        config: &Config,
        principal: &Principal,
        kind: ListKind,
        items: &[ListItem],
    ) -> Vec<bool> {
        items
            .iter()
            .map(|i| config.effect(principal, kind.target_kind(), &i.name).0 == Effect::Allow)
            .collect()
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
        let agent = Principal::new(Some(AGENT.into()), None);
        let tools = ["echo", "read_file", "delete_file"];
        assert_eq!(
            h.visible(&agent, ListKind::Tools, &tools),
            vec!["echo", "read_file"]
        );
        assert!(h
            .visible(&Principal::default(), ListKind::Tools, &tools)
            .is_empty());
        let reader = CallBuilder::method("tools/list")
            .jwt(json!({"sub": "r", "groups": ["readers"]}))
            .build()
            .principal;
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
            &Principal::new(Some("spiffe://demo.local/ns/a/b/sa/reader".into()), None),
            ListKind::Tools,
            &["echo"],
        );
        assert!(visible.is_empty(), "{visible:?}");
    }

    /// Issue 11: a rule that needs both the agent and the user. Planner
    /// may delete only for users granted files:write; nobody else may.
    const BOTH: &str = r#"{
        "default": "deny",
        "rules": [
            {"name": "planner-for-writers", "effect": "allow",
             "principals": {"spiffe": ["spiffe://demo.local/ns/agents/sa/planner"],
                            "scopes": ["files:write"], "require": "both"},
             "tools": ["delete_*"]},
            {"name": "any-agent-reads", "effect": "allow",
             "principals": {"spiffe": ["spiffe://demo.local/ns/agents/sa/*"]},
             "tools": ["read_*"]},
            {"name": "alice", "effect": "allow",
             "principals": {"subjects": ["alice"]},
             "tools": ["echo"]}
        ]
    }"#;

    #[test]
    fn both_identities_are_required_together() {
        let h = Harness::<ToolRbac>::new(BOTH).unwrap();
        let writer = json!({"sub": "alice", "scope": "files:read files:write"});
        let reader = json!({"sub": "bob", "scope": "files:read"});
        let delete = || CallBuilder::tool("delete_file");
        h.request(&delete().spiffe(AGENT).jwt(writer.clone()).build())
            .assert_allowed();
        // The right agent for the wrong user, the right user through the
        // wrong agent, and either alone: all refused.
        h.request(&delete().spiffe(AGENT).jwt(reader.clone()).build())
            .assert_denied("bob via spiffe://demo.local/ns/agents/sa/planner");
        h.request(
            &delete()
                .spiffe("spiffe://demo.local/ns/agents/sa/intruder")
                .jwt(writer.clone())
                .build(),
        )
        .assert_denied("alice via spiffe://demo.local/ns/agents/sa/intruder");
        h.request(&delete().spiffe(AGENT).build())
            .assert_denied("no rule allows it");
        h.request(&delete().jwt(writer.clone()).build())
            .assert_denied("no rule allows it");
        // Lists agree with calls.
        let listed = |c: Call| {
            h.visible(
                &c.principal,
                ListKind::Tools,
                &["delete_file", "read_file", "echo"],
            )
        };
        assert_eq!(
            listed(delete().spiffe(AGENT).jwt(writer.clone()).build()),
            vec!["delete_file", "read_file", "echo"]
        );
        assert_eq!(
            listed(delete().spiffe(AGENT).jwt(reader).build()),
            vec!["read_file"]
        );
        // `either` parts still work alone: a subject rule, any transport.
        h.request(&CallBuilder::tool("echo").jwt(writer).build())
            .assert_allowed();
    }

    /// A JWT-SVID is a workload identity: `spiffe` patterns match its
    /// subject when there is no mTLS peer; an access token's subject never.
    #[test]
    fn spiffe_patterns_see_jwt_svids_but_not_user_subjects() {
        let h = harness();
        let svid = Token {
            kind: TokenKind::JwtSvid,
            issuer: "spiffe://demo.local".into(),
            subject: AGENT.into(),
            ..Token::default()
        };
        h.request(&CallBuilder::tool("echo").token(svid).build())
            .assert_allowed();
        let user = Token {
            subject: AGENT.into(),
            ..Token::default()
        };
        h.request(&CallBuilder::tool("echo").token(user).build())
            .assert_denied("no rule allows it");
    }

    /// A JWT-SVID is the agent, never the user: "planner for any user"
    /// does not hold for the planner alone with its SVID.
    #[test]
    fn a_jwt_svid_is_not_a_user() {
        let h = Harness::<ToolRbac>::new(
            r#"{"default": "deny", "rules": [
                {"name": "planner-for-anyone", "effect": "allow",
                 "principals": {"spiffe": ["spiffe://demo.local/ns/agents/sa/planner"],
                                "subjects": ["*"], "require": "both"},
                 "tools": ["*"]}
            ]}"#,
        )
        .unwrap();
        let svid = Token {
            kind: TokenKind::JwtSvid,
            issuer: "spiffe://demo.local".into(),
            subject: AGENT.into(),
            ..Token::default()
        };
        h.request(&CallBuilder::tool("echo").token(svid.clone()).build())
            .assert_denied("no rule allows it");
        h.request(&CallBuilder::tool("echo").spiffe(AGENT).token(svid).build())
            .assert_denied("no rule allows it");
        h.request(
            &CallBuilder::tool("echo")
                .spiffe(AGENT)
                .jwt(json!({"sub": "alice"}))
                .build(),
        )
        .assert_allowed();
    }

    /// `sub` is unique per issuer only: a rule can name the issuer.
    #[test]
    fn subjects_can_be_tied_to_their_issuer() {
        let h = Harness::<ToolRbac>::new(
            r#"{"default": "deny", "rules": [
                {"name": "corp-alice", "effect": "allow",
                 "principals": {"issuers": ["corp"], "subjects": ["alice"]},
                 "tools": ["*"]}
            ]}"#,
        )
        .unwrap();
        let alice = |iss: &str| {
            CallBuilder::tool("echo")
                .jwt(json!({"sub": "alice", "iss": iss}))
                .build()
        };
        h.request(&alice("corp")).assert_allowed();
        h.request(&alice("staging"))
            .assert_denied("no rule allows it");
    }

    #[test]
    fn require_both_needs_both_parts_named() {
        let err = Harness::<ToolRbac>::new(
            r#"{"rules": [{"name": "x", "effect": "allow", "tools": ["*"],
                "principals": {"scopes": ["a"], "require": "both"}}]}"#,
        )
        .err()
        .unwrap();
        assert!(err.contains("does not name both"), "{err}");
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
