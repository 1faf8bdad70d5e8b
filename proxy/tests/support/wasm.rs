//! Builds the filter components once per test binary, in a target
//! directory of their own (so the outer `cargo test` lock is not needed).

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

const CRATES: &[&str] = &[
    "tool-rbac",
    "arg-guard",
    "rate-limit",
    "redact",
    "fault-filter",
    "declared-filter",
    "v0_1-filter",
    "cedar-filter",
    "rego-filter",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    workspace().join("target").join("filter-wasm")
}

/// The path of a filter's `.wasm`, building all filters on first use.
/// `make test` has built them already (`make filters`, one build of the
/// large Cedar and Rego components instead of two) and says where, in
/// `PORTCULLIS_PREBUILT_FILTERS`.
pub fn filter(name: &str) -> PathBuf {
    let file = format!("{}.wasm", name.replace('-', "_"));
    if let Some(dir) = std::env::var_os("PORTCULLIS_PREBUILT_FILTERS") {
        let path = Path::new(&dir).join(&file);
        assert!(
            path.is_file(),
            "{} is missing: `make filters` builds it",
            path.display()
        );
        return path;
    }
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace())
            .args([
                "build",
                "--quiet",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
            ])
            .arg(target_dir());
        for c in CRATES {
            cmd.args(["-p", c]);
        }
        let out = cmd.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    if let Err(e) = built {
        panic!("building filters for wasm32-wasip2 failed (is the target installed?): {e}");
    }
    target_dir().join("wasm32-wasip2/release").join(file)
}
