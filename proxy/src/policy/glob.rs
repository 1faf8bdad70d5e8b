//! `*` wildcards for names, URIs and SPIFFE IDs: the same matcher policy
//! authors get from the SDK, so a pattern means the same in a static rule
//! and in a filter.

pub use portcullis_policy_sdk::pattern::matches;
