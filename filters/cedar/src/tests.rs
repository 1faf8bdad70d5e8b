//! Native tests: the filter's logic through the SDK harness. The real host
//! runs it in `proxy/tests/polyglot.rs` and the parity table.

use portcullis_policy_sdk::prelude::*;
use serde_json::json;

use super::Cedar;

const AGENTS: &str = r#"
@id("agents-read")
permit (principal is Mcp::Agent, action == Mcp::Action::"tools/call", resource)
when { principal.trust_domain == "demo.local" && principal.path like "/ns/agents/sa/*" };

@id("admins")
permit (principal in Mcp::Group::"admins", action, resource);

@id("ticket")
@reason("destructive tools need a ticket argument starting with CHG-")
forbid (principal, action == Mcp::Action::"tools/call", resource)
when { context.kind == "call" && resource.annotations has destructiveHint && resource.annotations.destructiveHint }
unless { resource.hasTag("ticket") && resource.getTag("ticket") like "CHG-*" && resource.getTag("ticket") != "CHG-" };
"#;

fn config(policies: &str) -> String {
    json!({
        "policies": policies,
        "entities": [
            {"uid": {"type": "Mcp::Group", "id": "admins"}, "attrs": {}, "parents": []},
            {"uid": {"type": "Mcp::Agent", "id": "spiffe://demo.local/ns/ops/sa/root"},
             "attrs": {"trust_domain": "demo.local", "path": "/ns/ops/sa/root"},
             "parents": [{"type": "Mcp::Group", "id": "admins"}]}
        ]
    })
    .to_string()
}

