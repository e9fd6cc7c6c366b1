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

use super::cpu_layout::{heads_to_rows, rows_to_heads, HeadColumns};
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

/// Several linear maps of one input as one: their weights side by side as one `[total,
/// inputs]` matrix, their biases, and where each map's outputs sit among the `total`
/// columns; with the maps themselves (handles to the parameters, which outlive the step
/// anyway) whose gradients the backward pass adds to.
pub(crate) struct StackedMaps<E: Dtype> {
    weights: Vec<E>,
    biases: Vec<Vec<E>>,
    widths: Vec<usize>,
    offsets: Vec<usize>,
    total: usize,
    inputs: usize,
    maps: Vec<Affine<E, Cpu>>,
}

impl<E: Dtype + Float> StackedMaps<E> {
    /// Reads the maps' parameters (all of the same input width).
    pub(crate) fn new(maps: &[Affine<E, Cpu>]) -> Self {
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
        let inputs = maps.first().map_or(0, Affine::inputs);
        let mut weights = Vec::with_capacity(total * inputs);
        for map in maps {
            let ws = read(&map.weight);
            let o = map.outputs();
            if map.out_in {
                weights.extend_from_slice(&ws);
            } else {
                weights.extend((0..o * inputs).map(|at| ws[(at % inputs) * o + at / inputs]));
            }
        }
        let biases = maps
            .iter()
            .map(|map| {
                map.bias
                    .as_ref()
                    .map_or_else(|| vec![E::zero(); map.outputs()], read)
            })
            .collect();
        Self {
            weights,
            biases,
            widths,
            offsets,
            total,
            inputs,
            maps: maps.to_vec(),
        }
    }

    /// The maps' outputs without their biases, `x (N, inputs)` -> `(N, total)`.
    pub(crate) fn products(&self, xs: &[E], n: usize) -> Vec<E> {
        let i = self.inputs;
        matmul_parallel_new(
            View::rows(xs, n, i),
            View::rows(&self.weights, self.total, i).t(),
        )
    }

    /// Where map `j`'s outputs sit among the `total` columns, split into `h` heads of
    /// sequences of `l` rows.
    fn columns(&self, j: usize, (l, h): (usize, usize)) -> HeadColumns {
        HeadColumns {
            l,
            h,
            d: self.widths[j] / h,
            off: self.offsets[j],
            total: self.total,
        }
    }

    /// Map `j`'s output plus its bias from the `products` `y` of `b` sequences of `l`
    /// rows, split into `h` heads: `(b, h, l, O_j / h)`, each head's rows contiguous.
    pub(crate) fn split(&self, y: &[E], j: usize, heads: (usize, usize)) -> Vec<E> {
        rows_to_heads(y, self.columns(j, heads), Some(&self.biases[j]))
    }

    /// A zeroed `(N, total)` gradient of the maps' outputs for `n` rows.
    pub(crate) fn new_gradient(&self, n: usize) -> Vec<E> {
        zeroed(n * self.total)
    }

    /// Writes map `j`'s output gradient `go` (laid out as [`StackedMaps::split`] gives
    /// it) into its columns of `g (N, total)`.
    pub(crate) fn gather(&self, g: &mut [E], j: usize, go: &[E], heads: (usize, usize)) {
        heads_to_rows(go, self.columns(j, heads), g);
    }

    /// `dx += g W` for the outputs' gradient `g (N, total)`.
    pub(crate) fn add_input_gradient(&self, dx: &mut [E], g: &[E]) {
        let (total, i) = (self.total, self.inputs);
        let gv = View::rows(g, g.len() / total.max(1), total);
        matmul_parallel(dx, gv, View::rows(&self.weights, total, i), true);
    }

    /// The biases' and the weights' gradients from the outputs' gradient `g (N,
    /// total)` and the input's values `xs (N, inputs)`, added to theirs in `grads`.
    pub(crate) fn add_parameter_gradients(
        &self,
        grads: &mut Gradients<E, Cpu>,
        xs: &[E],
        g: &[E],
    ) -> Result<(), CpuError> {
        let (total, i) = (self.total, self.inputs);
        let n = g.len() / total.max(1);
        for (map, (&o, &off)) in self.maps.iter().zip(self.widths.iter().zip(&self.offsets)) {
            let Some(bias) = &map.bias else { continue };
            let gb = grads.get_or_alloc_mut(bias)?;
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
        let gv = View::rows(g, n, total);
        // dW = gᵀ x, [total, in], then each map's block into its weight's gradient.
        let gw = matmul_parallel_new(gv.t(), View::rows(xs, n, i));
        for (map, (&o, &off)) in self.maps.iter().zip(self.widths.iter().zip(&self.offsets)) {
            let acc = grads.get_or_alloc_mut(&map.weight)?;
            let block = &gw[off * i..(off + o) * i];
            if map.out_in {
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
    }
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
    let n = x.shape().0;
    let stacked = StackedMaps::new(&maps);
    let xs = read(&x);
    let y = stacked.products(&xs, n);
    let dev = x.device().clone();
    let outs: Vec<Tensor4<E, Cpu>> = maps
        .iter()
        .enumerate()
        .map(|(j, map)| {
            let out = stacked.split(&y, j, (l, h));
            dev.tensor_from_vec(out, (b, h, l, map.outputs() / h))
        })
        .collect();
    drop(y);
    if !trace {
        return (outs, None);
    }
    let x_ghost = x.ghost();
    let out_ghosts: Vec<_> = outs.iter().map(|t| t.ghost()).collect();
    drop((x, maps));
    let backward = move |grads: &mut Gradients<E, Cpu>| -> Result<(), CpuError> {
        // The outputs' gradients gathered back into token rows, (B·L, total).
        let mut g = stacked.new_gradient(n);
        for (j, out_ghost) in out_ghosts.iter().enumerate() {
            let go: Vec<E> = release(grads.get_or_alloc_mut(out_ghost)?);
            stacked.gather(&mut g, j, &go, (l, h));
        }
        stacked.add_input_gradient(grads.get_or_alloc_mut(&x_ghost)?, &g);
        stacked.add_parameter_gradients(grads, &xs, &g)
    };
    (outs, Some(Box::new(backward)))
}
