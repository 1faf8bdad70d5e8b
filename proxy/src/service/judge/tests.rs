use std::sync::Mutex;

type Seen = Arc<Mutex<Vec<String>>>;

use super::*;
use crate::service::{exchange::Exchange, rescue::Cause};
use crate::{
    identity::{Peer, SpiffeId},
    mcp::{
        lists::{ListItem, ListKind},
        parse_body, Body, Era,
    },
    policy::Policy,
};

/// A policy small enough to read: denies `delete_file`, rewrites the
/// arguments of `shout`, replaces or denies results on request, and hides
/// list items whose name starts with `secret`. It remembers who asked.
#[derive(Default)]
struct Fake {
    results: bool,
    deny_results: bool,
    hide_all: bool,
    seen: Seen,
}

impl Policy for Fake {
    fn check(&self, req: &Request<'_>) -> Decision {
        self.seen
            .lock()
            .unwrap()
            .push(req.principal.key().to_string());
        // A task call is judged by the tool that created the task.
        match req.task_tool.or(req.call.target_name()) {
            Some("delete_file") => Decision::Deny(Denial::new("fake:no-delete", "destructive")),
            Some("shout") => Decision::Rewrite {
                arguments: RawValue::from_string(r#"{"text":"HI"}"#.into()).unwrap(),
                by: "fake:upper".into(),
            },
            _ => Decision::Allow,
        }
    }

    fn check_result(&self, _req: &Request<'_>, _result: &RawValue) -> ResultDecision {
        if self.deny_results {
            return ResultDecision::Deny(Denial::new("fake:results", "leaks"));
        }
        ResultDecision::Replace {
            result: RawValue::from_string(r#"{"content":[]}"#.into()).unwrap(),
            by: "fake:scrub".into(),
        }
    }

    fn visible(&self, _p: &Principal, _k: ListKind, items: &[ListItem<'_>]) -> Vec<bool> {
        items
            .iter()
            .map(|i| !self.hide_all && !i.name.starts_with("secret"))
            .collect()
    }

    fn inspects_results(&self) -> bool {
        self.results
    }
}

fn court(policy: Fake) -> Arc<Court> {
    court_with(policy, &crate::metrics::Metrics::new().unwrap())
}

fn court_with(policy: Fake, metrics: &crate::metrics::Metrics) -> Arc<Court> {
    Arc::new(Court {
        policy: Arc::new(PolicyHandle::new(Box::new(policy))),
        catalog: ToolCatalog::default(),
        metrics: metrics.http.clone(),
        instance: "test".into(),
        max_json_depth: 32,
        tasks: TaskOwners::default(),
        auth: Default::default(),
    })
}

fn agent() -> Principal {
    Principal::from_peer(Peer::Spiffe(
        SpiffeId::parse("spiffe://td/ns/a/sa/agent").unwrap(),
    ))
}

fn call(body: &str) -> Call {
    match parse_body(body.as_bytes(), 32, &Era::from_version(Some("2025-11-25"))) {
        Ok(Body::Single(c)) => c,
        other => panic!("{other:?}"),
    }
}

const ECHO: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;

#[test]
fn allowed_bytes_are_forwarded_unchanged() {
    let judge = Judge::new(court(Fake::default()), agent());
    let c = call(ECHO);
    match judge.decide(&c, Bytes::from_static(ECHO.as_bytes())) {
        Verdict::Forward(b) => assert_eq!(&b[..], ECHO.as_bytes()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn denial_names_the_rule_and_counts() {
    let metrics = crate::metrics::Metrics::new().unwrap();
    let judge = Judge::new(court_with(Fake::default(), &metrics), agent());
    let body = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_file"}}"#;
    let c = call(body);
    let Verdict::Deny(d) = judge.decide(&c, Bytes::from(body)) else {
        panic!("delete_file must be denied")
    };
    assert_eq!(d.by, "fake:no-delete");
    let text = String::from_utf8(metrics.render().unwrap()).unwrap();
    assert!(
        text.contains(
            r#"portcullis_requests_total{decision="deny",method="tools/call",tool="delete_file"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"portcullis_denials_total{by="fake:no-delete"} 1"#),
        "{text}"
    );
}

#[test]
fn rewrite_replaces_arguments_in_what_is_forwarded() {
    let judge = Judge::new(court(Fake::default()), agent());
    let body = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"shout","arguments":{"text":"hi"}}}"#;
    let c = call(body);
    let Verdict::Rewrite(out, arguments) = judge.decide(&c, Bytes::from(body)) else {
        panic!("rewrite must forward")
    };
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["params"]["arguments"]["text"], "HI");
    assert_eq!(arguments.get(), r#"{"text":"HI"}"#);
}

#[test]
fn the_policy_sees_the_principal_key() {
    let seen = Seen::default();
    let court = court(Fake {
        seen: seen.clone(),
        ..Fake::default()
    });
    let echo = || Bytes::from_static(ECHO.as_bytes());
    Judge::new(court.clone(), agent()).decide(&call(ECHO), echo());
    Judge::new(court, Principal::default()).decide(&call(ECHO), echo());
    assert_eq!(
        *seen.lock().unwrap(),
        ["spiffe://td/ns/a/sa/agent", "anonymous"]
    );
}

#[test]
fn results_are_inspected_only_when_a_hook_is_on() {
    let off = Judge::new(court(Fake::default()), agent());
    assert!(!off.wants_result(&call(ECHO)));
    let on = Judge::new(
        court(Fake {
            results: true,
            ..Fake::default()
        }),
        agent(),
    );
    assert!(on.wants_result(&call(ECHO)));
    let list = call(r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#);
    assert!(!on.wants_result(&list));
}

#[test]
fn result_replacement_and_denial_keep_the_id() {
    let result =
        RawValue::from_string(r#"{"content":[{"type":"text","text":"x"}]}"#.into()).unwrap();
    let replace = Judge::new(court(Fake::default()), agent());
    let out = replace.check_result(&call(ECHO), &result).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["id"], 1);
    assert_eq!(v["result"]["content"], serde_json::json!([]));

    let deny = Judge::new(
        court(Fake {
            deny_results: true,
            ..Fake::default()
        }),
        agent(),
    );
    let out = deny.check_result(&call(ECHO), &result).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["id"], 1);
    assert_eq!(v["error"]["code"], -32051);
    assert_eq!(v["error"]["data"]["by"], "fake:results");
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"echo","annotations":{"readOnlyHint":true}},{"name":"secret_tool"}]}}"#;

#[test]
fn lists_are_filtered_and_annotations_learned() {
    let court = court(Fake::default());
    let judge = Judge::new(court.clone(), agent());
    let out = judge.judge_answer(LIST.as_bytes()).unwrap().1.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let names: Vec<&str> = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo"]);
    assert_eq!(
        court.catalog.annotations("echo").as_deref(),
        Some(r#"{"readOnlyHint":true}"#)
    );
    assert!(judge.judge_answer(ECHO.as_bytes()).unwrap().1.is_none());
}

#[test]
fn a_tool_listed_again_without_annotations_has_none() {
    let court = court(Fake::default());
    let judge = Judge::new(court.clone(), agent());
    judge.judge_answer(LIST.as_bytes()).unwrap();
    assert!(court.catalog.annotations("echo").is_some());
    let bare = r#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"echo"}]}}"#;
    judge.judge_answer(bare.as_bytes()).unwrap();
    assert_eq!(court.catalog.annotations("echo"), None);
}

#[test]
fn a_policy_swap_reaches_a_judge_already_built() {
    let court = court(Fake::default());
    let judge = Judge::new(court.clone(), agent());
    let before = judge.judge_answer(LIST.as_bytes()).unwrap().1.unwrap();
    assert!(String::from_utf8_lossy(&before).contains("echo"));
    court.policy.swap(Box::new(Fake {
        hide_all: true,
        ..Fake::default()
    }));
    let after = judge.judge_answer(LIST.as_bytes()).unwrap().1.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&after).unwrap();
    assert_eq!(v["result"]["tools"], serde_json::json!([]));
}

/// An answer the strict reader cannot read with certainty is refused, not
/// relayed raw: a client reading the second `tools` (or `Tools`, or the
/// body after a BOM) would see the hidden tool.
#[test]
fn unreadable_answers_are_refused_not_relayed() {
    let judge = Judge::new(court(Fake::default()), agent());
    for hostile in [
        r#"{"jsonrpc":"2.0","id":5,"result":{"tools":[],"tools":[{"name":"secret_tool"}]}}"#,
        r#"{"jsonrpc":"2.0","id":5,"result":{"Tools":[{"name":"secret_tool"}]}}"#,
        "\u{feff}{\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{\"tools\":[{\"name\":\"secret_tool\"}]}}",
        r#"{"jsonrpc":"2.0","id":5,"result":{"tools":[]}}{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"secret_tool"}]}}"#,
    ] {
        let refused = judge.judge_answer(hostile.as_bytes());
        assert!(
            matches!(&refused, Err(r) if matches!(r.cause, Cause::UnreadableAnswer(_))),
            "{hostile}: {refused:?}"
        );
    }
}

fn task_get(id: &str) -> (Call, String) {
    let body =
        format!(r#"{{"jsonrpc":"2.0","id":7,"method":"tasks/get","params":{{"taskId":"{id}"}}}}"#);
    (call(&body), body)
}

fn denied_by(judge: &Judge, (c, body): (Call, String)) -> Option<String> {
    match judge.decide(&c, Bytes::from(body)) {
        Verdict::Forward(_) | Verdict::Rewrite(..) => None,
        Verdict::Deny(d) => Some(format!("{}: {}", d.by, d.reason)),
    }
}

#[test]
fn a_task_belongs_to_the_caller_and_tool_that_created_it() {
    let court = court(Fake::default());
    let agent_judge = Arc::new(Judge::new(court.clone(), agent()));
    let other = Principal::from_peer(Peer::Spiffe(
        SpiffeId::parse("spiffe://td/ns/b/sa/other").unwrap(),
    ));
    let other_judge = Judge::new(court.clone(), other);

    // Unknown to the sidecar: left to the server (its -32602), whoever asks.
    assert_eq!(denied_by(&agent_judge, task_get("t-1")), None);
    assert_eq!(denied_by(&other_judge, task_get("t-1")), None);

    // The agent's allowed `echo` call creates task t-1 (flat form).
    let mut ex = Exchange::new(agent_judge.clone());
    ex.answers.track(&call(ECHO), false);
    let created = br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"task","taskId":"t-1","status":"working"}}"#;
    assert_eq!(ex.process(created).unwrap(), None, "relayed unchanged");
    assert_eq!(denied_by(&agent_judge, task_get("t-1")), None);
    for m in ["tasks/update", "tasks/cancel"] {
        let body =
            format!(r#"{{"jsonrpc":"2.0","id":8,"method":"{m}","params":{{"taskId":"t-1"}}}}"#);
        assert_eq!(
            denied_by(&agent_judge, (call(&body), body.clone())),
            None,
            "{m}"
        );
    }
    let stolen = denied_by(&other_judge, task_get("t-1")).expect("other caller refused");
    assert!(stolen.contains("another caller"), "{stolen}");
}

/// An answer is read for a task only when its text could name one; one
/// named with escapes alone (no `task` in the text) is still found.
#[test]
fn a_task_named_with_escapes_is_recorded() {
    let court = court(Fake::default());
    let judge = Arc::new(Judge::new(court.clone(), agent()));
    let mut ex = Exchange::new(judge);
    ex.answers.track(&call(ECHO), false);
    let created =
        br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"t\u0061sk","t\u0061skId":"t-esc"}}"#;
    assert_eq!(ex.process(created).unwrap(), None);
    assert!(court.tasks.owner("t-esc").is_some());
    // An answer without one is relayed as it is, and records nothing.
    let mut ex = Exchange::new(Arc::new(Judge::new(court.clone(), agent())));
    ex.answers.track(&call(ECHO), false);
    let plain = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}]}}"#;
    assert_eq!(ex.process(plain).unwrap(), None);
}

