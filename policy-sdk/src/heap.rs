//! The guest's allocator for small blocks (feature `size-classes`, on by
//! default).
//!
//! Every string the host passes in is a call into the guest to allocate
//! it (`cabi_realloc`, which Rust's standard library for `wasm32-wasip2`
//! routes to the global allocator), and a call's values are freed when the
//! hook returns: a few small blocks allocated and freed per evaluation.
//! Through wasi-libc each of those went `__rust_alloc` → `__rdl_alloc` →
//! `malloc` → `dlmalloc` (and back the same way to `dlfree`), about 2 300
//! of a small filter's 6 400 instructions per call (bench/README.md,
//! twenty-third pass). Here a block of up to 4 KiB aligned to at most 16
//! comes from a free list per power-of-two size class, or is cut from a
//! 64 KiB chunk: a handful of instructions each way. Rust hands `dealloc`
//! the layout it allocated with, so the class is known without a header.
//! Larger or more aligned blocks go to the system allocator (wasi-libc's
//! dlmalloc) as before, and so do the chunks.
//!
//! A block is put on a free list only if it lies in one of the heap's own
//! chunks (a table of them is kept): a block the system allocator made,
//! should any reach `dealloc` (a `cabi_realloc` built on `malloc`, say),
//! goes back to it, so the two heaps never mix, whatever the toolchain.
//!
//! What it costs: a freed small block is kept for its class and never
//! returned to the system allocator, so an instance holds at most its peak
//! of small blocks of each class at once (a chunk's tail it cannot use, at
//! most 4 KiB of each 64 KiB, is left too). Past [`MAX_CHUNKS`] chunks
//! (32 MiB of them; the system allocator may use more linear memory to
//! align each), small blocks come from the system allocator too. The host's per-instance memory limit bounds it all
//! the same, and an instance is replaced after a bounded number of calls.
//! A filter that wants another allocator turns the feature off
//! (`default-features = false`) and sets its own.
//!
//! The guest is single-threaded (`wasm32-wasip2` without the `atomics`
//! feature, which is the only way the SDK builds it), so the free lists need
//! no lock: it is the global allocator only there. Natively it is compiled
//! for its tests alone, as a local allocator.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::UnsafeCell,
    ptr,
};

/// Classes of 16, 32, ... 4096 bytes.
const CLASSES: usize = 9;
const MIN_SHIFT: u32 = 4;
/// The largest block a class holds.
const MAX_SMALL: usize = 1 << (MIN_SHIFT as usize + CLASSES - 1);
/// Every class's blocks are aligned to this (each size is a multiple of
/// it, and chunks start aligned to it).
const ALIGN: usize = 1 << MIN_SHIFT;
/// What is taken from the system allocator at a time, aligned to its own
/// size, so that `address >> CHUNK_SHIFT` names the chunk of any address
/// in it.
const CHUNK_SHIFT: u32 = 16;
const CHUNK: usize = 1 << CHUNK_SHIFT;
/// Slots of the table of the heap's chunks (a power of two).
const SLOTS: usize = 1024;
/// At most half the slots are used, so that a lookup ends soon.
pub(crate) const MAX_CHUNKS: usize = SLOTS / 2;

struct Heap {
    /// Each class's free blocks, linked through their first word.
    free: [*mut u8; CLASSES],
    /// The unused rest of the current chunk.
    next: *mut u8,
    end: *mut u8,
    /// The heap's chunks, as `address >> CHUNK_SHIFT` plus one (0 is an
    /// empty slot), in an open-addressed table: nothing is ever removed.
    chunks: [usize; SLOTS],
    count: usize,
}

