//! A TCP connector whose connections carry no `HttpInfo`.
//!
//! hyper-util's `HttpConnector` labels each connection with its addresses,
//! and the pooled client then copies that label into every response's
//! extensions: three allocations and a map insert per request, for a value
//! nothing in Portcullis reads. This wrapper connects the same way and
//! reports the connection without it.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::{
    client::legacy::connect::{Connected, Connection, HttpConnector},
    rt::TokioIo,
};
use tokio::net::TcpStream;

/// [`HttpConnector`], without the per-request connection label.
#[derive(Clone)]
pub struct BareConnector(pub HttpConnector);

/// A connected socket that describes itself as a plain connection.
pub struct Bare(TokioIo<TcpStream>);

impl tower_service::Service<Uri> for BareConnector {
    type Response = Bare;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Bare, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.0.call(dst);
        Box::pin(async move { connecting.await.map(Bare) })
    }
}

impl Connection for Bare {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for Bare {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl Write for Bare {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connects_and_carries_no_label() {
        use tower::ServiceExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let uri: Uri = format!("http://{addr}").parse().unwrap();
        // The label this removes is there without it.
        let labelled = http.clone().oneshot(uri.clone()).await.unwrap();
        let mut ext = http::Extensions::new();
        labelled.connected().get_extras(&mut ext);
        assert!(ext
            .get::<hyper_util::client::legacy::connect::HttpInfo>()
            .is_some());
        let bare = BareConnector(http).oneshot(uri).await.unwrap();
        let mut ext = http::Extensions::new();
        bare.connected().get_extras(&mut ext);
        assert!(ext.is_empty());
        let _ = listener.accept().await.unwrap();
    }
}
