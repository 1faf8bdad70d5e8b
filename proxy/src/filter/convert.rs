//! From the proxy's types to the WIT types a filter receives.

use std::time::UNIX_EPOCH;

use super::bindings::types;
use crate::{
    identity::{Principal, Token, TokenKind},
    mcp::{lists, Call, Kind, Target},
    policy::Request,
};

/// Both identities the sidecar verified: the agent (mTLS peer) and the
/// user (token).
pub fn principal(p: &Principal) -> types::Principal {
    types::Principal {
        peer: p.spiffe_id().map(|id| id.to_string()),
        token: p.token().map(token),
        key: p.key().to_string(),
    }
}

fn token(t: &Token) -> types::Token {
    let expires_at_ms = t
        .expires_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    types::Token {
        kind: match t.kind {
            TokenKind::AccessToken => types::TokenKind::AccessToken,
            TokenKind::JwtSvid => types::TokenKind::JwtSvid,
        },
        issuer: t.issuer.clone(),
        subject: t.subject.clone(),
        scopes: t.scopes.clone(),
        actor: t.actor.clone(),
        expires_at_ms,
        claims: t.claims.clone(),
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
        principal: principal(req.principal),
        session: req.session.map(str::to_string),
        instance: req.instance.to_string(),
        era: c.era.label().to_string(),
        headers: req
            .headers
            .iter()
            .map(|(name, value)| types::Header {
                name: name.to_string(),
                value: value.to_string(),
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
            annotations: i.annotations.map(|a| a.get().to_string()),
        })
        .collect()
}

/// What a filter built against `portcullis:policy@0.1.0` sees: the same
/// call, with the principal shown through the documented mapping
/// (policy-sdk/WIT-0.2.md), and its answers read back.
pub mod v0_1 {
    use super::super::bindings::{types, v0_1::types as old};

    /// 0.1 has room for one identity. A verified peer wins, since that is
    /// what 0.1 filters were written against; a token alone is shown as
    /// its claims.
    pub fn caller(p: &types::Principal) -> old::Caller {
        match (&p.peer, &p.token) {
            (Some(id), _) => old::Caller::Spiffe(id.clone()),
            (None, Some(token)) => old::Caller::Jwt(token.claims.clone()),
            (None, None) => old::Caller::Anonymous,
        }
    }

    pub fn call(c: &types::Call) -> old::Call {
        old::Call {
            kind: match c.kind {
                types::MessageKind::Request => old::MessageKind::Request,
                types::MessageKind::Notification => old::MessageKind::Notification,
                types::MessageKind::Response => old::MessageKind::Response,
            },
            method: c.method.clone(),
            id: c.id.clone(),
            target: c.target.as_ref().map(|t| old::Target {
                kind: match t.kind {
                    types::TargetKind::Tool => old::TargetKind::Tool,
                    types::TargetKind::Prompt => old::TargetKind::Prompt,
                    types::TargetKind::Resource => old::TargetKind::Resource,
                },
                name: t.name.clone(),
            }),
            arguments: c.arguments.clone(),
            caller: caller(&c.principal),
            session: c.session.clone(),
            instance: c.instance.clone(),
            era: c.era.clone(),
            headers: c
                .headers
                .iter()
                .map(|h| old::Header {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect(),
            annotations: c.annotations.clone(),
        }
    }

    fn denial(d: old::Denial) -> types::Denial {
        types::Denial {
            code: d.code,
            message: d.message,
        }
    }

    pub fn decision(d: old::Decision) -> types::Decision {
        match d {
            old::Decision::Allow => types::Decision::Allow,
            old::Decision::Deny(d) => types::Decision::Deny(denial(d)),
            old::Decision::RewriteArguments(a) => types::Decision::RewriteArguments(a),
        }
    }

    pub fn result_decision(d: old::ResultDecision) -> types::ResultDecision {
        match d {
            old::ResultDecision::Allow => types::ResultDecision::Allow,
            old::ResultDecision::Replace(r) => types::ResultDecision::Replace(r),
            old::ResultDecision::Deny(d) => types::ResultDecision::Deny(denial(d)),
        }
    }

    pub fn list_kind(k: types::ListKind) -> old::ListKind {
        match k {
            types::ListKind::Tools => old::ListKind::Tools,
            types::ListKind::Prompts => old::ListKind::Prompts,
            types::ListKind::Resources => old::ListKind::Resources,
            types::ListKind::ResourceTemplates => old::ListKind::ResourceTemplates,
        }
    }

    pub fn list_items(items: &[types::ListItem]) -> Vec<old::ListItem> {
        items
            .iter()
            .map(|i| old::ListItem {
                name: i.name.clone(),
                annotations: i.annotations.clone(),
            })
            .collect()
    }
}
