//! Host bindings generated from the WIT contract in `policy-sdk/wit`, the
//! single source of truth for the filter ABI.

wasmtime::component::bindgen!({
    path: "../policy-sdk/wit",
    world: "filter",
});

pub use self::portcullis::policy::{host, types};
