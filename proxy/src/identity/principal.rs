//! Who is calling: the verified peer of the connection, and (once a token
//! verifier runs) the verified token it carries. Both come from Portcullis's
//! own checks, never from what a client says about itself.
//!
//! One [`Principal`] goes with every request. Rules, warm filter instances,
//! audit records and metrics all name it through [`Principal::key`], so the
//! same caller is spelled the same way everywhere.

use std::{fmt, sync::Arc, time::SystemTime};

use super::SpiffeId;

/// The verified identity of the other end of the connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Peer {
    /// No verified identity (a plaintext connection).
    #[default]
    Anonymous,
    /// The SPIFFE ID of a verified X.509-SVID.
    Spiffe(SpiffeId),
}

impl Peer {
    /// The SPIFFE ID, if the peer has a verified one.
    pub fn spiffe_id(&self) -> Option<&SpiffeId> {
        match self {
            Self::Anonymous => None,
            Self::Spiffe(id) => Some(id),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str(ANONYMOUS),
            Self::Spiffe(id) => fmt::Display::fmt(id, f),
        }
    }
}

/// The text rules and patterns use for a caller without a verified
/// identity.
pub const ANONYMOUS: &str = "anonymous";

/// A verified bearer token: what a verifier established, never the token
/// itself (no token is ever forwarded or logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    /// The configured issuer's `issuer` (for a JWT-SVID, its trust domain
    /// as `spiffe://<td>`: a JWT-SVID's `iss` is not defined and not read).
    pub issuer: String,
    pub subject: String,
    pub scopes: Vec<String>,
    /// The party acting for the subject (`act.sub`, `azp` or `client_id`).
    pub actor: Option<String>,
    pub expires_at: SystemTime,
    /// The verified claims as a JSON object, for policies that read more.
    pub claims: String,
}

/// What kind of bearer credential a [`Token`] was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenKind {
    /// An OAuth access token from a configured issuer.
    #[default]
    AccessToken,
    /// A SPIFFE JWT-SVID, checked against its trust domain's JWT bundle.
    JwtSvid,
}

/// Everything Portcullis verified about a caller. Cheap to clone: a
/// connection builds it once and every request shares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(Arc<Inner>);

#[derive(Debug, PartialEq, Eq)]
struct Inner {
    peer: Peer,
    token: Option<Arc<Token>>,
    /// [`Principal::key`] and [`Principal::peer_text`], computed once:
    /// they are read for every decision.
    key: String,
    workload: String,
}

impl Default for Principal {
    fn default() -> Self {
        Self::from_peer(Peer::Anonymous)
    }
}

impl Principal {
    /// A principal known only by its connection.
    pub fn from_peer(peer: Peer) -> Self {
        Self::new(peer, None)
    }

    pub fn new(peer: Peer, token: Option<Arc<Token>>) -> Self {
        // The workload calling: the mTLS peer, else the workload a JWT-SVID
        // names (the verifier refused one that differs from the peer). A
        // user's access token names no workload.
        let workload = match (&peer, token.as_deref()) {
            (Peer::Spiffe(id), _) => id.to_string(),
            (Peer::Anonymous, Some(t)) if t.kind == TokenKind::JwtSvid => t.subject.clone(),
            (Peer::Anonymous, _) => ANONYMOUS.to_string(),
        };
        let key = match &token {
            None => peer.to_string(),
            // The token's issuer and subject are part of the key: two users
            // behind one agent are two principals.
            Some(t) => format!("{peer} token:{}#{}", t.issuer, t.subject),
        };
        Self(Arc::new(Inner {
            peer,
            token,
            key,
            workload,
        }))
    }

    /// The one spelling of this principal: `anonymous`, a SPIFFE ID, or
    /// either followed by ` token:<issuer>#<subject>`. Used by warm filter
    /// instances (never shared between keys), audit records and metrics.
    pub fn key(&self) -> &str {
        &self.0.key
    }

    pub fn peer(&self) -> &Peer {
        &self.0.peer
    }

    pub fn token(&self) -> Option<&Token> {
        self.0.token.as_deref()
    }

    /// The calling workload's SPIFFE ID: the mTLS peer's, else a
    /// JWT-SVID's subject; or `anonymous`. What `callers:` patterns in
    /// static rules match. An access token's subject (a user, a client)
    /// gets rules of its own, so that a pattern written for SPIFFE IDs
    /// never matches it by accident, even when an IdP puts a SPIFFE ID
    /// there.
    pub fn peer_text(&self) -> &str {
        &self.0.workload
    }

