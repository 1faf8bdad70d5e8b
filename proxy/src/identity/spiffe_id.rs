//! SPIFFE IDs, as the SPIFFE ID standard defines them.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    path: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpiffeIdError {
    #[error("not a spiffe:// URI")]
    Scheme,
    #[error("empty trust domain")]
    EmptyTrustDomain,
    #[error("trust domain has invalid characters (only a-z 0-9 . - _)")]
    TrustDomainChars,
    #[error("path has an empty, '.' or '..' segment, or invalid characters")]
    Path,
    #[error("query, fragment, port or user info are not allowed")]
    Extra,
}

impl SpiffeId {
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        let rest = s.strip_prefix("spiffe://").ok_or(SpiffeIdError::Scheme)?;
        if rest.contains(['?', '#', '@', ':']) {
            return Err(SpiffeIdError::Extra);
        }
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if td.is_empty() {
            return Err(SpiffeIdError::EmptyTrustDomain);
        }
        if !td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        {
            return Err(SpiffeIdError::TrustDomainChars);
        }
        if !path.is_empty() && !valid_path(path) {
            return Err(SpiffeIdError::Path);
        }
        Ok(Self {
            trust_domain: td.to_string(),
            path: path.to_string(),
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether the ID names a workload. `spiffe://td` (no path) is a valid
    /// SPIFFE ID, but it names the trust domain itself, and X509-SVID §5.2
    /// forbids it in a leaf SVID. (`spiffe://td/` does not parse at all.)
    pub fn names_workload(&self) -> bool {
        !self.path.is_empty()
    }
}

fn valid_path(path: &str) -> bool {
    path.split('/').skip(1).all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    })
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}{}", self.trust_domain, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_ids() {
        let id = SpiffeId::parse("spiffe://td.example/ns/a/sa/b").unwrap();
        assert_eq!(id.trust_domain(), "td.example");
        assert_eq!(id.path(), "/ns/a/sa/b");
        assert_eq!(id.to_string(), "spiffe://td.example/ns/a/sa/b");
        assert!(SpiffeId::parse("spiffe://td").is_ok());
    }

    #[test]
    fn trust_domain_ids_name_no_workload() {
        assert!(!SpiffeId::parse("spiffe://td").unwrap().names_workload());
        assert!(SpiffeId::parse("spiffe://td/x").unwrap().names_workload());
        assert!(SpiffeId::parse("spiffe://td/").is_err());
    }

    #[test]
    fn rejects_invalid_ids() {
        assert_eq!(SpiffeId::parse("https://td/x"), Err(SpiffeIdError::Scheme));
        assert_eq!(
            SpiffeId::parse("spiffe:///x"),
            Err(SpiffeIdError::EmptyTrustDomain)
        );
        assert_eq!(
            SpiffeId::parse("spiffe://TD/x"),
            Err(SpiffeIdError::TrustDomainChars)
        );
        assert_eq!(
            SpiffeId::parse("spiffe://td/a//b"),
            Err(SpiffeIdError::Path)
        );
        assert_eq!(
            SpiffeId::parse("spiffe://td/a/../b"),
            Err(SpiffeIdError::Path)
        );
        assert_eq!(SpiffeId::parse("spiffe://td/"), Err(SpiffeIdError::Path));
        assert_eq!(
            SpiffeId::parse("spiffe://td:443/x"),
            Err(SpiffeIdError::Extra)
        );
        assert_eq!(
            SpiffeId::parse("spiffe://td/x?y"),
            Err(SpiffeIdError::Extra)
        );
    }
}
