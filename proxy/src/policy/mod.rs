//! The decision point. Every message is checked by a [`Policy`] before it is
//! forwarded, and every list is filtered by the same policy on its way back.
//! The static rule set lives here; the WASM filter chain implements the same
//! trait.

pub(crate) mod glob;
mod rules;

use std::sync::Arc;

pub use self::rules::{Action, Rule, StaticRules};
use crate::{
    identity::Caller,
    mcp::{
        lists::{ListItem, ListKind},
        Call,
    },
};

/// Why a message was refused, and by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The rule or filter that decided, e.g. `static:no-destructive`.
    pub by: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(Denial),
}

impl Decision {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny(_) => "deny",
        }
    }
}

/// A policy decides on calls and on list visibility. Implementations must
/// fail closed: if they cannot decide, they deny.
pub trait Policy: Send + Sync + 'static {
    /// Decides whether one message may reach the upstream.
    fn check(&self, caller: &Caller, call: &Call) -> Decision;

    /// Returns, for each item, whether `caller` may see it. A missing
    /// verdict counts as hidden.
    fn visible(&self, caller: &Caller, kind: ListKind, items: &[ListItem<'_>]) -> Vec<bool>;
}

pub type SharedPolicy = Arc<dyn Policy>;
