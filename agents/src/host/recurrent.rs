//! The causal Flow-Attention state of one block kept in host memory and updated in
//! place, for `Cpu` episode acting: each batch row's running sums and `D x M` matrix
//! are advanced by all the tokens of a step in one pass while they are in cache, and
//! the output is computed only for the tokens that are read. It follows the recurrence
//! of [`crate::attention::FlowState`] (`docs/ARCHITECTURE.md`, section 2) term by term.

use num_traits::Float;
use rayon::prelude::*;

use crate::attention::recurrence::{accumulate, advance, axpy, sums_len, Consts, Real};
use crate::attention::FlowConfig;

/// Values of `kv` per rayon task below which a step stays on one thread.
const PARALLEL_MIN: usize = 1 << 16;

/// The state of every (batch row, head): `sum K`, `sum Q`, `sum K O`, `sum Q I` (D
/// each), `sum exp(Sr)`, and `sum K (C v)^T` (D x M).
#[derive(Clone, Debug)]
pub(crate) struct HostFlow<E> {
    /// `[B·H, 4D + 1]`.
    sums: Vec<E>,
    /// `[B·H, D, M]`.
    kv: Vec<E>,
    heads: usize,
    d: usize,
    m: usize,
    consts: Consts<E>,
    position: usize,
}

/// Converts an `f64` constant to the element type.
pub(crate) fn cast<E: Float>(x: f64) -> E {
    E::from(x).unwrap_or_else(E::nan)
}

impl<E: Real> HostFlow<E> {
    /// An empty state (position 0) for `batch` rows of `heads` heads, query/key size
    /// `d` and value size `m`, with the feature map `sigmoid`.
    pub(crate) fn new(
        (batch, heads): (usize, usize),
        (d, m): (usize, usize),
        cfg: FlowConfig,
        sigmoid: fn(&mut [E]),
    ) -> Self {
        Self {
            sums: vec![E::zero(); batch * heads * sums_len(d)],
            kv: vec![E::zero(); batch * heads * d * m],
            heads,
            d,
            m,
            consts: Consts {
                eps: cast(cfg.eps),
                clamp: cast(cfg.clamp),
                sigmoid,
            },
            position: 0,
        }
    }

    /// Tokens fed so far.
    pub(crate) fn position(&self) -> usize {
        self.position
    }

    /// Feeds `n` tokens of every row: `q`, `k` `[n, B, H, D]` and `v` `[n, B, H, M]`
    /// (token-major, row-major), and returns the outputs of tokens `from..n`,
    /// `[n - from, B, H, M]`: what `n` steps of [`crate::attention::FlowState`] return.
    pub(crate) fn step_tokens(
        &mut self,
        q: &[E],
        k: &[E],
        v: &[E],
        n: usize,
        from: usize,
    ) -> Vec<E> {
        let (d, m) = (self.d, self.m);
        let rows = self.kv.len() / (d * m).max(1);
        let kept = n - from.min(n);
        let first = self.position;
        self.position += n;
        let consts = self.consts;
        // Row-major per (batch row, head): [B·H, kept, M], transposed below.
        let mut out = vec![E::zero(); rows * kept * m];
        let row_step = |r: usize, sums: &mut [E], kv: &mut [E], out: &mut [E]| {
            let (mut qf, mut kf, mut w) =
                (vec![E::zero(); d], vec![E::zero(); d], vec![E::zero(); m]);
            for t in 0..n {
                let at = t * rows + r;
                qf.copy_from_slice(&q[at * d..(at + 1) * d]);
                kf.copy_from_slice(&k[at * d..(at + 1) * d]);
                (consts.sigmoid)(&mut qf);
                (consts.sigmoid)(&mut kf);
                let pos: E = cast((first + t + 1) as f64);
                let token = advance(sums, &qf, &kf, pos, consts);
                let v = &v[at * m..(at + 1) * m];
                if t < from {
                    accumulate(kv, &kf, v, token.competition, &mut w);
                    continue;
                }
                for (o, &x) in w.iter_mut().zip(v) {
                    *o = token.competition * x;
                }
                // Accumulate and read out in one pass over the D x M matrix.
                let o = &mut out[(t - from) * m..(t - from + 1) * m];
                for ((row, &kx), &qx) in kv.chunks_exact_mut(m).zip(&kf).zip(&qf) {
                    axpy(row, kx, &w);
                    axpy(o, qx, row);
                }
                let scale = token.scale();
                for x in o.iter_mut() {
                    *x *= scale;
                }
            }
        };
        let sums_len = sums_len(d);
        let per_task = (PARALLEL_MIN / (d * m).max(1)).max(1);
        if rows > per_task {
            self.sums
                .par_chunks_mut(sums_len * per_task)
                .zip(self.kv.par_chunks_mut(d * m * per_task))
                .zip(out.par_chunks_mut(kept * m * per_task))
                .enumerate()
                .for_each(|(task, ((sums, kv), out))| {
                    let parts = sums
                        .chunks_exact_mut(sums_len)
                        .zip(kv.chunks_exact_mut(d * m))
                        .zip(out.chunks_exact_mut(kept * m));
                    for (i, ((s, kv), o)) in parts.enumerate() {
                        row_step(task * per_task + i, s, kv, o);
                    }
                });
        } else {
            let parts = self
                .sums
                .chunks_exact_mut(sums_len)
                .zip(self.kv.chunks_exact_mut(d * m))
                .zip(out.chunks_exact_mut(kept * m));
            for (r, ((s, kv), o)) in parts.enumerate() {
                row_step(r, s, kv, o);
            }
        }
        if kept <= 1 {
            return out;
        }
        let mut token_major = vec![E::zero(); out.len()];
        for r in 0..rows {
            for t in 0..kept {
                token_major[(t * rows + r) * m..(t * rows + r + 1) * m]
                    .copy_from_slice(&out[(r * kept + t) * m..(r * kept + t + 1) * m]);
            }
        }
        token_major
    }

    /// Keeps only the batch rows `rows` (already checked), in that order.
    pub(crate) fn keep_rows(&mut self, rows: &[usize]) {
        let s = self.heads * sums_len(self.d);
        let kv = self.heads * self.d * self.m;
        self.sums = rows
            .iter()
            .flat_map(|&r| self.sums[r * s..(r + 1) * s].iter().copied())
            .collect();
        self.kv = rows
            .iter()
            .flat_map(|&r| self.kv[r * kv..(r + 1) * kv].iter().copied())
            .collect();
    }
}
