//! Chunked causal Flow-Attention of one head on slices: the forward and backward kernels
//! behind the fused `Cpu` op.
//!
//! The five prefix sums are sequential sweeps (O(L D)). The aggregation
//! `sum_{j<=i} K_j (C_j v_j)^T` is computed in chunks of `C` positions: inside a
//! chunk a masked `C x C` product of matrices, across chunks a running `D x M` state, so
//! the work is dense matrix products (`gemm`) and memory stays O(L (D + M)). A sequence
//! that fits one chunk is a single masked `L x L` product (see [`Dims::new`]).
//!
//! The forward pass keeps, per head, the unscaled output rows, the `D x M` state and the
//! packed prefix sums before each chunk. The backward pass walks the chunks from the end:
//! it recomputes the chunk's prefix sums from their checkpoint, gets the adjoints of the
//! aggregation with masked products and a running reverse state `sum_{i>=end} Q_i dr_i^T`,
//! then the adjoints of the prefix sums position by position in reverse.

use super::cast;
use super::gemm::{matmul, View};
use super::recurrence::{advance, dot, sums_len, Consts, Real, Token};

/// Positions per chunk of long sequences. Measured on the benchmark shapes (D = M from 32
/// to 128, L from 60 to 64k), 32 costs less than 64 or 128: the in-chunk products grow
/// with the chunk, the across-chunk ones do not, and 32 rows keep the products efficient.
const CHUNK: usize = 32;

/// Sizes of one call and the chunk length chosen for them.
#[derive(Clone, Copy)]
pub(crate) struct Dims {
    pub l: usize,
    pub d: usize,
    pub m: usize,
    /// Positions per chunk of the aggregation (and per checkpoint of the prefix sums).
    pub chunk: usize,
}

impl Dims {
    /// Picks the chunk: per position, forward+backward, the in-chunk products cost about
    /// `chunk (4D + 3M)` multiply-adds and the across-chunk ones `6 D M`, which a sequence
    /// held in one chunk skips; so up to `CHUNK + 6 D M / (4D + 3M)` positions one chunk of
    /// `L` costs less (e.g. 142 positions at D = M = 128, 59 at D = M = 32).
    pub fn new(l: usize, d: usize, m: usize) -> Self {
        let single = CHUNK + 6 * d * m / (4 * d + 3 * m).max(1);
        let chunk = if l <= single { l.max(1) } else { CHUNK };
        Self { l, d, m, chunk }
    }

    /// Chunks per head.
    pub fn chunks(&self) -> usize {
        self.l.div_ceil(self.chunk)
    }

    /// Length of one head's saved states (a `D x M` matrix before each chunk).
    pub fn states_len(&self) -> usize {
        self.chunks() * self.d * self.m
    }

    /// Length of one head's saved checkpoints (the packed prefix sums before each chunk).
    pub fn checkpoints_len(&self) -> usize {
        self.chunks() * sums_len(self.d)
    }
}

/// What the forward pass of one head keeps for its backward pass.
pub(crate) struct Saved<S> {
    /// `qf_i^T S_i` per position `(L, M)`: the output row before its scale `A I / i`.
    pub readout: S,
    /// The `D x M` state before each chunk.
    pub states: S,
    /// The packed prefix sums (see [`sums_len`]) before each chunk.
    pub checkpoints: S,
}

/// One head's inputs to the kernels: the feature-mapped `qf = sigmoid(q)`, `kf =
/// sigmoid(k)` `(L, D)` and `v (L, M)`, with the call's sizes and constants.
#[derive(Clone, Copy)]
pub(crate) struct Head<'a, F> {
    pub qf: &'a [F],
    pub kf: &'a [F],
    pub v: &'a [F],
    pub dims: Dims,
    pub c: Consts<F>,
}

/// Gradients of one head (overwritten).
pub(crate) struct HeadGrads<'a, F> {
    pub q: &'a mut [F],
    pub k: &'a mut [F],
    pub v: &'a mut [F],
}

/// Positions `start..end` of the chunk `index`.
fn span(index: usize, dims: Dims) -> (usize, usize) {
    let start = index * dims.chunk;
    (start, (start + dims.chunk).min(dims.l))
}

