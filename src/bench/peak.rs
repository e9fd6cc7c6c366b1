//! What a training step could reach on this machine: the matrix-product peak of the
//! `gemm` crate (the one flowrl's linear maps run on) measured in the run, and the
//! floating-point work of one training step counted from the model's sizes, so that
//! `flowrl bench train` can print each case's share of the peak.

use std::time::Instant;

/// Side of the square product timed for the peak: large enough to run at full speed,
/// small enough to take a few milliseconds.
const PEAK_SIDE: usize = 1024;
/// Timed products; the fastest counts.
const PEAK_REPS: usize = 10;

/// The best f32 matrix-product rate (FLOP/s) of a `PEAK_SIDE`³ product on `threads`
/// threads of the current rayon pool (after one warm-up product).
pub fn matmul_peak(threads: usize) -> f64 {
    let n = PEAK_SIDE;
    let a = vec![0.5f32; n * n];
    let b = vec![0.25f32; n * n];
    let mut c = vec![0.0f32; n * n];
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let mut best = f64::INFINITY;
    for rep in 0..=PEAK_REPS {
        let start = Instant::now();
        // SAFETY: the three buffers hold n·n values each, row-major with row stride n,
        // and `c` (written) does not overlap `a` or `b` (read).
        unsafe {
            gemm::gemm(
                n,
                n,
                n,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                n as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
        if rep > 0 {
            best = best.min(start.elapsed().as_secs_f64());
        }
    }
    2.0 * (n * n * n) as f64 / best
}

/// Sizes of a decision model's training step, for [`step_flops`].
#[derive(Clone, Copy, Debug)]
pub struct StepShape {
    /// Sequences in the batch.
    pub batch: usize,
    /// Timesteps per sequence (three tokens each).
    pub context: usize,
    /// Residual width.
    pub width: usize,
    /// Blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// State size.
    pub state_dim: usize,
    /// Action size.
    pub action_dim: usize,
    /// Softmax attention (quadratic core) rather than causal Flow-Attention.
    pub softmax: bool,
}

/// Floating-point operations of one training step: the forward pass's products
/// (embeddings, each block's four attention maps and two MLP maps, the attention core,
/// the action head) counted as 2 per multiply-add, and a backward pass of twice that.
/// Elementwise work (LayerNorm, dropout, the optimiser) is left out: it is memory-bound
/// and small beside the products.
pub fn step_flops(s: StepShape) -> f64 {
    let steps = (s.batch * s.context) as f64;
    let tokens = 3.0 * steps;
    let w = s.width as f64;
    let len = 3.0 * s.context as f64;
    let embeddings = steps * (s.state_dim + s.action_dim + 1) as f64 * w;
    let maps = tokens * 12.0 * w * w;
    let head = steps * w * s.action_dim as f64;
    // Causal softmax: scores and their weighted sum over the len·(len+1)/2 visible
    // pairs per head; Flow-Attention: a (D, M) state update and read per token and head
    // plus the flow sums, about 4·D·M per token and head.
    let core = if s.softmax {
        s.batch as f64 * len * (len + 1.0) / 2.0 * 2.0 * w
    } else {
        let d = w / s.heads as f64;
        tokens * 4.0 * d * w
    };
    let forward_macs = embeddings + s.layers as f64 * (maps + core) + head;
    3.0 * 2.0 * forward_macs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// C1's count by hand: 3840 tokens, width 128, 3 layers of 12·W² per token, the
    /// flow core 4·128·128 per token, embeddings 24·128 and head 128·6 per step.
    #[test]
    fn step_flops_counts_the_products() {
        let c1 = StepShape {
            batch: 64,
            context: 20,
            width: 128,
            layers: 3,
            heads: 1,
            state_dim: 17,
            action_dim: 6,
            softmax: false,
        };
        let per_layer = 3840.0 * (12.0 * 128.0 * 128.0 + 4.0 * 128.0 * 128.0);
        let want = 6.0 * (1280.0 * 24.0 * 128.0 + 3.0 * per_layer + 1280.0 * 128.0 * 6.0);
        assert_eq!(step_flops(c1), want);
        // Softmax at 60 tokens: 64 sequences of 60·61/2 pairs, 2·W each.
        let softmax = StepShape {
            softmax: true,
            ..c1
        };
        let core = 64.0 * 1830.0 * 2.0 * 128.0;
        let per_layer = 3840.0 * 12.0 * 128.0 * 128.0 + core;
        let want = 6.0 * (1280.0 * 24.0 * 128.0 + 3.0 * per_layer + 1280.0 * 128.0 * 6.0);
        assert_eq!(step_flops(softmax), want);
    }
}
