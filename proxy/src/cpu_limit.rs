//! The CPU limit of the sidecar's cgroup, if it has one.
//!
//! `std::thread::available_parallelism` folds a limit into one count of
//! CPUs and cannot say whether there was a limit at all: a pod with no CPU
//! limit on a 64-core node and a pod limited to 64 CPUs look the same. The
//! sidecar sizes its runtime differently in the two cases (see
//! [`choose_workers`]), so it reads the limit itself.
//!
//! cgroup v2 (`cpu.max`) and v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`)
//! are read along the process's cgroup path and every parent up to the
//! mount, and the smallest limit on the way up is the one that binds. With
//! a cgroup namespace (containerd and CRI-O on cgroup v2) the sidecar sees
//! only its own container's cgroup, so what counts there is the sidecar
//! container's own CPU limit; a pod-level limit above it is not seen.

use std::path::{Path, PathBuf};

/// The CPUs the process's cgroup may use (1.5 for a 1500m limit), or
/// `None` when no limit is set or none can be read.
pub fn limit() -> Option<f64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    limit_under(Path::new("/sys/fs/cgroup"), &cgroups)
}

/// The worker threads for a runtime of the sidecar: [`choose_workers`]
/// with this process's environment, affinity and cgroup limit. `None`:
/// let tokio decide (TOKIO_WORKER_THREADS is set).
pub fn runtime_workers(asked: Option<u16>) -> Option<usize> {
    let tokio_env = std::env::var_os("TOKIO_WORKER_THREADS").is_some();
    choose_workers(asked, tokio_env, schedulable(), limit())
}

/// How many worker threads the sidecar's runtime gets: what the operator
/// asked for; else (unless TOKIO_WORKER_THREADS is set, which tokio reads
/// itself: None) one per CPU of the cgroup's CPU limit, rounded up and at
/// most the CPUs it may be scheduled on; one when there is no limit.
///
/// Why one without a limit: a sidecar's pod usually sets a CPU request and
/// no limit, and then every core of the node is "available" although the
/// pod asked for a share of one (50m by default). tokio would start one
/// worker per core, and more workers are not cheaper: on the bench's
/// 2-vCPU VM, shared with the load and the upstream, two workers parked
/// or were preempted (by the load and the upstream) about once per call
/// and contended for malloc's lock, and one worker served the same calls with about 45 % less CPU
/// (bench/README.md, twelfth and thirteenth passes). A CPU limit of N is
/// the operator granting N CPUs, so the sidecar may use them all; a long
/// filter evaluation then holds one worker, not every call.
fn choose_workers(
    asked: Option<u16>,
    tokio_env: bool,
    cpus: usize,
    limit: Option<f64>,
) -> Option<usize> {
    match (asked, limit) {
        (Some(n), _) => Some(usize::from(n)),
        (None, _) if tokio_env => None,
        // A limit is a float of CPUs (1.5 for 1500m): rounded up, so 1500m
        // gets two workers and 500m one.
        (None, Some(limit)) => Some((limit.ceil() as usize).clamp(1, cpus.max(1))),
        (None, None) => Some(1),
    }
}

/// The CPUs the process may be scheduled on (its affinity mask), whatever
/// its cgroup's limit. Not `available_parallelism`, which also rounds a
/// limit down (1500m reads as one CPU).
pub fn schedulable() -> usize {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => usize::try_from(set.count()).unwrap_or(1).max(1),
        Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// [`limit`] with the cgroup mount and `/proc/self/cgroup` given, for tests.
fn limit_under(mount: &Path, cgroups: &str) -> Option<f64> {
    cgroups.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        // A path that climbs out of the namespace (`/../x`, a process
        // moved out of the cgroup the namespace was made at) names nothing
        // under the mount: only the mount's own limit is read.
        let relative = match path.split('/').any(|part| part == "..") {
            true => "",
            false => path.trim_start_matches('/'),
        };
        if controllers.is_empty() {
            // v2: one unified hierarchy.
            smallest(&mount.join(relative), mount, read_v2)
        } else if controllers.split(',').any(|c| c == "cpu") {
            // v1: the cpu controller's own hierarchy, mounted as `cpu`
            // (often a link to `cpu,cpuacct`).
            let mount = mount.join("cpu");
            smallest(&mount.join(relative), &mount, read_v1)
        } else {
            None
        }
    })
}

/// The smallest limit on `dir` and its parents up to `mount`. A path that
/// does not exist under the mount (a container without its own cgroup
/// namespace sees the host's path, while the mount shows its own cgroup
/// as the root) is skipped, down to the mount itself.
fn smallest(dir: &Path, mount: &Path, read: fn(&Path) -> Option<f64>) -> Option<f64> {
    let mut found: Option<f64> = None;
    let mut at: Option<PathBuf> = Some(dir.to_path_buf());
    while let Some(d) = at {
        if let Some(cpus) = read(&d) {
            found = Some(found.map_or(cpus, |f| f.min(cpus)));
        }
        if d == mount {
            break;
        }
        at = d
            .parent()
            .filter(|p| p.starts_with(mount))
            .map(Path::to_path_buf);
    }
    found
}

/// `cpu.max`: `max 100000` (no limit) or `<quota> <period>` in µs.
fn read_v2(dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("cpu.max")).ok()?;
    let mut fields = text.split_whitespace();
    let (quota, period) = (fields.next()?, fields.next()?);
    cpus(quota.parse().ok()?, period.parse().ok()?)
}

/// `cpu.cfs_quota_us` (-1: no limit) and `cpu.cfs_period_us`.
fn read_v1(dir: &Path) -> Option<f64> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let quota: i64 = read("cpu.cfs_quota_us")?.trim().parse().ok()?;
    let period: i64 = read("cpu.cfs_period_us")?.trim().parse().ok()?;
    cpus(u64::try_from(quota).ok()?, u64::try_from(period).ok()?)
}

