//! Fused causal softmax attention on the CPU, tiled as in FlashAttention-2: scores exist
//! one tile at a time, so memory is O(L (D + M)) plus a few tiles per thread, never
//! O(L^2); time is O(L^2 (D + M)), spent in matrix products on tiles (`gemm` 0.19 with
//! AVX-512 where the CPU has it, single-threaded inside a task) and in exponentials.
//!
//! The queries are scaled by `1/sqrt(D)` beforehand, and each head's keys and values are
//! also copied transposed (`K^T (D,L)`, `V^T (M,L)`, rows padded past a power of two):
//! the products with `K^T` and `V^T` then read tiles `gemm` takes without gathering them.
//!
//! Forward, per query tile of [`FWD_ROWS`] rows: key tiles of [`FWD_COLS`] columns from
//! the diagonal leftwards (the first ends with the query tile, so only it crosses the
//! diagonal), `S = Q K^T`, the causal mask where a tile crosses the diagonal, an online
//! softmax (running maximum and sum, the output accumulator rescaled when the maximum
//! grows), `O += P V`; each row's log-normaliser `lse` is kept.
//!
//! Backward, recomputing `P = exp(S - lse)`: per key tile ([`BWD_COLS`] columns, twice
//! as many from [`LONG`] positions on), the query rows from the diagonal down in steps of
//! [`BWD_ROWS`]: `dV += P^T dO`, `dP = dO V^T`, `dS = P (dP - delta)` with
//! `delta_i = dO_i . O_i`, `dK += dS^T Q`, and `dS K` added to a dQ buffer. The key
//! tiles of a head are dealt round-robin to a number of groups fixed by the shape
//! ([`groups`]), each with its own dQ buffer; a group's first tile writes the rows it
//! covers (every row from its diagonal down) rather than adding to zeros, and the buffers
//! are summed in group order at the end over the rows each group wrote.
//!
//! Work is split into (head, query tile) tasks forward and (head, group) tasks backward,
//! so one long sequence still keeps every thread busy; the tile scratch is kept per
//! thread from call to call. Every sum runs in an order fixed by the shape alone, so
//! results do not depend on the number of threads.

use super::exp::SliceExp;
use super::gemm::{matmul, View};
use super::recurrence::dot;
use super::{cast, Tensor4};
use crate::kernels::{add_into, read};
use dfdx::prelude::*;
use rayon::prelude::*;

/// Query rows of a forward tile, the unit of the forward tasks.
const FWD_ROWS: usize = 256;
/// Key columns per forward step.
const FWD_COLS: usize = 256;
/// Query rows per backward step.
const BWD_ROWS: usize = 256;
/// Key columns of a backward tile, the unit of the backward tasks (twice as many from
/// [`LONG`] positions on: see [`bwd_cols`]).
const BWD_COLS: usize = 128;
/// Length from which the backward key tiles are twice as wide: each tile streams the
/// query rows below it and their dQ, which no longer stay in cache, so fewer, wider tiles
/// read them fewer times; shorter heads keep the narrower tiles, which compute less of
/// the masked triangle on the diagonal.
const LONG: usize = 2048;

/// Key columns of a backward tile for heads of length `l`.
fn bwd_cols(l: usize) -> usize {
    if l >= LONG {
        2 * BWD_COLS
    } else {
        BWD_COLS
    }
}
/// Backward tasks (heads times groups) to aim for when a head has enough key tiles.
const TASKS: usize = 16;

/// Float types with scratch space per thread for the tile kernels, kept from call to
/// call: a tile's scratch is about the size above which the allocator maps fresh pages,
/// so a new buffer per task would be mapped, faulted in and zeroed every call.
pub(crate) trait Scratch: SliceExp {
    /// Runs `f` on this thread's scratch of `len` values (of unspecified contents).
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
}

/// [`Scratch`] for `f32` and `f64`, one thread-local buffer each.
macro_rules! scratch {
    ($($float:ty => $name:ident),*) => {$(
        thread_local! {
            static $name: std::cell::RefCell<Vec<$float>> = const {
                std::cell::RefCell::new(Vec::new())
            };
        }

        impl Scratch for $float {
            fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
                $name.with(|cell| match cell.try_borrow_mut() {
                    Ok(mut buffer) => {
                        if buffer.len() < len {
                            buffer.resize(len, 0.0);
                        }
                        f(&mut buffer[..len])
                    }
                    // Already in use further up this thread's stack: a buffer of its own.
                    Err(_) => f(&mut vec![0.0; len]),
                })
            }
        }
    )*};
}

