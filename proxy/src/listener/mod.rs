//! The inbound listener: an accept loop that spawns one task per
//! connection, each served by hyper (HTTP/1.1 or HTTP/2) in explicit
//! phases: handshake, serve, drain.
//!
//! The listener knows nothing of what it serves: it hands each request,
//! with the connection's [`ConnCtx`], to the function it was given. The
//! handshake is a trait so that TLS slots in without touching the loop; it
//! is the only place a *peer* identity comes from (a token verifier may
//! add to the principal later, per request).

pub mod rerun;
pub mod tls;

use std::{
    future::Future,
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use self::rerun::Rerun;
use crate::{
    admission::{self, Admitted, Entry, Gate},
    body::{Guarded, ProxyBody},
    config::ListenerConfig,
    identity::{Peer, Principal},
    upstream::Target,
};

/// Turns an accepted TCP stream into the stream HTTP is served on, and
/// says who is on the other end.
pub trait Handshake: Clone + Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    fn handshake(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = io::Result<(Self::Io, Peer)>> + Send;
}

/// What is known of a connection, for every request on it.
#[derive(Debug, Clone)]
pub struct ConnCtx {
    pub peer_addr: SocketAddr,
    pub local_addr: Option<SocketAddr>,
    /// Where the client meant to connect, when the kernel redirected the
    /// connection here (transparent capture).
    pub orig_dst: Option<SocketAddr>,
    /// The verified peer, as a principal requests start from.
    pub principal: Principal,
    /// Where allowed requests go: the configured upstream on the explicit
    /// listener, the dialled local port on the capture listener.
    pub target: Target,
    /// The connection's standing at its listener's gate.
    pub admitted: Admitted,
}

/// No TLS: every caller is anonymous.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plaintext;

impl Handshake for Plaintext {
    type Io = TcpStream;

    async fn handshake(&self, tcp: TcpStream, _peer: SocketAddr) -> io::Result<(TcpStream, Peer)> {
        Ok((tcp, Peer::Anonymous))
    }
}

/// How long to wait after a failed accept (usually EMFILE: out of file
/// descriptors) before trying again, instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A source of connections: a TCP listener, or a fake in tests.
pub trait Accept: Send + Sync {
    type Conn: Send + 'static;

    fn accept(&self) -> impl Future<Output = io::Result<(Self::Conn, SocketAddr)>> + Send;
}

impl Accept for TcpListener {
    type Conn = TcpStream;

    async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        TcpListener::accept(self).await
    }
}

/// The next connection, or `None` once `shutdown` is cancelled. Accept
/// errors are logged and retried after a back-off. Every listener of the
/// process (data, admin, and later capture and webhook) accepts through
/// this one function.
pub async fn accept<L: Accept>(
    listener: &L,
    shutdown: &CancellationToken,
) -> Option<(L::Conn, SocketAddr)> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok(a) => return Some(a),
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            },
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
        }
    }
}

/// Accepts connections until `shutdown`, then stops accepting; the
/// connections already open are drained by their own tasks, which
/// `tracker` follows.
pub async fn serve<H, S, F>(
    listener: TcpListener,
    handshake: H,
    settings: &ListenerConfig,
    gate: Arc<Gate>,
    service: S,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) where
    H: Handshake,
    S: Fn(Arc<ConnCtx>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    while let Some((tcp, peer)) = accept(&listener, &shutdown).await {
        let conn = Connection::new(settings, &gate, &shutdown, peer);
        tracker.spawn(conn.run(tcp, handshake.clone(), service.clone()));
    }
}

/// One accepted connection, from handshake to drain.
pub(crate) struct Connection {
    settings: ListenerConfig,
    gate: Arc<Gate>,
    shutdown: CancellationToken,
    peer: SocketAddr,
    orig_dst: Option<SocketAddr>,
    target: Target,
}

impl Connection {
    pub(crate) fn new(
        settings: &ListenerConfig,
        gate: &Arc<Gate>,
        shutdown: &CancellationToken,
        peer: SocketAddr,
    ) -> Self {
        Self {
            settings: settings.clone(),
            gate: gate.clone(),
            shutdown: shutdown.clone(),
            peer,
            orig_dst: None,
            target: Target::Configured,
        }
    }

    /// A connection the kernel redirected from `orig_dst`, whose requests go
    /// to `target`.
    pub(crate) fn redirected(self, orig_dst: SocketAddr, target: Target) -> Self {
        Self {
            orig_dst: Some(orig_dst),
            target,
            ..self
        }
    }

    /// The connection's task: [`Rerun`] keeps the wakes a request makes
    /// within its own connection from moving the task to another worker.
    pub(crate) fn run<H, S, F>(
        self,
        tcp: TcpStream,
        handshake: H,
        service: S,
    ) -> Rerun<impl Future<Output = ()> + Send>
    where
        H: Handshake,
        S: Fn(Arc<ConnCtx>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        Rerun::new(self.accepted(tcp, handshake, service))
    }

