//! Portcullis sidecar injection: the admission webhook and its offline twin
//! (`portcullis-inject render`).
//!
//! The core (`mutate`) is pure: pod JSON in, JSON Patch out. The server,
//! TLS and CA bootstrap are thin layers around it.
#![forbid(unsafe_code)]

pub mod ca_bootstrap;
pub mod canonical;
pub mod capture_args;
pub mod containers;
pub mod kube_api;
pub mod mutate;
pub mod overrides;
pub mod pod;
pub mod pointer;
pub mod probes;
pub mod render;
pub mod review;
pub mod server;
pub mod settings;
mod skip;
pub mod tls;

pub use mutate::{mutate, Decision, NamespaceInfo};
pub use pod::PodObject;
pub use settings::InjectSettings;

/// Why a pod cannot be injected. Every variant becomes `allowed: false`
/// with this text as the message: failing closed beats a broken pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("portcullis: malformed pod: {0}")]
    Malformed(String),
    #[error("portcullis: {0}")]
    InvalidAnnotation(#[from] overrides::OverrideError),
    #[error("portcullis: cannot inject: {0}")]
    Conflict(String),
}
