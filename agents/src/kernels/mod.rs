//! Fused kernels for the layers' hot paths: linear maps with their bias and activation
//! (or split into attention heads), LayerNorm, dropout and dropout plus residual, the
//! heads' merge back into token rows and row gathers, each with a hand-derived backward
//! pass.
//!
//! dfdx's composed elementwise ops are single-threaded, allocate a tensor per op and
//! keep every intermediate until the backward pass ends. On `Cpu` these functions run
//! one fused pass per direction instead (rows in parallel with rayon where it pays) and
//! save only what the backward pass needs; on every other device (`Cuda`) they run the
//! device-generic compositions of stock ops in [`composed`]. Both paths record on the
//! usual dfdx tapes and compute the same function.
//!
//! The fused ops release their output's gradient once their backward pass has used it
//! (the gradient is complete by then: every consumer ran first): reading the gradient
//! of a fused op's *output* after `backward()` is not supported; inputs' and
//! parameters' gradients are unaffected.
//!
//! The free functions here check shapes and call the device's implementation
//! ([`crate::device::ModelDevice`]): the fused `Cpu` kernels (`cpu_*` modules), or
//! the compositions in [`composed`].

pub mod composed;
pub(crate) mod cpu_layout;
pub(crate) mod cpu_linear;
pub(crate) mod cpu_mlp;
pub(crate) mod cpu_norm;
pub(crate) mod cpu_pointwise;

use dfdx::prelude::*;
use num_traits::Float;

use crate::device::ModelDevice;
use rayon::prelude::*;

/// Row-major token matrix `(rows, features)` with runtime sizes.
pub type Tensor2<E, D, T = NoneTape> = Tensor<(usize, usize), E, D, T>;
/// A runtime-length vector (biases, LayerNorm scale and shift).
pub type Tensor1<E, D> = Tensor<(usize,), E, D>;
pub use crate::attention::Tensor4;

/// The activation applied after a bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// None: `y + b`.
    Identity,
    /// `max(y + b, 0)`.
    Relu,
}

/// A linear map's parameters as the kernels take them: `y = x W + b`.
#[derive(Clone, Debug)]
pub struct Affine<E: Dtype, D: Storage<E>> {
    /// The weight as stored: `[outputs, inputs]` when `out_in` (PyTorch `nn.Linear`,
    /// `y = x Wᵀ + b`), else `[inputs, outputs]`.
    pub weight: Tensor2<E, D>,
    /// Whether `weight` is stored `[outputs, inputs]`.
    pub out_in: bool,
    /// The bias `(outputs,)`, if any.
    pub bias: Option<Tensor1<E, D>>,
}

impl<E: Dtype, D: Storage<E>> Affine<E, D> {
    /// Input width.
    pub fn inputs(&self) -> usize {
        let (r, c) = *self.weight.shape();
        if self.out_in {
            c
        } else {
            r
        }
    }

    /// Output width.
    pub fn outputs(&self) -> usize {
        let (r, c) = *self.weight.shape();
        if self.out_in {
            r
        } else {
            c
        }
    }
}

/// A LayerNorm's parameters as the kernels take them.
#[derive(Clone, Debug)]
pub struct Norm<E: Dtype, D: Storage<E>> {
    /// The scale `(W,)`.
    pub weight: Tensor1<E, D>,
    /// The shift `(W,)`.
    pub bias: Tensor1<E, D>,
    /// The eps added to the variance.
    pub eps: f64,
}

impl<E: Dtype, D: Storage<E>> Norm<E, D> {
    /// Checks the parameters against the rows' width; `op` names the caller.
    pub(crate) fn check(&self, op: &str, w: usize) {
        assert_eq!(self.weight.shape().0, w, "{op}: LayerNorm weight width");
        assert_eq!(self.bias.shape().0, w, "{op}: LayerNorm bias width");
    }
}

/// The MLP sub-layer's parameters as the kernels take them: a LayerNorm, the wide map
/// (followed by ReLU) and the map back to the residual width.
#[derive(Clone, Debug)]
pub struct Mlp<E: Dtype, D: Storage<E>> {
    /// The LayerNorm before the wide map.
    pub norm: Norm<E, D>,
    /// `W -> hidden`, followed by ReLU.
    pub fc: Affine<E, D>,
    /// `hidden -> W`.
    pub proj: Affine<E, D>,
}

/// The backward pass of a fused `Cpu` op.
pub(crate) type CpuBackward<E> = Box<dyn FnOnce(&mut Gradients<E, Cpu>) -> Result<(), CpuError>>;

/// Records a fused op's backward pass (if any: none without a tape) on `tape`.
pub(crate) fn record<E: Dtype, T: Tape<E, Cpu>>(tape: &mut T, backward: Option<CpuBackward<E>>) {
    if let Some(backward) = backward {
        tape.add_backward_op(move |grads: &mut Gradients<E, Cpu>| {
            // The Cpu kernels fail only when an allocation does, where dfdx's own ops panic too.
            backward(grads).unwrap_or_else(|e| panic!("fused Cpu kernel, backward pass: {e}"));
            Ok(())
        });
    }
}