    async fn accepted<H, S, F>(self, tcp: TcpStream, handshake: H, service: S)
    where
        H: Handshake,
        S: Fn(Arc<ConnCtx>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        // The listener's place is taken before the handshake, so that a
        // flood past the limit costs no TLS work.
        let Ok(entry) = self.gate.accept() else {
            return reset(tcp, self.peer, self.gate.listener());
        };
        let _ = tcp.set_nodelay(true);
        let local_addr = tcp.local_addr().ok();
        let timeout = self.settings.header_read_timeout;
        let (io, peer) = match tokio::time::timeout(timeout, handshake.handshake(tcp, self.peer))
            .await
        {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return tracing::info!(peer = %self.peer, error = %e, "handshake failed"),
            Err(_) => return tracing::info!(peer = %self.peer, "handshake timed out"),
        };
        let principal = Principal::from_peer(peer);
        let caller = admission::caller_key(&principal, self.peer);
        // Past the handshake a refused connection holds TLS state already:
        // it is answered `503` rather than reset, if a shed place is left.
        let Ok(entry) = self.gate.caller(entry, caller.clone()) else {
            return tracing::info!(peer = %self.peer, "connection refused: no shed place left");
        };
        let ctx = Arc::new(ConnCtx {
            peer_addr: self.peer,
            local_addr,
            orig_dst: self.orig_dst,
            principal,
            target: self.target,
            admitted: Admitted {
                gate: self.gate.clone(),
                caller,
                shed: entry.shed(),
            },
        });
        self.serve(io, ctx, entry, service).await;
    }

    async fn serve<I, S, F>(self, io: I, ctx: Arc<ConnCtx>, _entry: Entry, service: S)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Fn(Arc<ConnCtx>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        let listener = &self.settings;
        let shed = ctx.admitted.shed.is_some();
        let activity = Arc::new(Activity::new());
        let act = activity.clone();
        // The service's future is made inside the block: made outside and
        // awaited in it, it would be held twice (captured, and again as
        // the block's awaitee), and hyper allocates room for it with every
        // connection.
        let svc = service_fn(move |req| {
            let busy = act.begin();
            let (service, ctx) = (service.clone(), ctx.clone());
            async move {
                let resp = service(ctx, req).await;
                Ok::<_, std::convert::Infallible>(
                    resp.map(|b| Guarded::new(b, busy).boxed_unsync()),
                )
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(listener.header_read_timeout)
            // A shed connection is closed after its one `503`.
            .keep_alive(!shed)
            .max_buf_size(H1_MAX_BUF);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .max_concurrent_streams(listener.max_streams_per_connection)
            .max_header_list_size(H2_MAX_HEADER_LIST);
        let conn = builder.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let idle_limit = listener.idle_timeout;
        let mut tick = tokio::time::interval(
            idle_limit
                .min(Duration::from_secs(5))
                .max(Duration::from_millis(100)),
        );
        let mut closing = false;
        loop {
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(peer = %self.peer, error = %e, "connection ended with error");
                    }
                    return;
                }
                () = self.shutdown.cancelled(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = tick.tick(), if !closing => {
                    // HTTP/2 has no keep-alive switch: a shed connection
                    // goes away once its first answer is sent.
                    let shed_done = shed && activity.served() > 0 && activity.idle_for() > Duration::ZERO;
                    if shed_done || activity.idle_for() >= idle_limit {
                        tracing::debug!(peer = %self.peer, "closing idle connection");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        }
    }
}

/// A connection's read buffer for HTTP/1 (request heads must fit in it;
/// hyper's default is 400 KiB). Bodies do not pass through it.
const H1_MAX_BUF: usize = 64 * 1024;

/// The largest HTTP/2 header block a client may send (hyper's default is
/// 16 MiB).
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;

/// Closes a connection over every limit with a reset, at once: the client
/// learns at once, and the flood costs no handshake.
fn reset(tcp: TcpStream, peer: SocketAddr, listener: &str) {
    tracing::debug!(%peer, listener, "connection reset: over the connection limit");
    let _ = tcp.set_zero_linger();
}

/// Requests in flight on one connection, and when it was last busy.
struct Activity {
    start: Instant,
    served: AtomicU64,
    inflight: AtomicUsize,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            served: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.served.fetch_add(1, Ordering::AcqRel);
        self.inflight.fetch_add(1, Ordering::AcqRel);
        self.last_ms.store(self.now_ms(), Ordering::Release);
        Busy(self.clone())
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::Acquire)
    }

    /// Zero while a request (or its streaming body) is in flight.
    fn idle_for(&self) -> Duration {
        if self.inflight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let last = self.last_ms.load(Ordering::Acquire);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }
}

/// Held by a response body until it is finished.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.last_ms.store(self.0.now_ms(), Ordering::Release);
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Fakes for tests of code that accepts connections.
#[cfg(test)]
pub(crate) mod fakes {
    use super::*;

    /// Always fails, as `accept` does when the process is out of file
    /// descriptors.
    #[derive(Default)]
    pub struct Exhausted(pub AtomicUsize);

    impl Accept for Exhausted {
        type Conn = TcpStream;

        async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Err(io::Error::from_raw_os_error(24)) // EMFILE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{fakes::Exhausted, *};

    #[tokio::test]
    async fn accept_backs_off_when_out_of_descriptors() {
        let failing = Exhausted::default();
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stopper.cancel();
        });
        assert!(accept(&failing, &stop).await.is_none());
        let tries = failing.0.load(Ordering::Relaxed);
        // 300 ms at one try per 50 ms; a loop without back-off makes
        // hundreds of thousands.
        assert!((2..=10).contains(&tries), "{tries} accept attempts");
    }

    #[test]
    fn activity_is_busy_until_the_guard_drops() {
        let a = Arc::new(Activity::new());
        let busy = a.begin();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(a.idle_for(), Duration::ZERO);
        drop(busy);
        std::thread::sleep(Duration::from_millis(5));
        assert!(a.idle_for() >= Duration::from_millis(4));
    }
}
