//! Linear maps and LayerNorm on row-major slices, their parameters copied out of the
//! [`ParamStore`] once.

use dfdx::prelude::*;

use crate::attention::recurrence::Real;
use crate::layers::{LayerNorm, Linear, WeightLayout};
use crate::params::{from_f64, ParamStore};

/// Multiply-adds per product (`rows · inputs · outputs`) from which a product is split
/// over the rayon pool: below, handing the halves to another thread costs about as
/// much as it saves.
const PARALLEL_MIN: usize = 1 << 20;

/// An affine map `y = x W + b` with `W` stored `[inputs, outputs]` row-major.
#[derive(Clone, Debug)]
pub(crate) struct HostLinear<E> {
    weight: Vec<E>,
    bias: Vec<E>,
    inputs: usize,
    outputs: usize,
}

impl<E: Real> HostLinear<E> {
    /// A copy of `layer`'s parameters (a missing bias is zeros).
    pub(crate) fn new<D: Device<E>>(store: &ParamStore<E, D>, layer: &Linear) -> Self {
        let (weight, layout, bias) = layer.parts();
        let (inputs, outputs) = (layer.inputs(), layer.outputs());
        let values = store.values(weight);
        let weight = match layout {
            WeightLayout::InOut => values,
            WeightLayout::OutIn => (0..inputs * outputs)
                .map(|at| values[(at % outputs) * inputs + at / outputs])
                .collect(),
        };
        Self {
            weight,
            bias: bias.map_or_else(|| vec![E::zero(); outputs], |b| store.values(b)),
            inputs,
            outputs,
        }
    }

    /// The maps side by side, `[x W_1 + b_1 | x W_2 + b_2 | ...]` (one product for the
    /// attention's queries, keys and values).
    pub(crate) fn concat(parts: &[Self]) -> Self {
        let inputs = parts.first().map_or(0, |p| p.inputs);
        let outputs = parts.iter().map(|p| p.outputs).sum();
        let mut weight = Vec::with_capacity(inputs * outputs);
        for i in 0..inputs {
            for p in parts {
                weight.extend_from_slice(&p.weight[i * p.outputs..(i + 1) * p.outputs]);
            }
        }
        Self {
            weight,
            bias: parts.iter().flat_map(|p| p.bias.iter().copied()).collect(),
            inputs,
            outputs,
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
        &self.weight[i * self.outputs..(i + 1) * self.outputs]
    }

    /// The bias.
    pub(crate) fn bias(&self) -> &[E] {
        &self.bias
    }

    /// `y = x W + b` for the `rows` rows of `x (rows, inputs)` into `y (rows, outputs)`,
    /// or `y += x W + b` with `accumulate` (a residual connection); `relu` after.
    pub(crate) fn apply(&self, x: &[E], y: &mut [E], rows: usize, accumulate: bool, relu: bool) {
        let (k, n) = (self.inputs, self.outputs);
        assert!(
            x.len() >= rows * k && y.len() >= rows * n,
            "host linear map: buffers smaller than {rows} rows"
        );
        if rows == 0 || n == 0 {
            return;
        }
        if !accumulate {
            for row in y[..rows * n].chunks_exact_mut(n) {
                row.copy_from_slice(&self.bias);
            }
        }
        let parallelism = if rows * k * n >= PARALLEL_MIN {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        };
        if k > 0 {
            // SAFETY: `y` holds `rows x n`, `x` `rows x k` and the weight `k x n` values,
            // all row-major (checked above and by construction); `y` is exclusively
            // borrowed and does not overlap the shared inputs; `E` is f32 or f64, the
            // types `gemm` takes (`Real` is implemented for the CPU float types).
            unsafe {
                gemm::gemm(
                    rows,
                    n,
                    k,
                    y.as_mut_ptr(),
                    1,
                    n as isize,
                    true,
                    x.as_ptr(),
                    1,
                    k as isize,
                    self.weight.as_ptr(),
                    1,
                    n as isize,
                    E::one(),
                    E::one(),
                    false,
                    false,
                    false,
                    parallelism,
                );
            }
        }
        if accumulate || relu {
            for row in y[..rows * n].chunks_exact_mut(n) {
                if accumulate {
                    for (o, &b) in row.iter_mut().zip(&self.bias) {
                        *o += b;
                    }
                }
                if relu {
                    for o in row.iter_mut() {
                        *o = o.max(E::zero());
                    }
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

    /// The mean and `sqrt(var + eps)` of a row (biased variance, as PyTorch).
    fn moments(&self, x: &[E]) -> (E, E) {
        let width: E = from_f64(x.len() as f64);
        let mean = x.iter().fold(E::zero(), |a, &v| a + v) / width;
        let var = x
            .iter()
            .fold(E::zero(), |a, &v| a + (v - mean) * (v - mean))
            / width;
        (mean, (var + self.eps).sqrt())
    }

    /// `y = LayerNorm(x)`, row by row over rows of the norm's width.
    pub(crate) fn apply(&self, x: &[E], y: &mut [E]) {
        let w = self.weight.len().max(1);
        for (o, x) in y.chunks_exact_mut(w).zip(x.chunks_exact(w)) {
            let (mean, std) = self.moments(x);
            for (((o, &v), &g), &b) in o.iter_mut().zip(x).zip(&self.weight).zip(&self.bias) {
                *o = (v - mean) / std * g + b;
            }
        }
    }

    /// LayerNorm of every row of `x`, in place.
    pub(crate) fn apply_in_place(&self, x: &mut [E]) {
        let w = self.weight.len().max(1);
        for x in x.chunks_exact_mut(w) {
            let (mean, std) = self.moments(x);
            for ((v, &g), &b) in x.iter_mut().zip(&self.weight).zip(&self.bias) {
                *v = (*v - mean) / std * g + b;
            }
        }
    }
}