    pub fn spiffe_id(&self) -> Option<&SpiffeId> {
        self.0.peer.spiffe_id()
    }

    /// The mTLS peer's SPIFFE ID as text, spelled once when the principal
    /// was built: filters are shown it with every call, and formatting
    /// the ID each time was 5 % of a warm evaluation.
    pub fn spiffe_text(&self) -> Option<&str> {
        match self.0.peer {
            Peer::Spiffe(_) => Some(&self.0.workload),
            Peer::Anonymous => None,
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spiffe(s: &str) -> Peer {
        Peer::Spiffe(SpiffeId::parse(s).unwrap())
    }

    #[test]
    fn keys_name_peer_and_token() {
        assert_eq!(Principal::default().key(), "anonymous");
        let agent = Principal::from_peer(spiffe("spiffe://td/ns/a/sa/agent"));
        assert_eq!(agent.key(), "spiffe://td/ns/a/sa/agent");
        assert_eq!(agent.peer_text(), "spiffe://td/ns/a/sa/agent");
        let token = Arc::new(Token {
            kind: TokenKind::AccessToken,
            issuer: "https://idp".into(),
            subject: "alice".into(),
            scopes: vec!["files:read".into()],
            actor: None,
            expires_at: SystemTime::UNIX_EPOCH,
            claims: "{}".into(),
        });
        let both = Principal::new(spiffe("spiffe://td/ns/a/sa/agent"), Some(token));
        assert_eq!(
            both.key(),
            "spiffe://td/ns/a/sa/agent token:https://idp#alice"
        );
        // Rules on SPIFFE IDs still see only the peer.
        assert_eq!(both.peer_text(), "spiffe://td/ns/a/sa/agent");
        assert_ne!(both.key(), agent.key());
        // What filters are shown as the peer: the ID as it prints, and
        // nothing without an mTLS peer, even when a token names a workload.
        for p in [&agent, &both] {
            let printed = p.spiffe_id().map(ToString::to_string);
            assert_eq!(p.spiffe_text().map(str::to_owned), printed);
        }
        assert_eq!(Principal::default().spiffe_text(), None);
        let svid = Arc::new(Token {
            kind: TokenKind::JwtSvid,
            issuer: "spiffe://td".into(),
            subject: "spiffe://td/ns/a/sa/agent".into(),
            scopes: vec![],
            actor: None,
            expires_at: SystemTime::UNIX_EPOCH,
            claims: "{}".into(),
        });
        let by_token = Principal::new(Peer::Anonymous, Some(svid));
        assert_eq!(by_token.peer_text(), "spiffe://td/ns/a/sa/agent");
        assert_eq!(by_token.spiffe_text(), None);
    }

    #[test]
    fn rules_see_the_workload_a_jwt_svid_names() {
        let token = |kind: TokenKind, issuer: &str, subject: &str| {
            Some(Arc::new(Token {
                kind,
                issuer: issuer.into(),
                subject: subject.into(),
                scopes: vec![],
                actor: None,
                expires_at: SystemTime::UNIX_EPOCH,
                claims: "{}".into(),
            }))
        };
        let svid = || {
            token(
                TokenKind::JwtSvid,
                "spiffe://td",
                "spiffe://td/ns/a/sa/planner",
            )
        };
        // No mTLS: the JWT-SVID's subject is the workload.
        let bearer = Principal::new(Peer::Anonymous, svid());
        assert_eq!(bearer.peer_text(), "spiffe://td/ns/a/sa/planner");
        assert_eq!(
            bearer.key(),
            "anonymous token:spiffe://td#spiffe://td/ns/a/sa/planner"
        );
        // With mTLS, the peer (the verifier refused any other subject).
        let both = Principal::new(spiffe("spiffe://td/ns/a/sa/planner"), svid());
        assert_eq!(both.peer_text(), "spiffe://td/ns/a/sa/planner");
        // An access token whose subject looks like a SPIFFE ID names no
        // workload.
        let user = Principal::new(
            Peer::Anonymous,
            token(TokenKind::AccessToken, "idp", "spiffe://td/ns/a/sa/planner"),
        );
        assert_eq!(user.peer_text(), ANONYMOUS);
    }
}