/// `scores = a b^T` (`n x n`, row-major) with the entries above the diagonal set to zero:
/// row `i` keeps columns `j <= i`.
fn causal_scores<F: Real>(scores: &mut [F], a: View<F>, b: View<F>, n: usize) {
    matmul(scores, a, b.t(), false);
    for (i, row) in scores[..n * n].chunks_exact_mut(n).enumerate() {
        row[i + 1..].fill(F::zero());
    }
}

/// Rows `start..end` of a row-major matrix with `width` columns.
fn rows<F>(x: &[F], start: usize, end: usize, width: usize) -> &[F] {
    &x[start * width..end * width]
}

/// Rows `start..end` of a row-major matrix with `width` columns, mutable.
fn rows_mut<F>(x: &mut [F], start: usize, end: usize, width: usize) -> &mut [F] {
    &mut x[start * width..end * width]
}

/// Forward pass of one head -> `out (L,M)`; fills `saved` (one head's slices) when given.
#[inline(always)]
pub(crate) fn forward_head<F: Real>(
    head: Head<F>,
    out: &mut [F],
    mut saved: Option<Saved<&mut [F]>>,
) {
    let Head { qf, kf, v, dims, c } = head;
    let Dims {
        d, m, chunk: len, ..
    } = dims;
    let (width, chunks) = (sums_len(d), dims.chunks());
    let mut sums = vec![F::zero(); width];
    let mut state = vec![F::zero(); d * m];
    let mut scores = vec![F::zero(); len * len];
    let mut w = vec![F::zero(); len * m];
    let mut scale = vec![F::zero(); len];
    for chunk in 0..chunks {
        let (start, end) = span(chunk, dims);
        let n = end - start;
        if let Some(s) = saved.as_mut() {
            s.checkpoints[chunk * width..(chunk + 1) * width].copy_from_slice(&sums);
            s.states[chunk * d * m..(chunk + 1) * d * m].copy_from_slice(&state);
        }
        for j in 0..n {
            let i = start + j;
            let (qi, ki) = (&qf[i * d..(i + 1) * d], &kf[i * d..(i + 1) * d]);
            let t = advance(&mut sums, qi, ki, cast(i as f64 + 1.0), c);
            scale[j] = t.scale();
            for (o, &x) in w[j * m..(j + 1) * m].iter_mut().zip(&v[i * m..(i + 1) * m]) {
                *o = t.competition * x;
            }
        }
        let qc = View::rows(rows(qf, start, end, d), n, d);
        let kc = View::rows(rows(kf, start, end, d), n, d);
        let wc = View::rows(&w[..n * m], n, m);
        causal_scores(&mut scores, qc, kc, n);
        let out_c = rows_mut(out, start, end, m);
        let readout = match saved.as_mut() {
            Some(s) => rows_mut(s.readout, start, end, m),
            None => &mut *out_c,
        };
        matmul(readout, View::rows(&scores, n, n), wc, false);
        if chunk > 0 {
            matmul(readout, qc, View::rows(&state, d, m), true);
        }
        if chunk + 1 < chunks {
            matmul(&mut state, kc.t(), wc, true);
        }
        match saved.as_ref() {
            Some(s) => {
                let readout = rows(&s.readout[..], start, end, m);
                let pairs = out_c.chunks_exact_mut(m).zip(readout.chunks_exact(m));
                for ((o, r), &a) in pairs.zip(&scale) {
                    for (o, &x) in o.iter_mut().zip(r) {
                        *o = a * x;
                    }
                }
            }
            None => {
                for (o, &a) in out_c.chunks_exact_mut(m).zip(&scale) {
                    o.iter_mut().for_each(|x| *x = a * *x);
                }
            }
        }
    }
}

/// Reverse-sweep accumulators: adjoints of the prefix sums, summed from the end.
struct Reverse<F> {
    key: Vec<F>,
    query: Vec<F>,
    key_out: Vec<F>,
    query_in: Vec<F>,
    exp: F,
}

