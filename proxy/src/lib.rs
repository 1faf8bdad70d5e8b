//! Portcullis: an MCP-aware security sidecar.
//!
//! The data path is: [`listener`] (accept, handshake) → [`service`]
//! (hygiene, [`mcp`] decoding, [`policy`], forwarding via [`upstream`]) →
//! relay back to the client. [`capture`] is the second way in: connections
//! the pod's nat rules redirected. [`admin`] serves metrics and health.

// Three audited exceptions, `memory::release_free_heap`,
// `memory::use_one_arena` and `filter::compile::load_artifact` (compiled
// filters); nothing else.
#![deny(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(clippy::too_many_lines)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod admission;
pub mod audit;
pub mod auth;
pub mod body;
pub mod capture;
pub mod config;
pub mod cpu_limit;
pub mod filter;
#[doc(hidden)]
pub mod fuzzing;
pub mod guard;
pub mod identity;
pub mod instance;
pub mod listener;
pub mod mcp;
pub mod memory;
pub mod metrics;
pub mod policy;
pub mod policy_test;
pub mod reload;
pub mod runtime;
pub mod service;
pub mod session;
pub mod upstream;

pub use config::Config;
pub use runtime::{start, Running, StartError};
