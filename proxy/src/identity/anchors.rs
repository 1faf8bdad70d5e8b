//! Trust bundle roots, with the checks webpki does not make on trust
//! anchors: a root outside its validity period anchors nothing, and a
//! root's URI name constraints, which webpki refuses outright, are applied
//! here to the names below it.

use rustls::pki_types::{CertificateDer, Der, TrustAnchor};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// One root of a trust bundle.
#[derive(Debug, Clone)]
pub struct Root {
    /// What webpki builds chains to. When the root's name constraints are
    /// all of the URI form, they are taken out of here and kept in
    /// `uri_constraints` instead (see [`UriConstraints`]).
    pub anchor: TrustAnchor<'static>,
    /// The root's subject, for logs and errors.
    pub subject: String,
    not_before: i64,
    not_after: i64,
    uri_constraints: Option<UriConstraints>,
}

/// RFC 5280 §4.2.1.10 URI name constraints: each entry is a host
/// (`demo.local`) or, with a leading dot, the hosts below a domain
/// (`.demo.local`), compared with the host part of a URI. A SPIFFE ID's
/// host is its trust domain.
///
/// webpki does not implement this form and fails every chain under a CA
/// that uses it, which blocks real CAs constrained to their trust domain.
/// Only a root's constraints can be taken over here: a root is not signed
/// by anyone, so the anchor is ours to build, whereas an intermediate's
/// constraints are part of its signed body and webpki always applies them
/// (such chains stay refused: fail closed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UriConstraints {
    permitted: Vec<String>,
    excluded: Vec<String>,
}

impl Root {
    /// Reads a bundle certificate.
    pub fn from_der(der: &CertificateDer<'_>) -> Result<Self, String> {
        let mut anchor = webpki::anchor_from_trusted_cert(der)
            .map_err(|e| format!("{e:?}"))?
            .to_owned();
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        let uri_constraints = uri_only_constraints(&cert);
        if uri_constraints.is_some() {
            anchor.name_constraints = None;
        }
        let v = cert.validity();
        Ok(Self {
            anchor,
            subject: cert.subject().to_string(),
            not_before: v.not_before.timestamp(),
            not_after: v.not_after.timestamp(),
            uri_constraints,
        })
    }

    /// Whether the root is inside its validity period at `now` (Unix seconds).
    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && !self.expired_at(now)
    }

    pub fn expired_at(&self, now: i64) -> bool {
        now > self.not_after
    }

    /// The anchor, borrowed (webpki takes a slice of anchors per handshake).
    pub fn borrowed(&self) -> TrustAnchor<'_> {
        TrustAnchor {
            subject: Der::from(self.anchor.subject.as_ref()),
            subject_public_key_info: Der::from(self.anchor.subject_public_key_info.as_ref()),
            name_constraints: self
                .anchor
                .name_constraints
                .as_ref()
                .map(|nc| Der::from(nc.as_ref())),
        }
    }

    /// Whether `anchor` (as webpki hands it back) is this root.
    pub fn is(&self, anchor: &TrustAnchor<'_>) -> bool {
        self.anchor.subject.as_ref() == anchor.subject.as_ref()
            && self.anchor.subject_public_key_info.as_ref()
                == anchor.subject_public_key_info.as_ref()
    }

    /// Checks the URI names of a certificate below this root against the
    /// root's URI name constraints; the first URI outside them is returned.
    pub fn check_uris<'u>(&self, uris: &'u [String]) -> Result<(), &'u str> {
        match &self.uri_constraints {
            None => Ok(()),
            Some(c) => uris
                .iter()
                .find(|u| !c.allows(u))
                .map_or(Ok(()), |u| Err(u)),
        }
    }
}

/// The root's name constraints, if it has some and every one of them is of
/// the URI form. Constraints of other forms (DNS, IP, directory name) are
/// left to webpki, which then also refuses the URI ones: fail closed.
fn uri_only_constraints(cert: &X509Certificate<'_>) -> Option<UriConstraints> {
    let nc = cert.name_constraints().ok()??;
    let uris = |subtrees: &Option<Vec<x509_parser::extensions::GeneralSubtree<'_>>>| {
        subtrees
            .iter()
            .flatten()
            .map(|s| match s.base {
                GeneralName::URI(u) => Some(u.to_ascii_lowercase()),
                _ => None,
            })
            .collect::<Option<Vec<String>>>()
    };
    let constraints = UriConstraints {
        permitted: uris(&nc.value.permitted_subtrees)?,
        excluded: uris(&nc.value.excluded_subtrees)?,
    };
    (constraints != UriConstraints::default()).then_some(constraints)
}

impl UriConstraints {
    /// A URI is allowed if its host matches a permitted entry (when there
    /// are any) and no excluded one. A URI without a plain host cannot be
    /// checked, so it is refused.
    fn allows(&self, uri: &str) -> bool {
        let Some(host) = uri_host(uri) else {
            return false;
        };
        let hit = |list: &[String]| list.iter().any(|c| host_matches(&host, c));
        (self.permitted.is_empty() || hit(&self.permitted)) && !hit(&self.excluded)
    }
}

/// The lower-cased host of `scheme://host[:port]/…`; `None` for URIs with
/// no authority, user info or an IP literal, which constraints as hosts do
/// not describe.
fn uri_host(uri: &str) -> Option<String> {
    let (_, rest) = uri.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.contains(['@', '[']) {
        return None;
    }
    let host = authority.split(':').next()?;
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// RFC 5280: `.example.com` matches hosts below the domain, `example.com`
/// only that host.
fn host_matches(host: &str, constraint: &str) -> bool {
    if constraint.starts_with('.') {
        host.len() > constraint.len() && host.ends_with(constraint)
    } else {
        host == constraint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(permitted: &[&str], excluded: &[&str]) -> UriConstraints {
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        UriConstraints {
            permitted: own(permitted),
            excluded: own(excluded),
        }
    }

    #[test]
    fn hosts_and_domains() {
        let id = "spiffe://demo.local/ns/a/sa/b";
        assert!(c(&["demo.local"], &[]).allows(id));
        assert!(c(&["other.local", "demo.local"], &[]).allows(id));
        assert!(!c(&["other.local"], &[]).allows(id));
        assert!(!c(&[".demo.local"], &[]).allows(id));
        assert!(c(&[".local"], &[]).allows(id));
        assert!(!c(&["local"], &[]).allows(id));
        assert!(!c(&[], &["demo.local"]).allows(id));
        assert!(c(&[], &["other.local"]).allows(id));
        assert!(!c(&["demo.local"], &["demo.local"]).allows(id));
        assert!(c(&["demo.local"], &[]).allows("spiffe://DEMO.local/x"));
        // Suffix tricks do not pass.
        assert!(!c(&["demo.local"], &[]).allows("spiffe://evildemo.local/x"));
        assert!(!c(&[".demo.local"], &[]).allows("spiffe://evildemo.local/x"));
    }

    #[test]
    fn uris_without_a_plain_host_are_refused() {
        let ok = c(&["demo.local"], &[]);
        for uri in [
            "urn:demo.local",
            "spiffe://",
            "spiffe://user@demo.local/x",
            "https://[::1]/x",
            "demo.local",
        ] {
            assert!(!ok.allows(uri), "{uri}");
        }
        assert_eq!(
            uri_host("https://demo.local:8443/x"),
            Some("demo.local".into())
        );
    }
}
