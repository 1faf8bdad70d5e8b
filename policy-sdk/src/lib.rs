//! # Writing a Portcullis policy filter
//!
//! A filter is a type that implements [`Filter`]. It is exported with
//! [`export_filter!`] and built for `wasm32-wasip2`. The sidecar runs it on
//! every MCP message. An instance is never shared between callers: by
//! default it is kept warm for the next call of the same caller
//! (`isolation: caller`), or made fresh for every call (`isolation: call`);
//! state that must outlive an instance belongs in the host's key-value
//! store.
//!
//! ```
//! use portcullis_policy_sdk::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! struct Config {
//!     /// Tools nobody may call.
//!     blocked: Vec<String>,
//! }
//!
//! struct BlockList;
//!
//! impl Filter for BlockList {
//!     type Config = Config;
//!
//!     fn on_request(config: &Config, call: &Call) -> Decision {
//!         match call.tool_name() {
//!             Some(tool) if config.blocked.iter().any(|b| b == tool) => {
//!                 Decision::deny(format!("{tool} is blocked"))
//!             }
//!             _ => Decision::Allow,
//!         }
//!     }
//!
//!     fn on_list(config: &Config, _: &Principal, kind: ListKind, items: &[ListItem]) -> Vec<bool> {
//!         items
//!             .iter()
//!             .map(|i| kind != ListKind::Tools || !config.blocked.contains(&i.name))
//!             .collect()
//!     }
//! }
//!
//! export_filter!(BlockList);
//!
//! // The native harness runs the same code in `cargo test`, without wasm.
//! let h = Harness::<BlockList>::new(r#"{"blocked": ["delete_file"]}"#).unwrap();
//! h.request(&CallBuilder::tool("delete_file").build()).assert_denied("blocked");
//! h.request(&CallBuilder::tool("echo").build()).assert_allowed();
//! ```
//!
//! An instance serves one caller identity at most, and may be fresh for any
//! call, so a filter keeps no state in memory between calls: its
//! configuration is parsed once per instance (0.3's `configure`) and
//! handed to every hook, and
//! state that must span calls (rate limits) lives in the host's counters
//! and key-value store, see [`host`].

mod call;
mod decision;
pub mod host;
pub mod inputs;
pub mod pattern;
pub mod testing;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod guest;

#[cfg(any(
    test,
    all(
        target_arch = "wasm32",
        not(target_feature = "atomics"),
        feature = "size-classes"
    )
))]
mod heap;

pub use call::{
    Call, Header, ListItem, ListKind, MessageKind, Principal, Target, TargetKind, Token, TokenKind,
};
pub use decision::{Decision, Denial, ResultDecision};
pub use inputs::Input;

/// Object keys under this prefix are instructions to serde_json's own types
/// (with the `raw_value` feature, `{"$serde_json::private::RawValue": "…"}`
/// reads as the string's contents), so a `serde_json::Value` and a server
/// read such an object differently. The sidecar refuses them in every body,
/// and filters that read arguments should too.
pub const SERDE_JSON_RESERVED_PREFIX: &str = "$serde_json::private::";

/// A policy filter. Every hook has a default that allows, so a filter
/// implements only what it cares about.
pub trait Filter {
    /// The filter's configuration, parsed from the JSON given in the
    /// sidecar's config.
    type Config: serde::de::DeserializeOwned;

    /// The parts of a call `on_request` decides on, when its decision is a
    /// function of those parts and the configuration alone: it reads no
    /// counter, store or clock and remembers nothing between calls. The
    /// host then shows `on_request` only these parts and may reuse a
    /// decision for a call equal in them (see [`inputs`]). `None`, the
    /// default, for any filter that keeps state: it is run on every call
    /// and sees every part.
    const DECIDES_ON: Option<&'static [Input]> = None;

    /// Checks a configuration beyond what its type enforces. Called when the
    /// filter is loaded (an error refuses the load) and as each new
    /// instance is configured (an error there denies the call, even for a
    /// filter that fails open): keep it a function of the configuration.
    fn validate(_config: &Self::Config) -> Result<(), String> {
        Ok(())
    }

    /// Decides on one message before it reaches the server.
    fn on_request(_config: &Self::Config, _call: &Call) -> Decision {
        Decision::Allow
    }

    /// Decides on the result of an allowed `tools/call`. `result` is the
    /// JSON-RPC `result` object as JSON text.
    fn on_result(_config: &Self::Config, _call: &Call, _result: &str) -> ResultDecision {
        ResultDecision::Allow
    }

    /// Says which list items `principal` may see: one `bool` per item.
    fn on_list(
        _config: &Self::Config,
        _principal: &Principal,
        _kind: ListKind,
        items: &[ListItem],
    ) -> Vec<bool> {
        vec![true; items.len()]
    }
}

/// Parses a configuration and validates it.
pub fn load_config<F: Filter>(json: &str) -> Result<F::Config, String> {
    let text = if json.trim().is_empty() { "{}" } else { json };
    let config: F::Config =
        serde_json::from_str(text).map_err(|e| format!("invalid config: {e}"))?;
    F::validate(&config)?;
    Ok(config)
}

/// Everything a filter author usually needs.
pub mod prelude {
    pub use crate::testing::{CallBuilder, Harness};
    pub use crate::{
        export_filter, host, Call, Decision, Denial, Filter, Input, ListItem, ListKind, Principal,
        ResultDecision, Target, TargetKind, Token, TokenKind,
    };
}

/// Exports a [`Filter`] as the component's implementation of the
/// `portcullis:policy/filter` world. On other targets it expands to
/// nothing, so the same crate builds natively for tests.
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            // What `on_request` decides on, for the host (see `inputs`).
            #[link_section = "portcullis:decides-on"]
            #[used]
            static __PORTCULLIS_DECIDES_ON: [u8; 4] =
                $crate::inputs::section(<$filter as $crate::Filter>::DECIDES_ON);
            struct __PortcullisGuest;
            impl $crate::guest::Guest for __PortcullisGuest {
                fn configure(
                    config: ::std::string::String,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::guest::configure::<$filter>(config)
                }
                fn on_request(call: $crate::guest::WitCall) -> $crate::guest::WitDecision {
                    $crate::guest::on_request::<$filter>(call)
                }
                fn on_result(
                    call: $crate::guest::WitCall,
                    result: ::std::string::String,
                ) -> $crate::guest::WitResultDecision {
                    $crate::guest::on_result::<$filter>(call, result)
                }
                fn on_list(
                    principal: $crate::guest::WitPrincipal,
                    kind: $crate::guest::WitListKind,
                    items: ::std::vec::Vec<$crate::guest::WitListItem>,
                ) -> ::std::vec::Vec<bool> {
                    $crate::guest::on_list::<$filter>(principal, kind, items)
                }
            }
    $crate::guest::export!(__PortcullisGuest with_types_in $crate::guest::bindings);
        };
    };
}
