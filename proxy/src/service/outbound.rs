//! What crosses to the upstream and back at the HTTP level: the request
//! head Portcullis sends (headers it owns set, the client's copies and
//! hop-by-hop headers removed) and the response head it relays.
//!
//! Session sealing and identity headers for the local app hook in here, in
//! [`Outbound`], which the earlier phases build once per request.

use bytes::Bytes;
use http::{
    header, request::Parts, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::{
    rescue::{Cause, Refusal},
    respond,
};
use std::sync::Arc;

use crate::{
    auth::assertion::{is_loopback, Asserter, IdentityMode},
    body::ProxyBody,
    config::{Config, ConfigError},
    identity::Principal,
    upstream::{Target, Upstream, UpstreamError},
};

/// Set by Portcullis to the verified caller's SPIFFE ID. Any copy a client
/// sends is removed first, so the upstream can trust it.
pub const CALLER_HEADER: &str = "x-portcullis-caller";

/// Every header under this prefix is Portcullis's to set.
const OWNED_PREFIX: &str = "x-portcullis-";

/// Identity headers other proxies set, which an upstream may trust as if
/// a proxy had verified them. Portcullis never sets them, so a client's
/// copy is removed.
const FOREIGN_IDENTITY: &[&str] = &[
    "x-forwarded-client-cert",
    // What authenticating proxies (oauth2-proxy and the like) set, which
    // apps once behind one trust: never a client's to say.
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-preferred-username",
    "x-auth-request-groups",
    "remote-user",
    "x-remote-user",
];

/// Whether a server could read header `name` as one Portcullis owns.
/// CGI and WSGI servers turn `-` into `_` (`HTTP_X_PORTCULLIS_CALLER`), so
/// `x_portcullis_caller` reaches them as the caller header: every spelling
/// that normalizes to an owned name is removed.
fn is_owned(name: &str) -> bool {
    starts_as(name, OWNED_PREFIX) || FOREIGN_IDENTITY.iter().any(|f| reads_as(name, f))
}

/// Whether a server that lowercases names and reads `_` as `-` reads
/// `name` as it reads `canonical`. Compared byte by byte: a
/// request's every header is checked, and a normalized copy of each cost
/// two allocations.
fn reads_as(name: &str, canonical: &str) -> bool {
    name.len() == canonical.len() && starts_as(name, canonical)
}

fn starts_as(name: &str, canonical: &str) -> bool {
    let read = |b: u8| match b {
        b'_' => b'-',
        b => b.to_ascii_lowercase(),
    };
    name.len() >= canonical.len()
        && name
            .bytes()
            .zip(canonical.bytes())
            .all(|(n, c)| read(n) == read(c))
}

/// Headers that describe one hop and must not be forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// How one request is sent upstream.
pub struct Outbound<'a> {
    pub upstream: &'a Upstream,
    /// Where this connection's requests go (set by the listener).
    target: Target,
    /// What a verified token established, for the app (see
    /// [`identity_headers`]), or the signed assertion of it.
    identity: Vec<(HeaderName, HeaderValue)>,
    /// The assertion's header, when it is not under the owned prefix: a
    /// client's copy is removed like the owned ones, even when no
    /// assertion replaces it (an anonymous caller).
    assertion_header: Option<HeaderName>,
    forward_authorization: bool,
}

/// What the upstream learns of the caller (`upstream.identity`, resolved).
#[derive(Debug, Clone)]
pub enum Disclosure {
    /// `x-portcullis-*` headers: for a server only this sidecar can reach.
    Headers,
    /// One signed JWT (`auth::assertion`), and no plain identity header.
    Assertion(Arc<Asserter>),
    None,
}

/// How every request's identity goes upstream.
#[derive(Debug, Clone)]
pub struct UpstreamIdentity {
    pub disclosure: Disclosure,
    /// Pass the client's `Authorization` on (explicit opt-in).
    pub forward_authorization: bool,
}

