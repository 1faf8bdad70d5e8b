//! The MCP codec: strict JSON, typed JSON-RPC messages, protocol eras,
//! routing headers, SSE framing, and the strict reading of upstream
//! answers.

pub mod answer;
pub mod content_type;
pub mod error;
pub mod fold;
pub mod headers;
pub mod json;
pub mod lists;
pub mod message;
pub mod param_headers;
pub mod sse;

pub use error::{ErrorCode, RpcError};
pub use message::{parse_body, with_arguments, Body, Call, CodecError, Era, Kind, Target};
#[cfg(test)]
mod hostile;
