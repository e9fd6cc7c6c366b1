//! Fused pointwise kernels on the CPU: dropout, and dropout plus residual. The backward
//! pass keeps a one-bit mask per value; both directions run over blocks of values in
//! parallel. The mask type, [`BitMask`], also serves the fused linear maps' ReLU.

use dfdx::prelude::*;
use num_traits::Float;
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use rand_distr::{Bernoulli, Distribution};
use rayon::prelude::*;

use super::{add_into, cast, read, release, CpuBackward};

/// Values per parallel block of the pointwise passes: a multiple of 64, so that a block
/// covers whole words of a [`BitMask`].
const BLOCK: usize = 64 * 256;

/// `dropout(x, p) + residual` (no residual: `dropout(x, p)`); `p == 0` with a residual
/// is a plain sum. The mask is dfdx's: a seed from the device's stream, then one
/// Bernoulli(p) draw of `StdRng` (ChaCha12) per value in order (`true` drops); blocks
/// of values draw in parallel from their own position of that stream.
pub(crate) fn dropout_add<S: Shape, E: Dtype + Float>(
    x: Tensor<S, E, Cpu>,
    residual: Option<Tensor<S, E, Cpu>>,
    p: f64,
    trace: bool,
) -> (Tensor<S, E, Cpu>, Option<CpuBackward<E>>) {
    let shape = *x.shape();
    let dev = x.device().clone();
    let mut out = read(&x);
    let drops = p > 0.0 || residual.is_none();
    let mut kept: Option<BitMask> = None;
    if drops {
        let mask = BitMask::dropout_keep(dev.random_u64(), p, out.len());
        mask.drop_values(&mut out, p);
        kept = trace.then_some(mask);
    }
    if let Some(r) = &residual {
        add_into(&mut out, &read(r));
    }
    let out = dev.tensor_from_vec(out, shape);
    if !trace {
        return (out, None);
    }
    let (x_ghost, out_ghost) = (x.ghost(), out.ghost());
    let r_ghost = residual.as_ref().map(|r| r.ghost());
    drop((x, residual));
    let backward = move |grads: &mut Gradients<E, Cpu>| -> Result<(), CpuError> {
        grads.try_alloc_for(&x_ghost)?;
        grads.try_alloc_for(&out_ghost)?;
        if let Some(r) = &r_ghost {
            grads.try_alloc_for(r)?;
        }
        let mut g: Vec<E> = release(grads.get_or_alloc_mut(&out_ghost)?);
        if let Some(r) = &r_ghost {
            add_into(grads.get_or_alloc_mut(r)?, &g);
        }
        if let Some(kept) = &kept {
            kept.drop_gradient(&mut g, p);
        }
        add_into(grads.get_or_alloc_mut(&x_ghost)?, &g);
        Ok(())
    };
    (out, Some(Box::new(backward)))
}

/// One bit per value.
pub(super) struct BitMask {
    words: Vec<u64>,
}

impl BitMask {
    /// Bit `i` is `keep(values[i])`; blocks of words in parallel.
    pub(super) fn from_values<E: Copy + Sync>(
        values: &[E],
        keep: impl Fn(E) -> bool + Sync,
    ) -> Self {
        let mut words = vec![0u64; values.len().div_ceil(64)];
        words
            .par_chunks_mut(BLOCK / 64)
            .zip(values.par_chunks(BLOCK))
            .for_each(|(words, values)| {
                for (word, values) in words.iter_mut().zip(values.chunks(64)) {
                    *word = values
                        .iter()
                        .enumerate()
                        .fold(0, |w, (j, &v)| w | (u64::from(keep(v)) << j));
                }
            });
        Self { words }
    }

    /// The kept values of inverted dropout over `len` values: bit `i` is set unless draw
    /// `i` of `Bernoulli(p)` on `StdRng::seed_from_u64(seed)` is `true`, as dfdx's
    /// `dropout` draws them. Each draw takes one `u64` (two stream words), so a block
    /// starting at value `s` seeks the stream to word `2 s` and draws in parallel.
    pub(super) fn dropout_keep(seed: u64, p: f64, len: usize) -> Self {
        // Bernoulli::new fails only outside [0, 1], which the configs exclude.
        let dist = Bernoulli::new(p).unwrap_or_else(|e| panic!("dropout probability {p}: {e}"));
        let base = ChaCha12Rng::seed_from_u64(seed);
        let mut words = vec![0u64; len.div_ceil(64)];
        words
            .par_chunks_mut(BLOCK / 64)
            .enumerate()
            .for_each(|(block, words)| {
                let mut rng = base.clone();
                rng.set_word_pos(2 * (block * BLOCK) as u128);
                let mut left = len - block * BLOCK;
                for word in words.iter_mut() {
                    let bits = left.min(64);
                    *word = (0..bits).fold(0, |w, j| w | (u64::from(!dist.sample(&mut rng)) << j));
                    left -= bits;
                }
            });
        Self { words }
    }

    /// Inverted dropout by this mask: zeroes the dropped values and divides the kept
    /// ones by `1 - p`.
    pub(super) fn drop_values<E: Float + Send + Sync>(&self, values: &mut [E], p: f64) {
        let keep_scale: E = cast(1.0 - p);
        self.map_then_zero_unset(values, |v| v / keep_scale);
    }

    /// The gradient through [`BitMask::drop_values`]: zeroes the dropped values and
    /// multiplies the kept ones by `1 / (1 - p)`.
    pub(super) fn drop_gradient<E: Float + Send + Sync>(&self, g: &mut [E], p: f64) {
        let grad_scale: E = cast((1.0 - p).recip());
        self.map_then_zero_unset(g, |v| v * grad_scale);
    }

    /// Zeroes `values[i]` where bit `i` is unset.
    pub(super) fn zero_unset<E: Float + Send>(&self, values: &mut [E]) {
        self.map_then_zero_unset(values, |v| v);
    }

    /// `values[i] = f(values[i])`, then zero where bit `i` is unset; blocks in parallel.
    /// The map runs over whole runs of values (it vectorises) and the zeroes go only
    /// where they belong, found from the words' unset bits.
    fn map_then_zero_unset<E: Float + Send>(&self, values: &mut [E], f: impl Fn(E) -> E + Sync) {
        values
            .par_chunks_mut(BLOCK)
            .zip(self.words.par_chunks(BLOCK / 64))
            .for_each(|(values, words)| {
                values.iter_mut().for_each(|v| *v = f(*v));
                for (values, &word) in values.chunks_mut(64).zip(words) {
                    let valid = u64::MAX >> (64 - values.len());
                    let mut unset = !word & valid;
                    while unset != 0 {
                        values[unset.trailing_zeros() as usize] = E::zero();
                        unset &= unset - 1;
                    }
                }
            });
    }
}
