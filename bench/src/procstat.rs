//! What a proxy process costs, read from Linux's /proc: CPU time (user +
//! system, all threads) and peak resident memory.

use std::fs;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("reading /proc/{pid}/{file}: {source}")]
    Read {
        pid: u32,
        file: &'static str,
        source: std::io::Error,
    },
    #[error("/proc/{pid}/{file} has no {field}")]
    Field {
        pid: u32,
        file: &'static str,
        field: &'static str,
    },
    #[error("reading /proc/stat: {0}")]
    HostRead(std::io::Error),
    #[error("/proc/stat has no summary line with a steal field")]
    HostFormat,
}

/// Clock ticks per second, the unit of utime and stime in /proc/PID/stat.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        // The value on every Linux architecture we run on.
        .unwrap_or(100.0)
}

/// A process's CPU seconds so far (user + system, all threads).
pub fn cpu_seconds(pid: u32, ticks: f64) -> Result<f64, ProcError> {
    let stat = read(pid, "stat")?;
    // The command name is in parentheses and may hold spaces; fields are
    // counted from the closing parenthesis.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or(ProcError::Field {
            pid,
            file: "stat",
            field: "comm",
        })?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After comm: state is field 3, utime 14 and stime 15 (man 5 proc).
    let num = |i: usize, field| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or(ProcError::Field {
                pid,
                file: "stat",
                field,
            })
    };
    Ok((num(11, "utime")? + num(12, "stime")?) / ticks)
}

/// The number after `name` (e.g. `VmRSS:`) in a /proc status file, its
/// unit (` kB`, where there is one) dropped.
fn status_number(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Peak resident set size in bytes (VmHWM).
pub fn peak_rss(pid: u32) -> Result<u64, ProcError> {
    let status = read(pid, "status")?;
    status_number(&status, "VmHWM:")
        .map(|kb| kb * 1024)
        .ok_or(ProcError::Field {
            pid,
            file: "status",
            field: "VmHWM",
        })
}

/// Current resident set size in bytes (VmRSS).
pub fn rss(pid: u32) -> Result<u64, ProcError> {
    let status = read(pid, "status")?;
    status_number(&status, "VmRSS:")
        .map(|kb| kb * 1024)
        .ok_or(ProcError::Field {
            pid,
            file: "status",
            field: "VmRSS",
        })
}

/// Memory only this process holds, in bytes: anonymous pages (heap,
/// stacks) and shared-memory pages (memory files), resident now. Its file
/// pages (the binary, libraries) are left out: they are page cache, which
/// every process mapping the same file shares and the kernel can drop.
pub fn private_bytes(pid: u32) -> Result<u64, ProcError> {
    let status = read(pid, "status")?;
    let field = |name: &'static str| {
        status_number(&status, name).ok_or(ProcError::Field {
            pid,
            file: "status",
            field: name,
        })
    };
    Ok((field("RssAnon:")? + field("RssShmem:")?) * 1024)
}

/// How many file descriptors the process holds open (entries of
/// /proc/PID/fd): sockets, files, epoll and event fds.
pub fn open_fds(pid: u32) -> Result<usize, ProcError> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .map_err(|source| ProcError::Read {
            pid,
            file: "fd",
            source,
        })
}

/// How often a process's threads have left the CPU so far, summed over
/// its threads (`/proc/PID/task/*/status`): *voluntary* when a thread
/// waited (for epoll, a futex: once per wake-up it got), *involuntary*
/// when the scheduler took the CPU from it for another runnable thread.
/// Per call, the first says how many calls a wake-up served; the second,
/// how much the proxy competed with the load and the upstream for the
/// machine's two vCPUs. A thread that exited takes its counts with it;
/// the proxies' worker threads live as long as they do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Switches {
    pub voluntary: u64,
    pub involuntary: u64,
}

impl Switches {
    pub fn since(self, earlier: Switches) -> Switches {
        Switches {
            voluntary: self.voluntary.saturating_sub(earlier.voluntary),
            involuntary: self.involuntary.saturating_sub(earlier.involuntary),
        }
    }

    fn add_status(&mut self, status: &str) {
        let field = |name: &str| status_number(status, name).unwrap_or(0);
        self.voluntary += field("voluntary_ctxt_switches:");
        self.involuntary += field("nonvoluntary_ctxt_switches:");
    }
}

pub fn switches(pid: u32) -> Result<Switches, ProcError> {
    let dir = fs::read_dir(format!("/proc/{pid}/task")).map_err(|source| ProcError::Read {
        pid,
        file: "task",
        source,
    })?;
    let mut total = Switches::default();
    for task in dir.flatten() {
        // A thread that exits between the listing and the read is skipped.
        if let Ok(status) = fs::read_to_string(task.path().join("status")) {
            total.add_status(&status);
        }
    }
    Ok(total)
}

