//! Weir's global allocator: [mimalloc], asked for a plain allocation wherever the alignment a
//! type needs is one every mimalloc block already has.
//!
//! The `mimalloc` crate's allocator hands every request to `mi_malloc_aligned`, even those for
//! byte or word alignment. In mimalloc 3 that costs more than `mi_malloc` on the fast path, and
//! an allocation above 1 KiB whose size is not a power of two (a header map's entries, say) is
//! treated as if it could not be aligned naturally: it is over-allocated and aligned by hand,
//! several times the cost of a plain one. mimalloc's blocks start at word boundaries, and on
//! 64-bit targets every block of 16 bytes or more at a 16-byte boundary (`MI_MAX_ALIGN_SIZE`,
//! the alignment of `max_align_t`, which mimalloc's size classes keep), so these alignments are
//! met by `mi_malloc` as it is — the rule the standard library's `System` allocator applies to
//! `malloc` — and only larger ones need the aligned entry points. (`docs/performance.md` has the
//! figures.)
//!
//! ```
//! #[global_allocator]
//! static ALLOCATOR: weir_alloc::Allocator = weir_alloc::Allocator;
//!
//! fn main() {
//!     let names: Vec<String> = (0..100).map(|i| format!("listener-{i}")).collect();
//!     assert_eq!(names[99], "listener-99");
//! }
//! ```
//!
//! [mimalloc]: https://github.com/microsoft/mimalloc

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every block mimalloc returns has: block sizes are whole words, and blocks
/// start at word boundaries.
const WORD: usize = core::mem::size_of::<usize>();

/// The alignment of every block at least this large (mimalloc's `MI_MAX_ALIGN_SIZE`, the
/// alignment of C's `max_align_t`).
const MAX_ALIGN: usize = 16;

/// mimalloc, through its plain entry points where they meet the alignment and its aligned ones
/// beyond.
#[derive(Debug, Default, Clone, Copy)]
pub struct Allocator;

/// Whether `mi_malloc` and `mi_realloc` meet an alignment on their own for a block of `size`
/// bytes: any alignment up to a word, and up to `MAX_ALIGN` for blocks at least that large.
#[inline]
fn plain(size: usize, align: usize) -> bool {
    align <= WORD || (align <= MAX_ALIGN && align <= size)
}

// SAFETY: every method returns a block from mimalloc of at least the requested size and
// alignment (plain entry points only where `plain` says every mimalloc block of that size
// meets the alignment; aligned entry points otherwise), or null on failure, and `dealloc` hands back
// to mimalloc only pointers it allocated (`mi_free` takes blocks from either kind of entry).
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.size(), layout.align()) {
            // SAFETY: mi_malloc accepts any size; `plain` holds, so the block is aligned.
            unsafe { mi::mi_malloc(layout.size()) as *mut u8 }
        } else {
            // SAFETY: Layout guarantees a power-of-two alignment, as mi_malloc_aligned needs.
            unsafe { mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.size(), layout.align()) {
            // SAFETY: as in `alloc`; mi_zalloc zeroes the block.
            unsafe { mi::mi_zalloc(layout.size()) as *mut u8 }
        } else {
            // SAFETY: as in `alloc`.
            unsafe { mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the caller passes a pointer this allocator returned, so one from mimalloc.
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(new_size, layout.align()) {
            // SAFETY: `ptr` came from mimalloc (the caller's contract); `plain` holds for the
            // new size, so the new block is aligned; it keeps the contents up to the smaller size.
            unsafe { mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8 }
        } else {
            // SAFETY: as above, with the layout's power-of-two alignment kept.
            unsafe { mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8 }
        }
    }
}

/// Gives memory the program has freed, but mimalloc still holds, back to the operating system
/// (the overload manager's `shrink_heap` calls it while memory is short).
pub fn release_free_memory() {
    // SAFETY: `mi_collect` takes no pointers; it only walks mimalloc's own free lists and pages,
    // which it may do from any thread at any time.
    unsafe { mi::mi_collect(true) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates, writes, grows and frees blocks of every size up to a few pages for each
    /// alignment from a byte to a page, and checks each block is aligned as asked (the plain
    /// entry points for word alignment and less, the aligned ones above).
    #[test]
    fn every_block_has_the_alignment_its_layout_asks_for() {
        let a = Allocator;
        let sizes = (1..=2048).chain((2049..=20_000).step_by(97));
        for size in sizes {
            for shift in 0..=12 {
                let align = 1usize << shift;
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // SAFETY: layout has a non-zero size; the block is freed with the same layout.
                unsafe {
                    let p = if size % 2 == 0 {
                        a.alloc(layout)
                    } else {
                        a.alloc_zeroed(layout)
                    };
                    assert!(!p.is_null(), "{size} bytes aligned to {align}");
                    assert_eq!(p as usize % align, 0, "{size} bytes aligned to {align}");
                    if size % 2 == 1 {
                        assert!((0..size).all(|i| *p.add(i) == 0), "zeroed {size} bytes");
                    }
                    p.write_bytes(0xab, size);
                    let q = a.realloc(p, layout, size * 3 + 1);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "{size} bytes regrown, aligned to {align}");
                    assert!((0..size).all(|i| *q.add(i) == 0xab), "realloc kept the contents");
                    a.dealloc(q, Layout::from_size_align_unchecked(size * 3 + 1, align));
                }
            }
        }
    }

    /// Freed memory goes back to the system: resident memory falls after a large block is freed.
    #[test]
    fn freed_memory_is_released() {
        fn resident() -> usize {
            let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
            statm.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 4096
        }
        let a = Allocator;
        let size = 64 << 20;
        // SAFETY: a valid layout; the block is written within its size and freed once.
        unsafe {
            let layout = Layout::from_size_align_unchecked(size, 16);
            let p = a.alloc(layout);
            assert!(!p.is_null());
            p.write_bytes(1, size);
            let held = resident();
            a.dealloc(p, layout);
            release_free_memory();
            let after = resident();
            assert!(after + size / 2 < held, "resident {held} -> {after} bytes");
        }
    }

    /// The choice of entry point: plain up to a word, up to 16 bytes for blocks at least that
    /// large, aligned beyond.
    #[test]
    fn plain_entry_points_serve_what_every_block_meets() {
        assert!(plain(1, 1) && plain(3, 2) && plain(1, 4) && plain(5, WORD) && plain(5000, WORD));
        assert!(plain(16, 16) && plain(1500, 16));
        assert!(!plain(8, 16), "an 8-byte block is only word-aligned");
        assert!(!plain(64, 32) && !plain(4096, 64) && !plain(100_000, 4096));
    }
}