/// `act(x W + b)` for `x (N, I)`: a linear map, its bias and the activation after it.
/// On `Cpu` one product and one pass forward, and the input's and parameters'
/// gradients straight from the output's gradient backward.
///
/// # Panics
/// If `x` does not have the map's `I` columns or the bias width differs from the map's.
pub fn linear<E, D, T>(x: Tensor2<E, D, T>, map: Affine<E, D>, act: Activation) -> Tensor2<E, D, T>
where
    E: Dtype + Float,
    D: ModelDevice<E>,
    T: Tape<E, D>,
{
    check_affine(x.shape().1, &map);
    D::linear(x, map, act)
}

/// Several linear maps of one input `x (B·L, I)`, each output `x W_j + b_j
/// (B·L, H·D)` split into `h` attention heads `(B, H, L, D)`, head `i` being features
/// `i·D..(i+1)·D` (an attention's queries, keys and values; [`merge_heads`] is the
/// inverse layout). On `Cpu` the maps run as one product of their weights side by
/// side and the outputs are contiguous (a permuted view elsewhere); the first output
/// carries the tape.
///
/// # Panics
/// If the sizes disagree (`I` columns for every map, `B·L` rows, `h` dividing every
/// output width) or `maps` is empty.
pub fn linear_heads<E, D, T>(
    x: Tensor2<E, D, T>,
    maps: Vec<Affine<E, D>>,
    (b, l, h): (usize, usize, usize),
) -> Vec<Tensor4<E, D, T>>
where
    E: Dtype + Float,
    D: ModelDevice<E>,
    T: Tape<E, D>,
{
    check_heads("linear_heads", *x.shape(), &maps, (b, l, h));
    D::linear_heads(x, maps, (b, l, h))
}

/// Checks maps of an input of shape `(N, I)` whose outputs `op` splits into `h` heads of
/// `b` sequences of `l` rows (see [`linear_heads`]).
pub(crate) fn check_heads<E: Dtype, D: Storage<E>>(
    op: &str,
    (n, i): (usize, usize),
    maps: &[Affine<E, D>],
    (b, l, h): (usize, usize, usize),
) {
    assert!(!maps.is_empty(), "{op}: no maps");
    assert_eq!(n, b * l, "{op}: {n} rows for {b} sequences of {l}");
    for map in maps {
        check_affine(i, map);
        let o = map.outputs();
        assert!(h > 0 && o % h == 0, "{op}: {h} heads of width {o}");
    }
}

/// Checks a map against its input width.
fn check_affine<E: Dtype, D: Storage<E>>(inputs: usize, map: &Affine<E, D>) {
    assert_eq!(inputs, map.inputs(), "linear map: input width");
    if let Some(bias) = &map.bias {
        assert_eq!(bias.shape().0, map.outputs(), "linear map: bias width");
    }
}

/// LayerNorm over the rows of `x (N, W)`: `(x - mean) / sqrt(var + eps) * weight + bias`
/// with the biased variance (as PyTorch); `weight` and `bias` are `(W,)`.
///
/// # Panics
/// If `weight` or `bias` do not have `W` entries.
pub fn layer_norm<E, D, T>(
    x: Tensor2<E, D, T>,
    weight: Tensor1<E, D>,
    bias: Tensor1<E, D>,
    eps: f64,
) -> Tensor2<E, D, T>
where
    E: Dtype + Float,
    D: ModelDevice<E>,
    T: Tape<E, D>,
{
    let w = x.shape().1;
    assert_eq!(weight.shape().0, w, "layer_norm: weight width");
    assert_eq!(bias.shape().0, w, "layer_norm: bias width");
    D::layer_norm(x, weight, bias, eps)
}

/// The MLP sub-layer with its residual: `x + dropout(relu(layer_norm(x) W1 + b1) W2 +
/// b2, p)` for `x (N, W)`, no dropout when `p == 0` (the same mask as
/// [`dropout_add`]). On `Cpu` one op, whose wide hidden layer never becomes a tensor.
///
/// # Panics
/// If the widths disagree: the LayerNorm's and the first map's inputs must be `W`, the
/// second map must take the first's outputs and give `W`.
pub fn mlp_residual<E, D, T>(x: Tensor2<E, D, T>, mlp: Mlp<E, D>, p: f64) -> Tensor2<E, D, T>
where
    E: Dtype + Float,
    D: ModelDevice<E>,
    T: Tape<E, D> + Merge<T>,
{
    let w = x.shape().1;
    mlp.norm.check("mlp", w);
    check_affine(w, &mlp.fc);
    check_affine(mlp.fc.outputs(), &mlp.proj);
    assert_eq!(mlp.proj.outputs(), w, "mlp: output width");
    D::mlp_residual(x, mlp, p)
}

