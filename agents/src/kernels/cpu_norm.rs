//! Fused LayerNorm on the CPU: one pass over each row forward, one backward, rows in
//! parallel. Saves the row means and inverse deviations; the backward pass re-reads the
//! input. Row sums run in the vectorisable partial-sum order of the attention's
//! [`lane_sum`].

use dfdx::prelude::*;
use num_traits::Float;
use rayon::prelude::*;

use super::{cast, read, release, rows_per_task, zeroed, CpuBackward, Tensor1, Tensor2};
use crate::attention::recurrence::lane_sum;

/// The mean and `1 / sqrt(var + eps)` of a row (biased variance, as PyTorch), summed in
/// [`lane_sum`]'s order (the host engine's LayerNorm uses the same function).
#[inline(always)]
pub(crate) fn row_moments<E: Dtype + Float>(x: &[E], eps: E) -> (E, E) {
    let width: E = cast(x.len() as f64);
    let mean = lane_sum(x, x, |v, _| v) / width;
    let var = lane_sum(x, x, |v, _| (v - mean) * (v - mean)) / width;
    (mean, E::one() / (var + eps).sqrt())
}

/// `out = (x - mean) · rstd · g + b` for one row and its [`row_moments`].
#[inline(always)]
pub(crate) fn normalise_row<E: Dtype + Float>(
    x: &[E],
    (mean, rstd): (E, E),
    (gs, bs): (&[E], &[E]),
    out: &mut [E],
) {
    for (((o, &v), &g), &b) in out.iter_mut().zip(x).zip(gs).zip(bs) {
        *o = (v - mean) * rstd * g + b;
    }
}

/// Rows of `xs (N, W)` normalised into `out`, scaled by `gs` and shifted by `bs`; the
/// returned `(mean, 1 / sqrt(var + eps))` of every row is what [`backward_rows`] needs.
/// Blocks of rows in parallel.
pub(crate) fn forward_rows<E: Dtype + Float>(
    xs: &[E],
    (gs, bs): (&[E], &[E]),
    eps: f64,
    out: &mut [E],
) -> Vec<(E, E)> {
    let w = gs.len();
    let n = xs.len().checked_div(w).unwrap_or(0);
    let eps: E = cast(eps);
    let mut stats = vec![(E::zero(), E::zero()); n];
    let rows = rows_per_task(w);
    if w > 0 {
        out.par_chunks_mut(rows * w)
            .zip(xs.par_chunks(rows * w))
            .zip(stats.par_chunks_mut(rows))
            .for_each(|((out, xs), stats)| {
                for ((o, x), s) in out
                    .chunks_exact_mut(w)
                    .zip(xs.chunks_exact(w))
                    .zip(stats.iter_mut())
                {
                    *s = row_moments(x, eps);
                    normalise_row(x, *s, (gs, bs), o);
                }
            });
    }
    stats
}

/// The backward pass of [`forward_rows`] for the output gradient `dy`: adds the input's
/// gradient into `dx` and returns the scale's and the shift's gradients (blocks of rows
/// in parallel, their partial sums added in order: the same result on any pool).
pub(crate) fn backward_rows<E: Dtype + Float>(
    (xs, gs): (&[E], &[E]),
    stats: &[(E, E)],
    dy: &[E],
    dx: &mut [E],
) -> (Vec<E>, Vec<E>) {
    let w = gs.len();
    let (mut gw, mut gb) = (vec![E::zero(); w], vec![E::zero(); w]);
    if w == 0 {
        return (gw, gb);
    }
    let inv_w: E = cast(1.0 / w as f64);
    let rows = rows_per_task(w);
    let partial: Vec<(Vec<E>, Vec<E>)> = dx
        .par_chunks_mut(rows * w)
        .zip(xs.par_chunks(rows * w))
        .zip(dy.par_chunks(rows * w))
        .zip(stats.par_chunks(rows))
        .map(|(((dx, xs), dy), stats)| {
            let (mut dg, mut db) = (vec![E::zero(); w], vec![E::zero(); w]);
            // One row's normalised values and their gradient.
            let (mut xhat, mut dxhat) = (vec![E::zero(); w], vec![E::zero(); w]);
            let rows = dx
                .chunks_exact_mut(w)
                .zip(xs.chunks_exact(w))
                .zip(dy.chunks_exact(w));
            for (((dx, x), dy), &(mean, rstd)) in rows.zip(stats) {
                // Every slice cut to the width, so that the loops run without bounds checks.
                let (xhat, dxhat, gs) = (&mut xhat[..w], &mut dxhat[..w], &gs[..w]);
                let (dg, db, x, dy, dx) =
                    (&mut dg[..w], &mut db[..w], &x[..w], &dy[..w], &mut dx[..w]);
                for i in 0..w {
                    xhat[i] = (x[i] - mean) * rstd;
                    dxhat[i] = dy[i] * gs[i];
                    dg[i] += dy[i] * xhat[i];
                    db[i] += dy[i];
                }
                // c1 = mean(dy g), c2 = mean(dy g xhat).
                let c1 = lane_sum(dxhat, dxhat, |v, _| v) * inv_w;
                let c2 = lane_sum(dxhat, xhat, |a, b| a * b) * inv_w;
                for i in 0..w {
                    dx[i] += rstd * (dxhat[i] - c1 - xhat[i] * c2);
                }
            }
            (dg, db)
        })
        .collect();
    for (dg, db) in &partial {
        add_in_order(&mut gw, dg);
        add_in_order(&mut gb, db);
    }
    (gw, gb)
}

/// `acc += x`, elementwise, on this thread.
fn add_in_order<E: Float>(acc: &mut [E], x: &[E]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a = *a + v;
    }
}

/// Forward pass; the backward pass when `trace`.
pub(crate) fn layer_norm<E: Dtype + Float>(
    x: Tensor2<E, Cpu>,
    weight: Tensor1<E, Cpu>,
    bias: Tensor1<E, Cpu>,
    eps: f64,
    trace: bool,
) -> (Tensor2<E, Cpu>, Option<CpuBackward<E>>) {
    let (n, w) = *x.shape();
    let (xs, gs, bs) = (read(&x), read(&weight), read(&bias));
    let mut out = zeroed(n * w);
    let stats = forward_rows(&xs, (&gs, &bs), eps, &mut out);
    let out = x.device().tensor_from_vec(out, (n, w));
    if !trace {
        return (out, None);
    }
    drop(xs);
    let (x_ghost, w_ghost, b_ghost, out_ghost) =
        (x.ghost(), weight.ghost(), bias.ghost(), out.ghost());
    let backward = move |grads: &mut Gradients<E, Cpu>| -> Result<(), CpuError> {
        grads.try_alloc_for(&x_ghost)?;
        grads.try_alloc_for(&out_ghost)?;
        grads.try_alloc_for(&w_ghost)?;
        grads.try_alloc_for(&b_ghost)?;
        let xs = read(&x);
        let dy = release(grads.get_or_alloc_mut(&out_ghost)?);
        // The input's gradient accumulates in place, rows in parallel.
        let dx: &mut Vec<E> = grads.get_or_alloc_mut(&x_ghost)?;
        let (dg, db) = backward_rows((&xs, &gs), &stats, &dy, dx);
        add_in_order(grads.get_or_alloc_mut(&w_ghost)?, &dg);
        add_in_order(grads.get_or_alloc_mut(&b_ghost)?, &db);
        Ok(())
    };
    (out, Some(Box::new(backward)))
}
