//! A stand-in for the sidecar and the servers in `tests/netns.sh`.
//!
//! `origdst_echo listen TAG ADDR...` accepts on every ADDR and answers each
//! connection with one line:
//!     tag=TAG orig=<dst or none> raw=<SO_ORIGINAL_DST> local=<addr> peer=<addr>
//! `orig` is [`portcullis_capture::redirected_dst`]: the address the client
//! dialled when the connection was redirected, `none` when it was not. `raw`
//! is what [`portcullis_capture::original_dst`] read (`none` for ENOENT):
//! with nat rules loaded it is the local address for an unredirected one.
//!
//! `origdst_echo connect ADDR` dials ADDR, prints the line it gets, and
//! prints `ERR <reason>` (exit 1) when it cannot, within two seconds.
//!
//! The real sidecar will replace `listen` in the test later; the one-line
//! answer keeps the assertions in the script simple until then.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use portcullis_capture::{original_dst, redirected_dst};

const TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["listen", tag, addrs @ ..] if !addrs.is_empty() => listen(tag, addrs),
        ["connect", addr] => connect(addr),
        _ => {
            eprintln!("usage: origdst_echo listen TAG ADDR... | connect ADDR");
            ExitCode::from(2)
        }
    }
}

fn listen(tag: &str, addrs: &[&str]) -> ExitCode {
    let mut threads = Vec::new();
    for addr in addrs {
        let listener = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("origdst_echo: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let tag = tag.to_string();
        threads.push(std::thread::spawn(move || serve(&tag, &listener)));
    }
    for t in threads {
        let _ = t.join();
    }
    ExitCode::SUCCESS
}

fn serve(tag: &str, listener: &TcpListener) {
    for stream in listener.incoming().flatten() {
        let orig = match redirected_dst(&stream) {
            Ok(Some(addr)) => addr.to_string(),
            Ok(None) => "none".to_string(),
            Err(e) => format!("error:{}", e.kind()),
        };
        let raw = match original_dst(&stream) {
            Ok(addr) => addr.to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "none".to_string(),
            Err(e) => format!("error:{}", e.kind()),
        };
        let show = |a: std::io::Result<SocketAddr>| a.map_or("?".to_string(), |a| a.to_string());
        let line = format!(
            "tag={tag} orig={orig} raw={raw} local={} peer={}\n",
            show(stream.local_addr()),
            show(stream.peer_addr())
        );
        print!("{line}");
        let _ = (&stream).write_all(line.as_bytes());
    }
}

fn connect(addr: &str) -> ExitCode {
    let result = addr
        .parse::<SocketAddr>()
        .map_err(|e| e.to_string())
        .and_then(|a| TcpStream::connect_timeout(&a, TIMEOUT).map_err(|e| e.kind().to_string()))
        .and_then(|s| {
            s.set_read_timeout(Some(TIMEOUT))
                .map_err(|e| e.to_string())?;
            let mut line = String::new();
            BufReader::new(s)
                .read_line(&mut line)
                .map_err(|e| e.kind().to_string())?;
            Ok(line)
        });
    match result {
        Ok(line) if !line.is_empty() => {
            print!("{line}");
            ExitCode::SUCCESS
        }
        Ok(_) => {
            println!("ERR closed without an answer");
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("ERR {e}");
            ExitCode::FAILURE
        }
    }
}
