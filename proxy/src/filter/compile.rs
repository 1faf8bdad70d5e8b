//! Where filters are compiled. Cranelift is the largest memory user a
//! filter brings: compiling the four ready-made filters in the sidecar
//! left about 24 MiB resident for good (allocator arenas of the compiler
//! threads), more than the rest of the process. So the `portcullis run`
//! sidecar never compiles: a short-lived child (`portcullis filter
//! compile`, the same binary with the same engine settings) does, and
//! hands the artifact back on its stdout; the sidecar only maps it. No
//! writable directory is needed (the injected sidecar's root filesystem
//! is read-only). With `cache_dir`, artifacts are also kept there by
//! content and engine fingerprint, so a restart or a reload of an
//! unchanged filter compiles nothing.
//!
//! An artifact is native code: whoever can write one can run code in the
//! sidecar, outside the WASM sandbox. So an artifact is loaded only from
//! the sidecar's own child, from a `cache_dir` subdirectory only the
//! sidecar's user can write, or from a `path:` the operator marked
//! `precompiled: true`. A filter file that is an artifact without that
//! mark is refused: a policy author who may replace a `.wasm` must not get
//! native code in.

use std::{
    hash::{Hash, Hasher},
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};
use wasmtime::{component::Component, Engine, Precompiled};

use super::engine::MemoryLayout;

/// The program that compiles in a child, when set (by `portcullis run`).
/// Unset, filters are compiled in this process (tests, `policy test`).
static COMPILER: OnceLock<PathBuf> = OnceLock::new();

/// Compile filters in children of `program` (this binary), from now on.
pub fn compile_in_child(program: PathBuf) {
    let _ = COMPILER.set(program);
}

/// How long a child may take to compile one filter.
const COMPILE_DEADLINE: Duration = Duration::from_secs(120);
/// The largest artifact accepted from a child.
const MAX_ARTIFACT: u64 = 256 << 20;
/// What is kept of a child's stderr, for the error message.
const MAX_STDERR: usize = 16 << 10;

/// What the child needs to build an engine that compiles exactly as the
/// sidecar's would. The memory layout changes the generated bounds checks;
/// it is handed over as the sidecar chose it rather than derived again in
/// the child, whose address-space limit may since have changed.
#[derive(Debug, Clone)]
pub struct ChildArgs {
    pub max_memory: usize,
    pub max_instances: u32,
    pub layout: MemoryLayout,
}

/// A compiled component from `bytes`: a component, or (only when
/// `precompiled`, a `.cwasm` path) an artifact of `portcullis filter
/// compile`.
pub fn component(
    engine: &Engine,
    bytes: &[u8],
    precompiled: bool,
    cache: Option<&Path>,
    child: &ChildArgs,
) -> Result<Component, String> {
    match (Engine::detect_precompiled(bytes), precompiled) {
        (Some(Precompiled::Component), true) => return deserialize(engine, bytes),
        (Some(_), _) => {
            return Err(
                "a precompiled artifact (native code, outside the sandbox): one is loaded only from a path the config names with the .cwasm extension".into(),
            )
        }
        (None, true) => {
            return Err(
                "a .cwasm path, but not an artifact of `portcullis filter compile`".into(),
            )
        }
        (None, false) => {}
    }
    let Some(program) = COMPILER.get() else {
        return Component::new(engine, bytes).map_err(|e| format!("not a valid component: {e:#}"));
    };
    let file = cache.map(|dir| dir.join(artifact_name(engine, bytes)));
    if let Some(file) = file.as_deref().filter(|f| f.is_file()) {
        match open_own(file)
            .map_err(wasmtime::Error::from)
            .and_then(|f| load_artifact(engine, Artifact::File(&fd_path(&f))))
        {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %format!("{e:#}"), "cached filter unusable; compiling again")
            }
        }
    }
    let artifact = compile_in(program, bytes, child)?;
    let path = artifact.path();
    // Mapped from the cached copy when there is one, as after a restart:
    // the memory file's pages are memory of this process for as long as
    // the filter is loaded, all of them (3 MiB for the bench's two
    // filters), while a file's are page cache, resident only where the
    // code runs, and shared with every replica that maps the same file.
    if let Some(file) = &file {
        // Mapped through the descriptor it was written with, not by name:
        // the directory was checked before the compile, which takes
        // seconds, and a name can be swapped in that time.
        match persist_copy(&path, file) {
            Ok(written) => match load_artifact(engine, Artifact::File(&fd_path(&written))) {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %format!("{e:#}"), "cached filter unusable; mapping the compiled one")
                }
            },
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "compiled filter not cached")
            }
        }
    }
    // Mapped from the memory file, so the artifact never passes through
    // the heap (whose freed pages the allocator would keep).
    load_artifact(engine, Artifact::File(&path))
        .map_err(|e| format!("loading the compiled filter: {e:#}"))
}

