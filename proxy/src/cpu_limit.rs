//! The CPU limit of the sidecar's cgroup, if it has one.
//!
//! `std::thread::available_parallelism` folds a limit into one count of
//! CPUs and cannot say whether there was a limit at all: a pod with no CPU
//! limit on a 64-core node and a pod limited to 64 CPUs look the same. The
//! sidecar sizes its runtime differently in the two cases (see
//! `sidecar_workers` in main.rs), so it reads the limit itself.
//!
//! cgroup v2 (`cpu.max`) and v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`)
//! are read along the process's cgroup path and every parent up to the
//! mount: Kubernetes limits the container's cgroup and the pod's cgroup
//! above it, and the smallest limit on the way up is the one that binds.

use std::path::{Path, PathBuf};

/// The CPUs the process's cgroup may use (1.5 for a 1500m limit), or
/// `None` when no limit is set or none can be read.
pub fn limit() -> Option<f64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    limit_under(Path::new("/sys/fs/cgroup"), &cgroups)
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
        let relative = path.trim_start_matches('/');
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
