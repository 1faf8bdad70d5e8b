//! The configurations under test: which process serves each one, how it is
//! configured and how the load generator reaches it.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use crate::conn::{self, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0} failed: {1}")]
    Command(String, String),
    #[error("{kind} did not listen on {addr} within {secs} s; its log:\n{log}")]
    NotReady {
        kind: String,
        addr: SocketAddr,
        secs: u64,
        log: String,
    },
    #[error("configuration {0} needs {1}, which was not given")]
    Missing(Kind, &'static str),
    #[error(transparent)]
    Tls(#[from] conn::ConnError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SetupError {
    let what = what.into();
    move |source| SetupError::Io { what, source }
}

/// One configuration of the issue's list, a to i.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    A,
    B,
    C,
    D,
    E,
    F,
    G,
    H,
    I,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proxy {
    None,
    Portcullis,
    Envoy,
    /// This harness's bare forwarder (`portcullis-bench forward`).
    Forwarder,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::A,
        Kind::B,
        Kind::C,
        Kind::D,
        Kind::E,
        Kind::F,
        Kind::G,
        Kind::H,
        Kind::I,
    ];

    pub fn parse(s: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.key() == s)
    }

    pub fn key(self) -> &'static str {
        ["a", "b", "c", "d", "e", "f", "g", "h", "i"][self as usize]
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::A => "direct",
            Kind::B => "portcullis plain",
            Kind::C => "portcullis mTLS",
            Kind::D => "portcullis mTLS + 2 WASM filters",
            Kind::E => "Envoy mcp + RBAC",
            Kind::F => "Envoy proxy-wasm (v8)",
            Kind::G => "Envoy mTLS + mcp + RBAC",
            Kind::H => "bare forwarder (floor)",
            Kind::I => "portcullis plain + 2 WASM filters",
        }
    }

    pub fn proxy(self) -> Proxy {
        match self {
            Kind::A => Proxy::None,
            Kind::B | Kind::C | Kind::D | Kind::I => Proxy::Portcullis,
            Kind::E | Kind::F | Kind::G => Proxy::Envoy,
            Kind::H => Proxy::Forwarder,
        }
    }

    fn mtls(self) -> bool {
        matches!(self, Kind::C | Kind::D | Kind::G)
    }

    fn template(self) -> &'static str {
        match self {
            Kind::A | Kind::H => "",
            Kind::B => include_str!("../configs/b-portcullis-plain.yaml"),
            Kind::C => include_str!("../configs/c-portcullis-mtls.yaml"),
            Kind::D => include_str!("../configs/d-portcullis-mtls-wasm.yaml"),
            Kind::E => include_str!("../configs/e-envoy-mcp-rbac.yaml"),
            Kind::F => include_str!("../configs/f-envoy-wasm.yaml"),
            Kind::G => include_str!("../configs/g-envoy-mtls.yaml"),
            Kind::I => include_str!("../configs/i-portcullis-plain-wasm.yaml"),
        }
    }
}

/// Where the programs and artifacts the configurations need are.
#[derive(Clone, Debug)]
pub struct Paths {
    pub portcullis: PathBuf,
    pub envoy: Option<PathBuf>,
    pub filters: PathBuf,
    pub envoy_wasm: Option<PathBuf>,
    pub work: PathBuf,
    pub base_port: u16,
}

impl Paths {
    fn port(&self, offset: u16) -> u16 {
        self.base_port + offset
    }

    pub fn upstream_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port(0)))
    }

    pub fn pki(&self) -> PathBuf {
        self.work.join("pki")
    }
}

/// A running configuration. Its process (if any) is stopped when dropped:
/// SIGTERM, then SIGKILL if it is still running after `STOP_GRACE`.
pub struct Target {
    pub kind: Kind,
    pub endpoint: Endpoint,
    /// The proxy's admin listener (metrics), if it has one.
    pub admin: Option<SocketAddr>,
    child: Option<Child>,
}

impl Target {
    /// The proxy's pid, whose CPU and memory the results report.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }
}

/// How long a stopped process may take to exit by itself. A clean exit
/// is what lets an instrumented build write its profile
/// (`scripts/pgo.sh`): the profile is written at exit, never on SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            stop(child);
        }
    }
}

