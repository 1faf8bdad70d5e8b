//! The original destination of a redirected connection.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use socket2::SockRef;

/// Reads the destination a connection had before the nat `REDIRECT` sent it
/// to us (`SO_ORIGINAL_DST`, or `IP6T_SO_ORIGINAL_DST` for IPv6), through
/// socket2 rather than raw `getsockopt`.
///
/// Works on anything that is a socket: `std::net::TcpStream` and
/// `tokio::net::TcpStream` alike. On a dual-stack listener an IPv4 client
/// appears as an IPv4-mapped IPv6 peer; its conntrack entry is IPv4, so the
/// IPv4 option is the one asked.
///
/// An error of kind [`io::ErrorKind::NotFound`] (`ENOENT`) means the kernel
/// has no nat entry: the connection was not redirected. A capture listener
/// must refuse such a connection rather than guess.
pub fn original_dst<S: AsFd>(stream: &S) -> io::Result<SocketAddr> {
    let sock = SockRef::from(stream);
    let peer = sock
        .peer_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))?;
    let is_v4 = match peer {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some(),
    };
    let raw = if is_v4 {
        sock.original_dst_v4()?
    } else {
        sock.original_dst_v6()?
    };
    raw.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "original destination is not an IP socket address",
        )
    })
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    // Redirected connections are shown by the network-namespace test
    // (tests/netns.sh); here, the refusal of a connection that was not.
    #[test]
    fn unredirected_std_stream_reports_not_found() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let err = original_dst(&accepted).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn works_on_tokio_streams() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            let err = original_dst(&accepted).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        });
    }

    #[test]
    fn a_listening_socket_is_not_a_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(original_dst(&listener).is_err());
    }
}
