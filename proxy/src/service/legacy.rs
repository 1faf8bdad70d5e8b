//! The 2024-11-05 HTTP+SSE transport.
//!
//! The client opens a GET stream whose first event, `endpoint`, tells it
//! where to POST. Answers to those POSTs arrive on the GET stream, not in
//! the POST response. So the proxy (1) rewrites the endpoint so that POSTs
//! come back through it, and (2) remembers each stream, so that a denial of
//! a POSTed request can be delivered on the stream where the client waits.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{uri::Authority, Uri};
use tokio::sync::mpsc;

use super::{
    exchange::{canonical_id, PendingCalls},
    Shared,
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

    /// Remembers an allowed call whose answer will arrive on the stream.
    pub fn track(&self, endpoint: &str, call: &Call) {
        let Some(id) = &call.id else { return };
        let calls = match self.streams.lock() {
            Ok(streams) => match streams.get(endpoint) {
                Some(stream) => stream.calls.clone(),
                None => return,
            },
            Err(_) => return,
        };
        let Ok(mut calls) = calls.lock() else { return };
        if calls.len() < MAX_PENDING_CALLS {
            calls.insert(canonical_id(id.get()), call.clone());
        }
    }

    fn insert(&self, endpoint: String, stream: Stream) {
        if let Ok(mut s) = self.streams.lock() {
            s.insert(endpoint, stream);
        }
    }

    fn remove(&self, endpoint: &str) {
        if let Ok(mut s) = self.streams.lock() {
            s.remove(endpoint);
        }
    }
}

/// Per-stream state; unregisters the stream when the relay ends.
pub struct StreamContext {
    shared: Arc<Shared>,
    upstream: Authority,
    endpoint: Option<String>,
}

impl StreamContext {
    pub fn new(shared: Arc<Shared>, upstream: Authority) -> Self {
        Self {
            shared,
            upstream,
            endpoint: None,
        }
    }

    /// Handles an `endpoint` event: returns the URI the client should see,
    /// the queue of messages to inject into this stream, and the calls
    /// whose answers the stream will carry.
    pub fn register(&mut self, data: &str) -> (String, mpsc::Receiver<Bytes>, PendingCalls) {
        let endpoint = rewrite_endpoint(data.trim(), &self.upstream);
        let (tx, rx) = mpsc::channel(INJECT_QUEUE);
        let calls = PendingCalls::default();
        if let Some(old) = self.endpoint.replace(endpoint.clone()) {
            self.shared.legacy.remove(&old);
        }
        let stream = Stream {
            inject: tx,
            calls: calls.clone(),
        };
        self.shared.legacy.insert(endpoint.clone(), stream);
        tracing::debug!(%endpoint, "legacy HTTP+SSE stream registered");
        (endpoint, rx, calls)
    }
}

impl Drop for StreamContext {
    fn drop(&mut self) {
        if let Some(endpoint) = &self.endpoint {
            self.shared.legacy.remove(endpoint);
        }
    }
}

/// An absolute endpoint pointing at the upstream becomes a relative one,
/// which the client resolves against the proxy's own address. A relative
/// endpoint already resolves against the proxy and is kept.
fn rewrite_endpoint(data: &str, upstream: &Authority) -> String {
    match data.parse::<Uri>() {
        Ok(uri) if uri.authority() == Some(upstream) || is_loopback(&uri) => uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        _ => data.to_string(),
    }
}

/// The upstream may name itself by another loopback address than the one
/// configured (`localhost` for `127.0.0.1`).
fn is_loopback(uri: &Uri) -> bool {
    matches!(uri.host(), Some("localhost" | "127.0.0.1" | "[::1]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_rewrite() {
        let up: Authority = "127.0.0.1:3001".parse().unwrap();
        assert_eq!(
            rewrite_endpoint("/messages?sessionId=1", &up),
            "/messages?sessionId=1"
        );
        assert_eq!(
            rewrite_endpoint("http://127.0.0.1:3001/messages?sessionId=1", &up),
            "/messages?sessionId=1"
        );
        assert_eq!(rewrite_endpoint("http://localhost:3001/m", &up), "/m");
        assert_eq!(
            rewrite_endpoint("https://elsewhere.example/m", &up),
            "https://elsewhere.example/m"
        );
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
            },
        );
        assert!(s.contains("/m?x=1"));
        assert!(s.inject("/m?x=1", Bytes::from_static(b"a")));
        assert!(!s.inject("/m?x=1", Bytes::from_static(b"b")), "queue full");
        assert!(!s.inject("/other", Bytes::from_static(b"c")));
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"a"));
        s.remove("/m?x=1");
        assert!(!s.contains("/m?x=1"));
    }
}