scratch!(f32 => SCRATCH_F32, f64 => SCRATCH_F64);

/// Sizes of one head.
#[derive(Clone, Copy)]
struct Dims {
    l: usize,
    d: usize,
    m: usize,
    /// Row stride of the transposed copies `K^T (D,L)` and `V^T (M,L)`: see [`stride`].
    lt: usize,
}

/// Row stride of the transposed copies of a head of length `l`: `l` rounded up to whole
/// cache lines plus one more, so the rows of a tile do not all map to the same cache
/// sets when `l` is a large power of two.
fn stride(l: usize) -> usize {
    l.next_multiple_of(16) + 16
}

/// Columns `c0..c0 + cols` of the `rows x L` matrix `x` (a transposed copy, rows `lt`
/// apart; with no rows, `x` is empty).
fn columns<F>(x: &[F], c0: usize, rows: usize, cols: usize, lt: usize) -> View<'_, F> {
    View::strided(&x[c0.min(x.len())..], rows, cols, lt)
}

/// `x (L,W)` of every head transposed into `(W,L)` with rows `lt` apart (padding zero).
/// A pass over memory as long as the inputs: on one thread.
fn transposed<F: SliceExp>(x: &[F], l: usize, w: usize, lt: usize) -> Vec<F> {
    let mut out = vec![F::zero(); x.len() / l.max(1) / w.max(1) * w * lt];
    if l * w == 0 {
        return out;
    }
    for (t, x) in out.chunks_mut(w * lt).zip(x.chunks(l * w)) {
        for (i, row) in x.chunks_exact(w).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                t[j * lt + i] = v;
            }
        }
    }
    out
}

/// The inputs of one head: `q (L,D)` already scaled by `1/sqrt(D)`, `k (L,D)`, `v (L,M)`,
/// and the transposes `kt (D,L)`, `vt (M,L)` (rows [`Dims::lt`] apart), through which
/// the products with `K^T` and `V^T` read their tiles in the layout `gemm` takes without
/// packing them first.
#[derive(Clone, Copy)]
struct Head<'a, F> {
    q: &'a [F],
    k: &'a [F],
    v: &'a [F],
    kt: &'a [F],
    vt: &'a [F],
}

/// What the backward pass of one head reads besides its inputs: the log-normaliser and
/// `delta = dO . O` of every row, and `dO (L,M)`.
#[derive(Clone, Copy)]
struct Rows<'a, F> {
    lse: &'a [F],
    delta: &'a [F],
    dout: &'a [F],
}

/// The key tiles of one backward task: `(first column, dK rows, dV rows)`, and its dQ
/// buffer `(L,D)`.
struct Group<'a, F> {
    tiles: Vec<(usize, &'a mut [F], &'a mut [F])>,
    dq: &'a mut [F],
}

/// How many columns of a tile starting at column `c0`, `cols` wide, query `row` sees.
#[inline(always)]
fn visible(row: usize, c0: usize, cols: usize) -> usize {
    (row + 1).saturating_sub(c0).min(cols)
}

/// `x *= a`.
#[inline(always)]
fn scale<F: SliceExp>(x: &mut [F], a: F) {
    for v in x.iter_mut() {
        *v *= a;
    }
}

