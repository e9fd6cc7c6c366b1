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

/// Makes glibc's `malloc` keep freed memory for reuse instead of returning it to the
/// OS: no `mmap` for big blocks, no trimming of the heap. Returns whether both
/// settings were accepted; on other platforms and C libraries it does nothing and
/// returns `false`.
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` takes malloc's own lock and only changes its tuning
        // parameters; memory already handed out is unaffected.
        unsafe {
            let no_mmap = libc::mallopt(libc::M_MMAP_MAX, 0) == 1;
            let no_trim = libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1;
            no_mmap && no_trim
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
