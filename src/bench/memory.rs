//! Peak heap memory of a benchmark case, read from the process's counting allocator
//! (`PeakAlloc`, installed as `#[global_allocator]` in the `flowrl` binary).

use peak_alloc::PeakAlloc;

/// Reads the counters of the process's counting allocator (they are global statics).
const ALLOC: PeakAlloc = PeakAlloc;

/// Whether the global allocator counts (it does when `main` installs `PeakAlloc`; a
/// test or library binary without it reports no memory).
pub fn allocator_counts() -> bool {
    let before = ALLOC.current_usage();
    let probe = std::hint::black_box(vec![0u8; 1 << 20]);
    let counted = ALLOC.current_usage() >= before + probe.len();
    drop(probe);
    counted
}

/// A measurement window: the bytes in use when it starts are the baseline, and the
/// allocator's peak is reset so that [`PeakWindow::peak`] sees only what follows.
pub struct PeakWindow {
    baseline: usize,
}

impl PeakWindow {
    /// Starts a window now.
    pub fn start() -> Self {
        let baseline = ALLOC.current_usage();
        ALLOC.reset_peak_usage();
        Self { baseline }
    }

    /// Peak bytes allocated above the baseline since the window started; `None` when
    /// nothing was counted (no counting allocator in this binary).
    pub fn peak(&self) -> Option<usize> {
        let peak = ALLOC.peak_usage().saturating_sub(self.baseline);
        (peak > 0).then_some(peak)
    }
}
