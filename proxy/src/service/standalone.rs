//! A session's standalone GET stream, held by Portcullis.
//!
//! In a Portcullis session the upstream GET stream is not tied to the
//! client's connection. One task per session (the *pump*) reads it through
//! the usual relay (judged, lists filtered, reopened and rebound when the
//! app restarts) and keeps every event in the session's replay log under an
//! id of Portcullis's own ([`crate::session::replay`]). The client's stream
//! reads from that log. So:
//!
//! - a client that loses its connection and comes back with `Last-Event-ID`
//!   gets every event it missed, even those the server sent while nobody
//!   was connected: the pump keeps reading for `sessions.stream_grace`
//!   after the client goes;
//! - a `Last-Event-ID` shaped like Portcullis's but not this session's is
//!   the same 404 as a bad session id, and nothing reaches the upstream;
//! - a second GET in the session takes the stream over from the first
//!   (whose stream ends): a server would have refused it with 409, but a
//!   client reconnecting before Portcullis saw its old connection close
//!   must not be refused;
//! - a `Last-Event-ID` that is not Portcullis's belongs to a POST stream
//!   and is not handled here (the caller forwards it).
//!
//! The log lives in this replica's memory: a client that reconnects to
//! another replica, or after a restart, gets the live stream and not what
//! it missed (counted as a `gap`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::{mpsc, watch};

use crate::{
    body::{BoxError, ProxyBody},
    mcp::sse,
    session::{
        replay::{self, LastEvent},
        Handle, Record, SessionMetrics,
    },
};

/// Frames buffered towards one client; a client slower than the log's
/// bounds loses its stream (and reconnects) instead of holding memory.
const CLIENT_FRAMES: usize = 16;

/// The held streams of this replica, one per session at most, and at most
/// `max` in all (beyond, GET streams are relayed as they come, unheld).
pub struct HeldStreams {
    streams: Mutex<HashMap<Handle, Arc<Hub>>>,
    max: usize,
}

impl Default for HeldStreams {
    fn default() -> Self {
        Self::new(10_000)
    }
}

/// One session's held stream.
pub struct Hub {
    record: Arc<Record>,
    status: watch::Sender<Status>,
    /// The head of the upstream's answer, given to every client stream.
    head: Mutex<Option<(StatusCode, HeaderMap)>>,
}

#[derive(Clone, Copy, Default)]
struct Status {
    /// The number of the newest client stream; only it is served.
    client: u64,
    /// Whether that client is still connected.
    attached: bool,
    /// The upstream stream is over: clients end once they have read all.
    ended: bool,
}

/// What a client's `Last-Event-ID` asks of a held stream.
pub enum Resume {
    /// No id: only what comes from now on.
    Live,
    /// After this event of the log.
    After(u64),
    /// An id of this session Portcullis can no longer replay from.
    Gap,
}

/// How a GET in a session is to be served.
pub enum Plan {
    /// Attach to the held stream (started by this request if `start`).
    Attach {
        hub: Arc<Hub>,
        resume: Resume,
        start: bool,
    },
    /// Not a held stream: forwarded as before (an upstream's event id, or
    /// no room for another held stream).
    Forward,
    /// Another session's event id: the unknown-session 404.
    Refuse,
}

impl HeldStreams {
    pub fn new(max: usize) -> Self {
        Self {
            streams: Mutex::default(),
            max,
        }
    }

    /// Reads the GET's `Last-Event-ID` and finds (or begins) the session's
    /// held stream.
    pub fn plan(
        &self,
        record: &Arc<Record>,
        last_event_id: Option<&str>,
        metrics: &SessionMetrics,
    ) -> Plan {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let live = streams
            .get(&record.handle)
            .filter(|h| !h.status.borrow().ended)
            .cloned();
        // The id is read against the log the live stream writes (a record
        // replaced since, after an eviction, has another).
        let log_of = live.as_ref().map_or(record, |h| &h.record);
        let resume = match last_event_id {
            None => Resume::Live,
            Some(id) => match log_of.replay().read_last_event(&record.handle, id) {
                LastEvent::Ours(n) => Resume::After(n),
                LastEvent::Elsewhere => Resume::Gap,
                LastEvent::Forged => {
                    metrics.reject("event_id");
                    metrics.resume("forged");
                    return Plan::Refuse;
                }
                LastEvent::Foreign => return Plan::Forward,
            },
        };
        let (hub, start) = match live {
            Some(hub) => (hub, false),
            None if streams.len() >= self.max => {
                tracing::warn!(
                    max = self.max,
                    "too many held GET streams; relaying this one unheld"
                );
                return Plan::Forward;
            }
            None => {
                let hub = Arc::new(Hub {
                    record: record.clone(),
                    // The request that starts it attaches at once.
                    status: watch::Sender::new(Status {
                        attached: true,
                        ..Status::default()
                    }),
                    head: Mutex::new(None),
                });
                streams.insert(record.handle, hub.clone());
                (hub, true)
            }
        };
        Plan::Attach { hub, resume, start }
    }