fn cpus(quota: u64, period: u64) -> Option<f64> {
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory per test (the tests run in parallel).
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pc-cpu-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(path).unwrap();
        std::fs::write(path.join(name), text).unwrap();
    }

    #[test]
    fn the_sidecar_runs_one_worker_per_cpu_of_its_limit_and_one_without() {
        // A 64-core node with no CPU limit on the pod: one, not 64.
        assert_eq!(choose_workers(None, false, 64, None), Some(1));
        // A limit grants its CPUs, rounded up, never more than there are.
        assert_eq!(choose_workers(None, false, 64, Some(0.5)), Some(1));
        assert_eq!(choose_workers(None, false, 64, Some(1.5)), Some(2));
        assert_eq!(choose_workers(None, false, 64, Some(4.0)), Some(4));
        assert_eq!(choose_workers(None, false, 2, Some(4.0)), Some(2));
        // An explicit choice wins over the limit, above it as well.
        assert_eq!(choose_workers(Some(1), false, 64, Some(4.0)), Some(1));
        assert_eq!(choose_workers(Some(8), true, 2, None), Some(8));
        // TOKIO_WORKER_THREADS set: tokio reads it itself.
        assert_eq!(choose_workers(None, true, 64, Some(2.0)), None);
    }

    #[test]
    fn v2_reads_the_smallest_limit_up_the_path() {
        let root = scratch("v2");
        let mount = root.as_path();
        let pod = mount.join("kubepods/pod1");
        write(mount, "cpu.max", "max 100000\n");
        write(&pod, "cpu.max", "250000 100000\n");
        write(&pod.join("ctr"), "cpu.max", "150000 100000\n");
        assert_eq!(limit_under(mount, "0::/kubepods/pod1/ctr\n"), Some(1.5));
        // The pod's limit binds when the container has none of its own.
        write(&pod.join("ctr"), "cpu.max", "max 100000\n");
        assert_eq!(limit_under(mount, "0::/kubepods/pod1/ctr\n"), Some(2.5));
    }

    #[test]
    fn a_higher_limit_below_a_lower_one_does_not_raise_it() {
        let root = scratch("higher");
        let mount = root.as_path();
        write(&mount.join("pod"), "cpu.max", "250000 100000\n");
        write(&mount.join("pod/ctr"), "cpu.max", "300000 100000\n");
        assert_eq!(limit_under(mount, "0::/pod/ctr\n"), Some(2.5));
    }

    #[test]
    fn a_namespaced_container_reads_the_mount_root() {
        // containerd on cgroup v2: `0::/`, the container's limit at the
        // root of what it sees.
        let root = scratch("ns");
        let mount = root.as_path();
        write(mount, "cpu.max", "100000 100000\n");
        assert_eq!(limit_under(mount, "0::/\n"), Some(1.0));
        // A path out of the namespace reads the root alone, never what
        // lies beside or above the mount.
        write(&root.join("outside"), "cpu.max", "50000 100000\n");
        let inner = mount.join("inner");
        write(&inner, "cpu.max", "300000 100000\n");
        assert_eq!(limit_under(&inner, "0::/../outside\n"), Some(3.0));
    }

    #[test]
    fn a_hybrid_host_reads_the_v1_cpu_line() {
        // v1 controllers and an empty v2 hierarchy: the v2 line finds no
        // cpu.max, the v1 cpu line has the limit.
        let root = scratch("hybrid");
        let mount = root.as_path();
        write(&mount.join("cpu/ctr"), "cpu.cfs_quota_us", "150000\n");
        write(&mount.join("cpu/ctr"), "cpu.cfs_period_us", "100000\n");
        assert_eq!(
            limit_under(mount, "0::/ctr\n3:cpu,cpuacct:/ctr\n"),
            Some(1.5)
        );
    }

    #[test]
    fn no_limit_anywhere_is_none() {
        let root = scratch("none");
        let mount = root.as_path();
        write(&mount.join("a"), "cpu.max", "max 100000\n");
        assert_eq!(limit_under(mount, "0::/a\n"), None);
        // Nothing readable at all: no cgroup files, or no cgroup line.
        assert_eq!(limit_under(&mount.join("missing"), "0::/a\n"), None);
        assert_eq!(limit_under(mount, ""), None);
    }

    #[test]
    fn v1_reads_the_cpu_hierarchy() {
        let root = scratch("v1");
        let mount = root.as_path();
        let ctr = mount.join("cpu/kubepods/pod1/ctr");
        write(&ctr, "cpu.cfs_quota_us", "50000\n");
        write(&ctr, "cpu.cfs_period_us", "100000\n");
        let cgroups = "4:memory:/kubepods/pod1/ctr\n3:cpu,cpuacct:/kubepods/pod1/ctr\n";
        assert_eq!(limit_under(mount, cgroups), Some(0.5));
        write(&ctr, "cpu.cfs_quota_us", "-1\n");
        assert_eq!(limit_under(mount, cgroups), None);
    }

    #[test]
    fn a_host_path_missing_under_the_mount_falls_back_to_the_mount() {
        // Docker on cgroup v1 without a cgroup namespace: /proc/self/cgroup
        // names the host's path, the mount shows the container's cgroup.
        let root = scratch("host");
        let mount = root.as_path();
        write(&mount.join("cpu"), "cpu.cfs_quota_us", "200000\n");
        write(&mount.join("cpu"), "cpu.cfs_period_us", "100000\n");
        assert_eq!(limit_under(mount, "3:cpu:/docker/0123abcd\n"), Some(2.0));
    }
}
