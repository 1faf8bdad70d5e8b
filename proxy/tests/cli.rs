//! The binary's command line: `validate` names the bad field, `run` serves.

use std::process::Command;

fn portcullis() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn validate_accepts_the_demo_config() {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/config/demo.yaml");
    let out = portcullis()
        .args(["validate", "--config", demo])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("config OK"));
}

#[test]
fn validate_names_the_field_at_fault() {
    let bad = write(
        "bad.yaml",
        "upstream:\n  url: http://127.0.0.1:1\nlimits:\n  max_body_bytes: -4\n",
    );
    let out = portcullis()
        .args(["validate", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("limits.max_body_bytes"), "{err}");

    let typo = write(
        "typo.yaml",
        "upstream:\n  url: http://127.0.0.1:1\npolicy:\n  defualt: deny\n",
    );
    let out = portcullis()
        .args(["validate", "--config"])
        .arg(&typo)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `defualt`"), "{err}");
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let out = portcullis()
        .args(["run", "--config", "/nonexistent/p.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/p.yaml"));
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let cfg = write(
        "run.yaml",
        "listener: {addr: '127.0.0.1:0'}\nadmin: {addr: '127.0.0.1:0'}\nupstream: {url: 'http://127.0.0.1:9'}\n",
    );
    let mut child = portcullis()
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = std::time::Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "did not exit after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(out.contains("portcullis stopped"), "{out}");
}

/// `portcullis run` watches the file it was started from: a policy change
/// is applied without a restart (it was not, before: only `start_from_file`
/// watched the config, and `run` did not use it).
#[test]
fn run_reloads_its_config_file() {
    let text = |rule: &str| {
        format!(
            "listener: {{addr: '127.0.0.1:0'}}\nadmin: {{addr: '127.0.0.1:0'}}\nupstream: {{url: 'http://127.0.0.1:9'}}\nfilter_engine: {{reload_interval: 200ms}}\npolicy:\n  default: allow\n  rules:\n    - {{name: {rule}, action: deny, methods: [tools/call], names: [x]}}\n"
        )
    };
    let cfg = write("reload.yaml", &text("first"));
    let mut child = portcullis()
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(800));
    std::fs::write(&cfg, text("second")).unwrap();
    let start = std::time::Instant::now();
    let reloaded = loop {
        if lines.lock().unwrap().contains("filter chain reloaded") {
            break true;
        }
        if start.elapsed() > std::time::Duration::from_secs(10) {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(reloaded, "no reload logged:\n{}", lines.lock().unwrap());
}