/// Inverted dropout that always drops (the caller gates it on training): each value is
/// zeroed with probability `p` and the others are divided by `1 - p`. The mask comes
/// from the device's seeded stream exactly as dfdx's `dropout` draws it, so both paths
/// drop the same values.
pub fn dropout<S, E, D, T>(x: Tensor<S, E, D, T>, p: f64) -> Tensor<S, E, D, T>
where
    S: Shape,
    E: Dtype + Float,
    D: ModelDevice<E>,
    T: Tape<E, D>,
{
    D::dropout(x, p)
}

/// `dropout(x, p) + residual` when `p > 0` (the same mask as [`dropout`]), `x + residual`
/// when `p == 0`: a residual connection after a dropped sub-layer.
///
/// # Panics
/// If the shapes differ.
pub fn dropout_add<S, E, D, T>(
    x: Tensor<S, E, D, T>,
    residual: Tensor<S, E, D, T>,
    p: f64,
) -> Tensor<S, E, D, T>
where
    S: Shape,
    E: Dtype + Float,
    D: ModelDevice<E>,
    T: Tape<E, D> + Merge<T>,
{
    assert_eq!(
        x.shape().concrete(),
        residual.shape().concrete(),
        "dropout_add: shapes"
    );
    D::dropout_add(x, residual, p)
}

/// The inverse layout of [`linear_heads`]' head split: `o (B, H, L, M)` ->
/// `(B·L, H·M)` token rows with the heads side by side (head `i` as features
/// `i·M..(i+1)·M`). Free for one head.
pub fn merge_heads<E, D, T>(o: Tensor4<E, D, T>) -> Tensor2<E, D, T>
where
    E: Dtype + Float,
    D: ModelDevice<E>,
    T: Tape<E, D>,
{
    D::merge_heads(o)
}

/// Rows `rows` of `x (N, W)` in that order, `(rows.len(), W)`; rows may repeat (their
/// gradients add up).
///
/// # Panics
/// If a row is out of range.
pub fn gather_rows<E, D, T>(x: Tensor2<E, D, T>, rows: &[usize]) -> Tensor2<E, D, T>
where
    E: Dtype + Float,
    D: ModelDevice<E>,
    T: Tape<E, D>,
{
    let n = x.shape().0;
    if let Some(&r) = rows.iter().find(|&&r| r >= n) {
        panic!("gather_rows: row {r} of {n}");
    }
    D::gather_rows(x, rows)
}

/// The data of a contiguous `Cpu` tensor (a copy: dfdx has no borrowed view). Callers
/// make inputs contiguous first (on the tape, so gradients reach the original).
pub(crate) fn read<S: Shape, E: Dtype>(t: &Tensor<S, E, Cpu>) -> Vec<E> {
    let mut buf = zeroed(t.shape().num_elements());
    t.copy_into(&mut buf);
    buf
}

/// `n` zeros; large buffers are written by the rayon pool: a fresh buffer's zeroing (and
/// its page faults) is otherwise a serial pass on the calling thread, while for small
/// ones (an acting step's rows) handing work to the pool costs more than the zeroing.
pub(crate) fn zeroed<E: Dtype>(n: usize) -> Vec<E> {
    /// Values below which one thread zeroes the buffer.
    const SERIAL: usize = 1 << 15;
    if n < SERIAL {
        return vec![E::default(); n];
    }
    let mut buf: Vec<E> = Vec::with_capacity(n);
    buf.spare_capacity_mut()[..n]
        .par_chunks_mut(SERIAL)
        .for_each(|chunk| chunk.fill(std::mem::MaybeUninit::new(E::default())));
    // SAFETY: the loop above wrote all `n` values; the capacity is at least `n`.
    unsafe { buf.set_len(n) };
    buf
}

/// Takes an output's gradient out of the gradients, leaving an empty buffer: a fused
/// op's backward pass runs after every consumer of its output has added to that
/// gradient, so it is complete, and nothing reads it afterwards. Releasing it keeps
/// the intermediate gradients from piling up until the backward pass ends.
pub(crate) fn release<E, V: std::ops::DerefMut<Target = Vec<E>>>(grad: &mut V) -> Vec<E> {
    std::mem::take(&mut **grad)
}

/// Rows per rayon task for rows of `width` values: about 16k values per task, so that
/// small inputs stay on one thread.
fn rows_per_task(width: usize) -> usize {
    (16_384 / width.max(1)).max(1)
}

/// `acc += x`, elementwise, blocks in parallel.
pub(crate) fn add_into<E: Dtype + Float>(acc: &mut [E], x: &[E]) {
    const BLOCK: usize = 16_384;
    acc.par_chunks_mut(BLOCK)
        .zip(x.par_chunks(BLOCK))
        .for_each(|(acc, x)| {
            for (a, &v) in acc.iter_mut().zip(x) {
                *a += v;
            }
        });
}

/// Converts an `f64` constant to the element type.
fn cast<E: Float>(x: f64) -> E {
    E::from(x).unwrap_or_else(E::nan)
}
