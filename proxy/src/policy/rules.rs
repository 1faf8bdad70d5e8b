//! A static allow/deny rule set from the config.
//!
//! Rules are tried in order and the first match decides; the default action
//! applies to requests no rule matched. Notifications and client responses
//! are only refused by a rule that names their method, so that a
//! default-deny policy does not break the protocol's plumbing
//! (`notifications/initialized`, answers to server requests).
//!
//! One rule set serves calls and lists: a list item is visible exactly when
//! calling it would be allowed.

use serde::Deserialize;

use super::{glob, Decision, Denial, Mode, Policy, Request};
use crate::{
    identity::Principal,
    mcp::{
        lists::{ListItem, ListKind},
        Kind,
    },
};

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Allow,
    Deny,
}

/// One rule. Every field that is set must match; an unset field matches
/// anything.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Shown in audit logs and in denials as `static:<name>`.
    pub name: String,
    pub action: Action,
    /// JSON-RPC methods, e.g. `tools/call`. Wildcards allowed.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Tool or prompt names, or resource URIs. Wildcards allowed.
    #[serde(default)]
    pub names: Vec<String>,
    /// Patterns on the peer's SPIFFE ID; `anonymous` matches callers
    /// without a verified peer identity.
    #[serde(default)]
    pub callers: Vec<String>,
    /// The message a denied client reads.
    #[serde(default)]
    pub reason: Option<String>,
    /// `shadow`: the rule is evaluated but not enforced; what it would
    /// have changed is logged and counted.
    #[serde(default)]
    pub mode: Mode,
}

impl Rule {
    fn matches(&self, caller: &str, method: &str, target: Option<&str>) -> bool {
        let any = |pats: &[String], s: &str| pats.iter().any(|p| glob::matches(p, s));
        (self.methods.is_empty() || any(&self.methods, method))
            && (self.names.is_empty() || target.is_some_and(|t| any(&self.names, t)))
            && (self.callers.is_empty() || any(&self.callers, caller))
    }

