//! Linear maps and LayerNorm on row-major slices, their parameters copied out of the
//! [`ParamStore`] once.

use dfdx::prelude::*;

use gemm::Parallelism;

use crate::attention::gemm::{product, View};
use crate::attention::recurrence::Real;
use crate::kernels::cpu_norm::{normalise_row, row_moments};
use crate::model::layers::{LayerNorm, Linear, WeightLayout};
use crate::params::{from_f64, ParamStore};

/// Bytes added to every row of a stored weight: with power-of-two widths, the
/// weight's rows would start the same distance apart as the cache's sets repeat, and
/// the product's reads down a column would evict each other.
const ROW_PAD_BYTES: usize = 64;

/// An affine map `y = x W + b` with `W` stored `[inputs, outputs]` row-major, rows
/// `stride` values apart (`outputs` and a pad of [`ROW_PAD_BYTES`]).
#[derive(Clone, Debug)]
pub(crate) struct HostLinear<E> {
    weight: Vec<E>,
    bias: Vec<E>,
    inputs: usize,
    outputs: usize,
    stride: usize,
}

/// The row stride of a stored weight with `outputs` columns.
fn padded<E>(outputs: usize) -> usize {
    outputs + ROW_PAD_BYTES / std::mem::size_of::<E>().max(1)
}

impl<E: Real> HostLinear<E> {
    /// A copy of `layer`'s parameters (a missing bias is zeros).
    pub(crate) fn new<D: Device<E>>(store: &ParamStore<E, D>, layer: &Linear) -> Self {
        let (weight, layout, bias) = layer.parts();
        let (inputs, outputs) = (layer.inputs(), layer.outputs());
        let values = store.values(weight);
        let stride = padded::<E>(outputs);
        let mut stored = vec![E::zero(); inputs * stride];
        for (i, row) in stored.chunks_exact_mut(stride).enumerate() {
            for (o, w) in row[..outputs].iter_mut().enumerate() {
                *w = match layout {
                    WeightLayout::InOut => values[i * outputs + o],
                    WeightLayout::OutIn => values[o * inputs + i],
                };
            }
        }
        Self {
            weight: stored,
            bias: bias.map_or_else(|| vec![E::zero(); outputs], |b| store.values(b)),
            inputs,
            outputs,
            stride,
        }
    }

    /// The maps side by side, `[x W_1 + b_1 | x W_2 + b_2 | ...]` (one product for the
    /// attention's queries, keys and values).
    pub(crate) fn concat(parts: &[Self]) -> Self {
        let inputs = parts.first().map_or(0, |p| p.inputs);
        let outputs = parts.iter().map(|p| p.outputs).sum();
        let stride = padded::<E>(outputs);
        let mut weight = Vec::with_capacity(inputs * stride);
        for i in 0..inputs {
            for p in parts {
                weight.extend_from_slice(p.weight_row(i));
            }
            weight.resize((i + 1) * stride, E::zero());
        }
        Self {
            weight,
            bias: parts.iter().flat_map(|p| p.bias.iter().copied()).collect(),
            inputs,
            outputs,
            stride,
        }
    }

    /// Input width.
    pub(crate) fn inputs(&self) -> usize {
        self.inputs
    }

    /// Output width.
    pub(crate) fn outputs(&self) -> usize {
        self.outputs
    }

    /// Row `i` of the weight (`outputs` values): the map of a one-hot input.
    pub(crate) fn weight_row(&self, i: usize) -> &[E] {
        &self.weight[i * self.stride..i * self.stride + self.outputs]
    }

    /// The bias.
    pub(crate) fn bias(&self) -> &[E] {
        &self.bias
    }

    /// `y = x W + b` for the `rows` rows of `x (rows, inputs)` into `y (rows, outputs)`,
    /// or `y += x W + b` with `accumulate` (a residual connection); `relu` after. Runs
    /// on the calling thread (callers split the rows). The bias is added in the pass
    /// after the product (the product overwrites `y` unless it accumulates, so `y` is
    /// not filled with the bias first for the product to read back).
    pub(crate) fn apply(&self, x: &[E], y: &mut [E], rows: usize, accumulate: bool, relu: bool) {
        let (k, n) = (self.inputs, self.outputs);
        if rows == 0 || n == 0 {
            return;
        }
        product(
            y,
            n,
            View::rows(x, rows, k),
            View::strided(&self.weight, k, n, self.stride),
            accumulate,
            Parallelism::None,
        );
        for row in y[..rows * n].chunks_exact_mut(n) {
            for (o, &b) in row.iter_mut().zip(&self.bias) {
                *o += b;
            }
            if relu {
                for o in row.iter_mut() {
                    *o = o.max(E::zero());
                }
            }
        }
    }
}

/// LayerNorm with its scale and shift.
#[derive(Clone, Debug)]
pub(crate) struct HostNorm<E> {
    weight: Vec<E>,
    bias: Vec<E>,
    eps: E,
}

impl<E: Real> HostNorm<E> {
    /// A copy of `norm`'s parameters.
    pub(crate) fn new<D: Device<E>>(store: &ParamStore<E, D>, norm: &LayerNorm) -> Self {
        let (weight, bias, eps) = norm.parts();
        Self {
            weight: store.values(weight),
            bias: store.values(bias),
            eps: from_f64(eps),
        }
    }

    /// `y = LayerNorm(x)`, row by row over rows of the norm's width.
    pub(crate) fn apply(&self, x: &[E], y: &mut [E]) {
        let w = self.weight.len().max(1);
        let params = (self.weight.as_slice(), self.bias.as_slice());
        for (o, x) in y.chunks_exact_mut(w).zip(x.chunks_exact(w)) {
            normalise_row(x, row_moments(x, self.eps), params, o);
        }
    }

    /// LayerNorm of every row of `x`, in place.
    pub(crate) fn apply_in_place(&self, x: &mut [E]) {
        let w = self.weight.len().max(1);
        for x in x.chunks_exact_mut(w) {
            let (mean, rstd) = row_moments(x, self.eps);
            for ((v, &g), &b) in x.iter_mut().zip(&self.weight).zip(&self.bias) {
                *v = (*v - mean) * rstd * g + b;
            }
        }
    }
}
