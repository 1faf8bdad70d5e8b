//! What happens to the proxy during the run, and the check that each
//! change took effect: a config reload (the filter chain is rebuilt), an
//! SVID rotation (new files on disk, served to fresh handshakes) and an
//! upstream restart (killed, started again).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use portcullis_bench::scrape;
use portcullis_bench::targets::{self, Paths};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::stats::Span;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Kind {
    Reload,
    Rotation,
    Restart,
}

/// One change made to the system under load.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub kind: Kind,
    pub at_s: f64,
    /// Whether the proxy was seen to apply it (for a restart: the new
    /// upstream listened).
    pub applied: bool,
    /// From the change to the moment it was seen applied.
    pub took_ms: f64,
    pub detail: String,
}

/// How long a change may take to show before it counts as not applied.
/// SVID files are polled every 5 s by default; reloads every 1 s.
const APPLY_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);

pub struct Chaos {
    pub paths: Paths,
    pub start: Instant,
    /// The filter file the proxy runs, rewritten at each reload.
    pub filter_file: PathBuf,
    /// Its original bytes.
    pub filter_wasm: Vec<u8>,
    pub admin: SocketAddr,
    pub proxy: SocketAddr,
    pub client_tls: Arc<rustls::ClientConfig>,
    pub upstream: Option<Child>,
    pub downtime: Duration,
    pub events: Vec<Event>,
    pub restarts: Vec<Span>,
    reloads: u64,
    rotations: u64,
}

impl Chaos {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        paths: Paths,
        start: Instant,
        filter_file: PathBuf,
        filter_wasm: Vec<u8>,
        admin: SocketAddr,
        proxy: SocketAddr,
        client_tls: Arc<rustls::ClientConfig>,
        upstream: Child,
        downtime: Duration,
    ) -> Self {
        Self {
            paths,
            start,
            filter_file,
            filter_wasm,
            admin,
            proxy,
            client_tls,
            upstream: Some(upstream),
            downtime,
            events: Vec::new(),
            restarts: Vec::new(),
            reloads: 0,
            rotations: 0,
        }
    }

    fn now_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn record(&mut self, kind: Kind, at: Instant, result: Result<Duration, String>) {
        let at_s = at.duration_since(self.start).as_secs_f64();
        let (applied, took_ms, detail) = match result {
            Ok(d) => (true, d.as_secs_f64() * 1000.0, String::new()),
            Err(e) => (false, at.elapsed().as_secs_f64() * 1000.0, e),
        };
        if !applied {
            eprintln!("  {kind:?} at {at_s:.1} s NOT applied: {detail}");
        }
        self.events.push(Event {
            kind,
            at_s,
            applied,
            took_ms,
            detail,
        });
    }

    /// Replaces tool-rbac's .wasm with a variant (same code, a custom
    /// section that alternates between two values: a new file hash, two
    /// compiled modules at most) and waits for the proxy's reload counter
    /// to count a success. Editing the config file would be the natural
    /// change, but `portcullis run` does not watch it (see README).
    pub async fn reload(&mut self) {
        self.reloads += 1;
        let bytes = with_custom_section(&self.filter_wasm, self.reloads % 2);
        let at = Instant::now();
        let result = async {
            let before = reload_count(self.admin, "success").await?;
            let refused = reload_count(self.admin, "failure").await?;
            replace_file(&self.filter_file, &bytes)?;
            wait_for(at, || async {
                if reload_count(self.admin, "failure").await? > refused {
                    return Err("the proxy refused the new filter".to_string());
                }
                Ok(reload_count(self.admin, "success").await? > before)
            })
            .await
        }
        .await;
        self.record(Kind::Reload, at, result);
    }

    /// Mints a new proxy SVID with `portcullis ca issue`, moves it over the
    /// files the proxy reads (rename: each file is replaced whole), and
    /// waits until a fresh handshake is served the new certificate.
    pub async fn rotate(&mut self) {
        self.rotations += 1;
        let at = Instant::now();
        let result = self.rotate_files().await;
        let result = match result {
            Ok(leaf) => {
                let proxy = self.proxy;
                let tls = self.client_tls.clone();
                wait_for(at, || {
                    let (tls, leaf) = (tls.clone(), leaf.clone());
                    async move { Ok(served_leaf(proxy, tls).await.ok() == Some(leaf)) }
                })
                .await
            }
            Err(e) => Err(e),
        };
        self.record(Kind::Rotation, at, result);
    }

    async fn rotate_files(&self) -> Result<Vec<u8>, String> {
        let pki = self.paths.pki();
        let next = pki.join(format!("rotation-{}", self.rotations));
        let args: Vec<OsString> = [
            "ca",
            "issue",
            "--id",
            "spiffe://bench.local/ns/bench/sa/proxy",
            "--dns",
            "localhost",
        ]
        .iter()
        .map(OsString::from)
        .chain(["--dir".into(), pki.join("ca").into()])
        .chain(["--out".into(), next.clone().into()])
        .collect();
        targets::run_portcullis(&self.paths, &args)
            .await
            .map_err(|e| e.to_string())?;
        let pem = next.with_extension("pem");
        let leaf = CertificateDer::pem_file_iter(&pem)
            .map_err(|e| format!("{}: {e}", pem.display()))?
            .next()
            .ok_or("new SVID has no certificate")?
            .map_err(|e| format!("{}: {e}", pem.display()))?;
        let rename = |from: PathBuf, to: PathBuf| {
            std::fs::rename(&from, &to).map_err(|e| format!("moving {}: {e}", from.display()))
        };
        rename(next.with_extension("key"), pki.join("proxy.key"))?;
        rename(pem, pki.join("proxy.pem"))?;
        Ok(leaf.to_vec())
    }

    /// Kills the upstream (SIGKILL: a crash, not a drain), waits out the
    /// downtime and starts a new one. The span from kill to listening is a
    /// restart window.
    pub async fn restart(&mut self) -> Result<(), String> {
        let at = Instant::now();
        let start_s = self.now_s();
        if let Some(mut old) = self.upstream.take() {
            let _ = old.kill().await;
        }
        tokio::time::sleep(self.downtime).await;
        let started = targets::start_upstream(&self.paths).await;
        self.restarts.push(Span {
            start_s,
            end_s: self.now_s(),
        });
        match started {
            Ok(child) => {
                self.upstream = Some(child);
                self.record(Kind::Restart, at, Ok(at.elapsed()));
                Ok(())
            }
            Err(e) => {
                self.record(Kind::Restart, at, Err(e.to_string()));
                Err(e.to_string())
            }
        }
    }
}

