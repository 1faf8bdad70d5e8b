//! The mTLS handshake: the only place a caller identity is produced.
//!
//! In `strict` mode every connection must present a valid X.509-SVID. In
//! `permissive` mode (for migrations) a connection that does not start
//! with a TLS record is served in plaintext, and its caller is anonymous.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{server::TlsStream, TlsAcceptor};

use super::Handshake;
use crate::{
    config::Mode,
    identity::{verify::peer_id, IdentityMetrics, Peer},
};

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

#[derive(Clone)]
pub struct Mtls {
    acceptor: TlsAcceptor,
    mode: Mode,
    metrics: IdentityMetrics,
}

impl Mtls {
    pub fn new(config: Arc<rustls::ServerConfig>, mode: Mode, metrics: IdentityMetrics) -> Self {
        Self {
            acceptor: TlsAcceptor::from(config),
            mode,
            metrics,
        }
    }

    async fn is_tls(&self, tcp: &TcpStream) -> io::Result<bool> {
        if self.mode == Mode::Strict {
            return Ok(true);
        }
        let mut first = [0u8; 1];
        let n = tcp.peek(&mut first).await?;
        Ok(n == 1 && first[0] == TLS_HANDSHAKE)
    }
}

impl Handshake for Mtls {
    type Io = MaybeTls;

    async fn handshake(&self, tcp: TcpStream, peer: SocketAddr) -> io::Result<(MaybeTls, Peer)> {
        let mode = self.mode.label();
        if !self.is_tls(&tcp).await? {
            self.metrics.connection(mode, "plaintext");
            return Ok((MaybeTls::Plain(tcp), Peer::Anonymous));
        }
        match self.acceptor.accept(tcp).await {
            Ok(tls) => {
                let caller = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(peer_id)
                    .map_or(Peer::Anonymous, Peer::Spiffe);
                self.metrics.connection(mode, "mtls");
                tracing::debug!(%peer, caller = %caller, "mTLS handshake complete");
                Ok((MaybeTls::Tls(Box::new(tls)), caller))
            }
            Err(e) => {
                self.metrics.connection(mode, "rejected");
                tracing::warn!(%peer, mode, error = %e, "mTLS handshake refused");
                Err(e)
            }
        }
    }
}

/// A connection that may or may not be TLS.
pub enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
}
