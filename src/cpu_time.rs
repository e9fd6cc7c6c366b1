//! CPU time of this process: what benchmarks and the suite report next to wall-clock
//! time (on a shared machine it measures the work done, where wall-clock time also
//! counts the waiting).

/// CPU seconds (user plus system, all threads) the process has used so far, to the
/// microsecond; `None` where the platform does not say.
pub fn process_cpu_seconds() -> Option<f64> {
    #[cfg(unix)]
    {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage only writes the struct it is given, which is large enough.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: getrusage succeeded, so it filled the struct (which started zeroed).
        let usage = unsafe { usage.assume_init() };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        Some(secs(usage.ru_utime) + secs(usage.ru_stime))
    }
    #[cfg(not(unix))]
    {
        None
    }
}
