//! Host bindings generated from the WIT contract in `policy-sdk/wit`, the
//! single source of truth for the filter ABI, and from the frozen previous
//! version in `policy-sdk/wit-0.1`, which the host still loads.

wasmtime::component::bindgen!({
    path: "../policy-sdk/wit",
    world: "filter",
});

pub use self::portcullis::policy::{host, types};

/// `portcullis:policy@0.1.0`. Its filters see the principal through the
/// mapping in `convert::downgrade` (policy-sdk/WIT-0.2.md).
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../policy-sdk/wit-0.1",
        world: "filter",
    });

    pub use self::portcullis::policy::{host, types};
}