impl Heap {
    fn slot(key: usize) -> usize {
        // Fibonacci hashing: the top bits of the product. (On wasm32 the
        // constant is truncated to 0x7F4A_7C15: odd, so still a
        // bijection, if a weaker mix; at most half the slots are used.)
        key.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as usize)
            >> (usize::BITS - SLOTS.trailing_zeros())
    }

    /// Whether `block` lies in one of the heap's chunks.
    fn owns(&self, block: *mut u8) -> bool {
        let key = (block as usize >> CHUNK_SHIFT) + 1;
        let mut i = Self::slot(key);
        loop {
            match self.chunks[i] {
                0 => return false,
                k if k == key => return true,
                _ => i = (i + 1) & (SLOTS - 1),
            }
        }
    }

    fn record(&mut self, chunk: *mut u8) {
        let key = (chunk as usize >> CHUNK_SHIFT) + 1;
        let mut i = Self::slot(key);
        while self.chunks[i] != 0 {
            i = (i + 1) & (SLOTS - 1);
        }
        self.chunks[i] = key;
        self.count += 1;
    }
}

/// The allocator: the guest's global one, and a local one in tests.
pub struct SizeClasses(UnsafeCell<Heap>);

impl SizeClasses {
    pub const fn new() -> Self {
        Self(UnsafeCell::new(Heap {
            free: [ptr::null_mut(); CLASSES],
            next: ptr::null_mut(),
            end: ptr::null_mut(),
            chunks: [0; SLOTS],
            count: 0,
        }))
    }
}

// SAFETY: the guest has one thread (see the module's documentation), so
// the heap is never reached from two at once.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl Sync for SizeClasses {}

#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static HEAP: SizeClasses = SizeClasses::new();

fn small(layout: Layout) -> bool {
    layout.size() <= MAX_SMALL && layout.align() <= ALIGN
}

/// The class of a block of `size` bytes (at most [`MAX_SMALL`]): the
/// smallest that holds it.
pub(crate) fn class(size: usize) -> usize {
    let size = size.max(ALIGN);
    // ceil(log2(size)) - MIN_SHIFT
    (usize::BITS - (size - 1).leading_zeros() - MIN_SHIFT) as usize
}

/// The size of the blocks of class `c`.
pub(crate) fn class_size(c: usize) -> usize {
    ALIGN << c
}

impl SizeClasses {
    /// A block for `layout` (small): of its class, or from the system
    /// allocator once the heap has all the chunks it may take. Null when
    /// the system allocator has nothing to give.
    ///
    /// # Safety
    /// Not reentrant: called only from the `GlobalAlloc` methods, on one
    /// thread.
    unsafe fn take(&self, layout: Layout) -> *mut u8 {
        // SAFETY: one thread, and no other borrow of the heap is live.
        let heap = unsafe { &mut *self.0.get() };
        let c = class(layout.size());
        let head = heap.free[c];
        if !head.is_null() {
            // SAFETY: `head` is a free block of this class, whose first
            // word `dealloc` wrote as the link to the next one.
            heap.free[c] = unsafe { head.cast::<*mut u8>().read() };
            return head;
        }
        let size = class_size(c);
        if (heap.end as usize) - (heap.next as usize) < size {
            if heap.count >= MAX_CHUNKS {
                // SAFETY: the caller's layout, passed on.
                return unsafe { System.alloc(layout) };
            }
            // SAFETY: CHUNK is non-zero and a power of two.
            let chunk = unsafe { System.alloc(Layout::from_size_align_unchecked(CHUNK, CHUNK)) };
            if chunk.is_null() {
                return chunk;
            }
            heap.record(chunk);
            heap.next = chunk;
            // SAFETY: the chunk is CHUNK bytes long.
            heap.end = unsafe { chunk.add(CHUNK) };
        }
        let block = heap.next;
        // SAFETY: at least `size` bytes are left in the chunk (checked
        // above).
        heap.next = unsafe { block.add(size) };
        block
    }

    /// Whether `block`, of `layout`, is one of the heap's (else the
    /// system allocator's).
    fn holds(&self, block: *mut u8, layout: Layout) -> bool {
        // SAFETY: one thread, and no mutable borrow of the heap is live.
        small(layout) && unsafe { &*self.0.get() }.owns(block)
    }
}

