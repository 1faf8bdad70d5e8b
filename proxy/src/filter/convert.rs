//! From the proxy's types to the WIT types a filter receives.

use std::time::UNIX_EPOCH;

use portcullis_policy_sdk::inputs::Input;

use super::{bindings::types, decisions::DecidesOn};
use crate::{
    identity::{Principal, Token, TokenKind},
    mcp::{lists, Call, Kind, Target},
    policy::Request,
};

/// What a WIT call borrows that the request does not hold in the WIT's
/// shape: a token's scopes and the MCP headers, as slices, for what one
/// filter is shown. The bindings borrow every string of what the host
/// passes in (`bindings.rs`), so building a call copies no text, however
/// large the arguments; these two lists are all it allocates, and only
/// when the filter is shown them. [`call`] takes what the filter is shown
/// from here, so the two cannot disagree.
pub struct Lists<'r> {
    shown: Option<DecidesOn>,
    scopes: Vec<&'r str>,
    headers: Vec<types::Header<'r>>,
}

impl<'r> Lists<'r> {
    /// The lists of `req` that a filter shown `shown` sees (`None`: a
    /// filter that declares nothing, shown everything).
    pub fn new(req: &Request<'r>, shown: Option<DecidesOn>) -> Self {
        let shows = |input: Input| shown.is_none_or(|on| on.shows(input));
        Self {
            shown,
            scopes: match req.principal.token() {
                Some(t) if shows(Input::Principal) => t.scopes.iter().map(String::as_str).collect(),
                _ => Vec::new(),
            },
            headers: if shows(Input::Headers) {
                req.headers
                    .iter()
                    .map(|(name, value)| types::Header { name, value })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// The lists a principal alone needs (the list hook's).
    pub fn of_principal(p: &'r Principal) -> Self {
        Self {
            shown: None,
            scopes: p
                .token()
                .map(|t| t.scopes.iter().map(String::as_str).collect())
                .unwrap_or_default(),
            headers: Vec::new(),
        }
    }
}

/// Both identities the sidecar verified: the agent (mTLS peer) and the
/// user (token). `lists` holds the token's scopes ([`Lists::new`]).
pub fn principal<'a>(p: &'a Principal, lists: &'a Lists<'_>) -> types::Principal<'a> {
    types::Principal {
        peer: p.spiffe_text(),
        token: p.token().map(|t| token(t, &lists.scopes)),
        key: p.key(),
    }
}

fn token<'a>(t: &'a Token, scopes: &'a [&'a str]) -> types::Token<'a> {
    let expires_at_ms = t
        .expires_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    types::Token {
        kind: match t.kind {
            TokenKind::AccessToken => types::TokenKind::AccessToken,
            TokenKind::JwtSvid => types::TokenKind::JwtSvid,
        },
        issuer: &t.issuer,
        subject: &t.subject,
        scopes,
        actor: t.actor.as_deref(),
        expires_at_ms,
        claims: &t.claims,
    }
}

/// The WIT call for `req` as the filter `lists` was built for
/// ([`Lists::new`]) is shown it, with `arguments` standing for the call's
/// arguments (a filter earlier in the chain may have rewritten them). For
/// a filter that declares what it decides on, the parts it did not declare are
/// `none` (the method empty): it cannot read them, the host's reused
/// decisions are keyed on what it can, and a part that is `none` costs
/// nothing to pass (0.3): each string the host passes is a call into the
/// guest to allocate it.
pub fn call<'a>(
    req: &'a Request<'_>,
    arguments: Option<&'a str>,
    lists: &'a Lists<'_>,
) -> types::Call<'a> {
    let shown = lists.shown;
    let shows = |input: Input| shown.is_none_or(|on| on.shows(input));
    let c: &Call = req.call;
    let text = |input: Input, s: &'a str| shows(input).then_some(s);
    types::Call {
        kind: match c.kind {
            Kind::Request => types::MessageKind::Request,
            Kind::Notification => types::MessageKind::Notification,
            Kind::Response => types::MessageKind::Response,
        },
        method: text(Input::Method, &c.method).unwrap_or_default(),
        id: c.id.as_ref().filter(|_| shows(Input::Id)).map(|i| i.get()),
        target: c
            .target
            .as_ref()
            .filter(|_| shows(Input::Target))
            .and_then(|t| target(req, t)),
        arguments: arguments.filter(|_| shows(Input::Arguments)),
        principal: shows(Input::Principal).then(|| principal(req.principal, lists)),
        session: req.session.filter(|_| shows(Input::Session)),
        instance: text(Input::Instance, req.instance),
        era: text(Input::Era, c.era.label()),
        headers: shows(Input::Headers).then_some(lists.headers.as_slice()),
        annotations: req.annotations.filter(|_| shows(Input::Annotations)),
    }
}