/// How often a component's memory images are tried before its load is
/// refused, and the pause after the first failure (doubled each time).
const IMAGE_ATTEMPTS: u32 = 4;
const IMAGE_PAUSE: Duration = Duration::from_millis(25);

/// Builds the copy-on-write images of the component's linear memories now,
/// at load, with a few tries. Where the code was not mapped from a file
/// (a component compiled in this process, or an artifact read as bytes),
/// wasmtime writes each image to a memfd and seals it against writes.
/// Linux refused that seal here ("cannot add seals to the memfd") in two
/// runs of one test on 2026-12-04, right after a workspace build, and in
/// none of about 30 runs since; wasmtime's message dropped the errno. Our
/// reading (a hypothesis): the kernel refuses a write seal (`EBUSY`)
/// while a page of the file has an extra reference for longer than it
/// waits, as a page being migrated by memory compaction on a VM whose
/// vCPU was descheduled would. wasmtime does not remember the failure
/// (the next try builds the image again), so a pause and another try is
/// the remedy; a lasting failure still refuses the load, now with the
/// kernel's reason.
pub fn prepare_images(component: &Component) -> Result<(), String> {
    retry(
        IMAGE_ATTEMPTS,
        IMAGE_PAUSE,
        || component.initialize_copy_on_write_image(),
        std::thread::sleep,
    )
    .map_err(|e| format!("preparing the filter's memory image: {e}"))
}

/// `attempt` until it succeeds, at most `attempts` times, pausing (with
/// `sleep`) `pause`, then twice as long, between tries. The last error,
/// with its causes, when every try failed.
fn retry(
    attempts: u32,
    pause: Duration,
    mut attempt: impl FnMut() -> wasmtime::Result<()>,
    mut sleep: impl FnMut(Duration),
) -> Result<(), String> {
    let mut pause = pause;
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt() {
            Ok(()) => return Ok(()),
            Err(e) if tries >= attempts => {
                return Err(format!("{} (tried {tries} times)", with_causes(e)))
            }
            Err(e) => {
                let error = with_causes(e);
                tracing::warn!(%error, tries, "filter memory image not prepared; trying again");
                sleep(pause);
                pause = pause.saturating_mul(2);
            }
        }
    }
}

/// `e` and every cause under it. wasmtime's own formatting follows only
/// its context chain, not the `source` of an error it wraps: the memfd
/// error it returns shows as "cannot add seals to the memfd", without
/// the kernel's reason below it.
fn with_causes(e: wasmtime::Error) -> String {
    let e: Box<dyn std::error::Error + Send + Sync> = e.into();
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        // A wrapper may repeat its cause's text as its own.
        if !text.ends_with(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    text
}

/// An artifact a child wrote into an anonymous memory file of this process
/// (no writable directory needed, and no other process can reach it).
struct MemoryFile(std::fs::File);

impl MemoryFile {
    fn new() -> Result<Self, String> {
        let fd = rustix::fs::memfd_create("portcullis-filter", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| format!("memfd_create: {e}"))?;
        Ok(Self(std::fs::File::from(fd)))
    }

    /// A path that opens this same file (at its start).
    fn path(&self) -> PathBuf {
        fd_path(&self.0)
    }
}

/// A path that opens the file `file` is open on, whatever its name now.
fn fd_path(file: &std::fs::File) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Opens a cached artifact only if it is a regular file (not a link) of
/// this user that no one else can write: the directory was checked, but a
/// directory shared with other users (an `emptyDir`) can have ours swapped
/// for theirs between that check and this open.
fn open_own(file: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(file)?;
    let meta = f.metadata()?;
    let uid = rustix::process::geteuid().as_raw();
    if !meta.is_file() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(
            "not a file of this user that no one else can write",
        ));
    }
    Ok(f)
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
    // a trusted compiler: this process's own child (bytes from its
    // stdout), a cache directory only this user can write (checked by
    // `cache_dir`), or a `.cwasm` file the operator's config names, as
    // trusted as this binary. wasmtime still checks that the artifact was
    // built by this version, for this CPU and these settings.
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