/// Forward pass of the query tile of one head starting at row `r0`: writes its output
/// rows `out` and their log-normalisers `lse` (`s` is scratch of `FWD_ROWS * FWD_COLS`).
#[inline(always)]
fn forward_tile<F: SliceExp>(
    head: Head<F>,
    r0: usize,
    out: &mut [F],
    lse: &mut [F],
    s: &mut [F],
    dims: Dims,
) {
    let Dims { d, m, lt, .. } = dims;
    let rows = lse.len();
    let q = View::rows(&head.q[r0 * d..], rows, d);
    let mut top = [F::neg_infinity(); FWD_ROWS];
    let mut total = [F::zero(); FWD_ROWS];
    // Key tiles from the diagonal leftwards, the first ending with the query tile.
    let mut end = r0 + rows;
    let mut first = true;
    while end > 0 {
        let c0 = end.saturating_sub(FWD_COLS);
        let cols = end - c0;
        end = c0;
        let s = &mut s[..rows * cols];
        matmul(s, q, columns(head.kt, c0, d, cols, lt), false);
        for (r, (row, o)) in s
            .chunks_exact_mut(cols)
            .zip(out.chunks_exact_mut(m))
            .enumerate()
        {
            let (seen, hidden) = row.split_at_mut(visible(r0 + r, c0, cols));
            let new = top[r].max(F::slice_max(seen));
            let part = F::exp_shifted_sum(seen, new);
            hidden.fill(F::zero());
            // Nothing seen before: the accumulator and the sum are still empty.
            let alpha = if top[r] == F::neg_infinity() {
                F::zero()
            } else if top[r] == new {
                F::one()
            } else {
                (top[r] - new).exp()
            };
            total[r] = total[r] * alpha + part;
            if !first && alpha != F::one() {
                scale(o, alpha);
            }
            top[r] = new;
        }
        let v = View::rows(&head.v[c0 * m..], cols, m);
        matmul(out, View::rows(s, rows, cols), v, !first);
        first = false;
    }
    for ((o, x), (&top, &total)) in out.chunks_exact_mut(m).zip(lse).zip(top.iter().zip(&total)) {
        scale(o, F::one() / total);
        *x = top + total.ln();
    }
}

/// Backward pass of the key tile of one head starting at column `c0`: overwrites its
/// rows `gk` of dK and `gv` of dV and adds `dS K` (without the `1/sqrt(D)`) to rows
/// `c0..` of `gq`, the `(L,D)` dQ buffer, or writes them there when `fresh` (the first
/// tile of a buffer: its rows are then written before they are read, so a freshly
/// allocated buffer never maps the shared zero page only to copy it on the first
/// write). `p` and `dp` are scratch of `BWD_ROWS` times the tile's width each.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_tile<F: SliceExp>(
    head: Head<F>,
    saved: Rows<F>,
    (c0, fresh): (usize, bool),
    (gk, gv, gq): (&mut [F], &mut [F], &mut [F]),
    (p, dp): (&mut [F], &mut [F]),
    dims: Dims,
) {
    let Dims { l, d, m, lt } = dims;
    let cols = gv.len() / m;
    let k = View::rows(&head.k[c0 * d..], cols, d);
    let kt = columns(head.kt, c0, d, cols, lt);
    let vt = columns(head.vt, c0, m, cols, lt);
    // Query rows from the diagonal down.
    for r0 in (c0..l).step_by(BWD_ROWS) {
        let first = r0 == c0;
        let rows = BWD_ROWS.min(l - r0);
        let q = View::rows(&head.q[r0 * d..], rows, d);
        let dout = View::rows(&saved.dout[r0 * m..], rows, m);
        let (p, dp) = (&mut p[..rows * cols], &mut dp[..rows * cols]);
        matmul(p, q, kt, false);
        for (r, row) in p.chunks_exact_mut(cols).enumerate() {
            let (seen, hidden) = row.split_at_mut(visible(r0 + r, c0, cols));
            F::exp_shifted(seen, saved.lse[r0 + r]);
            hidden.fill(F::zero());
        }
        matmul(gv, View::rows(p, rows, cols).t(), dout, !first);
        matmul(dp, dout, vt, false);
        for (r, (ds, p)) in dp
            .chunks_exact_mut(cols)
            .zip(p.chunks_exact(cols))
            .enumerate()
        {
            let delta = saved.delta[r0 + r];
            for (x, &p) in ds.iter_mut().zip(p) {
                *x = p * (*x - delta);
            }
        }
        let ds = View::rows(dp, rows, cols);
        matmul(gk, ds.t(), q, !first);
        matmul(&mut gq[r0 * d..(r0 + rows) * d], ds, k, !fresh);
    }
}

/// The tile kernels compiled for AVX2 when the CPU has it, chosen at run time (the same
/// arithmetic in the same order, so the same results; the matrix products and the
/// exponentials pick their own instructions).
mod wide {
    use super::{Dims, Head, Rows, SliceExp};

