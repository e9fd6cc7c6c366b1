//! Causal attention of one head of one short sequence on row-major slices, with the
//! outputs of its last positions only when asked.
//!
//! Causal Flow-Attention's output at position `p` (`docs/ARCHITECTURE.md`, section 2)
//! is `A_p (Q_p I_p / p)^T sum_{j<=p} K_j (C_j v_j)^T`, which equals
//! `A_p I_p / p sum_{j<=p} (Q_p . K_j) C_j v_j`: the scalars of every position come from
//! the running sums ([`advance`]), and the output from a causal attention-like sum over
//! the earlier tokens, which costs less than the `D x M` state while the sequence is
//! shorter than that state is wide. Longer sequences use the state
//! ([`forward_token`]).

use gemm::Parallelism;

use crate::attention::gemm::{product, View};
use crate::attention::recurrence::{accumulate, advance, forward_token, sums_len, Consts, Real};
use crate::params::from_f64;

/// One head of one sequence: token `j`'s query, key and value are the `width` values
/// at `j * stride` of `q`, `k` and `v`. For Flow-Attention the queries and keys are
/// already feature-mapped (the sigmoid applied where they were computed).
#[derive(Clone, Copy)]
pub(crate) struct Head<'a, E> {
    pub q: &'a [E],
    pub k: &'a [E],
    pub v: &'a [E],
    pub stride: usize,
    pub len: usize,
    pub width: usize,
}

impl<E> Head<'_, E> {
    fn q(&self, j: usize) -> &[E] {
        &self.q[j * self.stride..j * self.stride + self.width]
    }
    fn k(&self, j: usize) -> &[E] {
        &self.k[j * self.stride..j * self.stride + self.width]
    }
    fn v(&self, j: usize) -> &[E] {
        &self.v[j * self.stride..j * self.stride + self.width]
    }
}

/// Where a head writes: the output of position `from + i` is the `width` values at
/// `i * stride` of `data`.
pub(crate) struct Out<'a, E> {
    pub data: &'a mut [E],
    pub stride: usize,
}

impl<E> Out<'_, E> {
    fn row(&mut self, i: usize, width: usize) -> &mut [E] {
        &mut self.data[i * self.stride..i * self.stride + width]
    }
}

/// Tokens from which one sequence's attention is split between two threads.
const SPLIT_MIN_TOKENS: usize = 16;

/// Causal Flow-Attention outputs of positions `from..head.len`; `scratch` is reused
/// between calls. With `split` (one sequence on its own, nothing else running in
/// parallel), the output rows are shared with a second thread.
pub(crate) fn flow<E: Real>(
    head: Head<E>,
    from: usize,
    c: Consts<E>,
    scratch: &mut Vec<E>,
    out: Out<E>,
    split: bool,
) {
    let (n, d) = (head.len, head.width);
    let outputs = n - from.min(n);
    // Multiply-adds: the pairwise sums against the D x M state (accumulated for every
    // token, read for the outputs).
    let pairwise = outputs * (n + from + 1) / 2 * 2 * d;
    if pairwise > (n + outputs) * d * d {
        return flow_by_state(head, from, c, scratch, out);
    }
    // Every part but the running sums is written before it is read.
    let need = 2 * n + sums_len(d) + outputs * n;
    if scratch.len() < need {
        scratch.resize(need, E::zero());
    }
    let (weights, rest) = scratch.split_at_mut(n);
    let (scale, rest) = rest.split_at_mut(n);
    let (sums, rest) = rest.split_at_mut(sums_len(d));
    sums.fill(E::zero());
    let scores = &mut rest[..outputs * n];
    for j in 0..n {
        let token = advance(sums, head.q(j), head.k(j), from_f64((j + 1) as f64), c);
        weights[j] = token.competition;
        scale[j] = token.scale();
    }
    let pairs = Pairs {
        head,
        weights,
        scale,
    };
    if split && n >= SPLIT_MIN_TOKENS {
        let half = outputs / 2;
        let (sa, sb) = scores.split_at_mut(half * n);
        let (oa, ob) = out.data.split_at_mut(half * out.stride);
        let stride = out.stride;
        rayon::join(
            || pairs.outputs(from, half, sa, Out { data: oa, stride }),
            || pairs.outputs(from + half, outputs - half, sb, Out { data: ob, stride }),
        );
    } else {
        pairs.outputs(from, outputs, scores, out);
    }
}

