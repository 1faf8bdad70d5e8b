//! From the proxy's types to the WIT types a filter receives.

use super::bindings::types;
use crate::{
    identity::{Peer, Principal},
    mcp::{lists, Call, Kind, Target},
    policy::Request,
};

/// The 0.1 contract has room for one identity. A verified peer wins, since
/// that is what 0.1 filters were written against; a token alone is shown
/// as its claims.
pub fn caller(p: &Principal) -> types::Caller {
    match (p.peer(), p.token()) {
        (Peer::Spiffe(id), _) => types::Caller::Spiffe(id.to_string()),
        (Peer::Anonymous, Some(token)) => types::Caller::Jwt(token.claims.clone()),
        (Peer::Anonymous, None) => types::Caller::Anonymous,
    }
}

/// The WIT call for `req`, with `arguments` standing for the call's
/// arguments (a filter earlier in the chain may have rewritten them).
pub fn call(req: &Request<'_>, arguments: Option<&str>) -> types::Call {
    let c: &Call = req.call;
    types::Call {
        kind: match c.kind {
            Kind::Request => types::MessageKind::Request,
            Kind::Notification => types::MessageKind::Notification,
            Kind::Response => types::MessageKind::Response,
        },
        method: c.method.clone(),
        id: c.id.as_ref().map(|i| i.get().to_string()),
        // 0.1 has no task kind: a filter sees a task call (`tasks/get`...)
        // aimed at the tool whose call created the task, so that a rule
        // on the tool covers its task; 0.2 adds the task kind
        // (policy-sdk/WIT-0.2.md).
        target: c.target.as_ref().and_then(|t| match t {
            Target::Tool(n) => Some(types::Target {
                kind: types::TargetKind::Tool,
                name: n.clone(),
            }),
            Target::Prompt(n) => Some(types::Target {
                kind: types::TargetKind::Prompt,
                name: n.clone(),
            }),
            Target::Resource(n) => Some(types::Target {
                kind: types::TargetKind::Resource,
                name: n.clone(),
            }),
            Target::Task(_) => req.task_tool.map(|tool| types::Target {
                kind: types::TargetKind::Tool,
                name: tool.to_string(),
            }),
        }),
        arguments: arguments.map(str::to_string),
        caller: caller(req.principal),
        session: req.session.map(str::to_string),
        instance: req.instance.to_string(),
        era: c.era.label().to_string(),
        headers: req
            .headers
            .iter()
            .map(|(name, value)| types::Header {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        annotations: req.annotations.map(str::to_string),
    }
}

pub fn list_kind(k: lists::ListKind) -> types::ListKind {
    match k {
        lists::ListKind::Tools => types::ListKind::Tools,
        lists::ListKind::Prompts => types::ListKind::Prompts,
        lists::ListKind::Resources => types::ListKind::Resources,
        lists::ListKind::ResourceTemplates => types::ListKind::ResourceTemplates,
    }
}

pub fn list_items(items: &[lists::ListItem<'_>]) -> Vec<types::ListItem> {
    items
        .iter()
        .map(|i| types::ListItem {
            name: i.name.to_string(),
            annotations: i.annotations.map(|a| a.to_string()),
        })
        .collect()
}
