//! Process-wide allocator settings for long tensor work.
//!
//! glibc's `malloc` serves big blocks (above a threshold that grows to 32 MiB) with
//! fresh `mmap`s and returns freed heap tops to the OS. Tensor code allocates and frees
//! buffers of the same sizes on every training step, so each step would fault in and
//! zero the same pages again: at 64k tokens that costs about as much as the attention
//! itself, and it makes time per step grow faster than linearly in the sequence
//! length. Keeping freed memory in the process removes that cost; the resident size
//! then stays at the run's peak, which a training process reaches on its first step
//! anyway.
//!
//! [`CappedAlloc`] is the `flowrl` binary's global allocator: the counting
//! `PeakAlloc` (peak memory for `flowrl bench`) with an optional cap on allocations,
//! armed by the fuzzer around each input so that an input asking for an absurd
//! allocation is reported as a finding instead of exhausting the machine.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};

use peak_alloc::PeakAlloc;

/// Exit status of a process stopped by the allocation cap (see [`CappedAlloc`]).
pub const CAP_EXIT_STATUS: i32 = 86;

/// The cap in bytes; 0 means none.
static CAP: AtomicUsize = AtomicUsize::new(0);
/// Bytes in use when the cap was armed: the cap bounds what is allocated on top.
static BASE: AtomicUsize = AtomicUsize::new(0);

/// `PeakAlloc` with an optional cap: while armed ([`arm_cap`]), a request larger than
/// the cap, or one that would take the bytes in use more than the cap above what was
/// in use when it was armed, writes `flowrl: allocation of N bytes above the cap of
/// M bytes` to stderr and ends the process with [`CAP_EXIT_STATUS`] (an allocator
/// may not unwind, and returning null would abort). The fuzzer runs its inputs in
/// a worker process and reports such an exit as a finding.
pub struct CappedAlloc;

/// Arms the cap at `bytes` above the bytes in use now (`None` disarms it). Only the
/// fuzzer's worker arms it; counting needs [`CappedAlloc`] as the global allocator.
pub fn arm_cap(bytes: Option<usize>) {
    BASE.store(PeakAlloc.current_usage(), Ordering::SeqCst);
    CAP.store(bytes.unwrap_or(0), Ordering::SeqCst);
}

/// Checks a request of `size` bytes that adds `growth` bytes to those in use.
fn check(size: usize, growth: usize) {
    let cap = CAP.load(Ordering::Relaxed);
    if cap == 0 {
        return;
    }
    let limit = BASE.load(Ordering::Relaxed).saturating_add(cap);
    if size > cap || PeakAlloc.current_usage().saturating_add(growth) > limit {
        over_cap(size, cap);
    }
}

/// Reports and exits without allocating (digits formatted on the stack).
#[cold]
fn over_cap(size: usize, cap: usize) -> ! {
    fn digits(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return &buf[i..];
            }
        }
    }
    let (mut a, mut b) = ([0u8; 20], [0u8; 20]);
    let parts: [&[u8]; 5] = [
        b"flowrl: allocation of ",
        digits(size, &mut a),
        b" bytes above the cap of ",
        digits(cap, &mut b),
        b" bytes\n",
    ];
    for part in parts {
        // SAFETY: writing a valid buffer to stderr; errors are ignored on the way out.
        unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
    }
    // SAFETY: `_exit` ends the process without running destructors or allocating.
    unsafe { libc::_exit(CAP_EXIT_STATUS) }
}

// SAFETY: every call is forwarded to `PeakAlloc` unchanged; `check` only reads atomics
// and may end the process.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size(), layout.size());
        unsafe { PeakAlloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { PeakAlloc.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size(), layout.size());
        unsafe { PeakAlloc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size, new_size.saturating_sub(layout.size()));
        unsafe { PeakAlloc.realloc(ptr, layout, new_size) }
    }
}

/// Makes glibc's `malloc` keep freed memory for reuse instead of returning it to the
/// OS: no `mmap` for big blocks, no trimming of the heap, and one arena for every
/// thread (training steps run on rayon workers; with a worker's own arena, whose heaps
/// hold at most 64 MB each, a training step over 3000-token sequences measured 8%
/// slower). Returns whether all three settings were accepted; on other platforms and
/// C libraries it does nothing and returns `false`.
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` takes malloc's own lock and only changes its tuning
        // parameters; memory already handed out is unaffected.
        unsafe {
            let no_mmap = libc::mallopt(libc::M_MMAP_MAX, 0) == 1;
            let no_trim = libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1;
            let one_arena = libc::mallopt(libc::M_ARENA_MAX, 1) == 1;
            no_mmap && no_trim && one_arena
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    /// glibc accepts both settings, and big allocations still work afterwards.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_settings() {
        assert!(super::retain_freed_memory());
        let mut big = vec![0u8; 64 << 20];
        big[(64 << 20) - 1] = 7;
        assert_eq!(big.iter().map(|&b| b as u64).sum::<u64>(), 7);
    }
}
