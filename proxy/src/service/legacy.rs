//! The 2024-11-05 HTTP+SSE transport.
//!
//! The client opens a GET stream whose first event, `endpoint`, tells it
//! where to POST. Answers to those POSTs arrive on the GET stream, not in
//! the POST response. So the proxy (1) rewrites the endpoint so that POSTs
//! come back through it, and (2) remembers each stream, so that a denial of
//! a POSTed request can be delivered on the stream where the client waits.
//!
//! With `sessions:` configured, the client's stream also outlives the
//! server process: when the upstream stream breaks, the relay opens a new
//! one, and the new server's `endpoint` is not shown to the client.
//! Instead, the client's endpoint is routed to the new one, after the
//! client's recorded `initialize` and `notifications/initialized` were sent
//! there (the answer to that `initialize` is not shown either). POSTs that
//! arrive meanwhile wait for it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::Uri;
use tokio::sync::{mpsc, watch};

use super::{
    exchange::{canonical_id, PendingCalls},
    rescue::{Cause, Refusal},
};
use crate::mcp::Call;

/// Denials waiting to be written on one legacy stream.
const INJECT_QUEUE: usize = 64;

/// Live legacy streams, keyed by the endpoint (path and query) the client
/// was told to POST to.
#[derive(Default)]
pub struct LegacySessions {
    streams: Mutex<HashMap<String, Stream>>,
}

struct Stream {
    inject: mpsc::Sender<Bytes>,
    /// Calls POSTed to this endpoint whose results a policy inspects.
    calls: PendingCalls,
    /// Where POSTs to this endpoint go upstream: the endpoint itself, until
    /// a restarted server announced another.
    upstream: String,
    /// False while the upstream stream is being re-established.
    ready: watch::Sender<bool>,
    /// The client's `initialize`, as forwarded: sent again to a new server.
    initialize: Option<Bytes>,
    /// The stream that registered it: only it may change or remove it.
    owner: u64,
}

/// Numbers each legacy stream, for [`Stream::owner`].
static STREAM_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// What a restarted server's `endpoint` event leads to: where the
/// client's endpoint now goes, and the client's `initialize` to send there
/// first, under an id of Portcullis's (its answer is not shown).
pub struct Rebound {
    pub endpoint: String,
    pub upstream: String,
    pub initialize: Option<(Bytes, String)>,
}

/// Calls remembered per legacy stream, so a client cannot grow it without
/// bound by never reading answers.
const MAX_PENDING_CALLS: usize = 1024;

impl LegacySessions {
    /// Whether a POST to `endpoint` belongs to a legacy stream.
    pub fn contains(&self, endpoint: &str) -> bool {
        self.streams
            .lock()
            .map(|s| s.contains_key(endpoint))
            .unwrap_or(false)
    }

    /// Queues `msg` on the stream of `endpoint`. False if there is no such
    /// stream or it is not keeping up.
    pub fn inject(&self, endpoint: &str, msg: Bytes) -> bool {
        let Ok(streams) = self.streams.lock() else {
            return false;
        };
        streams
            .get(endpoint)
            .is_some_and(|s| s.inject.try_send(msg).is_ok())
    }

    /// Remembers an allowed call whose answer will arrive on the stream
    /// and must be inspected. Refuses when the stream already holds
    /// [`MAX_PENDING_CALLS`]: an answer that could not be matched would
    /// reach the client uninspected.
    pub fn track(&self, endpoint: &str, call: &Call) -> Result<(), Refusal> {
        let full = || Refusal::from(Cause::Overloaded("too many calls awaiting their answer"));
        let Some(id) = &call.id else { return Ok(()) };
        let calls = match self.streams.lock() {
            Ok(streams) => match streams.get(endpoint) {
                Some(stream) => stream.calls.clone(),
                None => return Ok(()),
            },
            Err(_) => return Err(full()),
        };
        let Ok(mut calls) = calls.lock() else {
            return Err(full());
        };
        if calls.len() >= MAX_PENDING_CALLS {
            return Err(full());
        }
        calls.insert(canonical_id(id.get()), call.clone());
        Ok(())
    }

    /// Keeps the client's `initialize` (forwarded and accepted), to send
    /// it again if the server restarts.
    pub fn record_initialize(&self, endpoint: &str, body: Bytes) {
        if let Ok(mut streams) = self.streams.lock() {
            if let Some(stream) = streams.get_mut(endpoint) {
                stream.initialize = Some(body);
            }
        }
    }

