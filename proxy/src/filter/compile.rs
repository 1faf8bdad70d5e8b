//! Where filters are compiled. Cranelift is the largest memory user a
//! filter brings: compiling the four ready-made filters in the sidecar
//! left about 24 MiB resident for good (allocator arenas of the compiler
//! threads), more than the rest of the process. So the `portcullis run`
//! sidecar never compiles: a short-lived child (`portcullis filter
//! compile`, the same binary with the same engine settings) does, and
//! writes an artifact the sidecar only maps. Artifacts are kept by content
//! and engine fingerprint, so a restart or a reload of an unchanged filter
//! compiles nothing; `portcullis filter compile` also makes them ahead of
//! time (`path:` may name a `.cwasm`).
//!
//! An artifact is native code: whoever can write one can run code in the
//! sidecar. Artifacts come only from the operator (`path:`), from the
//! configured `cache_dir` (which must be the sidecar's alone), or from a
//! private directory made for this process.

use std::{
    hash::{Hash, Hasher},
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};
use wasmtime::{component::Component, Engine, Precompiled};

/// The program that compiles in a child, when set (by `portcullis run`).
/// Unset, filters are compiled in this process (tests, `policy test`).
static COMPILER: OnceLock<PathBuf> = OnceLock::new();

/// Compile filters in children of `program` (this binary), from now on.
pub fn compile_in_child(program: PathBuf) {
    let _ = COMPILER.set(program);
}

/// How long a child may take to compile one filter.
const COMPILE_DEADLINE: Duration = Duration::from_secs(120);

/// What the child needs to build an engine that compiles exactly as the
/// sidecar's would (memory settings change the generated bounds checks).
#[derive(Debug, Clone)]
pub struct ChildArgs {
    pub max_memory: usize,
    pub max_instances: u32,
}

/// A compiled component from `bytes` (a component, or an artifact of
/// `portcullis filter compile`).
pub fn component(
    engine: &Engine,
    bytes: &[u8],
    artifacts: &Path,
    child: &ChildArgs,
) -> Result<Component, String> {
    match Engine::detect_precompiled(bytes) {
        Some(Precompiled::Component) => return deserialize(engine, bytes),
        Some(Precompiled::Module) => {
            return Err("a precompiled core module, not a component".into())
        }
        None => {}
    }
    let Some(program) = COMPILER.get() else {
        return Component::new(engine, bytes).map_err(|e| format!("not a valid component: {e:#}"));
    };
    let file = artifacts.join(artifact_name(engine, bytes));
    if file.exists() {
        match load_artifact(engine, Artifact::File(&file)) {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %format!("{e:#}"), "compiled filter unusable; compiling again");
                let _ = std::fs::remove_file(&file);
            }
        }
    }
    compile_in(program, bytes, &file, child)?;
    load_artifact(engine, Artifact::File(&file))
        .map_err(|e| format!("reading the compiled filter {}: {e:#}", file.display()))
}

fn deserialize(engine: &Engine, bytes: &[u8]) -> Result<Component, String> {
    load_artifact(engine, Artifact::Bytes(bytes)).map_err(|e| {
        format!(
            "a precompiled filter for another engine (Portcullis version, CPU or memory settings): {e:#}; compile it again with `portcullis filter compile`"
        )
    })
}

enum Artifact<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
}

/// The one place compiled code is loaded without compiling.
#[allow(unsafe_code)]
fn load_artifact(engine: &Engine, artifact: Artifact<'_>) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime runs an artifact's code as is, so it must come from
    // a trusted compiler. Files come from this process's own child (in a
    // directory made 0700 for this process) or from the operator's
    // `cache_dir`; bytes from a `.cwasm` the operator named in `path:`,
    // as trusted as this binary. wasmtime still checks that the artifact
    // was built by this version, for this CPU and these settings.
    match artifact {
        Artifact::File(path) => unsafe { Component::deserialize_file(engine, path) },
        Artifact::Bytes(bytes) => unsafe { Component::deserialize(engine, bytes) },
    }
}

/// Content and engine: an artifact of another build or setting never
/// matches.
fn artifact_name(engine: &Engine, bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{hex}-{:016x}.cwasm", h.finish())
}

/// Runs `program filter compile` on `bytes` (through stdin, so that a file
/// changing under a reload cannot be read twice differently) into `out`.
fn compile_in(program: &Path, bytes: &[u8], out: &Path, child: &ChildArgs) -> Result<(), String> {
    let started = Instant::now();
    let mut cmd = Command::new(program);
    cmd.args(["filter", "compile", "--out"])
        .arg(out)
        .arg("--max-memory")
        .arg(child.max_memory.to_string())
        .arg("--max-instances")
        .arg(child.max_instances.to_string())
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut proc = cmd
        .spawn()
        .map_err(|e| format!("cannot start the compiler {}: {e}", program.display()))?;
    if let Some(mut stdin) = proc.stdin.take() {
        stdin
            .write_all(bytes)
            .map_err(|e| format!("sending the filter to the compiler: {e}"))?;
    }
    loop {
        match proc.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = proc.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(format!("compiling failed ({status}): {}", err.trim()));
            }
            Ok(None) if started.elapsed() > COMPILE_DEADLINE => {
                let _ = proc.kill();
                let _ = proc.wait();
                return Err(format!("compiling took more than {COMPILE_DEADLINE:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for the compiler: {e}")),
        }
    }
    tracing::info!(
        artifact = %out.display(),
        ms = started.elapsed().as_millis() as u64,
        "filter compiled in a child process"
    );
    Ok(())
}

/// `portcullis filter compile`: `bytes` compiled for an engine with these
/// settings, written to `out` atomically (a reader never sees half).
pub fn precompile_to(engine: &Engine, bytes: &[u8], out: &Path) -> Result<(), String> {
    let artifact = engine
        .precompile_component(bytes)
        .map_err(|e| format!("not a valid component: {e:#}"))?;
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &artifact).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, out).map_err(|e| format!("writing {}: {e}", out.display()))
}

/// A directory only this process writes to, for artifacts when no
/// `cache_dir` is configured. Removed with the engine.
pub fn private_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let mut random = [0u8; 8];
    getrandom(&mut random);
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let dir = std::env::temp_dir().join(format!(
        "portcullis-filters-{}-{suffix}",
        std::process::id()
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

fn getrandom(buf: &mut [u8]) {
    use ring::rand::SecureRandom;
    let _ = ring::rand::SystemRandom::new().fill(buf);
}
