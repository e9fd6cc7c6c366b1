//! Linear maps on the CPU: the product through the `gemm` crate on the rayon pool, the
//! bias and activation (or the head split) in the same op, and a backward pass that
//! writes the input's and the weight's gradients straight from the output's gradient,
//! with no intermediate tensors or gradients in between.
//!
//! Several maps of one input (an attention's queries, keys and values) run as one
//! product of the maps' weights side by side, and one product per gradient.

use dfdx::prelude::*;
use num_traits::Float;
use rayon::prelude::*;

use super::cpu_pointwise::BitMask;
use super::{read, release, rows_per_task, zeroed, Activation, CpuBackward, Tensor2};
use super::{Affine, Tensor4};
use crate::attention::gemm::{matmul_parallel, matmul_parallel_new, View};

/// A map's weight on the host as the `(inputs, outputs)` matrix of `y = x W`, a view
/// of the stored values (`[out, in]` when `out_in`, else `[in, out]`).
pub(super) fn weight_view<E>(values: &[E], (i, o): (usize, usize), out_in: bool) -> View<'_, E> {
    if out_in {
        View::rows(values, o, i).t()
    } else {
        View::rows(values, i, o)
    }
}

/// The column sums of the `(rows, width)` matrix `g`, added to `acc`: blocks of rows in
/// parallel, their partial sums added in order (the same result on any pool).
pub(super) fn add_column_sums<E: Dtype + Float>(acc: &mut [E], g: &[E], width: usize) {
    if width == 0 {
        return;
    }
    let rows = rows_per_task(width);
    let partial: Vec<Vec<E>> = g
        .par_chunks(rows * width)
        .map(|chunk| {
            let mut sums = vec![E::zero(); width];
            for row in chunk.chunks_exact(width) {
                for (s, &v) in sums.iter_mut().zip(row) {
                    *s += v;
                }
            }
            sums
        })
        .collect();
    for sums in &partial {
        for (s, &v) in acc.iter_mut().zip(sums) {
            *s += v;
        }
    }
}

/// Adds `bias` to every row of `out` (rows of `width` values) and applies `act`; blocks
/// of rows in parallel.
pub(super) fn add_bias_act<E: Dtype + Float>(
    out: &mut [E],
    bias: Option<&[E]>,
    width: usize,
    act: Activation,
) {
    if width == 0 || (bias.is_none() && act == Activation::Identity) {
        return;
    }
    out.par_chunks_mut(rows_per_task(width) * width)
        .for_each(|chunk| {
            for row in chunk.chunks_exact_mut(width) {
                if let Some(bs) = bias {
                    for (v, &b) in row.iter_mut().zip(bs) {
                        *v += b;
                    }
                }
                if act == Activation::Relu {
                    for v in row.iter_mut() {
                        *v = v.max(E::zero());
                    }
                }
            }
        });
}

/// A map's weight gradient from its input `x (N, I)` and output gradient `g (N, O)`:
/// `dW += gᵀ x` for a weight stored `[out, in]`, `dW += xᵀ g` for `[in, out]`.
pub(super) fn add_weight_gradient<E: Dtype + Float>(
    gw: &mut [E],
    x: View<E>,
    g: View<E>,
    out_in: bool,
) {
    if out_in {
        matmul_parallel(gw, g.t(), x, true);
    } else {
        matmul_parallel(gw, x.t(), g, true);
    }
}

/// `act(x W + b)` for `x (N, I)`; the backward pass when `trace`.
pub(crate) fn linear<E: Dtype + Float>(
    x: Tensor2<E, Cpu>,
    map: Affine<E, Cpu>,
    act: Activation,
    trace: bool,
) -> (Tensor2<E, Cpu>, Option<CpuBackward<E>>) {
    let (n, i) = *x.shape();
    let o = map.outputs();
    let (xs, ws) = (read(&x), read(&map.weight));
    let mut out = matmul_parallel_new(View::rows(&xs, n, i), weight_view(&ws, (i, o), map.out_in));
    let bias = map.bias.as_ref().map(read);
    add_bias_act(&mut out, bias.as_deref(), o, act);
    let positive: Option<BitMask> =
        (trace && act == Activation::Relu).then(|| BitMask::from_values(&out, |v| v > E::zero()));
    let out = x.device().tensor_from_vec(out, (n, o));
    if !trace {
        return (out, None);
    }
    let (x_ghost, w_ghost, out_ghost) = (x.ghost(), map.weight.ghost(), out.ghost());
    let b_ghost = map.bias.as_ref().map(|b| b.ghost());
    let out_in = map.out_in;
    drop((x, map));
    let backward = move |grads: &mut Gradients<E, Cpu>| -> Result<(), CpuError> {
        grads.try_alloc_for(&x_ghost)?;
        grads.try_alloc_for(&w_ghost)?;
        grads.try_alloc_for(&out_ghost)?;
        let mut g: Vec<E> = release(grads.get_or_alloc_mut(&out_ghost)?);
        if let Some(positive) = &positive {
            positive.zero_unset(&mut g);
        }
        if let Some(b_ghost) = &b_ghost {
            grads.try_alloc_for(b_ghost)?;
            add_column_sums(grads.get_or_alloc_mut(b_ghost)?, &g, o);
        }
        let gv = View::rows(&g, n, o);
        // dx += g Wᵀ
        matmul_parallel(
            grads.get_or_alloc_mut(&x_ghost)?,
            gv,
            weight_view(&ws, (i, o), out_in).t(),
            true,
        );
        let xv = View::rows(&xs, n, i);
        add_weight_gradient(grads.get_or_alloc_mut(&w_ghost)?, xv, gv, out_in);
        Ok(())
    };
    (out, Some(Box::new(backward)))
}

