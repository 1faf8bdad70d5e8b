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
    load_config, Call, Decision, Filter, Header, ListItem, ListKind, MessageKind, Principal,
    ResultDecision, Target, TargetKind, Token, TokenKind,
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

/// A part the filter did not declare comes as `none`: it reads as empty,
/// as it did in 0.2.
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
        principal: c.principal.map_or_else(
            || Principal {
                peer: None,
                token: None,
                key: String::new(),
            },
            principal,
        ),
        session: c.session,
        instance: c.instance.unwrap_or_default(),
        era: c.era.unwrap_or_default(),
        headers: c
            .headers
            .unwrap_or_default()
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

thread_local! {
    /// The configuration this instance was handed (`configure`), parsed
    /// once: the host configures each instance before any hook, and an
    /// instance serves many calls.
    static CONFIGURED: RefCell<Option<Rc<dyn Any>>> = const { RefCell::new(None) };
}

/// The configuration `configure` kept. Without one, the host skipped
/// `configure` (it never does): deny rather than guess.
fn configured<F: Filter>() -> Result<Rc<F::Config>, wit::Denial>
where
    F::Config: 'static,
{
    CONFIGURED
        .with_borrow(|c| c.clone())
        .and_then(|c| c.downcast::<F::Config>().ok())
        .ok_or_else(|| wit::Denial {
            code: 0,
            message: "the filter was not configured".into(),
        })
}

pub fn configure<F: Filter>(config: String) -> Result<(), String>
where
    F::Config: 'static,
{
    // A refused configuration leaves none behind: the hooks then deny.
    CONFIGURED.set(None);
    let parsed: Rc<dyn Any> = Rc::new(load_config::<F>(&config)?);
    CONFIGURED.set(Some(parsed));
    Ok(())
}

pub fn on_request<F: Filter>(c: WitCall) -> WitDecision
where
    F::Config: 'static,
{
    let config = match configured::<F>() {
        Ok(c) => c,
        Err(d) => return WitDecision::Deny(d),
    };
    match F::on_request(&config, &call(c)) {
        Decision::Allow => WitDecision::Allow,
        Decision::Deny(d) => WitDecision::Deny(denial(d)),
        Decision::RewriteArguments(v) => WitDecision::RewriteArguments(v.to_string()),
    }
}

pub fn on_result<F: Filter>(c: WitCall, result: String) -> WitResultDecision
where
    F::Config: 'static,
{
    let config = match configured::<F>() {
        Ok(c) => c,
        Err(d) => return WitResultDecision::Deny(d),
    };
    match F::on_result(&config, &call(c), &result) {
        ResultDecision::Allow => WitResultDecision::Allow,
        ResultDecision::Replace(v) => WitResultDecision::Replace(v.to_string()),
        ResultDecision::Deny(d) => WitResultDecision::Deny(denial(d)),
    }
}

pub fn on_list<F: Filter>(p: WitPrincipal, kind: WitListKind, items: Vec<WitListItem>) -> Vec<bool>
where
    F::Config: 'static,
{
    let Ok(config) = configured::<F>() else {
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