unsafe impl GlobalAlloc for SizeClasses {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !small(layout) {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: see `take`.
        unsafe { self.take(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !small(layout) {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // SAFETY: see `take`; a block from a free list is not zeroed.
        unsafe {
            let block = self.take(layout);
            if !block.is_null() {
                block.write_bytes(0, layout.size());
            }
            block
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if !self.holds(block, layout) {
            // SAFETY: not one of the heap's blocks, so the system
            // allocator's.
            return unsafe { System.dealloc(block, layout) };
        }
        // SAFETY: one thread; `block` is a block of the heap of this
        // layout's class, at least 16 bytes, aligned to 16, and no longer
        // used: its first word can hold the link.
        unsafe {
            let heap = &mut *self.0.get();
            let c = class(layout.size());
            block.cast::<*mut u8>().write(heap.free[c]);
            heap.free[c] = block;
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.holds(block, layout) {
            // SAFETY: the system allocator's block; it stays the system
            // allocator's (its `dealloc` routes it back there).
            return unsafe { System.realloc(block, layout, new_size) };
        }
        // SAFETY: the caller guarantees `new_size` with this alignment is
        // a valid layout.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if small(new) && class(new_size) == class(layout.size()) {
            return block;
        }
        // SAFETY: `moved` is a fresh block of at least `new_size` bytes,
        // and `block` holds `layout.size()`.
        unsafe {
            let moved = self.alloc(new);
            if !moved.is_null() {
                ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                self.dealloc(block, layout);
            }
            moved
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator (xorshift), so a failure repeats.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// Allocations, growths, shrinks and frees at random, small and large,
    /// each block filled with its own byte: a block handed out twice, or
    /// overlapping another, or losing its bytes when it moves, shows as a
    /// wrong byte.
    #[test]
    fn blocks_never_overlap_and_keep_their_bytes() {
        let heap = SizeClasses::new();
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let sizes = [1, 7, 16, 17, 100, 1000, 4095, 4096, 4097, 20_000];
        let aligns = [1, 2, 8, 16, 32];
        let check = |(p, l, v): &(*mut u8, Layout, u8)| {
            // SAFETY: `p` is a live block of `l.size()` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(*p, l.size()) };
            assert!(
                bytes.iter().all(|b| b == v),
                "block of {l:?} lost its bytes"
            );
            assert_eq!(*p as usize % l.align(), 0, "{l:?} misaligned");
        };
        for step in 0..20_000u32 {
            let tag = (step % 251) as u8;
            // More allocations than frees, so that most blocks have live
            // neighbours for a stray write to land in.
            match rng.below(8) {
                0 | 1 if !live.is_empty() => {
                    let (p, l, v) = live.swap_remove(rng.below(live.len()));
                    check(&(p, l, v));
                    // SAFETY: `p` was allocated with `l` and is freed once.
                    unsafe { heap.dealloc(p, l) };
                }
                2..=4 if !live.is_empty() => {
                    let i = rng.below(live.len());
                    let (p, l, v) = live[i];
                    check(&(p, l, v));
                    let new_size = sizes[rng.below(sizes.len())];
                    // SAFETY: `p` was allocated with `l`; the new size is
                    // non-zero.
                    let q = unsafe { heap.realloc(p, l, new_size) };
                    assert!(!q.is_null());
                    let nl = Layout::from_size_align(new_size, l.align()).unwrap();
                    let kept = l.size().min(new_size);
                    // SAFETY: `q` holds `new_size` bytes.
                    let bytes = unsafe { std::slice::from_raw_parts(q, kept) };
                    assert!(bytes.iter().all(|b| *b == v), "realloc lost bytes");
                    // SAFETY: as above.
                    unsafe { q.write_bytes(tag, new_size) };
                    live[i] = (q, nl, tag);
                }
                _ => {
                    let l = Layout::from_size_align(
                        sizes[rng.below(sizes.len())],
                        aligns[rng.below(aligns.len())],
                    )
                    .unwrap();
                    let zeroed = rng.below(2) == 0;
                    // SAFETY: a non-zero size.
                    let p = unsafe {
                        if zeroed {
                            heap.alloc_zeroed(l)
                        } else {
                            heap.alloc(l)
                        }
                    };
                    assert!(!p.is_null());
                    if zeroed {
                        check(&(p, l, 0));
                    }
                    // SAFETY: `p` holds `l.size()` bytes.
                    unsafe { p.write_bytes(tag, l.size()) };
                    live.push((p, l, tag));
                }
            }
            // Now and then, every live block is checked (each is also
            // checked when it is freed or moved).
            if step % 2000 == 0 {
                live.iter().for_each(check);
            }
        }
        live.iter().for_each(check);
        for (p, l, _) in live {
            // SAFETY: allocated with `l`, freed once.
            unsafe { heap.dealloc(p, l) };
        }
    }

    /// A small block of the system allocator's, freed or moved through
    /// the heap, goes back to the system allocator: it never joins a free
    /// list (where it would be handed out as a block of its class, maybe
    /// larger than it is).
    #[test]
    fn a_block_of_the_system_allocator_goes_back_to_it() {
        let heap = SizeClasses::new();
        let l = Layout::from_size_align(17, 1).unwrap();
        // SAFETY: non-zero sizes; each block freed once, by the allocator
        // that owns it.
        unsafe {
            let foreign = System.alloc(l);
            heap.dealloc(foreign, l);
            let mine = heap.alloc(l);
            assert_ne!(mine, foreign, "a freed system block was handed out");
            assert!(heap.holds(mine, l));
            heap.dealloc(mine, l);

            let foreign = System.alloc(l);
            foreign.write_bytes(7, 17);
            let grown = heap.realloc(foreign, l, 30);
            let l30 = Layout::from_size_align(30, 1).unwrap();
            assert!(!heap.holds(grown, l30), "a system block stays the system's");
            assert!(std::slice::from_raw_parts(grown, 17)
                .iter()
                .all(|b| *b == 7));
            heap.dealloc(grown, l30);
            let next = heap.alloc(l30);
            assert_ne!(next, grown);
            heap.dealloc(next, l30);
        }
    }

    /// Past its last chunk the heap hands out the system allocator's
    /// blocks, and takes them back as such.
    #[test]
    fn past_its_chunks_small_blocks_come_from_the_system_allocator() {
        let heap = SizeClasses::new();
        let l = Layout::from_size_align(MAX_SMALL, 16).unwrap();
        let per_chunk = CHUNK / MAX_SMALL;
        let mut blocks = Vec::new();
        // SAFETY: non-zero sizes; each block freed once.
        unsafe {
            for _ in 0..MAX_CHUNKS * per_chunk {
                let b = heap.alloc(l);
                assert!(heap.holds(b, l));
                blocks.push(b);
            }
            let extra = heap.alloc(l);
            assert!(!extra.is_null());
            assert!(
                !heap.holds(extra, l),
                "the heap took more chunks than it may"
            );
            heap.dealloc(extra, l);
            for b in blocks {
                heap.dealloc(b, l);
            }
        }
    }

    /// A freed block is what the next allocation of its class gets.
    #[test]
    fn a_freed_block_is_reused_by_its_class() {
        let heap = SizeClasses::new();
        let l = Layout::from_size_align(40, 8).unwrap();
        // SAFETY: a non-zero size; each block freed once.
        unsafe {
            let a = heap.alloc(l);
            heap.dealloc(a, l);
            let b = heap.alloc(Layout::from_size_align(64, 1).unwrap());
            assert_eq!(a, b, "a 40-byte block's class is 64");
            heap.dealloc(b, Layout::from_size_align(64, 1).unwrap());
        }
    }

    #[test]
    fn each_size_gets_the_smallest_class_that_holds_it() {
        for size in 0..=MAX_SMALL {
            let c = class(size);
            assert!(c < CLASSES, "{size}");
            assert!(class_size(c) >= size, "{size} in class {c}");
            assert!(c == 0 || class_size(c - 1) < size, "{size} in class {c}");
        }
    }
}