/// Asks a process this harness started to exit (SIGTERM) and waits up to
/// `STOP_GRACE` for it. One still running then is killed by
/// `kill_on_drop` when its `Child` drops. Blocking: callers are `Drop`
/// impls, which cannot await, and nothing else runs during a teardown.
pub fn stop(child: &mut Child) {
    let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) else {
        return;
    };
    // SAFETY: kill(2) on a pid this harness spawned and has not reaped
    // (`id()` is None once it has been), so it cannot name another process.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        return;
    }
    let deadline = std::time::Instant::now() + STOP_GRACE;
    while std::time::Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Mints the bench trust domain with portcullis's own dev CA: one SVID for
/// both proxies (with a DNS SAN, as Envoy's clients and ours check the
/// host name) and one for the load generator.
pub async fn mint_pki(paths: &Paths) -> Result<(), SetupError> {
    let pki = paths.pki();
    let _ = std::fs::remove_dir_all(&pki);
    std::fs::create_dir_all(&pki).map_err(io(format!("creating {}", pki.display())))?;
    let ca = pki.join("ca");
    let mut init: Vec<OsString> = vec![
        "ca".into(),
        "init".into(),
        "--dir".into(),
        ca.clone().into(),
    ];
    init.extend(["--trust-domain".into(), "bench.local".into()]);
    run_portcullis(paths, &init).await?;
    for (name, dns) in [("proxy", Some("localhost")), ("client", None)] {
        let mut issue: Vec<OsString> = vec![
            "ca".into(),
            "issue".into(),
            "--dir".into(),
            ca.clone().into(),
        ];
        issue.extend(["--out".into(), pki.join(name).into()]);
        issue.extend([
            "--id".into(),
            format!("spiffe://bench.local/ns/bench/sa/{name}").into(),
        ]);
        if let Some(d) = dns {
            issue.extend(["--dns".into(), d.into()]);
        }
        run_portcullis(paths, &issue).await?;
    }
    Ok(())
}