/// Writes what `fill` writes as `file` atomically: a unique temporary name
/// in the same directory, synced, then renamed, so a reader (another
/// replica sharing the directory included) never maps half of one.
/// Returns the file, still open: what was written is what it reads,
/// whatever happens to the name.
fn persist_with(
    file: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = file.with_extension(format!("tmp-{}-{}", std::process::id(), random_hex()));
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = fill(&mut out).and_then(|()| out.sync_all());
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, file)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(out)
}

fn persist_copy(from: &Path, file: &Path) -> std::io::Result<std::fs::File> {
    persist_with(file, |out| {
        std::io::copy(&mut std::fs::File::open(from)?, out).map(|_| ())
    })
}

/// Kills and reaps the child on every way out, so that no error leaves a
/// compiler running or a zombie behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Reads at most `max` bytes of `from` on a thread of its own, so that a
/// child writing a lot never blocks on a full pipe.
fn drain(
    mut from: impl Read + Send + 'static,
    max: usize,
) -> std::thread::JoinHandle<std::io::Result<Vec<u8>>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        (&mut from)
            .take(u64::try_from(max).unwrap_or(u64::MAX) + 1)
            .read_to_end(&mut buf)?;
        // Whatever is beyond the limit is read and dropped, so the child
        // can finish (and the caller then refuses the oversize output).
        std::io::copy(&mut from, &mut std::io::sink())?;
        Ok(buf)
    })
}

/// Runs `program filter compile` with `bytes` on its stdin (so that a file
/// changing under a reload cannot be read twice differently) and returns
/// the artifact it writes on its stdout, a memory file of ours.
fn compile_in(program: &Path, bytes: &[u8], child: &ChildArgs) -> Result<MemoryFile, String> {
    let started = Instant::now();
    let artifact = MemoryFile::new()?;
    let stdout = artifact
        .0
        .try_clone()
        .map_err(|e| format!("sharing the memory file: {e}"))?;
    let spawned = Command::new(program)
        .args(["filter", "compile", "--max-memory"])
        .arg(child.max_memory.to_string())
        .arg("--max-instances")
        .arg(child.max_instances.to_string())
        .arg("--memory-layout")
        .arg(child.layout.to_string())
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the compiler {}: {e}", program.display()))?;
    let mut proc = Reaped(spawned);
    let (Some(stdin), Some(stderr)) = (proc.0.stdin.take(), proc.0.stderr.take()) else {
        return Err("the compiler's pipes are missing".into());
    };
    let input = bytes.to_vec();
    let feeding = std::thread::spawn(move || {
        let mut stdin = stdin;
        stdin.write_all(&input)
    });
    let errors = drain(stderr, MAX_STDERR);
    let status = finish(&mut proc, started)?;
    let fed = feeding
        .join()
        .map_err(|_| "the compiler's input thread panicked")?;
    let stderr = errors
        .join()
        .ok()
        .and_then(Result::ok)
        .map(|e| String::from_utf8_lossy(&e).trim().to_string())
        .unwrap_or_default();
    if !status.success() {
        return Err(format!("compiling failed ({status}): {stderr}"));
    }
    fed.map_err(|e| format!("sending the filter to the compiler: {e}"))?;
    let size = artifact
        .0
        .metadata()
        .map_err(|e| format!("reading the compiled filter: {e}"))?
        .len();
    if size == 0 || size > MAX_ARTIFACT {
        return Err(format!(
            "the compiler wrote {size} bytes (at most {MAX_ARTIFACT})"
        ));
    }
    tracing::info!(
        ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        bytes = size,
        "filter compiled in a child process"
    );
    Ok(artifact)
}

/// The child's exit, within the deadline (killed and reaped past it, by
/// [`Reaped`]).
fn finish(proc: &mut Reaped, started: Instant) -> Result<std::process::ExitStatus, String> {
    loop {
        match proc.0.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if started.elapsed() > COMPILE_DEADLINE => {
                return Err(format!("compiling took more than {COMPILE_DEADLINE:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for the compiler: {e}")),
        }
    }
}

/// `portcullis filter compile`: `bytes` compiled for an engine with these
/// settings, to `out` (written atomically) or to stdout.
pub fn precompile(engine: &Engine, bytes: &[u8], out: Option<&Path>) -> Result<(), String> {
    let artifact = engine
        .precompile_component(bytes)
        .map_err(|e| format!("not a valid component: {e:#}"))?;
    match out {
        Some(path) => persist_with(path, |out| out.write_all(&artifact))
            .map(drop)
            .map_err(|e| format!("writing {}: {e}", path.display())),
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&artifact)
                .and_then(|()| stdout.flush())
                .map_err(|e| format!("writing the artifact: {e}"))
        }
    }
}