/// `[split(x W_j + b_j) for each map j]` for `x (B·L, I)`: the maps' products as one,
/// each output split into `h` heads `(B, H, L, O_j / H)`; the backward pass (recorded
/// once, for all outputs) when `trace`.
pub(crate) fn linear_heads<E: Dtype + Float>(
    x: Tensor2<E, Cpu>,
    maps: Vec<Affine<E, Cpu>>,
    (b, l, h): (usize, usize, usize),
    trace: bool,
) -> (Vec<Tensor4<E, Cpu>>, Option<CpuBackward<E>>) {
    let (n, i) = *x.shape();
    let widths: Vec<usize> = maps.iter().map(Affine::outputs).collect();
    let offsets: Vec<usize> = widths
        .iter()
        .scan(0, |at, &w| {
            let start = *at;
            *at += w;
            Some(start)
        })
        .collect();
    let total: usize = widths.iter().sum();
    // The weights side by side as one [out, in] matrix.
    let mut wcat = Vec::with_capacity(total * i);
    for map in &maps {
        let ws = read(&map.weight);
        let o = map.outputs();
        if map.out_in {
            wcat.extend_from_slice(&ws);
        } else {
            wcat.extend((0..o * i).map(|at| ws[(at % i) * o + at / i]));
        }
    }
    let xs = read(&x);
    let y = matmul_parallel_new(View::rows(&xs, n, i), weight_view(&wcat, (i, total), true));
    let seq = l * total;
    let dev = x.device().clone();
    let outs: Vec<Tensor4<E, Cpu>> = maps
        .iter()
        .zip(widths.iter().zip(&offsets))
        .map(|(map, (&o, &off))| {
            let d = o / h;
            let bias = map.bias.as_ref().map_or_else(|| vec![E::zero(); o], read);
            let mut out = zeroed(n * o);
            if seq > 0 && d > 0 {
                out.par_chunks_mut(l * o)
                    .zip(y.par_chunks(seq))
                    .for_each(|(out, ys)| {
                        for head in 0..h {
                            let bias = &bias[head * d..(head + 1) * d];
                            for t in 0..l {
                                let src = &ys[t * total + off + head * d..][..d];
                                let dst = &mut out[(head * l + t) * d..][..d];
                                for ((v, &s), &c) in dst.iter_mut().zip(src).zip(bias) {
                                    *v = s + c;
                                }
                            }
                        }
                    });
            }
            dev.tensor_from_vec(out, (b, h, l, d))
        })
        .collect();
    drop(y);
    if !trace {
        return (outs, None);
    }
    let x_ghost = x.ghost();
    let out_ghosts: Vec<_> = outs.iter().map(|t| t.ghost()).collect();
    let params: Vec<_> = maps
        .iter()
        .map(|m| {
            (
                m.weight.ghost(),
                m.bias.as_ref().map(|b| b.ghost()),
                m.out_in,
            )
        })
        .collect();
    drop((x, maps));
    let backward = move |grads: &mut Gradients<E, Cpu>| -> Result<(), CpuError> {
        grads.try_alloc_for(&x_ghost)?;
        // The outputs' gradients gathered back into token rows, (B·L, total).
        let mut g = zeroed(n * total);
        for ((out_ghost, (_, b_ghost, _)), (&o, &off)) in out_ghosts
            .iter()
            .zip(&params)
            .zip(widths.iter().zip(&offsets))
        {
            grads.try_alloc_for(out_ghost)?;
            let go: Vec<E> = release(grads.get_or_alloc_mut(out_ghost)?);
            let d = o / h;
            if seq > 0 && d > 0 {
                g.par_chunks_mut(seq)
                    .zip(go.par_chunks(l * o))
                    .for_each(|(g, go)| {
                        for head in 0..h {
                            for t in 0..l {
                                let src = &go[(head * l + t) * d..][..d];
                                g[t * total + off + head * d..][..d].copy_from_slice(src);
                            }
                        }
                    });
            }
            if let Some(b_ghost) = b_ghost {
                grads.try_alloc_for(b_ghost)?;
                let gb = grads.get_or_alloc_mut(b_ghost)?;
                // Column sums of this map's block of g.
                let rows = rows_per_task(total);
                let partial: Vec<Vec<E>> = g
                    .par_chunks(rows * total.max(1))
                    .map(|chunk| {
                        let mut sums = vec![E::zero(); o];
                        for row in chunk.chunks_exact(total) {
                            for (s, &v) in sums.iter_mut().zip(&row[off..off + o]) {
                                *s += v;
                            }
                        }
                        sums
                    })
                    .collect();
                for sums in &partial {
                    for (s, &v) in gb.iter_mut().zip(sums) {
                        *s += v;
                    }
                }
            }
        }
        let gv = View::rows(&g, n, total);
        // dx += g Wcat
        matmul_parallel(
            grads.get_or_alloc_mut(&x_ghost)?,
            gv,
            View::rows(&wcat, total, i),
            true,
        );
        // dWcat = gᵀ x, [total, in], then each map's block into its weight's gradient.
        let gw = matmul_parallel_new(gv.t(), View::rows(&xs, n, i));
        for ((w_ghost, _, out_in), (&o, &off)) in params.iter().zip(widths.iter().zip(&offsets)) {
            grads.try_alloc_for(w_ghost)?;
            let acc = grads.get_or_alloc_mut(w_ghost)?;
            let block = &gw[off * i..(off + o) * i];
            if *out_in {
                for (s, &v) in acc.iter_mut().zip(block) {
                    *s += v;
                }
            } else {
                // Stored [in, out]: element (r, c) of the block is acc[c * o + r].
                for (at, &v) in block.iter().enumerate() {
                    acc[(at % i) * o + at / i] += v;
                }
            }
        }
        Ok(())
    };
    (outs, Some(Box::new(backward)))
}
