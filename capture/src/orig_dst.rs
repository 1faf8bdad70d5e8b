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
/// has no conntrack entry for the connection. A success does *not* prove a
/// redirect: once nat rules are loaded, every tracked connection has an
/// entry, and for one that was not redirected the "original" destination is
/// simply the local address. [`redirected_dst`] makes that distinction.
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

/// The destination the client dialled, if the connection was redirected to
/// us; `None` if it arrived as dialled (no conntrack entry, or an original
/// destination equal to the local address). A capture listener refuses a
/// `None`: it would otherwise treat a direct dial of its own port, or an
/// unredirected connection, as a request for some other port.
pub fn redirected_dst<S: AsFd>(stream: &S) -> io::Result<Option<SocketAddr>> {
    let orig = match original_dst(stream) {
        Ok(orig) => orig,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let local = SockRef::from(stream)
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))?;
    Ok((unmapped(orig) != unmapped(local)).then_some(orig))
}

/// `[::ffff:a.b.c.d]:p` as `a.b.c.d:p`, so that the two families compare.
fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
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
    fn unredirected_stream_has_no_redirected_dst() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert_eq!(redirected_dst(&accepted).unwrap(), None);
    }

    #[test]
    fn mapped_addresses_compare_equal() {
        let mapped: SocketAddr = "[::ffff:10.0.0.2]:80".parse().unwrap();
        let plain: SocketAddr = "10.0.0.2:80".parse().unwrap();
        assert_eq!(unmapped(mapped), plain);
        let v6: SocketAddr = "[fd00::2]:80".parse().unwrap();
        assert_eq!(unmapped(v6), v6);
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
