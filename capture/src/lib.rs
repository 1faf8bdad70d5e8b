//! Transparent capture for the Portcullis sidecar.
//!
//! * [`CaptureSpec`]: what to capture (mode, ports, the proxy's uid/gid).
//! * [`rules()`]: the nat rules as `iptables-restore` or `nft -f` text, pure.
//! * [`apply()`] / [`clean()`]: those texts fed atomically to the tools.
//! * [`cli::run`]: `portcullis capture`, for an init container.
//! * [`original_dst`] / [`redirected_dst`]: where a redirected connection was
//!   really going.
#![forbid(unsafe_code)]

pub mod apply;
pub mod cli;
pub mod detect;
pub mod exec;
mod orig_dst;
pub mod rules;
pub mod spec;

pub use apply::{apply, clean};
pub use cli::{run, CaptureArgs};
pub use orig_dst::{original_dst, redirected_dst};
pub use rules::{render, rules, Backend, Family, Program, Script};
pub use spec::{CaptureSpec, Mode, SpecError, ValidSpec};

/// Any failure of `portcullis capture`.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Detect(#[from] detect::DetectError),
    #[error(transparent)]
    Exec(#[from] exec::ExecError),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}