/// Starts a new peak-RSS window, so that each run reports its own peak.
/// Writing 5 to clear_refs resets VmHWM to the current RSS (Linux ≥ 4.0).
pub fn reset_peak_rss(pid: u32) -> Result<(), ProcError> {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").map_err(|source| ProcError::Read {
        pid,
        file: "clear_refs",
        source,
    })
}

/// The whole machine's CPU time so far, in clock ticks, from the first
/// line of /proc/stat: all of it, the time its vCPUs wanted to run
/// (everything but idle and iowait), and the part the hypervisor gave to
/// other guests instead (`steal`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostTicks {
    pub steal: u64,
    pub wanted: u64,
    pub all: u64,
}

/// What steal is counted against ([`HostTicks::steal_since`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StealBasis {
    /// The time the vCPUs wanted to run: for a saturating load. Over all
    /// ticks, a proxy that burns more CPU would show more steal on the
    /// same host (an idle vCPU cannot be stolen from), and a run kept for
    /// its low steal would partly be kept for its low cost.
    Wanted,
    /// All of the machine's time: for a light, paced load. There the work
    /// is a few ticks, and the steal a vCPU meets on waking from idle
    /// (counted while the host schedules it back in) is of the same size:
    /// an idle Xeon VM read about 75 % of its wanted time stolen (9 ticks
    /// against 3 of work in 5 s) while losing under 1 % of its time. What delays a paced call is how
    /// much of the time the vCPUs were away, which is this share.
    Capacity,
}

impl HostTicks {
    pub fn now() -> Result<Self, ProcError> {
        let text = fs::read_to_string("/proc/stat").map_err(ProcError::HostRead)?;
        Self::parse(&text).ok_or(ProcError::HostFormat)
    }

    /// `cpu  user nice system idle iowait irq softirq steal guest
    /// guest_nice` (man 5 proc). guest and guest_nice are already counted
    /// in user and nice, so only the first eight are read. A kernel too
    /// old to report steal (before 2.6.11) is refused rather than read as
    /// none.
    fn parse(text: &str) -> Option<Self> {
        let line = text.lines().next()?.strip_prefix("cpu ")?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        let first = fields.get(..8)?;
        let all: u64 = first.iter().sum();
        Some(Self {
            steal: first[7],
            // idle (3) and iowait (4): time no vCPU wanted.
            wanted: all - first[3] - first[4],
            all,
        })
    }

    /// The share of the time since `earlier` (the time wanted, or all of
    /// it: `basis`) that the hypervisor took, 0 to 1; None when there was
    /// none.
    pub fn steal_since(&self, earlier: HostTicks, basis: StealBasis) -> Option<f64> {
        let total = match basis {
            StealBasis::Wanted => self.wanted.checked_sub(earlier.wanted)?,
            StealBasis::Capacity => self.all.checked_sub(earlier.all)?,
        };
        let steal = self.steal.checked_sub(earlier.steal)?;
        (total > 0).then(|| steal as f64 / total as f64)
    }
}

/// Steal over a run, from readings before and after it (None if either
/// failed): where /proc/stat cannot tell, the run is still measured.
pub fn steal_between(
    before: Option<HostTicks>,
    after: Option<HostTicks>,
    basis: StealBasis,
) -> Option<f64> {
    after?.steal_since(before?, basis)
}

