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
//! (the gradient is complete by then: every consumer ran first): reading the gradient of a fused op's *output* after `backward()`
//! is not supported; inputs' and parameters' gradients are unaffected.
//!
//! The layer APIs are generic over any `D: Device<E>`, so the device is recognised at
//! run time (`TypeId`) rather than through an extra trait bound that every caller would
//! have to carry; the `Cpu` kernels then work on the same tensors and gradients, seen
//! with their concrete type.

pub mod composed;
mod cpu_layout;
mod cpu_linear;
mod cpu_norm;
mod cpu_pointwise;

use std::any::{Any, TypeId};

use dfdx::prelude::*;
use num_traits::Float;
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

/// The backward pass of a fused `Cpu` op.
type CpuBackward<E> = Box<dyn FnOnce(&mut Gradients<E, Cpu>) -> Result<(), CpuError>>;

/// Whether `D` is dfdx's `Cpu` (the fused kernels run there).
fn on_cpu<E: Dtype, D: Device<E>>() -> bool {
    TypeId::of::<D>() == TypeId::of::<Cpu>()
}

/// Moves a value to the type it already is, spelled differently (`Tensor<S, E, D>` with
/// `D = Cpu` seen as `Tensor<S, E, Cpu>` and back).
///
/// # Panics
/// If `A` and `B` differ: callers check [`on_cpu`] first.
fn same<A: 'static, B: 'static>(a: A) -> B {
    let mut slot = Some(a);
    match (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<B>>()
        .and_then(Option::take)
    {
        Some(b) => b,
        None => panic!(
            "kernel dispatch: {} is not {}",
            std::any::type_name::<A>(),
            std::any::type_name::<B>()
        ),
    }
}

/// Records a `Cpu` backward pass on a tape of device `D` (which is `Cpu`).
fn record<E, D, T>(tape: &mut T, backward: Option<CpuBackward<E>>)
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
{
    if let Some(backward) = backward {
        tape.add_backward_op(move |grads: &mut Gradients<E, D>| {
            let Some(grads) = (grads as &mut dyn Any).downcast_mut::<Gradients<E, Cpu>>() else {
                panic!("kernel dispatch: a Cpu backward pass recorded on another device");
            };
            // The Cpu kernels fail only when an allocation does, where dfdx's own ops panic too.
            backward(grads).unwrap_or_else(|e| panic!("fused Cpu kernel, backward pass: {e}"));
            Ok(())
        });
    }
}

/// Whether `E` is a type the `gemm` crate multiplies (the fused linear maps need it).
fn gemm_element<E: Dtype>() -> bool {
    TypeId::of::<E>() == TypeId::of::<f32>() || TypeId::of::<E>() == TypeId::of::<f64>()
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
    D: Device<E>,
    T: Tape<E, D>,
{
    check_affine(x.shape().1, &map);
    if !(on_cpu::<E, D>() && gemm_element::<E>()) {
        return composed::linear(x, map, act);
    }
    let (x, mut tape) = x.contiguous().split_tape();
    let map = Affine {
        weight: same::<Tensor2<E, D>, Tensor2<E, Cpu>>(map.weight),
        out_in: map.out_in,
        bias: map.bias.map(same::<Tensor1<E, D>, Tensor1<E, Cpu>>),
    };
    let (out, backward) = cpu_linear::linear(same(x), map, act, T::OWNS_TAPE);
    record::<E, D, T>(&mut tape, backward);
    same::<Tensor2<E, Cpu>, Tensor2<E, D>>(out).put_tape(tape)
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
    D: Device<E>,
    T: Tape<E, D>,
{
    assert!(!maps.is_empty(), "linear_heads: no maps");
    let n = x.shape().0;
    assert_eq!(n, b * l, "linear_heads: {n} rows for {b} sequences of {l}");
    for map in &maps {
        check_affine(x.shape().1, map);
        let o = map.outputs();
        assert!(h > 0 && o % h == 0, "linear_heads: {h} heads of width {o}");
    }
    if !(on_cpu::<E, D>() && gemm_element::<E>()) {
        return composed::linear_heads(x, maps, (b, l, h));
    }
    let (x, mut tape) = x.contiguous().split_tape();
    let maps = maps
        .into_iter()
        .map(|m| Affine {
            weight: same::<Tensor2<E, D>, Tensor2<E, Cpu>>(m.weight),
            out_in: m.out_in,
            bias: m.bias.map(same::<Tensor1<E, D>, Tensor1<E, Cpu>>),
        })
        .collect();
    let (outs, backward) = cpu_linear::linear_heads(same(x), maps, (b, l, h), T::OWNS_TAPE);
    record::<E, D, T>(&mut tape, backward);
    let mut tape = Some(tape);
    outs.into_iter()
        .map(|o| {
            let o = same::<Tensor4<E, Cpu>, Tensor4<E, D>>(o);
            o.put_tape(tape.take().unwrap_or_default())
        })
        .collect()
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
    D: Device<E>,
    T: Tape<E, D>,
{
    let w = x.shape().1;
    assert_eq!(weight.shape().0, w, "layer_norm: weight width");
    assert_eq!(bias.shape().0, w, "layer_norm: bias width");
    if !on_cpu::<E, D>() {
        return composed::layer_norm(x, weight, bias, eps);
    }
    let (x, mut tape) = x.contiguous().split_tape();
    let (out, backward) =
        cpu_norm::layer_norm(same(x), same(weight), same(bias), eps, T::OWNS_TAPE);
    record::<E, D, T>(&mut tape, backward);
    same::<Tensor2<E, Cpu>, Tensor2<E, D>>(out).put_tape(tape)
}

/// Inverted dropout that always drops (the caller gates it on training): each value is
/// zeroed with probability `p` and the others are divided by `1 - p`. The mask comes
/// from the device's seeded stream exactly as dfdx's `dropout` draws it, so both paths
/// drop the same values.
pub fn dropout<S, E, D, T>(x: Tensor<S, E, D, T>, p: f64) -> Tensor<S, E, D, T>
where
    S: Shape,
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D>,
{
    if !on_cpu::<E, D>() {
        return x.dropout(p);
    }
    let (x, mut tape) = x.contiguous().split_tape();
    let (out, backward) = cpu_pointwise::dropout_add(same(x), None, p, T::OWNS_TAPE);
    record::<E, D, T>(&mut tape, backward);
    same::<Tensor<S, E, Cpu>, Tensor<S, E, D>>(out).put_tape(tape)
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
    D: Device<E>,
    T: Tape<E, D> + Merge<T>,
{
    assert_eq!(
        x.shape().concrete(),
        residual.shape().concrete(),
        "dropout_add: shapes"
    );
    if !on_cpu::<E, D>() {
        return composed::dropout_add(x, residual, p);
    }
    let (x, tape_x) = x.contiguous().split_tape();
    let (r, tape_r) = residual.contiguous().split_tape();
    let mut tape = tape_x.merge(tape_r);
    let (out, backward) = cpu_pointwise::dropout_add(same(x), Some(same(r)), p, T::OWNS_TAPE);
    record::<E, D, T>(&mut tape, backward);
    same::<Tensor<S, E, Cpu>, Tensor<S, E, D>>(out).put_tape(tape)
}

/// The inverse layout of [`linear_heads`]' head split: `o (B, H, L, M)` ->
/// `(B·L, H·M)` token rows with the heads side by side (head `i` as features
/// `i·M..(i+1)·M`). Free for one head.
pub fn merge_heads<E, D, T>(o: Tensor4<E, D, T>) -> Tensor2<E, D, T>
where
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D>,
{
    let (b, h, l, m) = *o.shape();
    if h == 1 || !on_cpu::<E, D>() {
        return composed::merge_heads(o);
    }
    let (o, mut tape) = o.contiguous().split_tape();
    let (out, backward) = cpu_layout::merge_heads(same(o), T::OWNS_TAPE);
    record::<E, D, T>(&mut tape, backward);
    debug_assert_eq!(*out.shape(), (b * l, h * m));
    same::<Tensor2<E, Cpu>, Tensor2<E, D>>(out).put_tape(tape)
}

/// Rows `rows` of `x (N, W)` in that order, `(rows.len(), W)`; rows may repeat (their
/// gradients add up).
///
/// # Panics
/// If a row is out of range.
pub fn gather_rows<E, D, T>(x: Tensor2<E, D, T>, rows: &[usize]) -> Tensor2<E, D, T>
where
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D>,
{
    let n = x.shape().0;
    if let Some(&r) = rows.iter().find(|&&r| r >= n) {
        panic!("gather_rows: row {r} of {n}");
    }
    if !on_cpu::<E, D>() {
        return composed::gather_rows(x, rows);
    }
    let (x, mut tape) = x.contiguous().split_tape();
    let (out, backward) = cpu_layout::gather_rows(same(x), rows, T::OWNS_TAPE);
    record::<E, D, T>(&mut tape, backward);
    same::<Tensor2<E, Cpu>, Tensor2<E, D>>(out).put_tape(tape)
}

/// The data of a contiguous `Cpu` tensor (a copy: dfdx has no borrowed view). Callers
/// make inputs contiguous first (on the tape, so gradients reach the original).
fn read<S: Shape, E: Dtype>(t: &Tensor<S, E, Cpu>) -> Vec<E> {
    let mut buf = zeroed(t.shape().num_elements());
    t.copy_into(&mut buf);
    buf
}

/// `n` zeros, written by the rayon pool: a fresh buffer's zeroing (and its page faults)
/// is otherwise a serial pass on the calling thread.
fn zeroed<E: Dtype>(n: usize) -> Vec<E> {
    let mut buf = Vec::with_capacity(n);
    buf.par_extend(rayon::iter::repeat_n(E::default(), n));
    buf
}

/// Takes an output's gradient out of the gradients, leaving an empty buffer: a fused
/// op's backward pass runs after every consumer of its output has added to that
/// gradient, so it is complete, and nothing reads it afterwards. Releasing it keeps
/// the intermediate gradients from piling up until the backward pass ends.
fn release<E, V: std::ops::DerefMut<Target = Vec<E>>>(grad: &mut V) -> Vec<E> {
    std::mem::take(&mut **grad)
}

/// Rows per rayon task for rows of `width` values: about 16k values per task, so that
/// small inputs stay on one thread.
fn rows_per_task(width: usize) -> usize {
    (16_384 / width.max(1)).max(1)
}

/// `acc += x`, elementwise, blocks in parallel.
fn add_into<E: Dtype + Float>(acc: &mut [E], x: &[E]) {
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