impl UpstreamIdentity {
    /// `auto` is `headers` for a loopback upstream and `assertion` for any
    /// other, or `none` when the client's token is forwarded there.
    pub fn from_config(config: &Config, instance: &str) -> Result<Self, ConfigError> {
        let up = &config.upstream;
        let uri = config.upstream_uri()?;
        let mode = match up.identity.mode {
            IdentityMode::Auto if is_loopback(&uri) => IdentityMode::Headers,
            // The client's token goes up, and the config keeps that
            // exclusive with an assertion; plain headers to a server others
            // can reach could be forged by them, so none.
            IdentityMode::Auto if up.forward_authorization => {
                tracing::warn!(
                    "upstream.forward_authorization to a remote upstream: it gets the client's token and no identity headers"
                );
                IdentityMode::None
            }
            IdentityMode::Auto => IdentityMode::Assertion,
            other => other,
        };
        let disclosure = match mode {
            IdentityMode::Headers | IdentityMode::Auto => Disclosure::Headers,
            IdentityMode::None => Disclosure::None,
            IdentityMode::Assertion => {
                // An exact SPIFFE ID of the server is the best audience:
                // a URL can be reached through several names.
                let audience = match up.server_ids.as_slice() {
                    [id] if !id.contains('*') => id.clone(),
                    _ => up.url.clone(),
                };
                let asserter = Asserter::new(&up.identity.assertion, instance, audience)?;
                tracing::info!(
                    audience = asserter.audience(),
                    header = %asserter.header(),
                    "the upstream gets a signed identity assertion"
                );
                Disclosure::Assertion(Arc::new(asserter))
            }
        };
        Ok(Self {
            disclosure,
            forward_authorization: up.forward_authorization,
        })
    }

    /// The assertion signer, when there is one (its keys go on the admin
    /// listener).
    pub fn asserter(&self) -> Option<&Arc<Asserter>> {
        match &self.disclosure {
            Disclosure::Assertion(a) => Some(a),
            _ => None,
        }
    }
}

impl Default for UpstreamIdentity {
    fn default() -> Self {
        Self {
            disclosure: Disclosure::Headers,
            forward_authorization: false,
        }
    }
}

/// The verified token's subject, issuer (configured name), scopes and
/// actor, as headers the app may trust: every `x-portcullis-*` header a
/// client sent is removed first. A value that is not a valid header value
/// is left out (and logged).
pub fn identity_headers(principal: &Principal) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    if let Some(id) = principal.spiffe_id() {
        if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
            out.push((HeaderName::from_static(CALLER_HEADER), v));
        }
    }
    let Some(token) = principal.token() else {
        return out;
    };
    let scopes = token.scopes.join(" ");
    let fields = [
        ("x-portcullis-subject", Some(token.subject.as_str())),
        ("x-portcullis-issuer", Some(token.issuer.as_str())),
        ("x-portcullis-scopes", Some(scopes.as_str())),
        ("x-portcullis-actor", token.actor.as_deref()),
    ];
    for (name, value) in fields {
        let Some(value) = value else { continue };
        match HeaderValue::from_str(value) {
            Ok(v) => out.push((HeaderName::from_static(name), v)),
            Err(_) => tracing::warn!(
                header = name,
                "verified identity not sent: not a header value"
            ),
        }
    }
    out
}

impl<'a> Outbound<'a> {
    pub fn new(
        upstream: &'a Upstream,
        target: Target,
        principal: &Principal,
        identity: &UpstreamIdentity,
    ) -> Self {
        let disclosed = match &identity.disclosure {
            Disclosure::Headers => identity_headers(principal),
            Disclosure::Assertion(a) => a
                .assertion(principal)
                .map(|v| vec![(a.header().clone(), v)])
                .unwrap_or_default(),
            Disclosure::None => Vec::new(),
        };
        Self {
            upstream,
            target,
            identity: disclosed,
            assertion_header: identity.asserter().map(|a| a.header().clone()),
            forward_authorization: identity.forward_authorization,
        }
    }

    /// Where this request goes.
    pub fn target(&self) -> Target {
        self.target
    }

    /// The upstream request for a client request's `parts` and (checked)
    /// body.
    pub fn request(&self, parts: &Parts, body: Bytes) -> Result<Request<Full<Bytes>>, Refusal> {
        self.request_from(parts, parts.headers.clone(), body)
    }