/// A result naming its task in a case variant (`TaskId`) is refused:
/// relayed, the client would hold a task the sidecar never recorded, open
/// to every other caller.
#[test]
fn a_task_named_in_a_case_variant_is_refused() {
    let court = court(Fake::default());
    let mut ex = Exchange::new(Arc::new(Judge::new(court.clone(), agent())));
    ex.answers.track(&call(ECHO), false);
    let variant = br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"task","TaskId":"t-v"}}"#;
    assert!(ex.process(variant).is_err(), "relayed unrecorded");
    assert_eq!(court.tasks.owner("t-v"), None);
}

#[test]
fn a_task_of_a_denied_tool_is_denied() {
    let court = court(Fake::default());
    let judge = Judge::new(court.clone(), agent());
    // Created before the policy denied the tool (a reload), or in the
    // 2025-11-25 nested form: either way the task is the tool's.
    let owner = tasks::Owner {
        tool: "delete_file".into(),
        principal: agent().key().to_string(),
    };
    court.tasks.record("t-del", owner);
    let d = denied_by(&judge, task_get("t-del")).expect("task of a denied tool refused");
    assert!(d.starts_with("fake:no-delete"), "{d}");
    let body = r#"{"jsonrpc":"2.0","id":9,"method":"tasks/result","params":{"taskId":"t-del"}}"#;
    let d = denied_by(&judge, (call(body), body.to_string())).expect("2025 tasks/result too");
    assert!(d.starts_with("fake:no-delete"), "{d}");
}

