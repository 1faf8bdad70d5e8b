//! The proxy's resident memory and open file descriptors over the run,
//! read from /proc (bench's `procstat`).

use std::time::Duration;

use portcullis_bench::procstat;
use serde::Serialize;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub rss_bytes: u64,
    pub fds: usize,
}

/// Samples until `deadline`, or until the process is gone.
pub async fn run(pid: u32, start: Instant, deadline: Instant, every: Duration) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(every);
    while Instant::now() < deadline {
        tick.tick().await;
        // A tick after the end would catch the proxy with the load gone.
        if Instant::now() >= deadline {
            break;
        }
        let (Ok(rss_bytes), Ok(fds)) = (procstat::rss(pid), procstat::open_fds(pid)) else {
            eprintln!("soak: cannot read /proc/{pid}: the proxy has exited?");
            break;
        };
        out.push(Sample {
            t_s: start.elapsed().as_secs_f64(),
            rss_bytes,
            fds,
        });
    }
    out
}
