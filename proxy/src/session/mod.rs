//! Client-facing MCP sessions (issue 10): Portcullis issues its own
//! `Mcp-Session-Id`, an AEAD-sealed token bound to the caller, so that a
//! session can outlive the upstream process that began it.
//!
//! This module holds the parts that do not touch the request path yet: the
//! keyring ([`keyring`]) and the sealed token ([`token`]). Issuing tokens on
//! `initialize` and rebinding on an upstream 404 come next.

pub mod keyring;
pub mod token;

pub use keyring::{KeyState, Keyring, KeyringError};
pub use token::{Claims, Reject};