#[test]
fn error_answers_and_other_methods_create_no_task() {
    let court = court(Fake::default());
    let judge = Arc::new(Judge::new(court.clone(), agent()));
    let mut ex = Exchange::new(judge.clone());
    ex.answers.track(&call(ECHO), false);
    let err =
        br#"{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"x","data":{"taskId":"t-e"}}}"#;
    ex.process(err).unwrap();
    let list = call(r#"{"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"p"}}"#);
    ex.answers.track(&list, false);
    ex.process(br#"{"jsonrpc":"2.0","id":2,"result":{"resultType":"task","taskId":"t-p"}}"#)
        .unwrap();
    // Neither answer made a task, so neither id is tied to a tool or a
    // caller: another caller is not refused.
    let other = Judge::new(
        court.clone(),
        Principal::from_peer(Peer::Spiffe(
            SpiffeId::parse("spiffe://td/ns/b/sa/other").unwrap(),
        )),
    );
    for id in ["t-e", "t-p"] {
        assert_eq!(court.tasks.owner(id), None, "{id}");
        assert_eq!(denied_by(&other, task_get(id)), None, "{id}");
    }
}

#[test]
fn listed_tools_teach_their_param_headers() {
    let court = court(Fake::default());
    let judge = Judge::new(court.clone(), agent());
    assert!(court.catalog.params("route").is_none());
    let list = r#"{"jsonrpc":"2.0","id":6,"result":{"tools":[{"name":"route","inputSchema":{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"}}}},{"name":"echo","inputSchema":{"type":"object"}}]}}"#;
    judge.judge_answer(list.as_bytes()).unwrap();
    let route = court.catalog.params("route").unwrap();
    assert_eq!(route.argument("region"), Some("region"));
    // A tool listed without annotations is known to declare none.
    assert!(court.catalog.params("echo").unwrap().is_empty());
}

/// A POST's answer answers that POST's requests, each once (issue 13:
/// answers to ids never asked, to a denied call's id, twice to one id).
/// Before this, every one of these was relayed.
#[test]
fn a_post_answer_answers_only_what_was_asked() {
    let judge = Arc::new(Judge::new(court(Fake::default()), agent()));
    let fresh = || {
        let mut ex = Exchange::new(judge.clone());
        ex.answers.only_asked = true;
        ex.answers.track(&call(ECHO), false);
        ex
    };
    let answer = |id: &str| format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#);
    for never in ["2", "\"1\"", "null", "1.0"] {
        let refused = fresh().process(answer(never).as_bytes());
        assert!(
            matches!(&refused, Err(r) if matches!(r.cause, Cause::UnreadableAnswer(_))),
            "{never}: {refused:?}"
        );
    }
    let mut ex = fresh();
    assert!(ex.process(answer("1").as_bytes()).is_ok());
    assert!(
        ex.process(answer("1").as_bytes()).is_err(),
        "a second answer"
    );
    // The server's own error for a request it could not read passes.
    let unaddressed = br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#;
    assert!(fresh().process(unaddressed).is_ok());
    // Server requests and notifications are not answers.
    let note = br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#;
    assert!(fresh().process(note).is_ok());
    let ask = br#"{"jsonrpc":"2.0","id":"s-1","method":"roots/list"}"#;
    assert!(fresh().process(ask).is_ok());
}

#[test]
fn a_batch_answers_only_a_batch() {
    let judge = Arc::new(Judge::new(court(Fake::default()), agent()));
    let mut ex = Exchange::new(judge.clone());
    ex.answers.only_asked = true;
    ex.answers.track(&call(ECHO), false);
    let batch = br#"[{"jsonrpc":"2.0","id":1,"result":{}}]"#;
    assert!(crate::service::relay::filter_json(&mut ex, batch, &[]).is_err());
    ex.answers.batch_asked = true;
    assert!(crate::service::relay::filter_json(&mut ex, batch, &[]).is_ok());
    // GET streams carry replays of earlier answers: not checked there.
    let mut get = Exchange::new(judge);
    assert!(get
        .process(br#"{"jsonrpc":"2.0","id":5,"result":{}}"#)
        .is_ok());
}

/// A `tools/call` answer that passes as it arrives still ties the task it
/// creates to its tool and caller, by the time the frame completing it is
/// sent on.
#[test]
fn a_passed_through_answer_still_records_its_task() {
    use crate::service::passthrough::Sniff;
    use http_body::Frame;
    let court = court(Fake::default());
    let judge = Arc::new(Judge::new(court.clone(), agent()));
    let sniffed = |cap: usize| {
        let mut ex = Exchange::new(judge.clone());
        ex.answers.only_asked = true;
        ex.answers.track(&call(ECHO), false);
        let mut sniff = Sniff::new(ex, cap);
        let parts: [&[u8]; 3] = [
            br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"task","#,
            br#""taskId":"t-s","status":"working"}"#,
            b"}\n",
        ];
        for (i, p) in parts.iter().enumerate() {
            let last = i == parts.len() - 1;
            sniff
                .frame(&Frame::data(Bytes::from_static(p)), last)
                .unwrap();
        }
    };
    sniffed(16);
    assert_eq!(court.tasks.owner("t-s"), None, "over the cap: not read");
    sniffed(1 << 20);
    assert_eq!(
        court.tasks.owner("t-s").map(|o| o.tool),
        Some("echo".into())
    );
}

/// The same when the body's end is not known in advance (chunked: no
/// frame is marked last), and when the answer comes whole in one frame,
/// read in place.
#[test]
fn a_task_is_recorded_whether_or_not_the_last_frame_is_known() {
    let court = court(Fake::default());
    let judge = Arc::new(Judge::new(court.clone(), agent()));
    let sniff = |frames: &[&'static [u8]], last_known: bool| sniff(&judge, frames, last_known);
    let read = sniff(
        &[
            br#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"#,
            br#""t-chunked"}}}"#,
        ],
        false,
    );
    assert!(read.is_ok());
    assert_eq!(
        court.tasks.owner("t-chunked").map(|o| o.tool),
        Some("echo".into())
    );
    let read = sniff(
        &[br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"task","taskId":"t-whole"}}"#],
        true,
    );
    assert!(read.is_ok());
    assert_eq!(
        court.tasks.owner("t-whole").map(|o| o.tool),
        Some("echo".into())
    );
}

/// The frames of one `tools/call` answer through a [`Sniff`], marked last
/// or not; the first refusal, if any.
fn sniff(judge: &Arc<Judge>, frames: &[&'static [u8]], last_known: bool) -> Result<(), Refusal> {
    use crate::service::passthrough::Sniff;
    use http_body::Frame;
    let mut ex = Exchange::new(judge.clone());
    ex.answers.only_asked = true;
    ex.answers.track(&call(ECHO), false);
    let mut sniff = Sniff::new(ex, 1 << 20);
    for (i, f) in frames.iter().enumerate() {
        let last = last_known && i == frames.len() - 1;
        sniff.frame(&Frame::data(Bytes::from_static(f)), last)?;
    }
    Ok(())
}

/// A case variant a client may read as the task is refused, whole or
/// chunked (the frame that completes it does not reach the client), and
/// nothing is recorded under another name; an incomplete prefix that
/// happens to end in `}` is not refused.
#[test]
fn a_passed_through_task_in_a_variant_spelling_is_refused() {
    let court = court(Fake::default());
    let judge = Arc::new(Judge::new(court.clone(), agent()));
    let sniff = |frames: &[&'static [u8]], last_known: bool| sniff(&judge, frames, last_known);
    let variant: [&'static [u8]; 2] = [
        br#"{"jsonrpc":"2.0","id":1,"result":{"Task":"#,
        br#"{"taskId":"t-variant"}}}"#,
    ];
    for last_known in [true, false] {
        let read = sniff(&variant, last_known);
        assert!(read.is_err(), "last known {last_known}: {read:?}");
    }
    let whole = sniff(
        &[br#"{"jsonrpc":"2.0","id":1,"result":{"taskID":"t-variant"}}"#],
        true,
    );
    assert!(whole.is_err());
    assert_eq!(court.tasks.owner("t-variant"), None);
    let read = sniff(
        &[
            br#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"t-late"}"#,
            br#"}}"#,
        ],
        false,
    );
    assert!(read.is_ok());
    assert_eq!(
        court.tasks.owner("t-late").map(|o| o.tool),
        Some("echo".into())
    );
}

/// A passed-through answer is read only when reading it could matter: a
/// result hook waits for it, or its text may name a task in a spelling a
/// client reads (any case, or hidden behind an escape).
#[test]
fn only_answers_that_may_name_a_task_are_read_in_passing() {
    let judge = Arc::new(Judge::new(court(Fake::default()), agent()));
    let mut ex = Exchange::new(judge);
    ex.answers.track(&call(ECHO), false);
    let plain = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}]}}"#;
    assert!(!ex.worth_reading(plain));
    for named in [
        &br#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"t"}}}"#[..],
        br#"{"jsonrpc":"2.0","id":1,"result":{"TASK":1}}"#,
        br#"{"jsonrpc":"2.0","id":1,"result":{"\u0074ask":1}}"#,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"\u{17f}\":1}}".as_bytes(),
        b"{\"result\":\"\xff\"}",
    ] {
        assert!(
            ex.worth_reading(named),
            "{}",
            String::from_utf8_lossy(named)
        );
    }
    // With a result hook waiting, every answer is read.
    ex.answers.track(&call(ECHO), true);
    assert!(ex.worth_reading(plain));
}