    /// `(dK rows, dV rows, dQ buffer)` of one key tile.
    type Grads<'a, F> = (&'a mut [F], &'a mut [F], &'a mut [F]);
    /// Two scratch tiles.
    type Scratch<'a, F> = (&'a mut [F], &'a mut [F]);

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn forward_tile_avx2<F: SliceExp>(
        head: Head<F>,
        r0: usize,
        out: &mut [F],
        lse: &mut [F],
        s: &mut [F],
        dims: Dims,
    ) {
        super::forward_tile(head, r0, out, lse, s, dims)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn backward_tile_avx2<F: SliceExp>(
        head: Head<F>,
        saved: Rows<F>,
        c0: (usize, bool),
        grads: Grads<F>,
        scratch: Scratch<F>,
        dims: Dims,
    ) {
        super::backward_tile(head, saved, c0, grads, scratch, dims)
    }

    /// See [`super::forward_tile`].
    pub(super) fn forward_tile<F: SliceExp>(
        head: Head<F>,
        r0: usize,
        out: &mut [F],
        lse: &mut [F],
        s: &mut [F],
        dims: Dims,
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { forward_tile_avx2(head, r0, out, lse, s, dims) };
        }
        super::forward_tile(head, r0, out, lse, s, dims)
    }

    /// See [`super::backward_tile`].
    pub(super) fn backward_tile<F: SliceExp>(
        head: Head<F>,
        saved: Rows<F>,
        c0: (usize, bool),
        grads: Grads<F>,
        scratch: Scratch<F>,
        dims: Dims,
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { backward_tile_avx2(head, saved, c0, grads, scratch, dims) };
        }
        super::backward_tile(head, saved, c0, grads, scratch, dims)
    }
}

/// Groups of key tiles per head in the backward pass: enough for [`TASKS`] tasks in all,
/// at most one per key tile (a function of the shape only).
fn groups(heads: usize, dims: Dims) -> usize {
    TASKS
        .div_ceil(heads.max(1))
        .min(dims.l.div_ceil(bwd_cols(dims.l)))
        .max(1)
}