fn harness() -> Harness<Cedar> {
    Harness::new(&config(AGENTS)).expect("the example policies load")
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
fn permits_by_spiffe_path_and_group() {
    let h = harness();
    h.request(&CallBuilder::tool("echo").spiffe(PLANNER).build())
        .assert_allowed();
    // Not under /ns/agents/: no permit matches; Cedar denies by default.
    h.request(
        &CallBuilder::tool("echo")
            .spiffe("spiffe://demo.local/ns/web/sa/frontend")
            .build(),
    )
    .assert_denied("no Cedar policy permits");
    // Another trust domain with the same path.
    h.request(
        &CallBuilder::tool("echo")
            .spiffe("spiffe://evil.local/ns/agents/sa/planner")
            .build(),
    )
    .assert_denied("no Cedar policy permits");
    // A member of admins (from the configured entities), on any action.
    h.request(&CallBuilder::prompt("summary").spiffe(ROOT).build())
        .assert_allowed();
    h.request(&CallBuilder::tool("echo").build())
        .assert_denied("anonymous");
}

#[test]
fn destructive_tools_need_a_ticket() {
    let h = harness();
    h.request(&destructive(PLANNER, json!({"path": "/x"})))
        .assert_denied("need a ticket argument");
    h.request(&destructive(
        PLANNER,
        json!({"path": "/x", "ticket": "CHG-"}),
    ))
    .assert_denied("need a ticket argument");
    h.request(&destructive(PLANNER, json!({"path": "/x", "ticket": 42})))
        .assert_denied("need a ticket argument");
    h.request(&destructive(
        PLANNER,
        json!({"path": "/x", "ticket": "CHG-7"}),
    ))
    .assert_allowed();
    // The forbid binds admins too: forbid overrides permit.
    h.request(&destructive(ROOT, json!({})))
        .assert_denied("need a ticket argument");
}

#[test]
fn arguments_cannot_mint_entities() {
    // Cedar's JSON reads {"__entity": ...} as an entity reference; the
    // filter never hands arguments to that parser, so this is a string.
    let h = harness();
    let args = json!({"ticket": {"__entity": {"type": "Mcp::Group", "id": "admins"}}});
    h.request(&destructive(PLANNER, args))
        .assert_denied("need a ticket argument");
}

#[test]
fn lists_show_what_could_be_called() {
    let h = Harness::<Cedar>::new(&config(AGENTS)).expect("loads");
    let planner = Principal::new(Some(PLANNER.into()), None);
    // delete_file is listed: a call of it with a ticket is allowed.
    assert_eq!(
        h.visible(&planner, ListKind::Tools, &["echo", "delete_file"]),
        ["echo", "delete_file"]
    );
    let web = Principal::new(Some("spiffe://demo.local/ns/web/sa/x".into()), None);
    assert!(h.visible(&web, ListKind::Tools, &["echo"]).is_empty());
    // Prompts: only admins have a permit.
    assert!(h.visible(&planner, ListKind::Prompts, &["p"]).is_empty());
    let root = Principal::new(Some(ROOT.into()), None);
    assert_eq!(h.visible(&root, ListKind::Prompts, &["p"]), ["p"]);
}

#[test]
fn users_are_in_the_context() {
    let policies = r#"
        permit (principal, action == Mcp::Action::"tools/call", resource == Mcp::Tool::"report")
        when { context has user && context.user.scopes.contains("reports:read") };
    "#;
    let h = Harness::<Cedar>::new(&config(policies)).expect("loads");
    let token = |scopes: &[&str]| Token {
        kind: TokenKind::AccessToken,
        issuer: "corp".into(),
        subject: "alice".into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        actor: None,
        expires_at_ms: u64::MAX,
        claims: "{}".into(),
    };
    let call = |scopes: &[&str]| {
        CallBuilder::tool("report")
            .spiffe(PLANNER)
            .token(token(scopes))
            .build()
    };
    h.request(&call(&["reports:read"])).assert_allowed();
    h.request(&call(&["other"])).assert_denied("alice via");
    // A JWT-SVID is a workload, never a user: no context.user.
    let svid = CallBuilder::tool("report")
        .token(Token {
            kind: TokenKind::JwtSvid,
            issuer: "spiffe://demo.local".into(),
            subject: PLANNER.into(),
            scopes: vec!["reports:read".into()],
            ..token(&[])
        })
        .build();
    h.request(&svid).assert_denied("no Cedar policy permits");
}

#[test]
fn bad_policies_are_refused_with_cedars_messages() {
    let typo = r#"permit (principal, action == Mcp::Action::"tools/cal", resource);"#;
    let err = Harness::<Cedar>::new(&config(typo)).err().expect("refused");
    assert!(err.contains("tools/cal"), "{err}");
    let bad_attr = r#"permit (principal, action == Mcp::Action::"tools/call", resource) when { resource.colour == "red" };"#;
    let err = Harness::<Cedar>::new(&config(bad_attr))
        .err()
        .expect("refused");
    assert!(err.contains("colour"), "{err}");
    let syntax = "permit (principal, action, resource";
    let err = Harness::<Cedar>::new(&config(syntax))
        .err()
        .expect("refused");
    assert!(err.contains("cedar policies"), "{err}");
    let unknown = json!({"policies": "", "polices": ""}).to_string();
    assert!(Harness::<Cedar>::new(&unknown).is_err());
    let entities = json!({"policies": "", "entities": [{"uid": {"type": "Mcp::Nope", "id": "x"}, "attrs": {}, "parents": []}]}).to_string();
    let err = Harness::<Cedar>::new(&entities).err().expect("refused");
    assert!(err.contains("cedar entities"), "{err}");
}

#[test]
fn a_policy_that_errors_denies() {
    // Cedar would skip this erroring forbid and allow; the filter denies.
    let policies = r#"
        permit (principal, action, resource);
        forbid (principal, action == Mcp::Action::"tools/call", resource)
        when { resource.hasTag("n") && resource.getTag("n") == "2" };
        // Validates (the types are right) but overflows at run time.
        forbid (principal, action == Mcp::Action::"tools/call", resource)
        when { resource.hasTag("n") && resource.getTag("n") == "big" && 9223372036854775807 + 1 > 0 };
    "#;
    let h = Harness::<Cedar>::new(&config(policies)).expect("loads");
    let call = |n: &str| {
        CallBuilder::tool("t")
            .spiffe(PLANNER)
            .args(json!({ "n": n }))
            .build()
    };
    h.request(&call("1")).assert_allowed();
    h.request(&call("2")).assert_denied("forbidden by policy");
    h.request(&call("big")).assert_denied("failed to evaluate");
}

#[test]
fn targetless_messages_pass_and_task_calls_have_no_arguments() {
    let h = harness();
    h.request(&CallBuilder::method("initialize").build())
        .assert_allowed();
    // A task of a destructive tool's call: "related", so the ticket forbid
    // (written for kind == "call") does not apply, but the caller must
    // still be permitted to use the tool.
    let task = |caller: &str| {
        CallBuilder::method("tasks/get")
            .target(TargetKind::Tool, "delete_file")
            .spiffe(caller)
            .annotations(json!({"destructiveHint": true}))
            .build()
    };
    h.request(&task(PLANNER)).assert_allowed();
    h.request(&task("spiffe://demo.local/ns/web/sa/x"))
        .assert_denied("no Cedar policy permits");
}