    /// Where a POST to `endpoint` goes upstream, once the stream is ready
    /// (waiting at most `wait` while it is re-established).
    pub async fn route(&self, endpoint: &str, wait: Duration) -> Result<String, Refusal> {
        let mut ready = match self.streams.lock() {
            Ok(streams) => match streams.get(endpoint) {
                Some(stream) => stream.ready.subscribe(),
                None => return Ok(endpoint.to_string()),
            },
            Err(_) => return Ok(endpoint.to_string()),
        };
        let waited = tokio::time::timeout(wait, ready.wait_for(|r| *r)).await;
        if !matches!(waited, Ok(Ok(_))) {
            return Err(crate::upstream::UpstreamError::Unavailable(
                "the server restarted and its stream is not back yet".into(),
            )
            .into());
        }
        let streams = self.streams.lock().map_err(|_| {
            Refusal::from(crate::upstream::UpstreamError::Unavailable(
                "legacy streams unavailable".into(),
            ))
        })?;
        Ok(streams
            .get(endpoint)
            .map_or_else(|| endpoint.to_string(), |s| s.upstream.clone()))
    }

    /// Lets POSTs to `endpoint` through (or holds them).
    pub fn set_ready(&self, endpoint: &str, ready: bool) {
        if let Ok(streams) = self.streams.lock() {
            if let Some(stream) = streams.get(endpoint) {
                stream.ready.send_replace(ready);
            }
        }
    }

    /// Registers an endpoint, unless another stream holds it (a server
    /// that hands out an endpoint twice, say after a restart that reset its
    /// session counter): two clients' POSTs must never be routed as one.
    fn insert(&self, endpoint: String, stream: Stream) -> bool {
        let Ok(mut s) = self.streams.lock() else {
            return false;
        };
        if s.get(&endpoint)
            .is_some_and(|held| held.owner != stream.owner)
        {
            return false;
        }
        s.insert(endpoint, stream);
        true
    }

    /// Forgets an endpoint, if `owner` holds it.
    fn remove(&self, endpoint: &str, owner: u64) {
        if let Ok(mut s) = self.streams.lock() {
            if s.get(endpoint).is_some_and(|held| held.owner == owner) {
                s.remove(endpoint);
            }
        }
    }
}

/// Per-stream state; unregisters the stream when the relay ends.
pub struct StreamContext {
    sessions: Arc<LegacySessions>,
    endpoint: Option<String>,
    id: u64,
}