/// Fused causal softmax attention on `Cpu` (shapes already checked).
pub(crate) fn causal_softmax<F, T>(
    q: Tensor4<F, Cpu, T>,
    k: Tensor4<F, Cpu, T>,
    v: Tensor4<F, Cpu, T>,
) -> Tensor4<F, Cpu, T>
where
    F: Scratch,
    T: Tape<F, Cpu> + Merge<T>,
{
    let (b, h, l, d) = *q.shape();
    let m = v.shape().3;
    let lt = stride(l);
    let dims = Dims { l, d, m, lt };
    let heads = b * h;
    let factor: F = cast(1.0 / (d as f64).sqrt());
    let (q, tape_q) = q.contiguous().split_tape();
    let (k, tape_k) = k.contiguous().split_tape();
    let (v, tape_v) = v.contiguous().split_tape();
    let mut out = vec![F::zero(); heads * l * m];
    let mut lse = vec![F::zero(); heads * l];
    // The backward pass reuses these copies (dfdx has no borrowed view of tensor data).
    let copies = (!out.is_empty()).then(|| {
        let mut qd = read(&q);
        scale(&mut qd, factor);
        let (kd, vd) = (read(&k), read(&v));
        let (kt, vt) = (transposed(&kd, l, d, lt), transposed(&vd, l, m, lt));
        (qd, kd, vd, kt, vt)
    });
    if let Some((qd, kd, vd, kt, vt)) = &copies {
        let head = |n: usize| Head {
            q: &qd[n * l * d..(n + 1) * l * d],
            k: &kd[n * l * d..(n + 1) * l * d],
            v: &vd[n * l * m..(n + 1) * l * m],
            kt: &kt[n * d * lt..(n + 1) * d * lt],
            vt: &vt[n * m * lt..(n + 1) * m * lt],
        };
        let tiles: Vec<_> = out
            .chunks_mut(l * m)
            .zip(lse.chunks_mut(l))
            .enumerate()
            .flat_map(|(n, (o, s))| {
                o.chunks_mut(FWD_ROWS * m)
                    .zip(s.chunks_mut(FWD_ROWS))
                    .enumerate()
                    .map(move |(t, (o, s))| (n, t * FWD_ROWS, o, s))
            })
            .collect();
        tiles.into_par_iter().for_each(|(n, r0, o, x)| {
            F::with_scratch(FWD_ROWS * FWD_COLS, |s| {
                wide::forward_tile(head(n), r0, o, x, s, dims)
            })
        });
    }
    let out = q.device().tensor_from_vec(out, (b, h, l, m));
    let mut tape = tape_q.merge(tape_k).merge(tape_v);
    let out_values = out.clone();
    let (q_ghost, k_ghost, v_ghost, out_ghost) = (q.ghost(), k.ghost(), v.ghost(), out.ghost());
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&out_ghost)?;
        let n = heads * l;
        let groups = groups(heads, dims);
        let (mut gq, mut gk, mut gv) = (
            vec![F::zero(); n * d],
            vec![F::zero(); n * d],
            vec![F::zero(); n * m],
        );
        // Consumed: the copies are freed before the gradients are added.
        if let Some((qd, kd, vd, kt, vt)) = copies {
            let dout: &[F] = grads.get_or_alloc_mut(&out_ghost)?;
            let mut delta = vec![F::zero(); n];
            let od = read(&out_values);
            // A pass as long as the output: on one thread.
            for (x, (o, g)) in delta
                .iter_mut()
                .zip(od.chunks_exact(m).zip(dout.chunks_exact(m)))
            {
                *x = dot(o, g);
            }
            drop(od);
            // dQ buffers of groups 1.. of every head; group 0 adds into `gq` directly.
            let mut extra = vec![F::zero(); n * d * (groups - 1)];
            let per_head = l * d * (groups - 1);
            let mut tasks = Vec::with_capacity(heads * groups);
            let mut rest = extra.as_mut_slice();
            let outputs = gq
                .chunks_mut(l * d)
                .zip(gk.chunks_mut(l * d).zip(gv.chunks_mut(l * m)));
            for (head, (gq, (gk, gv))) in outputs.enumerate() {
                let (mine, others) = std::mem::take(&mut rest).split_at_mut(per_head);
                rest = others;
                let mut split: Vec<_> = std::iter::once(gq)
                    .chain(mine.chunks_mut(l * d))
                    .map(|dq| Group {
                        tiles: Vec::new(),
                        dq,
                    })
                    .collect();
                let cols = bwd_cols(l);
                let tiles = gk.chunks_mut(cols * d).zip(gv.chunks_mut(cols * m));
                for (t, (gk, gv)) in tiles.enumerate() {
                    split[t % groups].tiles.push((t * cols, gk, gv));
                }
                tasks.extend(split.into_iter().map(|g| (head, g)));
            }
            let inputs = |n: usize| Head {
                q: &qd[n * l * d..(n + 1) * l * d],
                k: &kd[n * l * d..(n + 1) * l * d],
                v: &vd[n * l * m..(n + 1) * l * m],
                kt: &kt[n * d * lt..(n + 1) * d * lt],
                vt: &vt[n * m * lt..(n + 1) * m * lt],
            };
            let saved = |n: usize| Rows {
                lse: &lse[n * l..(n + 1) * l],
                delta: &delta[n * l..(n + 1) * l],
                dout: &dout[n * l * m..(n + 1) * l * m],
            };
            tasks.into_par_iter().for_each(|(n, group)| {
                let tile = BWD_ROWS * bwd_cols(l);
                F::with_scratch(2 * tile, |scratch| {
                    let (p, dp) = scratch.split_at_mut(tile);
                    for (i, (c0, gk, gv)) in group.tiles.into_iter().enumerate() {
                        let grads = (gk, gv, &mut *group.dq);
                        let at = (c0, i == 0);
                        let scratch = (&mut *p, &mut *dp);
                        wide::backward_tile(inputs(n), saved(n), at, grads, scratch, dims);
                    }
                })
            });
            // dQ = (sum of the groups' buffers, in group order) / sqrt(D). Group `g`
            // starts at key tile `g`: rows before it were never written in its buffer.
            gq.par_chunks_mut(l * d).enumerate().for_each(|(n, gq)| {
                let extra = &extra[n * per_head..(n + 1) * per_head];
                for (r, row) in gq.chunks_exact_mut(d).enumerate() {
                    let written = (r / bwd_cols(l)).min(groups - 1);
                    for (j, x) in row.iter_mut().enumerate() {
                        let mut total = *x;
                        for g in 0..written {
                            total += extra[g * l * d + r * d + j];
                        }
                        *x = total * factor;
                    }
                }
            });
        }
        // One local at a time: each is freed once added.
        for (ghost, local) in [(&q_ghost, gq), (&k_ghost, gk)] {
            add_into(grads.get_or_alloc_mut(ghost)?, &local);
        }
        add_into(grads.get_or_alloc_mut(&v_ghost)?, &gv);
        Ok(())
    });
    out.put_tape(tape)
}
