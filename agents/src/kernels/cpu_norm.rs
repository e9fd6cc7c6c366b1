//! Fused LayerNorm on the CPU: one pass over each row forward, one backward, rows in
//! parallel. Saves the row means and inverse deviations; the backward pass re-reads the
//! input.

use dfdx::prelude::*;
use num_traits::Float;
use rayon::prelude::*;

use super::{cast, read, release, rows_per_task, zeroed, CpuBackward, Tensor1, Tensor2};

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
    let width: E = cast(w as f64);
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
                    let mean = x.iter().fold(E::zero(), |a, &v| a + v) / width;
                    let var = x
                        .iter()
                        .fold(E::zero(), |a, &v| a + (v - mean) * (v - mean))
                        / width;
                    let std = (var + eps).sqrt();
                    for (((o, &v), &g), &b) in o.iter_mut().zip(x).zip(gs).zip(bs) {
                        *o = (v - mean) / std * g + b;
                    }
                    *s = (mean, E::one() / std);
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
            let rows = dx
                .chunks_exact_mut(w)
                .zip(xs.chunks_exact(w))
                .zip(dy.chunks_exact(w));
            for (((dx, x), dy), &(mean, rstd)) in rows.zip(stats) {
                // c1 = mean(dy g), c2 = mean(dy g xhat).
                let (mut c1, mut c2) = (E::zero(), E::zero());
                for (i, (&v, &d)) in x.iter().zip(dy).enumerate() {
                    let xhat = (v - mean) * rstd;
                    let dxhat = d * gs[i];
                    c1 += dxhat;
                    c2 += dxhat * xhat;
                    dg[i] += d * xhat;
                    db[i] += d;
                }
                let (c1, c2) = (c1 * inv_w, c2 * inv_w);
                for (i, (o, (&v, &d))) in dx.iter_mut().zip(x.iter().zip(dy)).enumerate() {
                    let xhat = (v - mean) * rstd;
                    *o += rstd * (d * gs[i] - c1 - xhat * c2);
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
