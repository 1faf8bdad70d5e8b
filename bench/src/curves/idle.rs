//! Memory per idle connection: N keep-alive connections opened to a
//! proxy, each with one call answered (so that the TLS handshake is
//! complete and the proxy holds the connection as it holds a real
//! client's between calls), then left idle while the proxy's RSS is read.

use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;

use crate::conn::{Endpoint, Sender};
use crate::load::{self, TEXT};
use crate::procstat;

#[derive(Clone, Debug, Serialize)]
pub struct Idle {
    pub series: String,
    pub asked: usize,
    pub held: usize,
    /// Growth of the proxy's open file descriptors: the connections it
    /// really holds (the upstream pool's few are included).
    pub proxy_fds_added: i64,
    pub rss_before_mib: f64,
    pub rss_held_mib: f64,
    pub rss_after_close_mib: f64,
    /// The proxy's open descriptors left of those added, 1 s after the
    /// load generator closed its ends: shows the connections did close.
    pub proxy_fds_left_after_close: i64,
    pub kib_per_connection: f64,
    pub first_error: Option<String>,
}

/// Connections are opened this many at a time: enough to be quick, few
/// enough not to overflow the listen backlog.
const OPENING: usize = 64;

pub async fn measure(
    series: &str,
    endpoint: &Endpoint,
    pid: u32,
    n: usize,
) -> Result<Idle, procstat::ProcError> {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    // Let the previous measurement's connections close first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = procstat::rss(pid)?;
    let fds0 = procstat::open_fds(pid)?;
    let mut held: Vec<Sender> = Vec::with_capacity(n);
    let mut first_error = None;
    let mut set = JoinSet::new();
    let mut started = 0;
    while started < n || !set.is_empty() {
        while started < n && set.len() < OPENING {
            let endpoint = endpoint.clone();
            set.spawn(async move { open(&endpoint).await });
            started += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(s))) => held.push(s),
            Some(Ok(Err(e))) => {
                first_error.get_or_insert(e);
            }
            Some(Err(e)) => {
                first_error.get_or_insert(e.to_string());
            }
            None => break,
        }
    }
    // The proxy's last answers and buffers settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss1 = procstat::rss(pid)?;
    let fds1 = procstat::open_fds(pid)?;
    let count = held.len();
    drop(held);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss2 = procstat::rss(pid)?;
    let fds2 = procstat::open_fds(pid)?;
    Ok(Idle {
        series: series.to_string(),
        asked: n,
        held: count,
        proxy_fds_added: fds1 as i64 - fds0 as i64,
        rss_before_mib: mib(rss0),
        rss_held_mib: mib(rss1),
        rss_after_close_mib: mib(rss2),
        proxy_fds_left_after_close: fds2 as i64 - fds0 as i64,
        kib_per_connection: (rss1 as f64 - rss0 as f64) / 1024.0 / count.max(1) as f64,
        first_error,
    })
}

async fn open(endpoint: &Endpoint) -> Result<Sender, String> {
    let mut s = endpoint.connect().await.map_err(|e| e.to_string())?;
    let req =
        load::call(endpoint, 1, "echo", &load::json_string(TEXT)).map_err(|e| e.to_string())?;
    load::exchange(&mut s, req, 1).await?;
    Ok(s)
}

/// Raises this process's open-file limit to at least `want` if it can
/// (children, the proxies, inherit it), and returns the limit in effect.
/// Root may raise the hard limit too; anyone may raise the soft one to
/// the hard one.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct
    // passed, which lives on this stack frame.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur >= want {
            return lim.rlim_cur;
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max.max(want),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return want;
        }
        let soft = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 {
            return lim.rlim_max;
        }
        lim.rlim_cur
    }
}