/// Backward pass of one head from the upstream gradient `dout (L,M)` and what its
/// forward pass saved; writes (overwrites) `grads`.
#[inline(always)]
pub(crate) fn backward_head<F: Real>(
    head: Head<F>,
    dout: &[F],
    saved: Saved<&[F]>,
    grads: HeadGrads<F>,
) {
    let Head { qf, kf, v, dims, c } = head;
    let Dims {
        d, m, chunk: len, ..
    } = dims;
    let (width, chunks) = (sums_len(d), dims.chunks());
    let mut rev = Reverse {
        key: vec![F::zero(); d],
        query: vec![F::zero(); d],
        key_out: vec![F::zero(); d],
        query_in: vec![F::zero(); d],
        exp: F::zero(),
    };
    // `sum_{i >= end of chunk} qf_i dr_i^T`, the adjoint of the state after the chunk.
    let mut after = vec![F::zero(); d * m];
    let mut sums = vec![F::zero(); width];
    let mut chunk_sums = vec![F::zero(); len * width];
    let mut tokens = vec![Token::default(); len];
    let mut scores = vec![F::zero(); len * len];
    let (mut w, mut dr) = (vec![F::zero(); len * m], vec![F::zero(); len * m]);
    for chunk in (0..chunks).rev() {
        let (start, end) = span(chunk, dims);
        let n = end - start;
        sums.copy_from_slice(&saved.checkpoints[chunk * width..(chunk + 1) * width]);
        for j in 0..n {
            let i = start + j;
            let (qi, ki) = (&qf[i * d..(i + 1) * d], &kf[i * d..(i + 1) * d]);
            let t = advance(&mut sums, qi, ki, cast(i as f64 + 1.0), c);
            tokens[j] = t;
            chunk_sums[j * width..(j + 1) * width].copy_from_slice(&sums);
            let scale = t.scale();
            for (o, &g) in dr[j * m..(j + 1) * m]
                .iter_mut()
                .zip(&dout[i * m..(i + 1) * m])
            {
                *o = scale * g;
            }
            for (o, &x) in w[j * m..(j + 1) * m].iter_mut().zip(&v[i * m..(i + 1) * m]) {
                *o = t.competition * x;
            }
        }
        let qc = View::rows(rows(qf, start, end, d), n, d);
        let kc = View::rows(rows(kf, start, end, d), n, d);
        let wc = View::rows(&w[..n * m], n, m);
        let drc = View::rows(&dr[..n * m], n, m);
        let before = View::rows(&saved.states[chunk * d * m..(chunk + 1) * d * m], d, m);
        let later = chunk + 1 < chunks;
        let gq = rows_mut(grads.q, start, end, d);
        let gk = rows_mut(grads.k, start, end, d);
        let gv = rows_mut(grads.v, start, end, m);

        // out_i = scale_i qf_i^T S_i with S_i = state before the chunk + sum over the chunk.
        // T[i][j] = dr_i . w_j (j <= i): dQ_i = sum_j T[i][j] kf_j + S_before dr_i and
        // dK_j = sum_i T[i][j] qf_i + (state adjoint after the chunk) w_j.
        causal_scores(&mut scores, drc, wc, n);
        let t = View::rows(&scores, n, n);
        matmul(gq, t, kc, false);
        if chunk > 0 {
            matmul(gq, drc, before.t(), true);
        }
        matmul(gk, t.t(), qc, false);
        let after_view = View::rows(&after, d, m);
        if later {
            matmul(gk, wc, after_view.t(), true);
        }
        // P[i][j] = qf_i . kf_j (j <= i): dW_j = sum_i P[i][j] dr_i + (adjoint after) kf_j.
        causal_scores(&mut scores, qc, kc, n);
        matmul(gv, View::rows(&scores, n, n).t(), drc, false);
        if later {
            matmul(gv, kc, after_view, true);
        }
        if chunk > 0 {
            matmul(&mut after, qc.t(), drc, true);
        }

        for j in (0..n).rev() {
            let i = start + j;
            let position = Position {
                t: tokens[j],
                qf: &qf[i * d..(i + 1) * d],
                kf: &kf[i * d..(i + 1) * d],
                sums: &chunk_sums[j * width..(j + 1) * width],
                v: &v[i * m..(i + 1) * m],
                row_dot: dot(
                    &dout[i * m..(i + 1) * m],
                    &saved.readout[i * m..(i + 1) * m],
                ),
            };
            position.backward(
                &mut rev,
                &mut gq[j * d..(j + 1) * d],
                &mut gk[j * d..(j + 1) * d],
                &mut gv[j * m..(j + 1) * m],
                c,
            );
        }
    }
}

