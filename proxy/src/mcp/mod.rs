//! The MCP codec: strict JSON, typed JSON-RPC messages, protocol eras,
//! routing headers and SSE framing.

pub mod error;
pub mod headers;
pub mod json;
pub mod lists;
pub mod message;
pub mod sse;

pub use error::{ErrorCode, RpcError};
pub use message::{parse_body, with_arguments, Body, Call, CodecError, Era, Kind, Target};
