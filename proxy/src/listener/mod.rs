//! The inbound listener: an accept loop that spawns one task per
//! connection, each served by hyper (HTTP/1.1 or HTTP/2) in explicit
//! phases: handshake, serve, drain.
//!
//! The handshake is a trait so that TLS slots in without touching the
//! loop; it is also the only place a caller identity may come from.

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

use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    identity::Caller,
    service::{self, Shared},
};

/// Turns an accepted TCP stream into the stream HTTP is served on, and
/// says who is on the other end.
pub trait Handshake: Clone + Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    fn handshake(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = io::Result<(Self::Io, Caller)>> + Send;
}

/// No TLS: every caller is anonymous.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plaintext;

impl Handshake for Plaintext {
    type Io = TcpStream;

    async fn handshake(
        &self,
        tcp: TcpStream,
        _peer: SocketAddr,
    ) -> io::Result<(TcpStream, Caller)> {
        Ok((tcp, Caller::Anonymous))
    }
}

/// Accepts connections until `shutdown`, then stops accepting; the
/// connections already open are drained by their own tasks, which
/// `tracker` follows.
pub async fn serve<H: Handshake>(
    listener: TcpListener,
    handshake: H,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let conn = Connection {
            shared: shared.clone(),
            shutdown: shutdown.clone(),
            peer,
        };
        tracker.spawn(conn.run(tcp, handshake.clone()));
    }
}

struct Connection {
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    peer: SocketAddr,
}

impl Connection {
    async fn run<H: Handshake>(self, tcp: TcpStream, handshake: H) {
        let timeout = self.shared.config.listener.header_read_timeout;
        let (io, caller) = match tokio::time::timeout(timeout, handshake.handshake(tcp, self.peer))
            .await
        {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return tracing::info!(peer = %self.peer, error = %e, "handshake failed"),
            Err(_) => return tracing::info!(peer = %self.peer, "handshake timed out"),
        };
        self.serve(io, caller).await;
    }

    async fn serve<I>(self, io: I, caller: Caller)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let listener = &self.shared.config.listener;
        let activity = Arc::new(Activity::new());
        let shared = self.shared.clone();
        let act = activity.clone();
        let svc = service_fn(move |req| {
            let (shared, caller, act) = (shared.clone(), caller.clone(), act.clone());
            async move {
                let busy = act.begin();
                let resp = service::handle(shared, caller, req).await?;
                Ok::<_, std::convert::Infallible>(
                    resp.map(|b| service::Guarded::new(b, busy).boxed_unsync()),
                )
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(listener.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)));
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
                    if activity.idle_for() >= idle_limit {
                        tracing::debug!(peer = %self.peer, "closing idle connection");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        }
    }
}

/// Requests in flight on one connection, and when it was last busy.
struct Activity {
    start: Instant,
    inflight: AtomicUsize,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            inflight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        self.last_ms.store(self.now_ms(), Ordering::Release);
        Busy(self.clone())
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

#[cfg(test)]
mod tests {
    use super::*;

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