/// Polls `check` until it says yes, fails, or the time is up; the time
/// from `since` to the yes.
async fn wait_for<F, Fut>(since: Instant, mut check: F) -> Result<Duration, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    loop {
        if check().await? {
            return Ok(since.elapsed());
        }
        if since.elapsed() > APPLY_TIMEOUT {
            return Err(format!("not seen within {} s", APPLY_TIMEOUT.as_secs()));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Writes to a temporary file beside `path`, then renames it over `path`,
/// so that a poll never reads half a file.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("soak-tmp");
    std::fs::write(&tmp, bytes).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("moving {}: {e}", tmp.display()))
}

/// `wasm` with a custom section `soak-reload` holding one byte appended.
/// Custom sections may end both core modules and components, and carry
/// nothing the runtime reads.
pub fn with_custom_section(wasm: &[u8], value: u64) -> Vec<u8> {
    let name = b"soak-reload";
    // Section id 0; size and name length fit one LEB128 byte each.
    let mut out = wasm.to_vec();
    out.extend([0u8, (1 + name.len() + 1) as u8, name.len() as u8]);
    out.extend(name);
    out.push(value as u8);
    out
}

/// `portcullis_filter_reloads_total{result=...}` from the admin port.
async fn reload_count(admin: SocketAddr, result: &str) -> Result<u64, String> {
    let text = scrape::metrics_text(admin).await?;
    Ok(counter(&text, "portcullis_filter_reloads_total", "result", result).unwrap_or(0))
}

/// One labelled counter's value from Prometheus text; None if absent.
pub fn counter(text: &str, name: &str, label: &str, value: &str) -> Option<u64> {
    let series = format!("{name}{{{label}=\"{value}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// The leaf certificate the proxy serves to a new TLS handshake.
async fn served_leaf(proxy: SocketAddr, tls: Arc<rustls::ClientConfig>) -> Result<Vec<u8>, String> {
    let tcp = TcpStream::connect(proxy).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| "no server certificate".to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn custom_section_variants_differ_and_keep_the_original_prefix() {
        let wasm = b"\0asm\x0d\0\x01\0".to_vec();
        let (a, b) = (
            super::with_custom_section(&wasm, 0),
            super::with_custom_section(&wasm, 1),
        );
        assert_ne!(a, b);
        assert!(a.starts_with(&wasm));
        // id 0, size 13 = name length byte + 11 name bytes + 1 value byte.
        assert_eq!(&a[wasm.len()..wasm.len() + 3], &[0, 13, 11]);
        assert_eq!(a.len(), wasm.len() + 2 + 13);
    }

    #[test]
    fn reads_a_labelled_counter() {
        let text = "# TYPE portcullis_filter_reloads_total counter\n\
            portcullis_filter_reloads_total{result=\"failure\"} 1\n\
            portcullis_filter_reloads_total{result=\"success\"} 17\n";
        let c = |v| super::counter(text, "portcullis_filter_reloads_total", "result", v);
        assert_eq!(c("success"), Some(17));
        assert_eq!(c("failure"), Some(1));
        assert_eq!(c("other"), None);
    }
}
