//! Filters compiled out of the sidecar (issue 12): `portcullis run`
//! compiles in a child process and keeps no compiler memory; `portcullis
//! filter compile` makes an artifact ahead of time that `run` loads as is;
//! an artifact built for other engine settings is refused with a clear
//! error; and hot reload still works, compiling new bytes in a child.

#[path = "support/wasm.rs"]
mod wasm;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

fn portcullis() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("portcullis-compiled-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(filter: &Path, port: u16, cache: Option<&Path>) -> String {
    let cache = cache.map_or(String::new(), |c| format!("  cache_dir: {}\n", c.display()));
    format!(
        "listener: {{addr: '127.0.0.1:{port}'}}\nadmin: {{addr: '127.0.0.1:0'}}\nupstream: {{url: 'http://127.0.0.1:9'}}\nfilter_engine:\n  reload_interval: 200ms\n{cache}policy: {{default: allow, rules: []}}\nfilters:\n  - name: rbac\n    path: {}\n    config: {{default: deny, rules: [{{name: echo, effect: allow, tools: [echo]}}]}}\n",
        filter.display()
    )
}

/// A running sidecar whose log lines are collected.
struct Sidecar {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Sidecar {
    /// What the sidecar has mapped (`/proc/PID/maps`).
    fn maps(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/maps", self.child.id())).unwrap()
    }

    fn start(cfg: &Path) -> Self {
        Self::spawn(portcullis().args(["run", "--config"]).arg(cfg))
    }

    /// Under `ulimit -v` (in KiB), which the compile child inherits.
    fn start_limited(cfg: &Path, kib: u64) -> Self {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(format!(
                "ulimit -v {kib} && exec \"$0\" run --config \"$1\""
            ))
            .arg(env!("CARGO_BIN_EXE_portcullis"))
            .arg(cfg);
        Self::spawn(&mut sh)
    }

    /// Bytes of address space the sidecar has mapped (`VmSize`).
    fn mapped(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmSize:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib << 10
    }

    /// Waits until the sidecar listens on `port`; fails with its log if it
    /// exits first.
    fn ready(&mut self, port: u16) {
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the sidecar exited ({status}):\n{}", self.log());
            }
            assert!(start.elapsed() < Duration::from_secs(30), "never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn spawn(command: &mut Command) -> Self {
        let mut child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut l = sink.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        Self { child, log }
    }

