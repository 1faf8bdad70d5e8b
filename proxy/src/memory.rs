//! How the sidecar's heap is kept small: one malloc arena for every
//! thread, and freed heap given back to the operating system after a
//! burst of allocation that will not come again soon (compiling filters).

/// Returns free pages of every malloc arena to the OS. glibc keeps freed
/// memory for reuse; after compiling filters (tens of MiB, freed at once)
/// that memory would stay in the sidecar's RSS for the life of the
/// process, and RSS is what a pod's memory limit is charged for.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_heap() {
    // SAFETY: malloc_trim takes no pointers; it walks glibc's own free
    // lists under the arena locks and returns unused pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other C libraries return memory on their own schedule.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_heap() {}

/// Makes every thread allocate from one malloc arena, unless the operator
/// chose otherwise (`MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in
/// `GLIBC_TUNABLES`). Call it before any thread is spawned.
///
/// glibc gives each thread that allocates under contention an arena of its
/// own (up to eight per core), and freed memory in one arena serves no
/// other. The sidecar's workers free on one thread what another allocated
/// (buffers handed between the client's and the upstream's connections),
/// so each arena held its own free memory: configuration d of `make bench`
/// peaked 2–3.5 MiB higher at 16 and 64 connections than with one arena,
/// with no measurable difference in CPU per call (bench/README.md). With
/// two or more workers they do contend for the arena's lock: in the
/// bench's plain configuration at 16 connections, 96 % of the sidecar's
/// futex calls were that lock (thirteenth pass). The default of one worker without a
/// CPU limit has no one to contend with. Two arenas (`MALLOC_ARENA_MAX=2`)
/// cost 0–1.5 MiB more there and no less CPU per call.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn use_one_arena() {
    let tuned = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.arena_max"));
    if tuned || std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt takes two integers and changes a limit glibc reads
    // when a thread next picks an arena; nothing else runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Other C libraries have no arenas to limit.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn use_one_arena() {}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    #[test]
    fn freed_small_allocations_leave_the_rss() {
        // Many small blocks: glibc keeps them in its arena when freed
        // (one large block it would unmap at once).
        let blocks: Vec<Vec<u8>> = (0..1_000_000).map(|i| vec![i as u8; 512]).collect();
        // A live block above them, so that freeing them cannot simply
        // shrink the top of the heap: only a trim can give them back.
        let pin = std::hint::black_box(vec![1u8; 64]);
        let before = rss_kib();
        drop(blocks);
        super::release_free_heap();
        let after = rss_kib();
        assert!(after + 250_000 < before, "rss {before} KiB -> {after} KiB");
        drop(pin);
    }
}