/// Runs `portcullis ARGS` (its `ca` subcommands) and fails with its
/// stderr if it fails.
pub async fn run_portcullis(paths: &Paths, args: &[OsString]) -> Result<(), SetupError> {
    let out = Command::new(&paths.portcullis)
        .args(args)
        .output()
        .await
        .map_err(io(format!("running {}", paths.portcullis.display())))?;
    if !out.status.success() {
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return Err(SetupError::Command(
            format!("portcullis {}", shown.join(" ")),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    Ok(())
}

/// Starts the upstream: this same binary, in its own process, so that its
/// CPU is not mixed with the load generator's.
pub async fn start_upstream(paths: &Paths) -> Result<Child, SetupError> {
    start_upstream_at(paths, paths.upstream_addr(), None, "upstream").await
}

/// An upstream on `addr`, whose `tools/list` has `tools` entries if given
/// (the list-size curve), logging to WORK/NAME.log.
pub async fn start_upstream_at(
    paths: &Paths,
    addr: SocketAddr,
    tools: Option<usize>,
    name: &str,
) -> Result<Child, SetupError> {
    let exe = std::env::current_exe().map_err(io("locating the harness binary"))?;
    let log = paths.work.join(format!("{name}.log"));
    let mut cmd = Command::new(exe);
    cmd.arg("upstream").arg("--listen").arg(addr.to_string());
    if let Some(n) = tools {
        cmd.arg("--tools").arg(n.to_string());
    }
    let child = spawn(&mut cmd, &log)?;
    wait_listening(child, addr, name, &log).await
}

/// Starts portcullis with `config` (a template with the placeholders of
/// `configs/`, filled here) as WORK/NAME.yaml and waits until it listens
/// on `listen`. The scaling curves' configurations go through this.
pub async fn start_portcullis(
    paths: &Paths,
    name: &str,
    config: &str,
    listen: SocketAddr,
    admin: u16,
    upstream: u16,
) -> Result<Child, SetupError> {
    let file = paths.work.join(format!("{name}.yaml"));
    let text = fill(config, paths, listen.port(), admin, upstream);
    std::fs::write(&file, text).map_err(io(format!("writing {}", file.display())))?;
    let log = paths.work.join(format!("{name}.log"));
    let child = spawn(
        Command::new(&paths.portcullis)
            .args(["run", "--config"])
            .arg(&file)
            .env("RUST_LOG", "warn"),
        &log,
    )?;
    wait_listening(child, listen, name, &log).await
}

/// Where `kind` listens and its admin port, both from its place in the
/// list: proxies from base + 1, admins from base + 20, so the two ranges
/// cannot meet while there are fewer than 19 configurations.
fn ports(kind: Kind, paths: &Paths) -> (SocketAddr, u16) {
    let index = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0) as u16;
    let listen = match kind {
        Kind::A => paths.upstream_addr(),
        _ => SocketAddr::from(([127, 0, 0, 1], paths.port(1 + index))),
    };
    (listen, paths.port(20 + index))
}

/// Writes the configuration's file, starts its proxy and waits until it
/// listens.
pub async fn start(kind: Kind, paths: &Paths) -> Result<Target, SetupError> {
    let (listen, admin) = ports(kind, paths);
    let endpoint = if kind.mtls() {
        let pki = paths.pki();
        let cfg = conn::mtls_client(
            &pki.join("ca/ca.pem"),
            &pki.join("client.pem"),
            &pki.join("client.key"),
        )?;
        Endpoint::mtls(listen, Arc::new(cfg))
    } else {
        Endpoint::plain(listen)
    };
    let log = paths.work.join(format!("{}.log", kind.key()));
    let (child, admin) = match kind.proxy() {
        Proxy::None => {
            return Ok(Target {
                kind,
                endpoint,
                admin: None,
                child: None,
            })
        }
        // The forwarder has no configuration file and no admin port.
        Proxy::Forwarder => {
            let exe = std::env::current_exe().map_err(io("locating the harness binary"))?;
            let child = spawn(
                Command::new(exe)
                    .arg("forward")
                    .arg("--listen")
                    .arg(listen.to_string())
                    .arg("--upstream")
                    .arg(paths.upstream_addr().to_string())
                    .arg("--workers")
                    .arg(forwarder_workers().to_string()),
                &log,
            )?;
            (child, None)
        }
        Proxy::Portcullis => {
            let file = write_config(kind, paths, listen.port(), admin)?;
            let child = spawn(
                Command::new(&paths.portcullis)
                    .args(["run", "--config"])
                    .arg(&file)
                    // Audit records off, as Envoy's access log is: both
                    // proxies are measured on the request path alone.
                    .env("RUST_LOG", "warn"),
                &log,
            )?;
            (child, Some(admin))
        }
        Proxy::Envoy => {
            let envoy = paths
                .envoy
                .as_ref()
                .ok_or(SetupError::Missing(kind, "--envoy"))?;
            let file = write_config(kind, paths, listen.port(), admin)?;
            let child = spawn(
                Command::new(envoy).arg("-c").arg(&file).args([
                    "--disable-hot-restart",
                    "--log-level",
                    "warn",
                ]),
                &log,
            )?;
            (child, Some(admin))
        }
    };
    let child = wait_listening(child, listen, kind.label(), &log).await?;
    Ok(Target {
        kind,
        endpoint,
        admin: admin.map(|port| SocketAddr::from(([127, 0, 0, 1], port))),
        child: Some(child),
    })
}

fn write_config(kind: Kind, paths: &Paths, listen: u16, admin: u16) -> Result<PathBuf, SetupError> {
    let file = paths.work.join(format!("{}.yaml", kind.key()));
    let text = render(kind, paths, listen, admin)?;
    std::fs::write(&file, text).map_err(io(format!("writing {}", file.display())))?;
    Ok(file)
}

fn render(kind: Kind, paths: &Paths, listen: u16, admin: u16) -> Result<String, SetupError> {
    let mut text = fill(kind.template(), paths, listen, admin, paths.port(0));
    if text.contains("@ENVOY_WASM@") {
        let wasm = paths
            .envoy_wasm
            .as_ref()
            .ok_or(SetupError::Missing(kind, "--envoy-wasm"))?;
        text = text.replace("@ENVOY_WASM@", &wasm.display().to_string());
    }
    Ok(text)
}

/// A template's placeholders replaced (all but Envoy's wasm module).
fn fill(template: &str, paths: &Paths, listen: u16, admin: u16, upstream: u16) -> String {
    template
        .replace("@LISTEN@", &listen.to_string())
        .replace("@ADMIN@", &admin.to_string())
        .replace("@UPSTREAM@", &upstream.to_string())
        .replace("@PKI@", &paths.pki().display().to_string())
        .replace("@WORK@", &paths.work.display().to_string())
        .replace("@FILTERS@", &paths.filters.display().to_string())
}

fn spawn(cmd: &mut Command, log: &Path) -> Result<Child, SetupError> {
    let out = std::fs::File::create(log).map_err(io(format!("creating {}", log.display())))?;
    let err = out.try_clone().map_err(io("duplicating a log handle"))?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(io(format!("starting {:?}", cmd.as_std().get_program())))
}

const READY_SECS: u64 = 60;

async fn wait_listening(
    mut child: Child,
    addr: SocketAddr,
    kind: &str,
    log: &Path,
) -> Result<Child, SetupError> {
    let not_ready = |log: &Path| SetupError::NotReady {
        kind: kind.to_string(),
        addr,
        secs: READY_SECS,
        log: tail(log),
    };
    for _ in 0..READY_SECS * 20 {
        if let Ok(Some(_)) = child.try_wait() {
            return Err(not_ready(log));
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(not_ready(log))
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The forwarder's worker threads: as many as portcullis runs with here,
/// so that the floor has the runtime shape of the proxies measured against
/// it. portcullis inherits the harness's environment: its
/// `PORTCULLIS_WORKERS` if set, else its default on a machine without a
/// cgroup CPU limit (the bench's), one worker.
fn forwarder_workers() -> u16 {
    std::env::var("PORTCULLIS_WORKERS")
        .ok()
        .and_then(|v| v.trim().parse::<u16>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths {
            portcullis: "portcullis".into(),
            envoy: None,
            filters: "/f".into(),
            envoy_wasm: None,
            work: "/w".into(),
            base_port: 18100,
        }
    }

    #[test]
    fn every_template_is_rendered_without_placeholders_left() {
        let mut p = paths();
        p.envoy_wasm = Some("/x.wasm".into());
        for kind in Kind::ALL.into_iter().filter(|k| !k.template().is_empty()) {
            let text = render(kind, &p, 18102, 18122).unwrap();
            assert!(
                !text.contains('@') || text.contains("\"@type\""),
                "{kind}: {text}"
            );
            assert!(
                !text.contains("@LISTEN@") && !text.contains("@PKI@"),
                "{kind}"
            );
            assert!(text.contains("18102") && text.contains("18100"), "{kind}");
        }
    }

    /// An instrumented build writes its profile only when it exits by
    /// itself, so a dropped target must be asked to stop first.
    #[tokio::test]
    async fn a_dropped_target_is_asked_to_stop_before_it_is_killed() {
        let dir = std::env::temp_dir().join(format!("bench-stop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("terminated");
        let _ = std::fs::remove_file(&marker);
        let ready = dir.join("ready");
        let _ = std::fs::remove_file(&ready);
        let script = format!(
            "trap 'touch {}; exit 0' TERM; touch {}; while :; do sleep 0.01; done",
            marker.display(),
            ready.display()
        );
        let child = spawn(Command::new("sh").args(["-c", &script]), &dir.join("log")).unwrap();
        // The shell has installed its trap once it has made `ready`.
        for _ in 0..1000 {
            if ready.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(ready.exists(), "the test's shell did not start");
        drop(Target {
            kind: Kind::H,
            endpoint: Endpoint::plain(SocketAddr::from(([127, 0, 0, 1], 1))),
            admin: None,
            child: Some(child),
        });
        assert!(marker.exists(), "the target was killed without a SIGTERM");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_proxy_wasm_configuration_needs_its_module() {
        let err = render(Kind::F, &paths(), 1, 2).unwrap_err();
        assert!(err.to_string().contains("--envoy-wasm"), "{err}");
    }

    #[test]
    fn no_two_configurations_share_a_port() {
        let p = paths();
        let mut used = vec![p.upstream_addr().port()];
        for kind in Kind::ALL {
            let (listen, admin) = ports(kind, &p);
            if kind != Kind::A {
                used.push(listen.port());
            }
            used.push(admin);
        }
        let n = used.len();
        used.sort_unstable();
        used.dedup();
        assert_eq!(used.len(), n, "{used:?}");
    }

    #[test]
    fn every_configuration_but_direct_and_the_forwarder_has_a_template() {
        for kind in Kind::ALL {
            let templated = !matches!(kind.proxy(), Proxy::None | Proxy::Forwarder);
            assert_eq!(!kind.template().is_empty(), templated, "{kind}");
        }
    }

    #[test]
    fn keys_parse_back() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.key()), Some(k));
        }
        assert_eq!(Kind::parse("z"), None);
    }
}
