//! DNS-rebinding protection: `Host` and `Origin` must name an allowed host.

use http::{header, HeaderMap, Uri};

use crate::policy::glob;

const LOOPBACK: &[&str] = &["localhost", "127.0.0.1", "::1"];

#[derive(Debug, Clone, Default)]
pub struct HostGuard {
    extra: Vec<String>,
}

impl HostGuard {
    pub fn new(allowed: &[String]) -> Self {
        Self {
            extra: allowed.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    /// Checks `Host` (or the HTTP/2 authority) and `Origin`.
    pub fn check(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), String> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .ok_or("request has no Host")?;
        let name = host_name(host).ok_or_else(|| format!("malformed Host {host:?}"))?;
        if !self.allowed(&name) {
            return Err(format!("Host {host:?} is not allowed"));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().map_err(|_| "malformed Origin")?;
            let name = origin_host(origin).ok_or_else(|| format!("malformed Origin {origin:?}"))?;
            if !self.allowed(&name) {
                return Err(format!("Origin {origin:?} is not allowed"));
            }
        }
        Ok(())
    }

    fn allowed(&self, name: &str) -> bool {
        LOOPBACK.contains(&name) || self.extra.iter().any(|p| glob::matches(p, name))
    }
}

/// The host part of a `Host` value: no port, no IPv6 brackets, lower case.
fn host_name(host: &str) -> Option<String> {
    let authority: http::uri::Authority = host.parse().ok()?;
    let h = authority.host();
    let h = h
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(h);
    (!h.is_empty()).then(|| h.to_ascii_lowercase())
}

fn origin_host(origin: &str) -> Option<String> {
    let uri: Uri = origin.parse().ok()?;
    uri.scheme()?;
    host_name(uri.authority()?.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(guard: &HostGuard, host: &str, origin: Option<&str>) -> Result<(), String> {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        guard.check(&Uri::from_static("/mcp"), &h)
    }

    #[test]
    fn loopback_names_pass_by_default() {
        let g = HostGuard::default();
        assert!(check(&g, "localhost:8080", Some("http://localhost:8080")).is_ok());
        assert!(check(&g, "127.0.0.1", None).is_ok());
        assert!(check(&g, "[::1]:9", None).is_ok());
        assert!(check(&g, "LOCALHOST", None).is_ok());
    }

    #[test]
    fn rebinding_is_refused() {
        let g = HostGuard::default();
        assert!(check(&g, "evil.example.com", Some("http://evil.example.com")).is_err());
        assert!(check(&g, "localhost:1", Some("http://evil.example.com")).is_err());
        assert!(check(&g, "localhost:1", Some("null")).is_err());
        assert!(check(&g, "localhost.evil.com", None).is_err());
    }

    #[test]
    fn configured_hosts_and_wildcards() {
        let g = HostGuard::new(&["mcp.internal".into(), "*.svc.cluster.local".into()]);
        assert!(check(&g, "mcp.internal:80", None).is_ok());
        assert!(check(&g, "srv.ns.svc.cluster.local", None).is_ok());
        assert!(check(&g, "other.internal", None).is_err());
    }

    #[test]
    fn missing_host_uses_authority() {
        let g = HostGuard::default();
        let uri: Uri = "http://localhost:1/mcp".parse().unwrap();
        assert!(g.check(&uri, &HeaderMap::new()).is_ok());
        assert!(g
            .check(&Uri::from_static("/mcp"), &HeaderMap::new())
            .is_err());
    }
}
