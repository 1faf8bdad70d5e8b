//! The wasm side: bindings generated from `wit/policy.wit`, and the glue
//! that turns WIT types into SDK types for [`crate::Filter`].

#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "filter",
        pub_export_macro: true,
        default_bindings_module: "portcullis_policy_sdk::guest::bindings",
    });
}

pub use bindings::portcullis::policy::host;
use bindings::portcullis::policy::types as wit;
pub use bindings::{export, Guest};
pub use wit::{
    Call as WitCall, Decision as WitDecision, ListItem as WitListItem, ListKind as WitListKind,
    Principal as WitPrincipal, ResultDecision as WitResultDecision,
};

use std::{any::Any, cell::RefCell, rc::Rc};

use crate::{
    load_config, text::same_text, Call, Decision, Filter, Header, ListItem, ListKind, MessageKind,
    Principal, ResultDecision, Target, TargetKind, Token, TokenKind,
};

fn principal(p: WitPrincipal) -> Principal {
    Principal {
        peer: p.peer,
        token: p.token.map(|t| Token {
            kind: match t.kind {
                wit::TokenKind::AccessToken => TokenKind::AccessToken,
                wit::TokenKind::JwtSvid => TokenKind::JwtSvid,
            },
            issuer: t.issuer,
            subject: t.subject,
            scopes: t.scopes,
            actor: t.actor,
            expires_at_ms: t.expires_at_ms,
            claims: t.claims,
        }),
        key: p.key,
    }
}

fn call(c: WitCall) -> Call {
    Call {
        kind: match c.kind {
            wit::MessageKind::Request => MessageKind::Request,
            wit::MessageKind::Notification => MessageKind::Notification,
            wit::MessageKind::Response => MessageKind::Response,
        },
        method: c.method,
        id: c.id,
        target: c.target.map(|t| Target {
            kind: match t.kind {
                wit::TargetKind::Tool => TargetKind::Tool,
                wit::TargetKind::Prompt => TargetKind::Prompt,
                wit::TargetKind::Resource => TargetKind::Resource,
            },
            name: t.name,
        }),
        arguments: c.arguments,
        principal: principal(c.principal),
        session: c.session,
        instance: c.instance,
        era: c.era,
        headers: c
            .headers
            .into_iter()
            .map(|h| Header {
                name: h.name,
                value: h.value,
            })
            .collect(),
        annotations: c.annotations,
    }
}

fn denial(d: crate::Denial) -> wit::Denial {
    wit::Denial {
        code: d.code,
        message: d.message,
    }
}

/// The last configuration parsed, with its text. The host may keep an
/// instance warm between calls of the same caller; the configuration text is
/// then the same each time, so it is parsed (and its regexes compiled) once
/// per instance instead of once per call. A fresh instance starts empty.
struct Parsed {
    text: String,
    config: Rc<dyn Any>,
}

thread_local! {
    static PARSED: RefCell<Option<Parsed>> = const { RefCell::new(None) };
}

/// A configuration that no longer parses is refused at load, so failing
/// here means the host changed it underneath: deny.
fn config_or_deny<F: Filter>(config: &str) -> Result<Rc<F::Config>, wit::Denial>
where
    F::Config: 'static,
{
    let cached = PARSED.with_borrow(|p| {
        p.as_ref()
            .filter(|p| same_text(&p.text, config))
            .and_then(|p| p.config.clone().downcast::<F::Config>().ok())
    });
    if let Some(c) = cached {
        return Ok(c);
    }
    let parsed = Rc::new(load_config::<F>(config).map_err(|e| wit::Denial {
        code: 0,
        message: e,
    })?);
    PARSED.set(Some(Parsed {
        text: config.to_string(),
        config: parsed.clone(),
    }));
    Ok(parsed)
}

pub fn validate_config<F: Filter>(config: String) -> Result<(), String> {
    load_config::<F>(&config).map(|_| ())
}

pub fn on_request<F: Filter>(config: String, c: WitCall) -> WitDecision
where
    F::Config: 'static,
{
    let config = match config_or_deny::<F>(&config) {
        Ok(c) => c,
        Err(d) => return WitDecision::Deny(d),
    };
    match F::on_request(&config, &call(c)) {
        Decision::Allow => WitDecision::Allow,
        Decision::Deny(d) => WitDecision::Deny(denial(d)),
        Decision::RewriteArguments(v) => WitDecision::RewriteArguments(v.to_string()),
    }
}

pub fn on_result<F: Filter>(config: String, c: WitCall, result: String) -> WitResultDecision
where
    F::Config: 'static,
{
    let config = match config_or_deny::<F>(&config) {
        Ok(c) => c,
        Err(d) => return WitResultDecision::Deny(d),
    };
    match F::on_result(&config, &call(c), &result) {
        ResultDecision::Allow => WitResultDecision::Allow,
        ResultDecision::Replace(v) => WitResultDecision::Replace(v.to_string()),
        ResultDecision::Deny(d) => WitResultDecision::Deny(denial(d)),
    }
}

pub fn on_list<F: Filter>(
    config: String,
    p: WitPrincipal,
    kind: WitListKind,
    items: Vec<WitListItem>,
) -> Vec<bool>
where
    F::Config: 'static,
{
    let Ok(config) = config_or_deny::<F>(&config) else {
        return vec![false; items.len()];
    };
    let kind = match kind {
        WitListKind::Tools => ListKind::Tools,
        WitListKind::Prompts => ListKind::Prompts,
        WitListKind::Resources => ListKind::Resources,
        WitListKind::ResourceTemplates => ListKind::ResourceTemplates,
    };
    let items: Vec<ListItem> = items
        .into_iter()
        .map(|i| ListItem {
            name: i.name,
            annotations: i.annotations,
        })
        .collect();
    F::on_list(&config, &principal(p), kind, &items)
}
