//! The sidecar's threads share one malloc arena
//! (`portcullis::memory::use_one_arena`, called first thing in `main`).
//! Its own test binary: arenas are per process, and other tests' threads
//! would have made theirs already.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::sync::{Arc, Barrier};

/// glibc's arenas, counted from `malloc_info`'s report (one `<heap nr=`
/// per arena).
fn arenas() -> usize {
    let path = std::env::temp_dir().join(format!("portcullis-arenas-{}.xml", std::process::id()));
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: fopen gets a valid C string; the stream is checked, written
    // by malloc_info and closed before the file is read.
    unsafe {
        let stream = libc::fopen(c_path.as_ptr(), c"w".as_ptr());
        assert!(!stream.is_null());
        assert_eq!(libc::malloc_info(0, stream), 0);
        libc::fclose(stream);
    }
    let report = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    report.matches("<heap nr=").count()
}

/// Eight threads allocate at once, which without the limit gives each its
/// own arena (glibc makes up to eight per core); with it, they share the
/// ones that exist. (Checked failing with the call removed: 2 → 10.)
#[test]
fn threads_allocating_at_once_make_no_new_arena() {
    assert!(
        std::env::var_os("MALLOC_ARENA_MAX").is_none(),
        "MALLOC_ARENA_MAX is set: the sidecar would leave the limit to it"
    );
    portcullis::memory::use_one_arena();
    let before = arenas();
    let start = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let blocks: Vec<Vec<u8>> = (0..10_000).map(|j| vec![(i + j) as u8; 256]).collect();
                std::hint::black_box(blocks).len()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 10_000);
    }
    let after = arenas();
    assert!(after <= before, "arenas {before} -> {after}");
}