/// Everything the reverse sweep needs about one position.
struct Position<'a, F> {
    t: Token<F>,
    qf: &'a [F],
    kf: &'a [F],
    /// The packed prefix sums up to and including this position.
    sums: &'a [F],
    v: &'a [F],
    /// `dout . (qf^T S)`.
    row_dot: F,
}

impl<F: Real> Position<'_, F> {
    /// Adjoints of this position's prefix-sum terms. On entry `gq`, `gk` and `gv` hold the
    /// aggregation's adjoints of `qf`, `kf` and `w = C v`; on exit the gradients of the raw
    /// `q`, `k` and `v`. Adds the position's terms to the reverse accumulators.
    #[inline(always)]
    fn backward(
        &self,
        rev: &mut Reverse<F>,
        gq: &mut [F],
        gk: &mut [F],
        gv: &mut [F],
        c: Consts<F>,
    ) {
        let (t, d) = (&self.t, self.qf.len());
        let (qf, kf, gq, gk) = (&self.qf[..d], &self.kf[..d], &mut gq[..d], &mut gk[..d]);
        let (sum_k, rest) = self.sums.split_at(d);
        let (sum_q, rest) = rest.split_at(d);
        let (sum_ko, rest) = rest.split_at(d);
        let sum_qi = &rest[..d];
        let (query_in, key_out) = (&mut rev.query_in[..d], &mut rev.key_out[..d]);
        let (key, query) = (&mut rev.key[..d], &mut rev.query[..d]);
        let (one, eps, pos) = (F::one(), c.eps, t.pos);
        let inv_pos = one / pos;

        let d_comp = dot(self.v, gv);
        let d_alloc = t.incoming * inv_pos * self.row_dot;
        let d_scale_in = t.allocation * self.row_dot * inv_pos;

        // C = pos exp / sum exp.
        rev.exp -= d_comp * t.competition / t.sum_exp;
        let d_exp = d_comp * pos / t.sum_exp + rev.exp;
        let d_source = if t.unclamped(c.clamp) {
            d_exp * t.exp
        } else {
            F::zero()
        };
        // Sr = (K + eps) . (sum QI + eps) / pos;  A = sigmoid(Sk), Sk = (Q + eps) . (sum KO + eps) / pos.
        let d_sink = d_alloc * t.allocation * (one - t.allocation);
        let (source, sink) = (d_source * inv_pos, d_sink * inv_pos);
        for x in 0..d {
            query_in[x] += source * (kf[x] + eps);
            key_out[x] += sink * (qf[x] + eps);
        }
        // I enters the output scale and sum QI; O enters sum KO.
        let d_in = d_scale_in + dot(qf, query_in);
        let d_out = dot(kf, key_out);
        let d_den_in = -d_in * t.incoming / t.den_in;
        let d_den_out = -d_out * t.outgoing / t.den_out;
        for x in 0..d {
            key[x] += d_den_in * (qf[x] + eps);
            query[x] += d_den_out * (kf[x] + eps);
            let dq = gq[x]
                + sink * (sum_ko[x] + eps)
                + t.incoming * query_in[x]
                + d_den_in * (sum_k[x] + eps)
                + query[x];
            let dk = gk[x]
                + source * (sum_qi[x] + eps)
                + t.outgoing * key_out[x]
                + d_den_out * (sum_q[x] + eps)
                + key[x];
            gq[x] = dq * qf[x] * (one - qf[x]);
            gk[x] = dk * kf[x] * (one - kf[x]);
        }
        for g in gv.iter_mut() {
            *g = t.competition * *g;
        }
    }
}