    /// Forgets a hub that ended (only that one: a newer may have replaced
    /// it).
    fn remove(&self, hub: &Arc<Hub>) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if streams
            .get(&hub.record.handle)
            .is_some_and(|h| Arc::ptr_eq(h, hub))
        {
            streams.remove(&hub.record.handle);
        }
    }

    /// Ends a session's held stream (the session was deleted).
    pub fn end(&self, handle: &Handle) {
        let hub = self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(handle);
        if let Some(hub) = hub {
            hub.status.send_modify(|s| s.ended = true);
        }
    }
}

impl Hub {
    /// The upstream would not open the stream: clients attached meanwhile
    /// get an ended stream, and the next GET tries again.
    pub fn abandon(self: &Arc<Self>, held: &HeldStreams) {
        self.status.send_modify(|s| s.ended = true);
        held.remove(self);
    }

    /// Abandons the hub if the request starting it goes away (the client
    /// gave up while the upstream was coming back) before its pump runs.
    pub fn starting(self: &Arc<Self>, held: Arc<HeldStreams>) -> Starting {
        Starting {
            hub: Some(self.clone()),
            held,
        }
    }

    /// Starts reading the upstream stream (the relay's client-side body)
    /// into the log; it stops when the relay ends, when the session's
    /// stream is ended, or `grace` after the last client left.
    pub fn pump(
        self: &Arc<Self>,
        held: Arc<HeldStreams>,
        head: (StatusCode, HeaderMap),
        relayed: ProxyBody,
        grace: Duration,
    ) {
        *self.head.lock().unwrap_or_else(|p| p.into_inner()) = Some(head);
        let hub = self.clone();
        tokio::spawn(async move {
            hub.run_pump(relayed, grace).await;
            hub.status.send_modify(|s| s.ended = true);
            held.remove(&hub);
        });
    }