impl StreamContext {
    pub fn new(sessions: Arc<LegacySessions>) -> Self {
        Self {
            sessions,
            endpoint: None,
            id: STREAM_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Handles an `endpoint` event: returns the URI the client should see,
    /// the queue of messages to inject into this stream, and the calls
    /// whose answers the stream will carry.
    pub fn register(
        &mut self,
        data: &str,
    ) -> Result<(String, mpsc::Receiver<Bytes>, PendingCalls), String> {
        let endpoint = rewrite_endpoint(data.trim())?;
        let (tx, rx) = mpsc::channel(INJECT_QUEUE);
        let calls = PendingCalls::default();
        if let Some(old) = self.endpoint.take() {
            self.sessions.remove(&old, self.id);
        }
        let stream = Stream {
            inject: tx,
            calls: calls.clone(),
            upstream: endpoint.clone(),
            ready: watch::Sender::new(true),
            initialize: None,
            owner: self.id,
        };
        // An endpoint another stream holds ends this stream: without one
        // the client cannot POST at all, and sharing would cross sessions.
        if !self.sessions.insert(endpoint.clone(), stream) {
            return Err(format!("legacy endpoint {endpoint:?} is another stream's"));
        }
        self.endpoint = Some(endpoint.clone());
        tracing::debug!(%endpoint, "legacy HTTP+SSE stream registered");
        Ok((endpoint, rx, calls))
    }

    /// Whether the client was given an endpoint on this stream.
    pub fn registered(&self) -> bool {
        self.endpoint.is_some()
    }

    /// The upstream stream broke: POSTs wait until the stream is ready
    /// again ([`LegacySessions::set_ready`]).
    pub fn lost(&self) {
        if let Some(endpoint) = &self.endpoint {
            self.sessions.set_ready(endpoint, false);
        }
    }

    /// The streams this one is registered in.
    pub fn sessions(&self) -> Arc<LegacySessions> {
        self.sessions.clone()
    }

    /// A restarted server's `endpoint`: the client's endpoint is routed to
    /// it from now on.
    pub fn rebound(&mut self, data: &str) -> Result<Rebound, String> {
        let upstream = rewrite_endpoint(data.trim())?;
        let Some(endpoint) = &self.endpoint else {
            return Err("a new endpoint before any".into());
        };
        let mut streams = self
            .sessions
            .streams
            .lock()
            .map_err(|_| "legacy streams unavailable".to_string())?;
        let Some(stream) = streams.get_mut(endpoint).filter(|s| s.owner == self.id) else {
            return Err("the stream is gone".into());
        };
        stream.upstream.clone_from(&upstream);
        tracing::info!(endpoint = %endpoint, %upstream, "legacy stream routed to the restarted server");
        let initialize = stream.initialize.as_ref().and_then(|b| with_rebind_id(b));
        Ok(Rebound {
            endpoint: endpoint.clone(),
            upstream,
            initialize,
        })
    }
}

/// The client's `initialize` with an id of Portcullis's (random, so that
/// no client id can be mistaken for it), and that id.
fn with_rebind_id(body: &[u8]) -> Option<(Bytes, String)> {
    use chacha20poly1305::aead::{rand_core::RngCore, OsRng};
    let id = format!("portcullis-rebind-{:016x}", OsRng.next_u64());
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.as_object_mut()?
        .insert("id".into(), serde_json::Value::String(id.clone()));
    serde_json::to_vec(&v).ok().map(|b| (Bytes::from(b), id))
}

impl Drop for StreamContext {
    fn drop(&mut self) {
        if let Some(endpoint) = &self.endpoint {
            self.sessions.remove(endpoint, self.id);
        }
    }
}

/// The endpoint the client is told, which must resolve against the
/// proxy's own address whatever the upstream announced.
///
/// Portcullis fronts one upstream, so every absolute endpoint (whatever
/// host spelling it uses: `0.0.0.0`, `127.1`, a DNS name, another host
/// entirely) becomes its path and query. What a URL parser could resolve
/// to another host is refused: a scheme-relative `//host/...`, a
/// backslash (WHATWG parsers, as in browsers and Node, read `/\host` as
/// `//host`), control characters or spaces.
pub(crate) fn rewrite_endpoint(data: &str) -> Result<String, String> {
    let refuse = |why: &str| Err(format!("legacy endpoint {data:?} refused: {why}"));
    if data
        .chars()
        .any(|c| c == '\\' || c.is_control() || c.is_whitespace())
    {
        return refuse("backslash, control character or space");
    }
    let uri: Uri = match data.parse() {
        Ok(uri) => uri,
        Err(_) => return refuse("not a URI"),
    };
    let relative = match (uri.scheme(), uri.authority()) {
        (None, None) if data.starts_with('/') => data.to_string(),
        (None, None) => return refuse("a relative endpoint must start with /"),
        // An absolute URI with an empty path (`http://h?x=1`) means the
        // root path; its bare query (`?x=1`) would resolve against the
        // stream's URL instead (found by the fuzz corpus replay).
        _ => match uri.path_and_query().map(|p| p.as_str()) {
            None => "/".to_string(),
            Some(p) if p.starts_with('?') => format!("/{p}"),
            Some(p) => p.to_string(),
        },
    };
    if relative.starts_with("//") || relative.is_empty() {
        return refuse("it would name another host");
    }
    Ok(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_regression_endpoint_with_a_query_and_no_path() {
        assert_eq!(
            rewrite_endpoint("htps://evil.examx?y=1#fpl").unwrap(),
            "/?y=1"
        );
        assert_eq!(
            rewrite_endpoint("http://0.0.0.0:3001?s=1").unwrap(),
            "/?s=1"
        );
        assert_eq!(rewrite_endpoint("http://h").unwrap(), "/");
    }

    /// Past the bound, a call whose answer must be inspected is refused,
    /// not forwarded untracked (its answer would reach the client
    /// uninspected). This failed open before: the call was forwarded.
    #[test]
    fn a_full_stream_refuses_calls_it_could_not_match() {
        let sessions = Arc::new(LegacySessions::default());
        let mut ctx = StreamContext::new(sessions.clone());
        let (endpoint, _rx, calls) = ctx.register("/messages?sessionId=1").unwrap();
        let era = crate::mcp::Era::HttpSse2024;
        let call_with = |id: usize| {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"t"}}}}"#
            );
            match crate::mcp::parse_body(body.as_bytes(), 32, &era) {
                Ok(crate::mcp::Body::Single(c)) => c,
                other => panic!("{other:?}"),
            }
        };
        for id in 0..MAX_PENDING_CALLS {
            sessions.track(&endpoint, &call_with(id)).unwrap();
        }
        let refused = sessions
            .track(&endpoint, &call_with(MAX_PENDING_CALLS))
            .expect_err("the bound holds");
        assert_eq!(refused.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()[0].0, http::header::RETRY_AFTER);
        assert_eq!(calls.lock().unwrap().len(), MAX_PENDING_CALLS);
        // An answer frees a place.
        calls.lock().unwrap().remove("0");
        sessions.track(&endpoint, &call_with(0)).unwrap();
    }

    #[test]
    fn endpoint_rewrite() {
        let ok = |s: &str| rewrite_endpoint(s).unwrap();
        assert_eq!(ok("/messages?sessionId=1"), "/messages?sessionId=1");
        assert_eq!(
            ok("http://127.0.0.1:3001/messages?sessionId=1"),
            "/messages?sessionId=1"
        );
        assert_eq!(ok("http://localhost:3001/m"), "/m");
    }

    /// An endpoint a client would follow around the proxy: every host
    /// spelling of an absolute URL is made relative, and anything a URL
    /// parser could resolve to another host is refused.
    #[test]
    fn no_endpoint_leads_around_the_proxy() {
        for escape in [
            "http://0.0.0.0:3001/m?s=1",
            "http://127.1:3001/m",
            "http://[::ffff:127.0.0.1]:3001/m",
            "http://LOCALHOST.:3001/m",
            "https://elsewhere.example/m",
            "HTTP://evil.example:80/m",
        ] {
            let out = rewrite_endpoint(escape).unwrap();
            assert!(
                out.starts_with('/') && !out.starts_with("//"),
                "{escape} → {out}"
            );
        }
        for refused in [
            "//evil.example/m",
            "/\\evil.example/m",
            "\\\\evil.example/m",
            "http://up:1//evil.example/m",
            "/m?x=1\u{0}",
            "/m\tx",
            "",
            "messages?sessionId=1",
            "evil.example:80/m",
        ] {
            assert!(rewrite_endpoint(refused).is_err(), "{refused:?} accepted");
        }
    }

    /// A server that hands out the same endpoint to two streams (its
    /// session counter reset by a restart): the second stream is refused,
    /// never routed into the first one's session, and cannot remove it.
    #[test]
    fn an_endpoint_held_by_another_stream_is_refused() {
        let sessions = Arc::new(LegacySessions::default());
        let mut a = StreamContext::new(sessions.clone());
        let mut b = StreamContext::new(sessions.clone());
        a.register("/messages?session_id=1").unwrap();
        assert!(b.register("/messages?session_id=1").is_err());
        drop(b);
        assert!(sessions.contains("/messages?session_id=1"));
        assert!(a.rebound("/messages?session_id=2").is_ok());
        drop(a);
        assert!(!sessions.contains("/messages?session_id=1"));
    }

    #[test]
    fn sessions_inject_only_to_known_streams() {
        let s = LegacySessions::default();
        let (tx, mut rx) = mpsc::channel(1);
        s.insert(
            "/m?x=1".into(),
            Stream {
                inject: tx,
                calls: PendingCalls::default(),
                upstream: "/m?x=1".into(),
                ready: watch::Sender::new(true),
                initialize: None,
                owner: 7,
            },
        );
        assert!(s.contains("/m?x=1"));
        assert!(s.inject("/m?x=1", Bytes::from_static(b"a")));
        assert!(!s.inject("/m?x=1", Bytes::from_static(b"b")), "queue full");
        assert!(!s.inject("/other", Bytes::from_static(b"c")));
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"a"));
        s.remove("/m?x=1", 8);
        assert!(s.contains("/m?x=1"), "only its owner removes it");
        s.remove("/m?x=1", 7);
        assert!(!s.contains("/m?x=1"));
    }
}
