//! Who is calling. Until mTLS lands every caller is anonymous; the listener's
//! handshake is the only place that may produce a verified identity.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Caller {
    /// No verified identity (plaintext listener).
    #[default]
    Anonymous,
    /// A SPIFFE ID taken from a verified X.509-SVID.
    Spiffe(String),
}

impl Caller {
    /// The SPIFFE ID, if the caller has a verified one.
    pub fn spiffe_id(&self) -> Option<&str> {
        match self {
            Self::Anonymous => None,
            Self::Spiffe(id) => Some(id),
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("anonymous"),
            Self::Spiffe(id) => f.write_str(id),
        }
    }
}
