//! Native tests: the filter's logic through the SDK harness. The real host
//! runs it in `proxy/tests/policy_languages.rs` and the parity table.

use portcullis_policy_sdk::prelude::*;
use serde_json::json;

use super::Rego;

const POLICY: &str = r#"
package portcullis

default allow := false

agent := input.principal.agent

allow if {
    agent.trust_domain == "demo.local"
    startswith(agent.path, "/ns/agents/sa/")
    not needs_ticket
}

allow if {
    input.principal.agent.spiffe_id in data.admins
}

# A destructive call needs a ticket; a listing has no arguments, so the
# tool stays listed.
needs_ticket if {
    input.kind == "call"
    input.annotations.destructiveHint
    not startswith(object.get(input.arguments, "ticket", ""), "CHG-")
}

reason := "destructive tools need a ticket argument starting with CHG-" if needs_ticket
"#;

fn config(policy: &str) -> String {
    json!({"policies": policy, "data": {"admins": ["spiffe://demo.local/ns/ops/sa/root"]}})
        .to_string()
}

fn harness() -> Harness<Rego> {
    Harness::new(&config(POLICY)).expect("the example policy loads")
}

const PLANNER: &str = "spiffe://demo.local/ns/agents/sa/planner";
const ROOT: &str = "spiffe://demo.local/ns/ops/sa/root";

fn destructive(caller: &str, args: serde_json::Value) -> Call {
    CallBuilder::tool("delete_file")
        .spiffe(caller)
        .annotations(json!({"destructiveHint": true}))
        .args(args)
        .build()
}

#[test]
fn allows_by_spiffe_path_and_data() {
    let h = harness();
    h.request(&CallBuilder::tool("echo").spiffe(PLANNER).build())
        .assert_allowed();
    h.request(
        &CallBuilder::tool("echo")
            .spiffe("spiffe://evil.local/ns/agents/sa/planner")
            .build(),
    )
    .assert_denied("data.portcullis.allow is not true");
    h.request(&CallBuilder::tool("echo").build())
        .assert_denied("anonymous");
    // From `data`: root is an admin.
    h.request(&destructive(ROOT, json!({}))).assert_allowed();
}

#[test]
fn destructive_calls_need_a_ticket_and_say_why() {
    let h = harness();
    h.request(&destructive(PLANNER, json!({"path": "/x"})))
        .assert_denied("need a ticket argument");
    h.request(&destructive(PLANNER, json!({"ticket": 7})))
        .assert_denied("need a ticket argument");
    h.request(&destructive(PLANNER, json!({"ticket": "CHG-7"})))
        .assert_allowed();
}

#[test]
fn lists_show_what_could_be_called() {
    let h = harness();
    let planner = Principal::new(Some(PLANNER.into()), None);
    assert_eq!(
        h.visible(&planner, ListKind::Tools, &["echo", "delete_file"]),
        ["echo", "delete_file"]
    );
    let web = Principal::new(Some("spiffe://demo.local/ns/web/sa/x".into()), None);
    assert!(h.visible(&web, ListKind::Tools, &["echo"]).is_empty());
}

#[test]
fn users_are_in_the_input() {
    let policy = r#"
        package portcullis
        allow if "reports:read" in input.principal.user.scopes
        allow if input.principal.user.claims.groups[_] == "ops"
    "#;
    let h = Harness::<Rego>::new(&config(policy)).expect("loads");
    let token = |scopes: &[&str], claims: serde_json::Value| Token {
        kind: TokenKind::AccessToken,
        issuer: "corp".into(),
        subject: "alice".into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        actor: None,
        expires_at_ms: u64::MAX,
        claims: claims.to_string(),
    };
    let call = |t| CallBuilder::tool("report").spiffe(PLANNER).token(t).build();
    h.request(&call(token(&["reports:read"], json!({}))))
        .assert_allowed();
    h.request(&call(token(&[], json!({"groups": ["ops"]}))))
        .assert_allowed();
    h.request(&call(token(&["other"], json!({"groups": ["dev"]}))))
        .assert_denied("alice via");
    // A JWT-SVID is a workload, never a user.
    let svid = Token {
        kind: TokenKind::JwtSvid,
        subject: PLANNER.into(),
        ..token(&["reports:read"], json!({}))
    };
    h.request(&CallBuilder::tool("report").token(svid).build())
        .assert_denied("not true");
}

#[test]
fn bad_policies_are_refused_with_regorus_messages() {
    let syntax = "package portcullis\nallow if {";
    let err = Harness::<Rego>::new(&config(syntax))
        .err()
        .expect("refused");
    assert!(err.contains("rego policy policy.rego"), "{err}");
    let elsewhere = "package other\nallow := true";
    let err = Harness::<Rego>::new(&config(elsewhere))
        .err()
        .expect("refused");
    assert!(err.contains("must define data.portcullis.allow"), "{err}");
    let unknown = json!({"policies": "package portcullis\nallow := true", "date": {}}).to_string();
    assert!(Harness::<Rego>::new(&unknown).is_err());
    let none = json!({"policies": {}}).to_string();
    assert!(Harness::<Rego>::new(&none).is_err());
}

#[test]
fn only_true_allows() {
    // A policy that yields something truthy but not `true` denies.
    let policy = "package portcullis\nallow := \"yes\"";
    let h = Harness::<Rego>::new(&config(policy)).expect("loads");
    h.request(&CallBuilder::tool("echo").spiffe(PLANNER).build())
        .assert_denied("not true");
    // A runtime error (a conflict between complete rule values) denies.
    let conflict = "package portcullis\nallow := true if input.kind == \"call\"\nallow := false if input.target.name == \"echo\"";
    let h = Harness::<Rego>::new(&config(conflict)).expect("loads");
    h.request(&CallBuilder::tool("echo").spiffe(PLANNER).build())
        .assert_denied("evaluation failed");
}

#[test]
fn targetless_messages_pass_and_task_calls_have_no_arguments() {
    let h = harness();
    h.request(&CallBuilder::method("initialize").build())
        .assert_allowed();
    let task = |caller: &str| {
        CallBuilder::method("tasks/get")
            .target(TargetKind::Tool, "delete_file")
            .spiffe(caller)
            .annotations(json!({"destructiveHint": true}))
            .build()
    };
    h.request(&task(PLANNER)).assert_allowed();
    h.request(&task("spiffe://demo.local/ns/web/sa/x"))
        .assert_denied("not true");
}
