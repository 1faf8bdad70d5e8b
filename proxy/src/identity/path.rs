//! Checks on a chain webpki has built, for what webpki leaves out (it
//! checks basicConstraints and the extended key usage, but not the key
//! usage of CA certificates):
//!
//! - every intermediate is a CA whose key usage includes keyCertSign
//!   (RFC 5280 §6.1.4(k) and (n); X509-SVID §5.1 requires the key usage
//!   extension on signing certificates);
//! - the root's URI name constraints hold for every URI name below it
//!   (see [`super::anchors::UriConstraints`]).
//!
//! They run as webpki's path callback, so a refused candidate path lets
//! webpki try another one through different intermediates.

use webpki::VerifiedPath;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{anchors::Root, svid::uri_sans, verify::VerifyError};

/// Checks `path`, whose leaf carries `leaf_uris`, against the `roots` it
/// may end at.
pub fn check(
    path: &VerifiedPath<'_>,
    roots: &[&Root],
    leaf_uris: &[String],
) -> Result<(), VerifyError> {
    let root = roots
        .iter()
        .find(|r| r.is(path.anchor()))
        .ok_or(VerifyError::UnknownAnchor)?;
    let mut names = leaf_uris.to_vec();
    for ca in path.intermediate_certificates() {
        let der = ca.der();
        let (_, cert) =
            X509Certificate::from_der(&der).map_err(|e| VerifyError::Parse(e.to_string()))?;
        signing_rules(&cert)?;
        names.extend(uri_sans(&cert));
    }
    root.check_uris(&names)
        .map_err(|uri| VerifyError::NameConstraint(uri.to_string(), root.subject.clone()))
}

/// The rules for a certificate that signs others. A key usage extension
/// that does not parse counts as missing: fail closed.
fn signing_rules(cert: &X509Certificate<'_>) -> Result<(), VerifyError> {
    let refuse = |why| VerifyError::Issuer(cert.subject().to_string(), why);
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err(refuse("is not a CA (basicConstraints)"));
    }
    let usage = cert
        .key_usage()
        .ok()
        .flatten()
        .ok_or_else(|| refuse("has no key usage extension"))?;
    if !usage.value.key_cert_sign() {
        return Err(refuse("does not have keyCertSign in its key usage"));
    }
    Ok(())
}
