//! Host bindings generated from the WIT contract in `policy-sdk/wit`, the
//! single source of truth for the filter ABI, and from the frozen previous
//! versions in `policy-sdk/wit-0.2` and `policy-sdk/wit-0.1`, which the
//! host still loads.

wasmtime::component::bindgen!({
    path: "../policy-sdk/wit",
    world: "filter",
    // What the host passes in (the call, the principal, list items) is
    // borrowed from the request, not copied into owned strings first.
    ownership: Borrowing { duplicate_if_necessary: true },
});

pub use self::portcullis::policy::{host, types};

/// `portcullis:policy@0.2.0`: the configuration with every call, and every
/// part of the call, declared or not, as a value (`convert::v0_2`).
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../policy-sdk/wit-0.2",
        world: "filter",
    });

    pub use self::portcullis::policy::{host, types};
}

/// `portcullis:policy@0.1.0`. Its filters see the principal through the
/// mapping in `convert::v0_1` (policy-sdk/WIT-0.2.md).
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../policy-sdk/wit-0.1",
        world: "filter",
    });

    pub use self::portcullis::policy::{host, types};
}
