//! Who is calling, and who we are.
//!
//! - [`Principal`]: who is calling: the verified [`Peer`] of the
//!   connection (from a TLS handshake that checked an X.509-SVID) and, once
//!   a verifier runs, a verified token.
//! - [`spiffe_id`]: SPIFFE ID parsing.
//! - [`svid`]: our own SVID and the trust bundles, as one snapshot that
//!   sources publish and TLS reads at every handshake.
//! - [`verify`]: the X.509-SVID rules, for peers in both directions.
//! - [`anchors`]: bundle roots, with the checks webpki leaves out for them
//!   (validity period, URI name constraints).
//! - [`path`]: checks on each chain webpki builds (intermediates must be
//!   CAs with keyCertSign; the root's URI name constraints).
//! - [`tls`]: rustls configurations (inbound and outbound).
//! - [`source`]: where SVIDs come from (Workload API, PEM files).
//! - [`ca`]: a development CA for demos and tests.

pub mod anchors;
pub mod ca;
mod metrics;
mod path;
mod principal;
pub mod source;
pub mod spiffe_id;
pub mod svid;
pub mod tls;
pub mod verify;

pub use metrics::IdentityMetrics;
pub use principal::{Peer, Principal, Token, TokenKind, ANONYMOUS};
pub use spiffe_id::SpiffeId;