    async fn run_pump(&self, mut relayed: ProxyBody, grace: Duration) {
        let mut status = self.status.subscribe();
        let mut decoder = sse::Decoder::new(usize::MAX);
        // When the stream is given up if no client comes back: set when
        // the last client leaves, not moved by events or keep-alives.
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let (attached, ended) = {
                let s = status.borrow_and_update();
                (s.attached, s.ended)
            };
            if ended {
                return;
            }
            deadline = match (attached, deadline) {
                (true, _) => None,
                (false, None) => Some(tokio::time::Instant::now() + grace),
                (false, kept) => kept,
            };
            let alone = async {
                match deadline {
                    None => std::future::pending().await,
                    Some(at) => tokio::time::sleep_until(at).await,
                }
            };
            tokio::select! {
                frame = relayed.frame() => match frame {
                    Some(Ok(frame)) => {
                        let Ok(data) = frame.into_data() else { continue };
                        // The relay writes whole events; decoding them again
                        // is what lets each get an id of ours.
                        decoder.push(&data);
                        while let Ok(Some(event)) = decoder.next_event() {
                            self.keep(event);
                        }
                    }
                    Some(Err(_)) | None => return,
                },
                changed = status.changed() => if changed.is_err() { return },
                () = alone => {
                    tracing::debug!("no client came back to the session's GET stream; closing it upstream");
                    return;
                }
            }
        }
    }

    /// Keeps one event in the log under an id of ours, and wakes clients.
    fn keep(&self, event: sse::Event) {
        let handle = self.record.handle;
        let mut log = self.record.replay();
        let id = log.event_id(&handle, log.next());
        let bytes = match (&event.data, event.id.is_some() || event.retry.is_some()) {
            (Some(data), _) => sse::encode(event.event.as_deref(), Some(&id), data),
            // An event with no data (a server's priming id, a retry hint)
            // gives the client a resumption point of ours.
            (None, true) => {
                let retry = event.retry.map(|r| format!("retry: {r}\n"));
                Bytes::from(format!("{}id: {id}\n\n", retry.unwrap_or_default()))
            }
            // A comment (keep-alive): nothing to resume from.
            (None, false) => event.raw,
        };
        let seq = log.push(bytes);
        drop(log);
        tracing::trace!(seq, "event kept for the session's GET stream");
        self.status.send_modify(|_| {});
    }

    /// A client stream reading the log from `resume`; it takes the stream
    /// over from any earlier client.
    /// The client's stream ends at `deadline` (its token's expiry).
    pub fn attach(
        self: &Arc<Self>,
        resume: Resume,
        metrics: &SessionMetrics,
        deadline: Option<tokio::time::Instant>,
    ) -> Response<ProxyBody> {
        let mut me = 0;
        self.status.send_modify(|s| {
            s.client += 1;
            s.attached = true;
            me = s.client;
        });
        let from = {
            let log = self.record.replay();
            match resume {
                Resume::Live => log.next(),
                Resume::After(n) => n + 1,
                Resume::Gap => {
                    metrics.resume("gap");
                    log.next()
                }
            }
        };
        let (tx, rx) = mpsc::channel(CLIENT_FRAMES);
        let hub = self.clone();
        let metrics = metrics.clone();
        let replaying = matches!(resume, Resume::After(_));
        tokio::spawn(async move {
            let expired = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = hub.serve(me, from, replaying, &metrics, &tx) => {}
                () = expired => tracing::info!("stream ended: the token that opened it expired"),
            }
            hub.status.send_modify(|s| {
                if s.client == me {
                    s.attached = false;
                }
            });
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let body = StreamBody::new(stream).boxed_unsync();
        let head = self.head.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (status, headers) = head.unwrap_or_else(|| (StatusCode::OK, event_stream_headers()));
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp
    }

    async fn serve(
        &self,
        me: u64,
        mut from: u64,
        mut replaying: bool,
        metrics: &SessionMetrics,
        tx: &mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    ) {
        let mut status = self.status.subscribe();
        loop {
            let ended = {
                let s = status.borrow_and_update();
                if s.client != me {
                    return;
                }
                s.ended
            };
            let (events, gap) = self.record.replay().since(from);
            // Dropped from the log before this client read them: on a
            // resumption, what is left is replayed; a client that fell that
            // far behind live loses its stream (and resumes).
            match (replaying, gap) {
                (true, true) => metrics.resume("gap"),
                (true, false) => metrics.resume("replayed"),
                (false, true) => {
                    metrics.resume("overrun");
                    return;
                }
                (false, false) => {}
            }
            replaying = false;
            for (seq, event) in events {
                // A client that does not read must still see a takeover.
                tokio::select! {
                    sent = tx.send(Ok(Frame::data(event))) => if sent.is_err() { return },
                    _ = status.wait_for(|s| s.client != me) => return,
                }
                from = seq + 1;
            }
            if ended {
                return;
            }
            tokio::select! {
                changed = status.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
        }
    }
}

/// See [`Hub::starting`].
pub struct Starting {
    hub: Option<Arc<Hub>>,
    held: Arc<HeldStreams>,
}

impl Starting {
    /// The pump runs: nothing to undo.
    pub fn started(mut self) {
        self.hub = None;
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.take() {
            hub.abandon(&self.held);
        }
    }
}

/// What a `Last-Event-ID` of Portcullis's is worth where no held stream
/// can serve it (this replica holds no record of the session): another
/// session's is refused; the session's own cannot be replayed (a gap) and
/// is not sent upstream. `None`: not Portcullis's, the server's to read.
pub fn unheld(handle: &Handle, id: &str, metrics: &SessionMetrics) -> Option<Result<(), ()>> {
    match replay::classify(handle, id) {
        LastEvent::Foreign => None,
        LastEvent::Forged => {
            metrics.reject("event_id");
            metrics.resume("forged");
            Some(Err(()))
        }
        _ => {
            metrics.resume("gap");
            Some(Ok(()))
        }
    }
}

fn event_stream_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    h
}
