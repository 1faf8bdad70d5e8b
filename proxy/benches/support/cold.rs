//! Timing a call with the L2 evicted before it, as the sidecar's other
//! work between two calls evicts it.

use std::time::{Duration, Instant};

use criterion::Bencher;

/// Bytes written between two cold evaluations: four times the L2 of the
/// VMs this was measured on (512 KiB to 2 MiB per core), well inside their
/// L3, so the evaluation's code and data come from L3, as in the sidecar.
pub const EVICT: usize = 8 << 20;

/// Times `f` alone, each iteration after writing one byte per cache line
/// of `junk`. In the sidecar an evaluation runs between a request's other
/// work (hyper, rustls, the kernel's TCP path, the load generator and the
/// upstream on the same cores), which leaves it little of the L2: there,
/// arg-guard took 8-9 µs per evaluation against 2.8 µs in a tight loop
/// here, and 8.9 µs in this case (bench/README.md, eighteenth pass). What an evaluation costs in the sidecar follows how many cache
/// lines it touches more than how many instructions it runs.
pub fn cold<R>(b: &mut Bencher<'_>, junk: &mut [u8], mut f: impl FnMut() -> R) {
    b.iter_custom(|n| {
        let mut total = Duration::ZERO;
        for i in 0..n {
            for j in (0..junk.len()).step_by(64) {
                junk[j] = junk[j].wrapping_add(i as u8);
            }
            std::hint::black_box(&junk);
            let t = Instant::now();
            std::hint::black_box(f());
            total += t.elapsed();
        }
        total
    })
}
