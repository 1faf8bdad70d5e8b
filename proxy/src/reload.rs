//! Hot reload. The config file and every filter file are polled; when one
//! changes, the policy and filters are reloaded, and every other section
//! that changed is named in a warning (it takes effect on restart). On a
//! change, a new chain is built off the request path (on a blocking
//! thread) and swapped in atomically. A chain that fails to build is
//! refused with a clear log, and the old one keeps serving.
//!
//! A poll stats each file and reads it only when its metadata moved (or
//! may not yet tell; see [`Seen`]): hashing every filter's megabyte each
//! second cost a millisecond of the worker's time per second and evicted
//! the request path's caches. Polls run on a blocking thread, so a hung
//! network volume stalls the reloader, never the requests.

use std::{
    collections::{hash_map::DefaultHasher, HashMap},
    hash::Hasher,
    io::Read,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    filter::{build_chain, FilterEngine, FilterMetrics},
    policy::PolicyHandle,
};

/// Hashes of the files a chain was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, Option<u64>)>);

/// Streams the file through the hasher in small reads: a filter's
/// component is about a MiB, and reading it whole put a MiB on the heap
/// each time, which the allocator kept resident.
fn digest(path: &Path) -> Option<u64> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut h = DefaultHasher::new();
    let mut buf = [0u8; 8192];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Some(h.finish()),
            Ok(n) => h.write(buf.get(..n)?),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// What a file's metadata says about its content. The path is followed,
/// so a Kubernetes volume's `..data` symlink swap shows as another inode;
/// `ctime` catches an edit that restored `mtime` and the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// Whether both times are older than `racy` before `now`. A file
    /// written in the same timestamp tick as the stat that preceded its
    /// hash keeps its stamp but not its content (git's "racily clean"
    /// entries); such a file is hashed again until its times are old
    /// enough that a later write must move them. `racy` covers coarse
    /// timestamps (a jiffy on ext4, 2 s on FAT) and a little clock skew.
    fn settled(&self, now: SystemTime, racy: Duration) -> bool {
        let Some(cutoff) = now
            .checked_sub(racy)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        else {
            return false;
        };
        let before = |(s, ns): (i64, i64)| match (u64::try_from(s), u32::try_from(ns)) {
            (Ok(s), Ok(ns)) => Duration::new(s, ns) < cutoff,
            _ => false,
        };
        before(self.mtime) && before(self.ctime)
    }
}

/// How long after a change a file's metadata is not trusted alone.
const RACY: Duration = Duration::from_secs(2);

/// The last digest of a file, and the stamp taken before it was read.
#[derive(Debug, Clone, Copy)]
struct Seen {
    stamp: Stamp,
    digest: u64,
    /// The stamp was settled when taken: an unchanged stamp means an
    /// unchanged file, and the file is not read.
    settled: bool,
}

/// How often every file is read whatever its metadata says. Metadata can
/// miss a change: a network volume whose server clock runs behind ours
/// (a file looks settled at once), a FUSE volume that keeps no ctime,
/// writes through a mapping. This bounds how long such a change waits.
const REREAD_ALL: Duration = Duration::from_secs(60);

/// Digests by path, read again only when the metadata says they may have
/// changed, and every [`REREAD_ALL`].
#[derive(Debug, Default)]
struct Watch {
    seen: HashMap<PathBuf, Seen>,
    /// When every file was last read.
    read_all: Option<std::time::Instant>,
    /// Files read so far (the tests' witness that a settled file is not).
    reads: u64,
}

impl Watch {
    fn digest(&mut self, path: &Path, now: SystemTime) -> Option<u64> {
        let Some(stamp) = Stamp::of(path) else {
            self.seen.remove(path);
            return None;
        };
        if let Some(seen) = self.seen.get(path) {
            if seen.settled && seen.stamp == stamp {
                return Some(seen.digest);
            }
        }
        // Stamped before the read: a write during the read moves the
        // stamp, or falls in the racy window, and is read again next poll.
        self.reads += 1;
        let Some(d) = digest(path) else {
            self.seen.remove(path);
            return None;
        };
        self.seen.insert(
            path.to_path_buf(),
            Seen {
                stamp,
                digest: d,
                settled: stamp.settled(now, RACY),
            },
        );
        Some(d)
    }