/// One head's feature-mapped queries and keys and its values, with the competition
/// weight and output scale of every position.
struct Pairs<'a, E> {
    head: Head<'a, E>,
    weights: &'a [E],
    scale: &'a [E],
}

impl<E: Real> Pairs<'_, E> {
    /// The outputs of positions `first..first + rows` into `out` (`scores` holds
    /// `rows * n` values).
    fn outputs(&self, first: usize, rows: usize, scores: &mut [E], mut out: Out<E>) {
        let head = &self.head;
        let (n, d, stride) = (head.len, head.width, head.stride);
        // scores[i][j] = (Q_p . K_j) C_j for p = first + i and j <= p, 0 after p.
        product(
            scores,
            n,
            View::strided(&head.q[first * stride..], rows, d, stride),
            View::strided(head.k, n, d, stride).t(),
            false,
            Parallelism::None,
        );
        for (i, row) in scores.chunks_exact_mut(n).enumerate() {
            let (seen, unseen) = row.split_at_mut(first + i + 1);
            for (s, &w) in seen.iter_mut().zip(self.weights) {
                *s *= w;
            }
            unseen.fill(E::zero());
        }
        product(
            out.data,
            out.stride,
            View::rows(scores, rows, n),
            View::strided(head.v, n, d, stride),
            false,
            Parallelism::None,
        );
        for (i, &s) in self.scale[first..first + rows].iter().enumerate() {
            for x in out.row(i, d) {
                *x *= s;
            }
        }
    }
}

/// [`flow`] through the `D x M` state, token by token.
fn flow_by_state<E: Real>(
    head: Head<E>,
    from: usize,
    c: Consts<E>,
    scratch: &mut Vec<E>,
    mut out: Out<E>,
) {
    let d = head.width;
    scratch.clear();
    scratch.resize(d * d + d + sums_len(d), E::zero());
    let (kv, rest) = scratch.split_at_mut(d * d);
    let (w, sums) = rest.split_at_mut(d);
    for j in 0..head.len {
        let (qf, kf) = (head.q(j), head.k(j));
        let pos = from_f64((j + 1) as f64);
        if j < from {
            let token = advance(sums, qf, kf, pos, c);
            accumulate(kv, kf, head.v(j), token.competition, w);
        } else {
            forward_token(sums, kv, qf, kf, head.v(j), pos, c, w, out.row(j - from, d));
        }
    }
}

/// Multiply-adds per product (`rows · inner · columns`) from which a softmax product
/// is split over the rayon pool: below, handing the halves to another thread costs
/// about as much as it saves.
const PARALLEL_MIN: usize = 1 << 20;

/// The parallelism of a product of `macs` multiply-adds.
fn split_when_large(macs: usize) -> Parallelism {
    if macs >= PARALLEL_MIN {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    }
}

/// Output rows per block of the softmax scores.
const SOFTMAX_BLOCK: usize = 64;

/// Causal softmax attention (scale `1/sqrt(D)`) outputs of positions `from..head.len`,
/// in blocks of [`SOFTMAX_BLOCK`] positions.
pub(crate) fn softmax<E: Real>(head: Head<E>, from: usize, scratch: &mut Vec<E>, out: Out<E>) {
    let (n, d) = (head.len, head.width);
    let scale: E = from_f64(1.0 / (d as f64).sqrt());
    let mut start = from;
    while start < n {
        let end = (start + SOFTMAX_BLOCK).min(n);
        let rows = end - start;
        scratch.clear();
        scratch.resize(rows * end, E::zero());
        let queries = View::strided(&head.q[start * head.stride..], rows, d, head.stride);
        let keys = View::strided(head.k, end, d, head.stride);
        product(
            scratch,
            end,
            queries,
            keys.t(),
            false,
            split_when_large(rows * d * end),
        );
        for (i, row) in scratch.chunks_exact_mut(end).enumerate() {
            let (seen, unseen) = row.split_at_mut(start + i + 1);
            let top = seen.iter().fold(E::neg_infinity(), |m, &s| m.max(s));
            let mut total = E::zero();
            for s in seen.iter_mut() {
                *s = ((*s - top) * scale).exp();
                total += *s;
            }
            let inv = E::one() / total;
            for s in seen.iter_mut() {
                *s *= inv;
            }
            unseen.fill(E::zero());
        }
        let values = View::strided(head.v, end, d, head.stride);
        let at = (start - from) * out.stride;
        product(
            &mut out.data[at..],
            out.stride,
            View::rows(scratch, rows, end),
            values,
            false,
            split_when_large(rows * d * end),
        );
        start = end;
    }
}