/// The directory artifacts are cached in under `cache_dir`: a
/// subdirectory of this user's, made 0700 and refused if anyone else could
/// write to it (an artifact there is run as native code). `cache_dir`
/// itself may be shared (an `emptyDir` is world-writable).
pub fn cache_dir(root: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = rustix::process::geteuid().as_raw();
    let dir = root.join(format!("portcullis-artifacts-{uid}"));
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
    {
        Ok(()) => {}
        Err(e) => return Err(format!("creating {}: {e}", dir.display())),
    }
    let meta =
        std::fs::symlink_metadata(&dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} must be a directory of user {uid} that no one else can write (compiled filters there run as native code)",
            dir.display()
        ));
    }
    Ok(dir)
}

fn random_hex() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memfd crate's error: its text without the kernel's reason,
    /// which is its `source`.
    #[derive(Debug)]
    struct Seal(std::io::Error);

    impl std::fmt::Display for Seal {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("cannot add seals to the memfd")
        }
    }

    impl std::error::Error for Seal {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn busy() -> wasmtime::Error {
        wasmtime::Error::new(Seal(std::io::Error::from_raw_os_error(16)))
    }

    #[test]
    fn a_memory_image_that_fails_then_succeeds_is_tried_again() {
        let mut failures = 2;
        let mut pauses = Vec::new();
        let out = retry(
            4,
            Duration::from_millis(25),
            || {
                if failures == 0 {
                    return Ok(());
                }
                failures -= 1;
                Err(busy())
            },
            |d| pauses.push(d),
        );
        assert_eq!(out, Ok(()));
        assert_eq!(
            pauses,
            [Duration::from_millis(25), Duration::from_millis(50)]
        );
    }

    #[test]
    fn a_memory_image_that_keeps_failing_refuses_with_the_kernels_reason() {
        let mut tries = 0;
        let mut pauses = 0;
        let out = retry(
            3,
            Duration::from_millis(25),
            || {
                tries += 1;
                Err(busy())
            },
            |_| pauses += 1,
        );
        assert_eq!(tries, 3);
        assert_eq!(pauses, 2);
        let why = out.unwrap_err();
        assert!(why.starts_with("cannot add seals to the memfd: "), "{why}");
        assert!(why.contains("os error 16"), "{why}");
        assert!(why.ends_with("(tried 3 times)"), "{why}");
    }

    #[test]
    fn a_loaded_component_has_its_memory_image() {
        // A component whose module has a data segment: its image is built
        // in a memfd (nothing here is mapped from a file), which this
        // process then holds open.
        let engine = Engine::new(wasmtime::Config::new().memory_init_cow(true)).unwrap();
        let component = Component::new(
            &engine,
            r#"(component (core module $m (memory 1) (data (i32.const 0) "portcullis")))"#,
        )
        .unwrap();
        // By inode: other tests in this process open and close images too.
        let images = || -> std::collections::HashSet<u64> {
            use std::os::unix::fs::MetadataExt;
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| {
                    let path = e.ok()?.path();
                    let link = std::fs::read_link(&path).ok()?;
                    link.to_string_lossy()
                        .contains("memfd:wasm-memory-image")
                        .then(|| std::fs::metadata(&path).ok().map(|m| m.ino()))?
                })
                .collect()
        };
        let before = images();
        assert_eq!(prepare_images(&component), Ok(()));
        assert!(
            images().difference(&before).count() > 0,
            "no memory image was built"
        );
    }

    /// A cached artifact is opened only if it is a regular file of this
    /// user that no one else can write, and never through a link.
    #[test]
    fn only_an_own_private_file_is_opened_as_a_cached_artifact() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pc-open-own-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let own = dir.join("a.cwasm");
        std::fs::write(&own, b"x").unwrap();
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(open_own(&own).is_ok());
        let link = dir.join("link.cwasm");
        std::os::unix::fs::symlink(&own, &link).unwrap();
        assert!(open_own(&link).is_err(), "a link");
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o622)).unwrap();
        assert!(open_own(&own).is_err(), "writable by others");
        assert!(open_own(&dir).is_err(), "a directory");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