    fn fingerprint(&mut self, files: Vec<PathBuf>) -> Fingerprint {
        // Files the config no longer names are forgotten; all of them,
        // every `REREAD_ALL`.
        if self.read_all.is_none_or(|t| t.elapsed() >= REREAD_ALL) {
            self.seen.clear();
            self.read_all = Some(std::time::Instant::now());
        }
        self.seen.retain(|p, _| files.contains(p));
        let now = SystemTime::now();
        Fingerprint(
            files
                .into_iter()
                .map(|p| {
                    let d = self.digest(&p, now);
                    (p, d)
                })
                .collect(),
        )
    }
}

/// The files a chain is built from: each filter's component and the
/// files its config is read from, and the config file.
fn watched(config: &Config, config_path: Option<&Path>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = config
        .filters
        .iter()
        .flat_map(|f| std::iter::once(&f.path).chain(f.config_files.values()))
        .cloned()
        .collect();
    files.extend(config_path.map(Path::to_path_buf));
    files
}

/// `files`, then those of `more` not among them.
fn union(mut files: Vec<PathBuf>, more: &[PathBuf]) -> Vec<PathBuf> {
    for p in more {
        if !files.contains(p) {
            files.push(p.clone());
        }
    }
    files
}

impl Fingerprint {
    /// The entries of `files`, in their order (a file not read: `None`).
    fn only(&self, files: &[PathBuf]) -> Self {
        Self(
            files
                .iter()
                .map(|f| {
                    let d = self.0.iter().find(|(p, _)| p == f).and_then(|(_, d)| *d);
                    (f.clone(), d)
                })
                .collect(),
        )
    }
}

/// One poll on a blocking thread. A poll that panicked loses what was
/// seen (the next one reads every file again) and says nothing.
async fn poll(watch: &mut Watch, files: Vec<PathBuf>) -> Option<Fingerprint> {
    let mut mine = std::mem::take(watch);
    match tokio::task::spawn_blocking(move || {
        let fp = mine.fingerprint(files);
        (mine, fp)
    })
    .await
    {
        Ok((back, fp)) => {
            *watch = back;
            Some(fp)
        }
        Err(e) => {
            tracing::error!(error = %e, "filter reload poll failed");
            None
        }
    }
}

/// What the files a chain is built from held when it was built. Taken
/// before the chain reads them: a file changed while the chain is built
/// then differs from it, and is reloaded at the first poll. (Taken after,
/// such a change was taken as seen and never applied.)
pub struct Baseline {
    watch: Watch,
    seen: Fingerprint,
}

/// The config file's digest, taken before it is loaded; see [`Baseline`].
pub struct ConfigRead {
    path: PathBuf,
    digest: Option<u64>,
}

impl ConfigRead {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file: call it on a blocking thread, before loading it.
    pub fn before_load(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            digest: digest(path),
        }
    }
}

impl Baseline {
    /// Reads every filter file: call it on a blocking thread.
    pub fn take(config: &Config, config_file: Option<ConfigRead>) -> Self {
        let mut watch = Watch::default();
        let Fingerprint(mut seen) = watch.fingerprint(watched(config, None));
        // Not in `watch`: the first poll reads it, and a change made since
        // it was loaded differs from this digest.
        seen.extend(config_file.map(|c| (c.path, c.digest)));
        Self {
            watch,
            seen: Fingerprint(seen),
        }
    }
}

/// When a refused reload is tried again with nothing changed. A refusal
/// may be transient: a compile child killed (the OOM killer), `fork`
/// failing (EAGAIN), a cache directory's permissions or a volume being
/// repaired. No file change may follow to trigger another try, and the
/// sidecar would serve the old chain until one did. So a refused reload
/// is tried again after [`RETRY_FIRST`], then twice as long each time up
/// to [`RETRY_MAX`]; a refusal after a change starts over, and an
/// applied reload stops it. A refusal that is not transient (a config
/// with an error) costs a log line and a failed build each time, at
/// most every five minutes; without a `cache_dir`, that build compiles
/// the chain's filters again in a child.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Retry {
    /// The wait before the pending try (zero: nothing to retry).
    wait: Duration,
    at: Option<std::time::Instant>,
}

