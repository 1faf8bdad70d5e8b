//! The harness end to end on the one configuration that needs no proxy
//! (direct), plus its refusal of bad arguments. The full smoke run over
//! every configuration is `make bench-smoke`, part of `make test`.

use std::path::PathBuf;
use std::process::Command;

fn harness() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis-bench"))
}

/// portcullis (for `ca`) is built into the same target directory by the
/// same `cargo test --workspace`.
fn portcullis() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portcullis-bench")).with_file_name("portcullis")
}

#[test]
fn an_unknown_configuration_is_refused_by_name() {
    let out = harness()
        .args(["run", "--configs", "a,z"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown configuration \"z\""), "{err}");
}

#[test]
fn a_steal_limit_that_is_no_percentage_is_refused() {
    let out = harness()
        .args(["run", "--configs", "a", "--max-steal", "150"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--max-steal is a percentage"), "{err}");
}

#[test]
fn smoke_run_of_direct_writes_table_json_and_chart() {
    if !portcullis().exists() {
        panic!(
            "{} is missing: run `cargo test --workspace`",
            portcullis().display()
        );
    }
    let dir = std::env::temp_dir().join(format!("portcullis-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = harness()
        .args(["run", "--smoke", "--configs", "a", "--base-port", "18300"])
        .arg("--portcullis")
        .arg(portcullis())
        .arg("--work")
        .arg(dir.join("work"))
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let md = std::fs::read_to_string(dir.join("out/RESULTS.md")).unwrap();
    assert!(md.contains("| a direct |"), "{md}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/results.json")).unwrap()).unwrap();
    let cells = json["cells"].as_array().unwrap();
    // One closed-loop and one open-loop cell, both with calls and no errors.
    assert_eq!(cells.len(), 2, "{json}");
    for c in cells {
        assert!(c["ok"].as_u64().unwrap() > 0, "{c}");
        assert_eq!(c["errors"], 0, "{c}");
    }
    // Every run says how much of the machine the hypervisor took, and a
    // smoke run is never taken again.
    for s in json["samples"].as_array().unwrap() {
        let steal = s["host_steal"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&steal), "{s}");
        assert_eq!(s["attempts"], 1, "{s}");
    }
    assert!(md.contains("host steal %"), "{md}");
    let png = std::fs::read(dir.join("out/latency.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
    let _ = std::fs::remove_dir_all(&dir);
}