    /// [`Outbound::request`], from the client's `headers` taken out of
    /// `parts`: for a request sent once, whose headers nothing reads
    /// afterwards, so they are moved rather than copied.
    pub fn request_from(
        &self,
        parts: &Parts,
        client_headers: HeaderMap,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, Refusal> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = self
            .upstream
            .uri_for(self.target, path)
            .map_err(UpstreamError::Request)?;
        let host = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        let length = body.len();
        let mut req = Request::builder()
            .method(parts.method.clone())
            .uri(uri)
            .body(Full::new(body))
            .map_err(UpstreamError::Request)?;
        let headers = req.headers_mut();
        *headers = client_headers;
        strip_hop_by_hop(headers);
        // The client's length goes on only when it is one value, spelled
        // canonically, that states the length of what is sent (the body
        // forwarded as it came); otherwise hyper writes the length itself.
        let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
        let exact = match (lengths.next(), lengths.next()) {
            (Some(v), None) => states_length(v.as_bytes(), length),
            _ => false,
        };
        if !exact {
            headers.remove(header::CONTENT_LENGTH);
        }
        // The proxy must read responses to filter them, so it asks for
        // them uncompressed.
        headers.remove(header::ACCEPT_ENCODING);
        let owned: Vec<HeaderName> = headers
            .keys()
            .filter(|n| is_owned(n.as_str()))
            .cloned()
            .collect();
        for name in owned {
            headers.remove(name);
        }
        if let Some(assertion) = &self.assertion_header {
            // Every spelling a CGI or WSGI server would read as it.
            let spellings: Vec<HeaderName> = headers
                .keys()
                .filter(|n| reads_as(n.as_str(), assertion.as_str()))
                .cloned()
                .collect();
            for name in spellings {
                headers.remove(name);
            }
        }
        if !self.forward_authorization {
            headers.remove(header::AUTHORIZATION);
        }
        for (name, value) in &self.identity {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(host) = host {
            headers.insert(header::HOST, host);
        }
        Ok(req)
    }

    /// Sends a request and waits for the answer's head.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, Refusal> {
        Ok(self.upstream.send(req).await?)
    }
}

/// Whether a `Content-Length` value is `len` in canonical decimal (no
/// sign, no space, no leading zero): what hyper would write for it.
fn states_length(value: &[u8], len: usize) -> bool {
    let canonical = matches!(value, [b'1'..=b'9', ..] | [b'0']);
    canonical
        && value.len() <= 20
        && value.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            == Some(len)
}

pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named by `Connection` are hop-by-hop too.
    let mut named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    // The names present are matched against the list, rather than each
    // listed name parsed, hashed and looked up: usually none is present.
    named.extend(
        headers
            .keys()
            .filter(|k| HOP_BY_HOP.contains(&k.as_str()))
            .cloned(),
    );
    for name in named {
        headers.remove(name);
    }
}

/// Copies an upstream response's head; `keep_length` is false when the
/// proxy rewrites the body.
pub fn response_head(resp: &Response<Incoming>, keep_length: bool) -> http::response::Builder {
    let mut builder = Response::builder().status(resp.status());
    if let Some(headers) = builder.headers_mut() {
        *headers = resp.headers().clone();
        strip_hop_by_hop(headers);
        if !keep_length {
            headers.remove(header::CONTENT_LENGTH);
        }
    }
    builder
}

/// [`response_head`] for a response relayed as it is: its headers are
/// moved into the head, not copied, and its body comes back for the relay.
pub fn split_response(
    resp: Response<Incoming>,
    keep_length: bool,
) -> (http::response::Builder, Incoming) {
    let (parts, body) = resp.into_parts();
    let mut builder = Response::builder().status(parts.status);
    if let Some(headers) = builder.headers_mut() {
        *headers = parts.headers;
        strip_hop_by_hop(headers);
        if !keep_length {
            headers.remove(header::CONTENT_LENGTH);
        }
    }
    (builder, body)
}

