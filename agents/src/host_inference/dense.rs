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
    /// on the calling thread (callers split the rows).
    pub(crate) fn apply(&self, x: &[E], y: &mut [E], rows: usize, accumulate: bool, relu: bool) {
        let (k, n) = (self.inputs, self.outputs);
        if rows == 0 || n == 0 {
            return;
        }
        if !accumulate {
            for row in y[..rows * n].chunks_exact_mut(n) {
                row.copy_from_slice(&self.bias);
            }
        }
        product(
            y,
            n,
            Mat::rows(x, rows, k),
            Mat::strided(&self.weight, k, n, self.stride),
            Accumulate::Into,
            Split::Never,
        );
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

/// A read-only strided matrix: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, E> {
    data: &'a [E],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, E> Mat<'a, E> {
    /// The `rows x cols` matrix at the start of `data`, rows `rs` apart.
    pub(crate) fn strided(data: &'a [E], rows: usize, cols: usize, rs: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs,
            cs: 1,
        }
    }

    /// The row-major `rows x cols` matrix at the start of `data`.
    pub(crate) fn rows(data: &'a [E], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols)
    }

    /// The transposed matrix (no copy).
    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Whether every element lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// Whether a product overwrites its destination or adds to it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accumulate {
    /// `dst = a b`.
    Overwrite,
    /// `dst += a b`.
    Into,
}

/// Whether a product may be split over the rayon pool.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Split {
    /// From [`PARALLEL_MIN`] multiply-adds on.
    WhenLarge,
    /// Never: the caller already runs on one of several threads.
    Never,
}

/// `dst = a b`, or `dst += a b`; `dst` holds `a.rows` rows of `b.cols` values,
/// `dst_rs` apart.
///
/// # Panics
/// If the inner sizes differ or a matrix does not fit its slice (a bug in the caller).
pub(crate) fn product<E: Real>(
    dst: &mut [E],
    dst_rs: usize,
    a: Mat<E>,
    b: Mat<E>,
    accumulate: Accumulate,
    split: Split,
) {
    let accumulate = accumulate == Accumulate::Into;
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "host product: inner sizes differ");
    let dst_fits = m == 0 || n == 0 || (n <= dst_rs && (m - 1) * dst_rs + n <= dst.len());
    assert!(
        a.in_bounds() && b.in_bounds() && dst_fits,
        "host product: a matrix does not fit its slice"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_rs).take(m) {
                row[..n].fill(E::zero());
            }
        }
        return;
    }
    let parallelism = if split == Split::WhenLarge && m * k * n >= PARALLEL_MIN {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every index the product reads or writes is in bounds (checked above),
    // `dst` is exclusively borrowed and does not overlap the shared `a` and `b`, and
    // `E` is f32 or f64, the types `gemm` takes (`Real` is implemented for the CPU
    // float types).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            E::one(),
            E::one(),
            false,
            false,
            false,
            parallelism,
        );
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
        let mean = lane_sum(x, |v| v) / width;
        let var = lane_sum(x, |v| (v - mean) * (v - mean)) / width;
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

/// `sum f(x_i)` in eight independent partial sums (vectorisable without
/// reassociation; a plain fold is one chain of dependent additions).
#[inline(always)]
fn lane_sum<E: Real>(x: &[E], f: impl Fn(E) -> E) -> E {
    let mut acc = [E::zero(); 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder().iter().fold(E::zero(), |a, &v| a + f(v));
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7])) + tail
}