const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(300);

impl Retry {
    fn due(&self, now: std::time::Instant) -> bool {
        self.at.is_some_and(|at| now >= at)
    }

    /// After a refusal: `changed` says whether files had changed since
    /// the last reload (a new refusal) or not (a retry refused again).
    fn refused(self, changed: bool, now: std::time::Instant) -> Self {
        let wait = if changed || self.wait.is_zero() {
            RETRY_FIRST
        } else {
            (self.wait * 2).min(RETRY_MAX)
        };
        Self {
            wait,
            at: now.checked_add(wait),
        }
    }
}

pub struct Reloader {
    pub engine: Arc<FilterEngine>,
    pub handle: Arc<PolicyHandle>,
    pub metrics: FilterMetrics,
    pub config: Config,
    pub config_path: Option<PathBuf>,
}

impl Reloader {
    /// Polls until `stop`; `baseline` is what the running chain was
    /// built from.
    pub async fn run(mut self, baseline: Baseline, stop: CancellationToken) {
        let Baseline {
            mut watch,
            mut seen,
        } = baseline;
        // Files a refused config named that the one in force does not: a
        // filter missing when its config came is watched until it comes.
        let mut pending: Vec<PathBuf> = Vec::new();
        let mut retry = Retry::default();
        let mut tick = tokio::time::interval(self.config.filter_engine.reload_interval);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let files = union(self.watched(), &pending);
            let Some(now) = poll(&mut watch, files.clone()).await else {
                continue;
            };
            let changed = now != seen;
            if !changed && !retry.due(std::time::Instant::now()) {
                continue;
            }
            let interval = self.config.filter_engine.reload_interval;
            let applied;
            (seen, pending, applied) = self.reload(&mut watch, now, files, pending).await;
            retry = if applied {
                Retry::default()
            } else {
                let next = retry.refused(changed, std::time::Instant::now());
                tracing::warn!(
                    retry_in = ?next.wait,
                    "the refused reload will be tried again (sooner if a watched file changes)"
                );
                next
            };
            if self.config.filter_engine.reload_interval != interval {
                tick = tokio::time::interval(self.config.filter_engine.reload_interval);
            }
        }
    }

    fn watched(&self) -> Vec<PathBuf> {
        watched(&self.config, self.config_path.as_deref())
    }

    /// Reloads after `now` (of `files`) differed from what was seen (or a
    /// refused reload is tried again), and says what is now seen, which
    /// files stay `pending`, and whether the reload was applied. What is seen
    /// is what the new chain was built from, read before the build, so
    /// that a change made while it was built differs at the next poll and
    /// is reloaded. When the reload is refused, it is what was read of
    /// the files in force and of the refused config's, so that the
    /// refused change is not tried again at every poll: only when one of
    /// them changes, or when [`Retry`] says so.
    async fn reload(
        &mut self,
        watch: &mut Watch,
        now: Fingerprint,
        files: Vec<PathBuf>,
        pending: Vec<PathBuf>,
    ) -> (Fingerprint, Vec<PathBuf>, bool) {
        let next = match &self.config_path {
            // The environment overrides what the injected pod sets, as at
            // start (`Config::load_with_env`), so that a reload does not
            // see those sections as changed.
            Some(path) => match Config::load_with_env(path, |name| std::env::var(name).ok()) {
                Ok(next) => next,
                Err(e) => {
                    self.refused(&e.to_string());
                    return (now, pending, false);
                }
            },
            None => self.config.clone(),
        };
        let named = watched(&next, self.config_path.as_deref());
        let all = union(files.clone(), &named);
        let read = if all == files {
            now
        } else {
            self.read_before_build(watch, now, all.clone()).await
        };
        let (engine, metrics, candidate) =
            (self.engine.clone(), self.metrics.clone(), next.clone());
        let built =
            tokio::task::spawn_blocking(move || build_chain(&engine, &candidate.chain(), &metrics))
                .await;
        let error = match built {
            Ok(Ok(chain)) => {
                let names = chain.filter_names().join(", ");
                self.handle.swap(Box::new(chain));
                self.metrics.reload("success");
                tracing::info!(filters = %names, "filter chain reloaded");
                let restart = self.config.restart_needed(&next);
                if !restart.is_empty() {
                    tracing::warn!(
                        sections = %restart.join(", "),
                        "these config sections changed but take effect on restart only"
                    );
                }
                self.config = next;
                return (read.only(&named), Vec::new(), true);
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("reload task failed: {e}"),
        };
        self.refused(&error);
        let in_force = self.watched();
        let pending = all.into_iter().filter(|p| !in_force.contains(p)).collect();
        (read, pending, false)
    }

    /// `files` as read now, before a chain reads them, but the config file
    /// as `now` read it, before it was loaded (a change since then
    /// differs at the next poll). `now` where the poll fails.
    async fn read_before_build(
        &self,
        watch: &mut Watch,
        now: Fingerprint,
        files: Vec<PathBuf>,
    ) -> Fingerprint {
        let Some(Fingerprint(entries)) = poll(watch, files).await else {
            return now;
        };
        let config_path = self.config_path.as_deref();
        Fingerprint(
            entries
                .into_iter()
                .map(|(path, d)| match now.0.iter().find(|(p, _)| *p == path) {
                    Some((_, was)) if config_path == Some(path.as_path()) => (path, *was),
                    _ => (path, d),
                })
                .collect(),
        )
    }

    fn refused(&self, why: &str) {
        self.metrics.reload("failure");
        tracing::error!(error = %why, "filter chain reload refused; the previous chain keeps serving");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_reload_is_tried_again_less_and_less_often() {
        let t0 = std::time::Instant::now();
        let idle = Retry::default();
        assert!(!idle.due(t0 + Duration::from_secs(3600)), "nothing refused");
        let first = idle.refused(true, t0);
        assert_eq!(first.wait, RETRY_FIRST);
        assert!(!first.due(t0 + RETRY_FIRST / 2));
        assert!(first.due(t0 + RETRY_FIRST));
        // Refused again with nothing changed: twice as long, up to the cap.
        let mut r = first;
        let mut waits = Vec::new();
        for _ in 0..10 {
            r = r.refused(false, t0);
            waits.push(r.wait.as_secs());
        }
        assert_eq!(waits, [4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        // A refusal after a change starts over.
        assert_eq!(r.refused(true, t0).wait, RETRY_FIRST);
    }

    #[test]
    fn the_digest_follows_every_byte_of_a_large_file() {
        let dir = std::env::temp_dir().join(format!("pc-reload-digest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("filter.wasm");
        let mut bytes = vec![7u8; 100_000];
        std::fs::write(&path, &bytes).unwrap();
        let first = digest(&path).unwrap();
        assert_eq!(digest(&path), Some(first), "same bytes, same digest");
        // A change past the first read is seen.
        bytes[99_999] = 8;
        std::fs::write(&path, &bytes).unwrap();
        assert_ne!(digest(&path), Some(first));
        assert_eq!(digest(&dir.join("missing")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pc-reload-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Seconds from now, where a file just written is settled.
    fn later() -> SystemTime {
        SystemTime::now() + RACY + Duration::from_secs(1)
    }

    #[test]
    fn a_settled_file_is_not_read_again_until_its_metadata_moves() {
        let dir = scratch("settled");
        let path = dir.join("filter.wasm");
        std::fs::write(&path, b"first").unwrap();
        let mut w = Watch::default();
        let first = w.digest(&path, later());
        assert_eq!((first, w.reads), (digest(&path), 1));
        for _ in 0..3 {
            assert_eq!(w.digest(&path, later()), first);
        }
        assert_eq!(w.reads, 1, "an unchanged, settled file is only stat'd");
        // A longer file has another stamp.
        std::fs::write(&path, b"second!").unwrap();
        let second = w.digest(&path, later());
        assert_eq!(w.reads, 2);
        assert_ne!(second, first);
        assert_eq!(second, digest(&path));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Two writes of the same length within one timestamp tick leave the
    /// same stamp: a file changed within `RACY` of its stat is read at
    /// every poll, so the second write is seen.
    #[test]
    fn a_racily_changed_file_is_read_until_it_settles() {
        let dir = scratch("racy");
        let path = dir.join("config.yaml");
        std::fs::write(&path, b"policy: a").unwrap();
        let mut w = Watch::default();
        let now = SystemTime::now();
        let a = w.digest(&path, now);
        assert_eq!(w.digest(&path, now), a);
        assert_eq!(w.reads, 2, "not settled: read at every poll");
        std::fs::write(&path, b"policy: b").unwrap();
        let b = w.digest(&path, now);
        assert_eq!(w.reads, 3);
        assert_ne!(a, b);
        assert_eq!(b, digest(&path));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A Kubernetes volume: `policy.yaml` is a symlink to
    /// `..data/policy.yaml`, and `..data` a symlink to a timestamped
    /// directory, swapped by a rename for an update. The new file has the
    /// same length and mtime; its inode differs.
    #[test]
    fn a_volume_update_by_symlink_swap_is_seen() {
        let dir = scratch("swap");
        for (sub, text) in [("..2026_01", b"rules: one"), ("..2026_02", b"rules: two")] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
            std::fs::write(dir.join(sub).join("policy.yaml"), text).unwrap();
        }
        let mtime = std::fs::metadata(dir.join("..2026_01/policy.yaml"))
            .unwrap()
            .modified()
            .unwrap();
        std::fs::File::options()
            .write(true)
            .open(dir.join("..2026_02/policy.yaml"))
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        std::os::unix::fs::symlink("..2026_01", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/policy.yaml", dir.join("policy.yaml")).unwrap();
        let path = dir.join("policy.yaml");
        let mut w = Watch::default();
        let one = w.digest(&path, later());
        assert_eq!(w.digest(&path, later()), one);
        assert_eq!(w.reads, 1);
        std::os::unix::fs::symlink("..2026_02", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        let two = w.digest(&path, later());
        assert_eq!(w.reads, 2);
        assert_ne!(two, one);
        assert_eq!(two, digest(&path));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Metadata can miss a change (see `REREAD_ALL`): every file is read
    /// again after a while, settled or not.
    #[test]
    fn every_file_is_read_again_now_and_then() {
        let dir = scratch("reread");
        let path = dir.join("filter.wasm");
        std::fs::write(&path, b"x").unwrap();
        let mut w = Watch::default();
        // Settled as soon as it is read (the clock of a server behind ours).
        let now = later();
        let first = w.digest(&path, now);
        w.read_all = Some(std::time::Instant::now());
        w.fingerprint(vec![path.clone()]);
        assert_eq!(w.reads, 1);
        w.read_all = std::time::Instant::now().checked_sub(REREAD_ALL);
        let fp = w.fingerprint(vec![path.clone()]);
        assert_eq!(w.reads, 2, "read again after REREAD_ALL");
        assert_eq!(fp, Fingerprint(vec![(path.clone(), first)]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_goes_and_comes_back_is_read_again() {
        let dir = scratch("gone");
        let path = dir.join("filter.wasm");
        let mut w = Watch::default();
        assert_eq!(w.digest(&path, later()), None);
        std::fs::write(&path, b"x").unwrap();
        let there = w.digest(&path, later());
        assert!(there.is_some());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(w.digest(&path, later()), None);
        std::fs::write(&path, b"x").unwrap();
        assert_eq!(w.digest(&path, later()), there);
        assert_eq!(w.reads, 2);
        // Files no longer named are forgotten.
        let fp = w.fingerprint(vec![dir.join("other")]);
        assert_eq!(fp, Fingerprint(vec![(dir.join("other"), None)]));
        assert!(w.seen.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