/// 0.1 has no task kind: a filter sees a task call (`tasks/get`...) aimed
/// at the tool whose call created the task, so that a rule on the tool
/// covers its task; 0.2 adds the task kind (policy-sdk/WIT-0.2.md).
fn target<'a>(req: &'a Request<'_>, t: &'a Target) -> Option<types::Target<'a>> {
    let (kind, name) = match t {
        Target::Tool(n) => (types::TargetKind::Tool, n.as_str()),
        Target::Prompt(n) => (types::TargetKind::Prompt, n.as_str()),
        Target::Resource(n) => (types::TargetKind::Resource, n.as_str()),
        Target::Task(_) => (types::TargetKind::Tool, req.task_tool?),
    };
    Some(types::Target { kind, name })
}

pub fn list_kind(k: lists::ListKind) -> types::ListKind {
    match k {
        lists::ListKind::Tools => types::ListKind::Tools,
        lists::ListKind::Prompts => types::ListKind::Prompts,
        lists::ListKind::Resources => types::ListKind::Resources,
        lists::ListKind::ResourceTemplates => types::ListKind::ResourceTemplates,
    }
}

pub fn list_items<'a>(items: &'a [lists::ListItem<'_>]) -> Vec<types::ListItem<'a>> {
    items
        .iter()
        .map(|i| types::ListItem {
            name: i.name,
            annotations: i.annotations.map(|a| a.get()),
        })
        .collect()
}

/// What 0.2 and 0.1 share: the call's kind, target and headers passed
/// down, the list hook's inputs too, and the answers read back as the
/// current contract's. Expanded
/// in each version's module, where `types` is the current contract's and
/// `old` the frozen one's.
macro_rules! read_back {
    () => {
        fn kind(k: types::MessageKind) -> old::MessageKind {
            match k {
                types::MessageKind::Request => old::MessageKind::Request,
                types::MessageKind::Notification => old::MessageKind::Notification,
                types::MessageKind::Response => old::MessageKind::Response,
            }
        }

        fn target(t: &types::Target<'_>) -> old::Target {
            old::Target {
                kind: match t.kind {
                    types::TargetKind::Tool => old::TargetKind::Tool,
                    types::TargetKind::Prompt => old::TargetKind::Prompt,
                    types::TargetKind::Resource => old::TargetKind::Resource,
                },
                name: t.name.to_owned(),
            }
        }

        /// Undeclared headers (`none`) are an empty list, as 0.2 and 0.1
        /// showed them.
        fn headers(h: Option<&[types::Header<'_>]>) -> Vec<old::Header> {
            h.unwrap_or_default()
                .iter()
                .map(|h| old::Header {
                    name: h.name.to_owned(),
                    value: h.value.to_owned(),
                })
                .collect()
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

        pub fn list_items(items: &[types::ListItem<'_>]) -> Vec<old::ListItem> {
            items
                .iter()
                .map(|i| old::ListItem {
                    name: i.name.to_owned(),
                    annotations: i.annotations.map(str::to_owned),
                })
                .collect()
        }
    };
}

/// What a filter built against `portcullis:policy@0.2.0` sees: every part
/// of the call as a value, an undeclared one empty (as 0.2 showed it), and
/// the principal of a call that does not show one anonymous and keyless.
pub mod v0_2 {
    use super::super::bindings::{types, v0_2::types as old};

    pub fn principal(p: &types::Principal<'_>) -> old::Principal {
        old::Principal {
            peer: p.peer.map(str::to_owned),
            token: p.token.as_ref().map(|t| old::Token {
                kind: match t.kind {
                    types::TokenKind::AccessToken => old::TokenKind::AccessToken,
                    types::TokenKind::JwtSvid => old::TokenKind::JwtSvid,
                },
                issuer: t.issuer.to_owned(),
                subject: t.subject.to_owned(),
                scopes: t.scopes.iter().map(|s| (*s).to_owned()).collect(),
                actor: t.actor.map(str::to_owned),
                expires_at_ms: t.expires_at_ms,
                claims: t.claims.to_owned(),
            }),
            key: p.key.to_owned(),
        }
    }

    pub fn call(c: &types::Call<'_>) -> old::Call {
        old::Call {
            kind: kind(c.kind),
            method: c.method.to_owned(),
            id: c.id.map(str::to_owned),
            target: c.target.as_ref().map(target),
            arguments: c.arguments.map(str::to_owned),
            principal: c.principal.as_ref().map_or_else(
                || old::Principal {
                    peer: None,
                    token: None,
                    key: String::new(),
                },
                principal,
            ),
            session: c.session.map(str::to_owned),
            instance: c.instance.unwrap_or_default().to_owned(),
            era: c.era.unwrap_or_default().to_owned(),
            headers: headers(c.headers),
            annotations: c.annotations.map(str::to_owned),
        }
    }

    read_back!();
}

/// What a filter built against `portcullis:policy@0.1.0` sees: the same
/// call, with the principal shown through the documented mapping
/// (policy-sdk/WIT-0.2.md), and its answers read back.
pub mod v0_1 {
    use super::super::bindings::{types, v0_1::types as old};

    /// 0.1 has room for one identity. A verified peer wins, since that is
    /// what 0.1 filters were written against; a token alone is shown as
    /// its claims.
    pub fn caller(p: &types::Principal<'_>) -> old::Caller {
        match (&p.peer, &p.token) {
            (Some(id), _) => old::Caller::Spiffe((*id).to_owned()),
            (None, Some(token)) => old::Caller::Jwt(token.claims.to_owned()),
            (None, None) => old::Caller::Anonymous,
        }
    }

    pub fn call(c: &types::Call<'_>) -> old::Call {
        old::Call {
            kind: kind(c.kind),
            method: c.method.to_owned(),
            id: c.id.map(str::to_owned),
            target: c.target.as_ref().map(target),
            arguments: c.arguments.map(str::to_owned),
            caller: c.principal.as_ref().map_or(old::Caller::Anonymous, caller),
            session: c.session.map(str::to_owned),
            instance: c.instance.unwrap_or_default().to_owned(),
            era: c.era.unwrap_or_default().to_owned(),
            headers: headers(c.headers),
            annotations: c.annotations.map(str::to_owned),
        }
    }

    read_back!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        identity::{Peer, SpiffeId},
        mcp::{headers::McpHeaders, parse_body, Body, Era},
    };

    fn parsed() -> Call {
        let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
        match parse_body(body.as_bytes(), 64, &Era::from_version(Some("2025-06-18"))) {
            Ok(Body::Single(c)) => c,
            _ => unreachable!(),
        }
    }

    /// Every part of the call, one per input, as `Debug` text (the
    /// bindings' types have no `PartialEq`).
    fn parts(c: &types::Call<'_>) -> Vec<(Input, String)> {
        vec![
            (Input::Method, format!("{:?}", c.method)),
            (Input::Id, format!("{:?}", c.id)),
            (Input::Target, format!("{:?}", c.target)),
            (Input::Arguments, format!("{:?}", c.arguments)),
            (Input::Principal, format!("{:?}", c.principal)),
            (Input::Session, format!("{:?}", c.session)),
            (Input::Instance, format!("{:?}", c.instance)),
            (Input::Era, format!("{:?}", c.era)),
            (Input::Headers, format!("{:?}", c.headers)),
            (Input::Annotations, format!("{:?}", c.annotations)),
        ]
    }

    /// A filter is shown each part it declared as it is, and each other
    /// part empty; one that declares nothing is shown everything.
    #[test]
    fn a_declaring_filter_is_shown_only_what_it_declared() {
        let call = parsed();
        // A token too, so that its scopes (a list the call borrows from
        // `Lists`) are among what is shown or not.
        let token = Token {
            kind: TokenKind::AccessToken,
            issuer: "https://idp".into(),
            subject: "alice".into(),
            scopes: vec!["files:read".into(), "files:write".into()],
            actor: Some("bot".into()),
            expires_at: UNIX_EPOCH,
            claims: r#"{"sub":"alice"}"#.into(),
        };
        let principal = Principal::new(
            Peer::Spiffe(SpiffeId::parse("spiffe://td/ns/a/sa/b").unwrap()),
            Some(std::sync::Arc::new(token)),
        );
        let headers: McpHeaders = [("mcp-method", "tools/call")].into_iter().collect();
        let req = Request {
            principal: &principal,
            call: &call,
            session: Some("s"),
            headers: &headers,
            annotations: Some(r#"{"readOnlyHint":true}"#),
            instance: "i",
            task_tool: None,
        };
        let args = Some(r#"{"text":"hi"}"#);
        let all = parts(&super::call(&req, args, &Lists::new(&req, None)));
        assert!(
            all.iter()
                .any(|(_, t)| t.contains(r#"scopes: ["files:read", "files:write"]"#)),
            "{all:?}"
        );
        let nothing = Lists::new(&req, Some(DecidesOn::of(&[])));
        let empty = parts(&super::call(&req, None, &nothing));
        for (input, text) in &all {
            let blank = &empty.iter().find(|(i, _)| i == input).unwrap().1;
            assert_ne!(text, blank, "{input:?} is set in the test call");
        }
        for (declared, _) in &all {
            let lists = Lists::new(&req, Some(DecidesOn::of(&[*declared])));
            let shown = parts(&super::call(&req, args, &lists));
            for ((input, seen), ((_, full), (_, blank))) in
                shown.iter().zip(all.iter().zip(empty.iter()))
            {
                let want = if input == declared { full } else { blank };
                assert_eq!(seen, want, "{input:?} when {declared:?} is declared");
            }
        }
    }
}