    fn wait_for(&self, text: &str, count: usize) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if self.log.lock().unwrap().matches(text).count() >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The upstream is never reached: a denied call is answered by the
/// sidecar, an allowed one fails upstream (502). Which of the two came
/// back says what the filter decided.
/// Replaces `path` whole, as a ConfigMap update does (write aside, then
/// rename): a sidecar polling it never reads half a file.
fn replace(path: &Path, contents: impl AsRef<[u8]>) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// Replaces `path` with a copy of `from`, whole (see [`replace`]).
fn replace_with_copy(from: &Path, path: &Path) {
    replace(path, std::fs::read(from).unwrap());
}

fn decision(port: u16, tool: &str) -> u16 {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{{}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{{"name":"t","version":"1"}},"io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
    );
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", "content-type: application/json"])
        .args(["-H", "accept: application/json, text/event-stream"])
        .args(["-H", "mcp-protocol-version: 2026-07-28"])
        .args(["-H", "mcp-method: tools/call"])
        .args(["-H", &format!("mcp-name: {tool}")])
        .args(["--data", &body])
        .arg(format!("http://127.0.0.1:{port}/mcp"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

/// `portcullis filter compile` of tool-rbac into `out`.
fn compile(args: &[&str], out: &Path) {
    let run = portcullis()
        .args(["filter", "compile"])
        .args(args)
        .arg(wasm::filter("tool-rbac"))
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// `portcullis run` with `cfg` fails to start; what it said. A sidecar
/// that starts instead is stopped after a minute and fails the test,
/// rather than holding it until CI's own timeout. Its output goes to a
/// file, so that no pipe fills while the test waits.
fn refused(cfg: &Path) -> String {
    let log = cfg.with_extension("refused.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = portcullis()
        .args(["run", "--config"])
        .arg(cfg)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "still running a minute after starting with {}",
                cfg.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "started with {}", cfg.display());
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn run_compiles_in_a_child_and_reloads_new_bytes() {
    let d = dir("child");
    let filter = d.join("rbac.wasm");
    std::fs::copy(wasm::filter("tool-rbac"), &filter).unwrap();
    let port = free_port();
    let cfg = d.join("pc.yaml");
    std::fs::write(&cfg, config(&filter, port, Some(&d.join("cache")))).unwrap();
    let mut sidecar = Sidecar::start(&cfg);
    sidecar.ready(port);
    assert!(
        sidecar.log().contains("filter compiled in a child process"),
        "{}",
        sidecar.log()
    );
    assert_eq!(
        decision(port, "echo"),
        502,
        "allowed, then the upstream is down"
    );
    assert_eq!(decision(port, "delete_file"), 200, "denied by the filter");
    // The code runs from the cached file (page cache, shared, resident
    // where it runs), not from the memory file the child wrote (memory of
    // the sidecar's, all of it, for as long as the filter is loaded).
    let maps = sidecar.maps();
    assert!(maps.contains(".cwasm"), "{maps}");
    assert!(!maps.contains("memfd:portcullis-filter"), "{maps}");
    // New bytes at the same path: compiled in a child again, and loaded
    // (here refused by their own config check, so the old chain serves).
    replace_with_copy(&wasm::filter("v0_1-filter"), &filter);
    assert!(
        sidecar.wait_for("filter compiled in a child process", 2),
        "{}",
        sidecar.log()
    );
    assert!(sidecar.wait_for("reload refused", 1), "{}", sidecar.log());
    assert_eq!(
        decision(port, "delete_file"),
        200,
        "the previous chain still serves"
    );
    // A restart finds both artifacts and compiles nothing.
    drop(sidecar);
    std::fs::copy(wasm::filter("tool-rbac"), &filter).unwrap();
    let mut sidecar = Sidecar::start(&cfg);
    sidecar.ready(port);
    assert_eq!(decision(port, "delete_file"), 200);
    assert!(
        !sidecar.log().contains("compiled in a child"),
        "{}",
        sidecar.log()
    );
}

#[test]
fn an_artifact_made_ahead_of_time_loads_and_another_engines_is_refused() {
    let d = dir("aot");
    let artifact = d.join("rbac.cwasm");
    compile(&[], &artifact);
    let port = free_port();
    let cfg = d.join("pc.yaml");
    std::fs::write(&cfg, config(&artifact, port, None)).unwrap();
    let mut sidecar = Sidecar::start(&cfg);
    sidecar.ready(port);
    assert_eq!(decision(port, "delete_file"), 200);
    assert_eq!(decision(port, "echo"), 502);
    assert!(
        !sidecar.log().contains("compiled in a child"),
        "{}",
        sidecar.log()
    );
    drop(sidecar);
    // Built for a pool of 4096 instances, loaded by a sidecar with the
    // default 256: bounds-checked memories against guard pages, so other
    // generated code.
    let other = d.join("other.cwasm");
    compile(&["--max-instances", "4096"], &other);
    std::fs::write(&cfg, config(&other, free_port(), None)).unwrap();
    let err = refused(&cfg);
    assert!(
        err.contains("a precompiled filter for another engine"),
        "{err}"
    );
    // An artifact where the config names a `.wasm` (a policy author
    // replaced the file): native code is not loaded from there.
    let disguised = d.join("disguised.wasm");
    std::fs::copy(&artifact, &disguised).unwrap();
    std::fs::write(&cfg, config(&disguised, free_port(), None)).unwrap();
    let err = refused(&cfg);
    assert!(err.contains("a precompiled artifact (native code"), "{err}");
}

/// The injected sidecar's root filesystem is read-only: with no
/// `cache_dir`, compiling needs no writable directory at all.
#[test]
fn no_writable_directory_is_needed() {
    let d = dir("readonly");
    let filter = d.join("rbac.wasm");
    std::fs::copy(wasm::filter("tool-rbac"), &filter).unwrap();
    let port = free_port();
    let cfg = d.join("pc.yaml");
    std::fs::write(&cfg, config(&filter, port, None)).unwrap();
    let mut sidecar = Sidecar::spawn(
        portcullis()
            .args(["run", "--config"])
            .arg(&cfg)
            .env("TMPDIR", "/nonexistent"),
    );
    sidecar.ready(port);
    assert_eq!(decision(port, "delete_file"), 200);
    assert_eq!(decision(port, "echo"), 502);
    // With nowhere to keep it, the artifact is mapped from the memory file.
    let maps = sidecar.maps();
    assert!(maps.contains("memfd:portcullis-filter"), "{maps}");
}

/// `cache_dir` may be shared and world-writable (an `emptyDir`); the
/// artifacts live in a subdirectory only this user can write, and one that
/// others could write is refused (what is there runs as native code).
#[test]
fn the_cache_is_a_directory_only_this_user_can_write() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir("cache");
    let shared = d.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let filter = d.join("rbac.wasm");
    std::fs::copy(wasm::filter("tool-rbac"), &filter).unwrap();
    let port = free_port();
    let cfg = d.join("pc.yaml");
    std::fs::write(&cfg, config(&filter, port, Some(&shared))).unwrap();
    let mut sidecar = Sidecar::start(&cfg);
    sidecar.ready(port);
    assert_eq!(decision(port, "delete_file"), 200);
    drop(sidecar);
    let own = std::fs::read_dir(&shared)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(own.metadata().unwrap().permissions().mode() & 0o777, 0o700);
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = refused(&cfg);
    assert!(err.contains("that no one else can write"), "{err}");
}

/// The guard-page memory layout reserves about 2 TiB of address space for
/// 256 instances. Under a `ulimit -v` that cannot hold it, the engine
/// takes the bounds-checked layout and starts (it used to fail to start),
/// and the compile child, under the same limit, compiles for that layout.
#[test]
fn a_small_address_space_limit_gets_bounds_checks_instead_of_a_failed_start() {
    let d = dir("ulimit");
    let filter = d.join("rbac.wasm");
    std::fs::copy(wasm::filter("tool-rbac"), &filter).unwrap();
    let port = free_port();
    let cfg = d.join("pc.yaml");
    std::fs::write(&cfg, config(&filter, port, None)).unwrap();
    let mut unlimited = Sidecar::start(&cfg);
    unlimited.ready(port);
    // x86-64's 128 TiB of user space holds the 2 TiB pool (an arm64
    // kernel with 39-bit addresses would not).
    if cfg!(target_arch = "x86_64") {
        assert!(
            unlimited.mapped() > 1 << 40,
            "no limit: 4 GiB slots, {} bytes mapped",
            unlimited.mapped()
        );
    }
    drop(unlimited);

    // Another port: another test may have taken the first one since.
    let port = free_port();
    std::fs::write(&cfg, config(&filter, port, None)).unwrap();
    let limit_kib = 64 << 20; // 64 GiB
    let mut limited = Sidecar::start_limited(&cfg, limit_kib);
    limited.ready(port);
    // Half the limit is the guard-page layout's budget; the bounds-checked
    // pool (16 GiB) and the rest stay under it.
    assert!(
        limited.mapped() < 32 << 30,
        "{} bytes mapped",
        limited.mapped()
    );
    assert_eq!(decision(port, "echo"), 502, "allowed");
    assert_eq!(decision(port, "delete_file"), 200, "denied by the filter");
}

/// A config that names a filter not there yet is refused; the filter is
/// watched from then on, and the config is applied when it comes (as when
/// a ConfigMap and a filter's volume update at different times).
#[test]
fn a_config_refused_for_a_missing_filter_is_applied_when_the_filter_comes() {
    let d = dir("pending");
    let filter = d.join("rbac.wasm");
    std::fs::copy(wasm::filter("tool-rbac"), &filter).unwrap();
    let port = free_port();
    let cfg = d.join("pc.yaml");
    std::fs::write(&cfg, config(&filter, port, None)).unwrap();
    let mut sidecar = Sidecar::start(&cfg);
    sidecar.ready(port);
    assert_eq!(decision(port, "delete_file"), 200, "denied by the filter");

    let later = d.join("later.wasm");
    let allow_all = config(&later, port, None).replace("default: deny", "default: allow");
    replace(&cfg, allow_all);
    assert!(sidecar.wait_for("reload refused", 1), "{}", sidecar.log());
    assert_eq!(decision(port, "delete_file"), 200, "the old chain serves");

    replace_with_copy(&wasm::filter("tool-rbac"), &later);
    assert!(
        sidecar.wait_for("filter chain reloaded", 1),
        "{}",
        sidecar.log()
    );
    assert_eq!(
        decision(port, "delete_file"),
        502,
        "allowed by the new config"
    );
}

/// The compile child builds for the layout the sidecar chose at start,
/// not one it derives under its own limits. Lowering the running
/// sidecar's `ulimit -v` (`prlimit`) to 3 TiB leaves the sidecar's 2 TiB
/// pool in place, but a child that derived its layout from that limit
/// (half of it is less than the pool) compiled with bounds checks, an
/// artifact the sidecar refused: no filter could be reloaded until a
/// restart.
#[test]
fn a_lower_address_space_limit_after_start_does_not_change_what_the_child_compiles() {
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    // The test needs prlimit, and a sidecar that starts with the guard-page
    // layout: under a `ulimit -v` of its own it would not.
    let unlimited = Command::new("sh")
        .args(["-c", "command -v prlimit >/dev/null && ulimit -v"])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.trim_ascii() == b"unlimited");
    if !unlimited {
        eprintln!("skipped: needs prlimit and no ulimit -v");
        return;
    }
    let d = dir("prlimit");
    let filter = d.join("rbac.wasm");
    std::fs::copy(wasm::filter("tool-rbac"), &filter).unwrap();
    let port = free_port();
    let cfg = d.join("pc.yaml");
    std::fs::write(&cfg, config(&filter, port, None)).unwrap();
    let mut sidecar = Sidecar::start(&cfg);
    sidecar.ready(port);
    assert!(sidecar.mapped() > 1 << 40, "the guard-page layout");
    assert!(
        sidecar.mapped() < 3 << 40,
        "{} bytes mapped",
        sidecar.mapped()
    );
    let limited = Command::new("prlimit")
        .arg("--pid")
        .arg(sidecar.child.id().to_string())
        .arg(format!("--as={}", 3u64 << 40))
        .status()
        .unwrap();
    assert!(limited.success());

    // Another filter (arg-guard allowing everything), so that the reload
    // compiles in a child started under the lower limit.
    let guard = d.join("guard.wasm");
    std::fs::copy(wasm::filter("arg-guard"), &guard).unwrap();
    let next = format!(
        "listener: {{addr: '127.0.0.1:{port}'}}\nadmin: {{addr: '127.0.0.1:0'}}\nupstream: {{url: 'http://127.0.0.1:9'}}\nfilter_engine:\n  reload_interval: 200ms\npolicy: {{default: allow, rules: []}}\nfilters:\n  - name: guard\n    path: {}\n    config: {{constraints: []}}\n",
        guard.display()
    );
    replace(&cfg, next);
    assert!(
        sidecar.wait_for("filter compiled in a child process", 2),
        "{}",
        sidecar.log()
    );
    let start = Instant::now();
    while !sidecar.log().contains("filter chain reloaded") {
        assert!(
            !sidecar.log().contains("reload refused"),
            "{}",
            sidecar.log()
        );
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            sidecar.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        decision(port, "delete_file"),
        502,
        "allowed by the new chain"
    );
}

/// A reload refused for a reason outside the watched files (here the
/// compile cache's permissions) is tried again once the reason is gone,
/// with no file changing. It used to wait for the next edit of a watched
/// file, serving the old chain meanwhile.
#[test]
fn a_refused_reload_is_tried_again_without_a_file_change() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir("retry");
    let shared = d.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let filter = d.join("rbac.wasm");
    std::fs::copy(wasm::filter("tool-rbac"), &filter).unwrap();
    let port = free_port();
    let cfg = d.join("pc.yaml");
    std::fs::write(&cfg, config(&filter, port, Some(&shared))).unwrap();
    let mut sidecar = Sidecar::start(&cfg);
    sidecar.ready(port);
    assert_eq!(decision(port, "delete_file"), 200, "denied by the filter");
    let own = std::fs::read_dir(&shared)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mode = |m| std::fs::set_permissions(&own, std::fs::Permissions::from_mode(m)).unwrap();

    mode(0o777);
    let allow_all = config(&filter, port, Some(&shared)).replace("default: deny", "default: allow");
    replace(&cfg, allow_all);
    assert!(sidecar.wait_for("reload refused", 1), "{}", sidecar.log());
    assert_eq!(decision(port, "delete_file"), 200, "the old chain serves");

    mode(0o700);
    assert!(
        sidecar.wait_for("filter chain reloaded", 1),
        "{}",
        sidecar.log()
    );
    assert_eq!(
        decision(port, "delete_file"),
        502,
        "allowed by the new config"
    );
}