fn read(pid: u32, file: &'static str) -> Result<String, ProcError> {
    fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|source| ProcError::Read {
        pid,
        file,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held by the tests that allocate and measure memory, so that one's
    /// allocation never lands between another's two readings.
    static MEMORY: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn reads_this_process_and_resets_its_peak() {
        let _alone = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        // Burn a little CPU so the figure cannot be zero.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(cpu_seconds(pid, clock_ticks()).unwrap() > 0.0);
        // Touch 256 MiB, so that the peak is far above the steady state.
        let big = std::hint::black_box(vec![1u8; 256 << 20]);
        assert_eq!(big[big.len() - 1], 1);
        let peak = peak_rss(pid).unwrap();
        assert!(peak > 256 << 20, "peak {peak}");
        drop(big);
        reset_peak_rss(pid).unwrap();
        let after = peak_rss(pid).unwrap();
        assert!(
            after + (128 << 20) < peak,
            "peak {peak}, after reset {after}"
        );
    }

    #[test]
    fn private_memory_counts_anonymous_pages_and_not_the_binary() {
        let _alone = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        let before = private_bytes(pid).unwrap();
        // The test binary's own pages are far more than nothing, but file
        // pages: they must not be counted.
        assert!(before < rss(pid).unwrap(), "private {before}");
        let big = std::hint::black_box(vec![1u8; 64 << 20]);
        assert_eq!(big[big.len() - 1], 1);
        let during = private_bytes(pid).unwrap();
        assert!(during >= before + (48 << 20), "{before} -> {during}");
        assert!(private_bytes(u32::MAX).is_err());
    }

    #[test]
    fn switches_are_summed_over_threads() {
        let mut s = Switches::default();
        s.add_status("Name:\tx\nvoluntary_ctxt_switches:\t10\nnonvoluntary_ctxt_switches:\t3\n");
        s.add_status("voluntary_ctxt_switches:\t5\nnonvoluntary_ctxt_switches:\t1\n");
        assert_eq!(
            s,
            Switches {
                voluntary: 15,
                involuntary: 4
            }
        );
        assert_eq!(
            s.since(Switches {
                voluntary: 5,
                involuntary: 4
            }),
            Switches {
                voluntary: 10,
                involuntary: 0
            }
        );
        // This process: its threads have switched at least once.
        let me = switches(std::process::id()).unwrap();
        assert!(me.voluntary + me.involuntary > 0, "{me:?}");
        assert!(switches(u32::MAX).is_err());
    }

    #[test]
    fn host_ticks_read_steal_from_the_eighth_field() {
        let text = "cpu  100 5 50 800 10 1 2 32 7 0\ncpu0 50 2 25 400 5 0 1 16 3 0\n";
        let t = HostTicks::parse(text).unwrap();
        // Wanted: all but idle (800) and iowait (10).
        assert_eq!(
            t,
            HostTicks {
                steal: 32,
                wanted: 190,
                all: 1000,
            }
        );
        let later = HostTicks {
            steal: 132,
            wanted: 590,
            all: 2000,
        };
        use StealBasis::{Capacity, Wanted};
        assert_eq!(later.steal_since(t, Wanted), Some(0.25));
        assert_eq!(later.steal_since(t, Capacity), Some(0.1));
        assert_eq!(t.steal_since(t, Wanted), None);
        assert_eq!(t.steal_since(t, Capacity), None);
        // The same busy time and steal with twice the idle time: the same
        // share of the time wanted, half the share of all the time.
        let quiet = HostTicks::parse("cpu  100 0 0 100 0 0 0 100 0 0\n").unwrap();
        let idle = HostTicks::parse("cpu  100 0 0 300 0 0 0 100 0 0\n").unwrap();
        let zero = HostTicks::default();
        assert_eq!(quiet.steal_since(zero, Wanted), Some(0.5));
        assert_eq!(idle.steal_since(zero, Wanted), Some(0.5));
        assert_eq!(quiet.steal_since(zero, Capacity), Some(1.0 / 3.0));
        assert_eq!(idle.steal_since(zero, Capacity), Some(0.2));
        // The eleventh pass's idle machine: 9 ticks stolen against 3 of
        // work over 5 s of 2 vCPUs (1000 ticks): 75 % of the time wanted,
        // 0.9 % of all the time.
        let woke = HostTicks::parse("cpu  3 0 0 988 0 0 0 9 0 0\n").unwrap();
        assert_eq!(woke.steal_since(zero, Wanted), Some(0.75));
        assert_eq!(woke.steal_since(zero, Capacity), Some(0.009));
        // A reading that went backwards (another boot) tells nothing.
        assert_eq!(zero.steal_since(woke, Capacity), None);
        // No steal field (a kernel before 2.6.11), or not the summary line.
        assert_eq!(HostTicks::parse("cpu  100 5 50 800 10 1 2\n"), None);
        assert_eq!(HostTicks::parse("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert!(HostTicks::now().is_ok());
    }

    #[test]
    fn a_missing_process_is_an_error() {
        assert!(cpu_seconds(u32::MAX, 100.0).is_err());
        assert!(peak_rss(u32::MAX).is_err());
        assert!(rss(u32::MAX).is_err());
        assert!(open_fds(u32::MAX).is_err());
    }

    #[test]
    fn open_fds_counts_a_file_this_process_opens() {
        let pid = std::process::id();
        let before = open_fds(pid).unwrap();
        let files: Vec<_> = (0..64)
            .map(|_| std::fs::File::open("/proc/self/status").unwrap())
            .collect();
        // Other test threads open and close files meanwhile (a spawned
        // target's pipes, /proc reads): 64 more held here must show, give
        // or take what they hold at once.
        let after = open_fds(pid).unwrap();
        assert!(after + 16 >= before + files.len(), "{before} -> {after}");
        assert!(rss(pid).unwrap() > 0);
    }
}