    fn decision(&self) -> Decision {
        match self.action {
            Action::Allow => Decision::Allow,
            Action::Deny => Decision::Deny(Denial::new(
                format!("static:{}", self.name),
                self.reason
                    .clone()
                    .unwrap_or_else(|| format!("denied by rule {}", self.name)),
            )),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StaticRules {
    #[serde(default)]
    pub default: Action,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

impl StaticRules {
    /// Whether any rule is in shadow mode (else the shadow pass is skipped).
    pub fn has_shadow(&self) -> bool {
        self.rules.iter().any(|r| r.mode == Mode::Shadow)
    }

    /// What the rules would decide with the shadow rules enforced too,
    /// when that is a denial the enforced rules do not make.
    pub fn shadow_denial(&self, req: &Request<'_>) -> Option<Denial> {
        if !self.has_shadow() || !self.check(req).is_allow() {
            return None;
        }
        match self.check_with(req, true) {
            Decision::Deny(d) => Some(d),
            _ => None,
        }
    }

    /// The list items the shadow rules would hide among those shown.
    pub fn shadow_hidden(
        &self,
        principal: &Principal,
        kind: ListKind,
        items: &[ListItem<'_>],
        shown: &[bool],
    ) -> Vec<usize> {
        if !self.has_shadow() {
            return Vec::new();
        }
        let candidate = self.visible_with(principal, kind, items, true);
        shown
            .iter()
            .zip(candidate)
            .enumerate()
            .filter(|(_, (now, would))| **now && !*would)
            .map(|(i, _)| i)
            .collect()
    }

    fn decide(
        &self,
        caller: &str,
        kind: Kind,
        method: &str,
        target: Option<&str>,
        shadow: bool,
    ) -> Decision {
        let matched = self.rules.iter().find(|r| {
            // Plumbing messages are only caught by rules that name them.
            (shadow || r.mode == Mode::Enforce)
                && (kind == Kind::Request || !r.methods.is_empty())
                && r.matches(caller, method, target)
        });
        match (matched, kind) {
            (Some(rule), _) => rule.decision(),
            (None, Kind::Request) if self.default == Action::Deny => Decision::Deny(Denial::new(
                "static:default",
                format!("{method} is not allowed by policy"),
            )),
            (None, _) => Decision::Allow,
        }
    }
}

impl StaticRules {
    fn check_with(&self, req: &Request<'_>, shadow: bool) -> Decision {
        let call = req.call;
        let caller = req.principal.peer_text();
        let own = self.decide(caller, call.kind, &call.method, call.target_name(), shadow);
        match req.task_tool {
            // A task is its tool call's answer: whoever may not call the
            // tool may not reach its task either.
            Some(tool) if own.is_allow() => {
                self.decide(caller, Kind::Request, "tools/call", Some(tool), shadow)
            }
            _ => own,
        }
    }

    fn visible_with(
        &self,
        principal: &Principal,
        kind: ListKind,
        items: &[ListItem<'_>],
        shadow: bool,
    ) -> Vec<bool> {
        let caller = principal.peer_text();
        let method = kind.call_method();
        items
            .iter()
            .map(|item| {
                self.decide(caller, Kind::Request, method, Some(item.name), shadow)
                    .is_allow()
            })
            .collect()
    }
}

impl Policy for StaticRules {
    fn check(&self, req: &Request<'_>) -> Decision {
        self.check_with(req, false)
    }

    fn visible(&self, principal: &Principal, kind: ListKind, items: &[ListItem<'_>]) -> Vec<bool> {
        self.visible_with(principal, kind, items, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        identity::Peer,
        mcp::{parse_body, Body, Call, Era},
    };

    fn rules(yaml: &str) -> StaticRules {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn check(r: &StaticRules, principal: &Principal, call: &Call) -> Decision {
        r.check(&Request {
            principal,
            call,
            session: None,
            headers: crate::mcp::headers::McpHeaders::none(),
            annotations: None,
            instance: "test",
            task_tool: None,
        })
    }

    fn spiffe(id: &str) -> Principal {
        Principal::from_peer(Peer::Spiffe(crate::identity::SpiffeId::parse(id).unwrap()))
    }

    fn call(body: &str) -> Call {
        match parse_body(body.as_bytes(), 32, &Era::from_version(None)) {
            Ok(Body::Single(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    const DEMO: &str = r#"
default: allow
rules:
  - name: no-delete
    action: deny
    methods: ["tools/call"]
    names: ["delete_*"]
    reason: destructive tools are off limits
"#;

    #[test]
    fn shadow_rules_report_but_do_not_decide() {
        let r = rules(
            r#"
default: allow
rules:
  - name: would-block-read
    action: deny
    mode: shadow
    methods: ["tools/call"]
    names: ["read_*"]
  - name: no-delete
    action: deny
    methods: ["tools/call"]
    names: ["delete_*"]
"#,
        );
        let p = Principal::default();
        let read =
            call(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_x"}}"#);
        assert!(check(&r, &p, &read).is_allow());
        let req = |c| Request {
            principal: &p,
            call: c,
            session: None,
            headers: crate::mcp::headers::McpHeaders::none(),
            annotations: None,
            instance: "test",
            task_tool: None,
        };
        let d = r.shadow_denial(&req(&read)).expect("a would-be denial");
        assert_eq!(d.by, "static:would-block-read");
        // An enforced denial is no shadow denial.
        let delete =
            call(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_x"}}"#);
        assert!(matches!(check(&r, &p, &delete), Decision::Deny(_)));
        assert!(r.shadow_denial(&req(&delete)).is_none());
        // Lists: the shadow rule hides nothing, but says what it would hide.
        let items: Vec<ListItem<'_>> = ["read_x", "echo", "delete_x"]
            .iter()
            .map(|n| ListItem {
                name: n,
                annotations: None,
                input_schema: None,
            })
            .collect();
        let shown = r.visible(&p, ListKind::Tools, &items);
        assert_eq!(shown, [true, true, false]);
        assert_eq!(r.shadow_hidden(&p, ListKind::Tools, &items, &shown), [0]);
    }

    #[test]
    fn deny_rule_names_itself() {
        let r = rules(DEMO);
        let d = check(
            &r,
            &Principal::default(),
            &call(
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file"}}"#,
            ),
        );
        assert!(matches!(
            d,
            Decision::Deny(Denial { by, reason, code: None })
                if by == "static:no-delete" && reason == "destructive tools are off limits"
        ));
        let ok = check(
            &r,
            &Principal::default(),
            &call(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#),
        );
        assert!(ok.is_allow());
    }

    #[test]
    fn default_deny_spares_plumbing() {
        let r = rules(
            "default: deny\nrules:\n  - {name: init, action: allow, methods: [initialize]}\n",
        );
        let init = call(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#);
        assert!(check(&r, &Principal::default(), &init).is_allow());
        let list = call(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
        assert!(
            matches!(check(&r, &Principal::default(), &list), Decision::Deny(d) if d.by == "static:default")
        );
        let note = call(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert!(check(&r, &Principal::default(), &note).is_allow());
        let resp = call(r#"{"jsonrpc":"2.0","id":9,"result":{}}"#);
        assert!(check(&r, &Principal::default(), &resp).is_allow());
    }

    #[test]
    fn named_notification_can_be_denied() {
        let r =
            rules("rules:\n  - {name: quiet, action: deny, methods: [notifications/cancelled]}\n");
        let note = call(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{}}"#);
        assert!(matches!(
            check(&r, &Principal::default(), &note),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn caller_patterns() {
        let r = rules(
            "default: deny\nrules:\n  - {name: agents, action: allow, callers: ['spiffe://td/ns/a/**']}\n",
        );
        let c = call(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        assert!(check(&r, &spiffe("spiffe://td/ns/a/sa/x"), &c).is_allow());
        assert!(matches!(
            check(&r, &spiffe("spiffe://td/ns/b/sa/x"), &c),
            Decision::Deny(_)
        ));
        assert!(matches!(
            check(&r, &Principal::default(), &c),
            Decision::Deny(_)
        ));
    }

    /// `*` stays within one segment of a caller ID; `*` alone, like an
    /// empty list, matches every caller, anonymous ones included.
    #[test]
    fn caller_star_stays_in_one_segment_and_lone_star_is_everyone() {
        let r = rules(
            "default: deny\nrules:\n  - {name: readers, action: allow, callers: ['spiffe://td/ns/*/sa/reader']}\n",
        );
        let c = call(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        let id = spiffe;
        assert!(check(&r, &id("spiffe://td/ns/a/sa/reader"), &c).is_allow());
        for deep in [
            "spiffe://td/ns/a/b/sa/reader",
            "spiffe://td/ns/evil/sa/x/sa/reader",
        ] {
            assert!(!check(&r, &id(deep), &c).is_allow(), "{deep}");
        }
        let everyone =
            rules("default: deny\nrules:\n  - {name: all, action: allow, callers: ['*']}\n");
        assert!(check(&everyone, &Principal::default(), &c).is_allow());
        assert!(check(&everyone, &id("spiffe://td/ns/a/b/c"), &c).is_allow());
        let authenticated = rules(
            "default: deny\nrules:\n  - {name: ids, action: allow, callers: ['spiffe://**']}\n",
        );
        assert!(!check(&authenticated, &Principal::default(), &c).is_allow());
        assert!(check(&authenticated, &id("spiffe://td/ns/a/b/c"), &c).is_allow());
    }

    #[test]
    fn lists_follow_call_rules() {
        let r = rules(DEMO);
        let items = [
            ListItem {
                name: "echo",
                annotations: None,
                input_schema: None,
            },
            ListItem {
                name: "delete_file",
                annotations: None,
                input_schema: None,
            },
        ];
        assert_eq!(
            r.visible(&Principal::default(), ListKind::Tools, &items),
            vec![true, false]
        );
        // The rule is scoped to tools/call, so a prompt of the same name stays visible.
        assert_eq!(
            r.visible(&Principal::default(), ListKind::Prompts, &items),
            vec![true, true]
        );
    }

    #[test]
    fn unknown_rule_fields_are_refused() {
        let err = serde_yaml_ng::from_str::<StaticRules>(
            "rules:\n  - {name: x, action: deny, tool: y}\n",
        );
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("unknown field `tool`"));
    }

    /// A task call is judged as a call of the tool that created the task,
    /// and also by rules on its own method.
    #[test]
    fn task_calls_are_judged_as_their_tool() {
        let r = rules(
            "rules:\n  - {name: no-delete, action: deny, methods: [tools/call], names: [delete_file]}\n  - {name: no-cancel, action: deny, methods: [tasks/cancel]}\n",
        );
        let p = Principal::from_peer(Peer::Anonymous);
        let get = call(r#"{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"t"}}"#);
        let cancel =
            call(r#"{"jsonrpc":"2.0","id":2,"method":"tasks/cancel","params":{"taskId":"t"}}"#);
        let judged = |c: &Call, tool: Option<&str>| {
            r.check(&Request {
                principal: &p,
                call: c,
                session: None,
                headers: crate::mcp::headers::McpHeaders::none(),
                annotations: None,
                instance: "test",
                task_tool: tool,
            })
        };
        assert!(judged(&get, Some("echo")).is_allow());
        assert!(!judged(&get, Some("delete_file")).is_allow());
        assert!(!judged(&cancel, Some("echo")).is_allow());
    }
}