/// `head` with `body`, or a 502 if the head cannot be built (it was
/// copied from a response hyper already accepted, so this is not expected).
pub fn with_body(head: http::response::Builder, body: ProxyBody) -> Response<ProxyBody> {
    head.body(body).unwrap_or_else(|_| bad_upstream_response())
}

/// An upstream answer relayed byte for byte.
pub fn relay_raw(resp: Response<Incoming>) -> Response<ProxyBody> {
    let (head, body) = split_response(resp, true);
    let body = body.map_err(|e| Box::new(e) as _).boxed_unsync();
    with_body(head, body)
}

fn bad_upstream_response() -> Response<ProxyBody> {
    let refusal = Refusal::from(Cause::BadUpstreamResponse);
    respond::json(StatusCode::BAD_GATEWAY, refusal.to_message())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::Config,
        identity::{Peer, SpiffeId},
    };

    fn upstream() -> Upstream {
        let c = Config::from_yaml("upstream: {url: 'http://127.0.0.1:9'}\n").unwrap();
        Upstream::new(&c.upstream, &c.upstream_uri().unwrap(), None).unwrap()
    }

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut req = Request::post("/mcp");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(()).unwrap().into_parts().0
    }

    /// How an anonymous caller's requests go to `up`, with the default
    /// identity settings.
    fn anonymous(up: &Upstream) -> Outbound<'_> {
        Outbound::new(
            up,
            Target::Configured,
            &Principal::default(),
            &UpstreamIdentity::default(),
        )
    }

    /// A `Content-Length` the upstream could read otherwise than hyper
    /// did, or that no longer states the body, is not passed on (hyper
    /// writes its own when the request is encoded).
    #[test]
    fn the_clients_length_goes_on_only_when_it_states_the_body() {
        let up = upstream();
        let out = anonymous(&up);
        let sent = |given: &[&str], body: &'static str| -> Vec<String> {
            let mut p = parts(&[]);
            for v in given {
                p.headers
                    .append(header::CONTENT_LENGTH, HeaderValue::from_str(v).unwrap());
            }
            let req = out
                .request(&p, Bytes::from_static(body.as_bytes()))
                .unwrap();
            req.headers()
                .get_all(header::CONTENT_LENGTH)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(sent(&["5"], "hello"), ["5"]);
        assert_eq!(sent(&["0"], ""), ["0"]);
        for (given, body) in [
            (&["05"][..], "hello"),
            (&["+5"], "hello"),
            (&[" 5"], "hello"),
            (&["4"], "hello"),
            (&["5", "5"], "hello"),
            (&["00"], ""),
            (&[], "hello"),
        ] {
            assert!(sent(given, body).is_empty(), "{given:?}");
        }
    }

    #[test]
    fn no_spelling_of_an_owned_header_reaches_the_upstream() {
        let up = upstream();
        let agent = Principal::from_peer(Peer::Spiffe(
            SpiffeId::parse("spiffe://td/ns/a/sa/real").unwrap(),
        ));
        let out = Outbound::new(
            &up,
            Target::Configured,
            &agent,
            &UpstreamIdentity::default(),
        );
        let spoof = "spiffe://td/ns/a/sa/admin";
        let p = parts(&[
            ("x-portcullis-caller", spoof),
            ("x_portcullis_caller", spoof),
            ("X_Portcullis-Caller", spoof),
            ("x-portcullis_caller", spoof),
            ("x-portcullis-session-key", "forged"),
            ("x-forwarded-client-cert", "By=spiffe://td/ns/a/sa/admin"),
            ("x_forwarded_client_cert", "By=spiffe://td/ns/a/sa/admin"),
            ("x-forwarded-user", "admin"),
            ("X_Auth_Request_Email", "admin@example.com"),
            ("remote-user", "admin"),
            ("authorization", "Bearer secret"),
            ("mcp-session-id", "kept"),
        ]);
        let req = out.request(&p, Bytes::new()).unwrap();
        let names: Vec<&str> = req.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(
            req.headers()
                .get_all(CALLER_HEADER)
                .iter()
                .collect::<Vec<_>>(),
            ["spiffe://td/ns/a/sa/real"]
        );
        for name in &names {
            assert!(
                !name.contains("portcullis_")
                    && !name.contains("forwarded")
                    && !name.contains("auth_request")
                    && *name != "remote-user",
                "{name} reached the upstream"
            );
        }
        assert!(req.headers().get("x-portcullis-session-key").is_none());
        assert!(req.headers().get(header::AUTHORIZATION).is_none());
        assert_eq!(req.headers()["mcp-session-id"], "kept");
    }

    #[test]
    fn an_anonymous_caller_gets_no_caller_header() {
        let up = upstream();
        let out = anonymous(&up);
        let req = out
            .request(
                &parts(&[("x_portcullis_caller", "spiffe://td/x")]),
                Bytes::new(),
            )
            .unwrap();
        assert!(req.headers().keys().all(|n| !is_owned(n.as_str())));
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("mcp-session-id", "abc".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("connection").is_none());
        assert_eq!(h.get("mcp-session-id").unwrap(), "abc");
        // Every listed name, any case, every value of it.
        let mut h = HeaderMap::new();
        for name in HOP_BY_HOP {
            let upper = HeaderName::from_bytes(name.to_uppercase().as_bytes()).unwrap();
            h.append(upper.clone(), "a".parse().unwrap());
            h.append(upper, "b".parse().unwrap());
        }
        h.insert("accept", "*/*".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"]);
    }

    /// With an assertion, the upstream gets the signed JWT and no plain
    /// identity header; a client's copy of the assertion header is removed
    /// even when there is no caller to assert.
    #[test]
    fn an_assertion_replaces_the_plain_headers() {
        use crate::auth::assertion::AssertionConfig;
        let up = upstream();
        let config = AssertionConfig {
            header: "x-identity".into(),
            ..AssertionConfig::default()
        };
        let identity = UpstreamIdentity {
            disclosure: Disclosure::Assertion(Arc::new(
                Asserter::new(&config, "pod", "aud".into()).unwrap(),
            )),
            forward_authorization: false,
        };
        let agent = Principal::from_peer(Peer::Spiffe(
            SpiffeId::parse("spiffe://td/ns/a/sa/agent").unwrap(),
        ));
        let forged = [
            ("x-identity", "forged"),
            ("authorization", "Bearer user-token"),
        ];
        let req = Outbound::new(&up, Target::Configured, &agent, &identity)
            .request(&parts(&forged), Bytes::new())
            .unwrap();
        let jwt = req.headers().get("x-identity").unwrap().to_str().unwrap();
        assert_eq!(jwt.split('.').count(), 3, "{jwt}");
        assert!(req.headers().get(CALLER_HEADER).is_none());
        assert!(req.headers().get("authorization").is_none());
        let req = Outbound::new(&up, Target::Configured, &Principal::default(), &identity)
            .request(&parts(&forged), Bytes::new())
            .unwrap();
        assert!(req.headers().get("x-identity").is_none());
        assert!(req.headers().get("x_identity").is_none());
    }

    /// An assertion header configured with `_` is read by a CGI server as
    /// its `-` spelling too: a client's copy in either spelling is removed
    /// for a caller with nothing to assert.
    #[test]
    fn an_assertion_header_spelled_with_an_underscore_is_not_forged() {
        use crate::auth::assertion::AssertionConfig;
        let config = AssertionConfig {
            header: "x_jwt".into(),
            ..AssertionConfig::default()
        };
        let identity = UpstreamIdentity {
            disclosure: Disclosure::Assertion(Arc::new(
                Asserter::new(&config, "pod", "aud".into()).unwrap(),
            )),
            forward_authorization: false,
        };
        let up = upstream();
        let forged = parts(&[
            ("x_jwt", "forged"),
            ("x-jwt", "forged"),
            ("X-Jwt", "forged"),
        ]);
        let req = Outbound::new(&up, Target::Configured, &Principal::default(), &identity)
            .request(&forged, Bytes::new())
            .unwrap();
        assert!(
            req.headers().keys().all(|k| !k.as_str().contains("jwt")),
            "{:?}",
            req.headers()
        );
    }
}
