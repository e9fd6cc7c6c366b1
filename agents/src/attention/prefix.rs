//! Chunked causal building blocks from stock dfdx ops, so no `(N,L,D,M)` tensor exists:
//! prefix sums along the sequence and causal linear aggregation.
//!
//! Both take `(N, L, X)` tensors whose length `L` is a multiple of the chunk `C`.
//! Inside a chunk they use a `C x C` lower-triangular matmul; across chunks an
//! exclusive prefix of per-chunk totals (a strictly lower `L/C x L/C` matmul).

use dfdx::prelude::*;

/// Inclusive prefix sum along axis 1 of `x (N, L, X)`, `L` a multiple of `chunk`.
pub(crate) fn cumsum<E, D, T>(
    x: Tensor<(usize, usize, usize), E, D, T>,
    chunk: usize,
) -> Tensor<(usize, usize, usize), E, D, T>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D> + Merge<T>,
{
    let (n, l, w) = *x.shape();
    let chunks = l / chunk;
    let nb = n * chunks;
    let dev = x.device().clone();
    let tri = dev
        .lower_tri_like(&(chunk, chunk), E::ONE, None)
        .broadcast_like::<_, Axis<0>>(&(nb, chunk, chunk));
    let x = x.reshape_like(&(nb, chunk, w));
    // Chunk totals from `x` itself: dfdx 0.13's `slice` backward overwrites the gradient
    // instead of adding to it, so a slice of `inner` would lose inner's other gradient.
    let totals = (chunks > 1).then(|| {
        x.with_empty_tape()
            .sum::<_, Axis<1>>()
            .reshape_like(&(n, chunks, w))
    });
    let (x, tape) = x.split_tape();
    let inner = tri.put_tape(tape).matmul(x);
    let Some(totals) = totals else {
        return inner.reshape_like(&(n, l, w));
    };
    let carry = exclusive_chunks(totals)
        .reshape_like(&(nb, w))
        .broadcast_like::<_, Axis<1>>(&(nb, chunk, w));
    (inner + carry).reshape_like(&(n, l, w))
}

/// Exclusive prefix over axis 1 of per-chunk totals `(N, nC, X)`.
fn exclusive_chunks<E, D, T>(
    totals: Tensor<(usize, usize, usize), E, D, T>,
) -> Tensor<(usize, usize, usize), E, D, T>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D> + Merge<T>,
{
    let (n, chunks, _) = *totals.shape();
    let dev = totals.device().clone();
    let strict = dev
        .lower_tri_like(&(chunks, chunks), E::ONE, -1)
        .broadcast_like::<_, Axis<0>>(&(n, chunks, chunks));
    let (totals, tape) = totals.split_tape();
    strict.put_tape(tape).matmul(totals)
}

/// Causal linear aggregation `out_i = q_i^T sum_{j<=i} k_j w_j^T` for `q, k (N,L,D)`,
/// `w (N,L,M)` -> `(N,L,M)`, `L` a multiple of `chunk`. Memory `O(N L C + N (L/C) D M)`.
pub(crate) fn causal_linear<E, D, T>(
    q: Tensor<(usize, usize, usize), E, D, T>,
    k: Tensor<(usize, usize, usize), E, D, T>,
    w: Tensor<(usize, usize, usize), E, D, T>,
    chunk: usize,
) -> Tensor<(usize, usize, usize), E, D, T>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D> + Merge<T>,
{
    let (n, l, d) = *q.shape();
    let m = w.shape().2;
    let chunks = l / chunk;
    let nb = n * chunks;
    let dev = q.device().clone();
    let qc = q.reshape_like(&(nb, chunk, d));
    let kc = k.reshape_like(&(nb, chunk, d));
    let wc = w.reshape_like(&(nb, chunk, m));
    let mask = dev
        .lower_tri_like(&(chunk, chunk), E::ONE, None)
        .broadcast_like::<_, Axis<0>>(&(nb, chunk, chunk));
    if chunks == 1 {
        let scores = qc.matmul(kc.permute::<_, Axes3<0, 2, 1>>());
        return (scores * mask).matmul(wc).reshape_like(&(n, l, m));
    }
    let scores = qc
        .with_empty_tape()
        .matmul(kc.with_empty_tape().permute::<_, Axes3<0, 2, 1>>());
    let inner = (scores * mask).matmul(wc.with_empty_tape());
    let states = kc
        .permute::<_, Axes3<0, 2, 1>>()
        .matmul(wc)
        .reshape_like(&(n, chunks, d * m));
    let before = exclusive_chunks(states).reshape_like(&(nb, d, m));
    let across = qc.matmul(before);
    (inner + across).reshape_like(&(n, l, m))
}
