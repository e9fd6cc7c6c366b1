//! The fused `Cpu` kernels on dfdx's tapes: each wrapper runs its kernel on the
//! tensors' data and records the kernel's backward pass on the tape. These are
//! [`crate::device::ModelDevice`]'s `Cpu` methods; shapes are checked by the callers.

use dfdx::prelude::*;
use num_traits::Float;

use super::{
    composed, cpu_layout, cpu_linear, cpu_norm, cpu_pointwise, Activation, Affine, CpuBackward,
    Tensor1, Tensor2, Tensor4,
};

/// Records a fused op's backward pass (if any: none without a tape) on `tape`.
fn record<E: Dtype, T: Tape<E, Cpu>>(tape: &mut T, backward: Option<CpuBackward<E>>) {
    if let Some(backward) = backward {
        tape.add_backward_op(move |grads: &mut Gradients<E, Cpu>| {
            // The Cpu kernels fail only when an allocation does, where dfdx's own ops panic too.
            backward(grads).unwrap_or_else(|e| panic!("fused Cpu kernel, backward pass: {e}"));
            Ok(())
        });
    }
}

/// `act(x W + b)`.
pub(crate) fn linear<E, T>(
    x: Tensor2<E, Cpu, T>,
    map: Affine<E, Cpu>,
    act: Activation,
) -> Tensor2<E, Cpu, T>
where
    E: Dtype + Float,
    T: Tape<E, Cpu>,
{
    let (x, mut tape) = x.contiguous().split_tape();
    let (out, backward) = cpu_linear::linear(x, map, act, T::OWNS_TAPE);
    record(&mut tape, backward);
    out.put_tape(tape)
}

/// Several linear maps of one input, as one product, each output split into heads.
pub(crate) fn linear_heads<E, T>(
    x: Tensor2<E, Cpu, T>,
    maps: Vec<Affine<E, Cpu>>,
    heads: (usize, usize, usize),
) -> Vec<Tensor4<E, Cpu, T>>
where
    E: Dtype + Float,
    T: Tape<E, Cpu>,
{
    let (x, mut tape) = x.contiguous().split_tape();
    let (outs, backward) = cpu_linear::linear_heads(x, maps, heads, T::OWNS_TAPE);
    record(&mut tape, backward);
    let mut tape = Some(tape);
    outs.into_iter()
        .map(|o| o.put_tape(tape.take().unwrap_or_default()))
        .collect()
}

/// LayerNorm over rows.
pub(crate) fn layer_norm<E, T>(
    x: Tensor2<E, Cpu, T>,
    weight: Tensor1<E, Cpu>,
    bias: Tensor1<E, Cpu>,
    eps: f64,
) -> Tensor2<E, Cpu, T>
where
    E: Dtype + Float,
    T: Tape<E, Cpu>,
{
    let (x, mut tape) = x.contiguous().split_tape();
    let (out, backward) = cpu_norm::layer_norm(x, weight, bias, eps, T::OWNS_TAPE);
    record(&mut tape, backward);
    out.put_tape(tape)
}

/// Inverted dropout with dfdx's mask.
pub(crate) fn dropout<S, E, T>(x: Tensor<S, E, Cpu, T>, p: f64) -> Tensor<S, E, Cpu, T>
where
    S: Shape,
    E: Dtype + Float,
    T: Tape<E, Cpu>,
{
    let (x, mut tape) = x.contiguous().split_tape();
    let (out, backward) = cpu_pointwise::dropout_add(x, None, p, T::OWNS_TAPE);
    record(&mut tape, backward);
    out.put_tape(tape)
}

/// `dropout(x, p) + residual`.
pub(crate) fn dropout_add<S, E, T>(
    x: Tensor<S, E, Cpu, T>,
    residual: Tensor<S, E, Cpu, T>,
    p: f64,
) -> Tensor<S, E, Cpu, T>
where
    S: Shape,
    E: Dtype + Float,
    T: Tape<E, Cpu> + Merge<T>,
{
    let (x, tape_x) = x.contiguous().split_tape();
    let (r, tape_r) = residual.contiguous().split_tape();
    let mut tape = tape_x.merge(tape_r);
    let (out, backward) = cpu_pointwise::dropout_add(x, Some(r), p, T::OWNS_TAPE);
    record(&mut tape, backward);
    out.put_tape(tape)
}

/// Heads `(B, H, L, M)` back to rows `(B·L, H·M)` (free for one head).
pub(crate) fn merge_heads<E, T>(o: Tensor4<E, Cpu, T>) -> Tensor2<E, Cpu, T>
where
    E: Dtype + Float,
    Cpu: Device<E>,
    T: Tape<E, Cpu>,
{
    if o.shape().1 == 1 {
        return composed::merge_heads(o);
    }
    let (o, mut tape) = o.contiguous().split_tape();
    let (out, backward) = cpu_layout::merge_heads(o, T::OWNS_TAPE);
    record(&mut tape, backward);
    out.put_tape(tape)
}

/// Rows of `x` in the given order.
pub(crate) fn gather_rows<E, T>(x: Tensor2<E, Cpu, T>, rows: &[usize]) -> Tensor2<E, Cpu, T>
where
    E: Dtype + Float,
    T: Tape<E, Cpu>,
{
    let (x, mut tape) = x.contiguous().split_tape();
    let (out, backward) = cpu_layout::gather_rows(x, rows, T::OWNS_TAPE);
    record(&mut tape, backward);
    out.put_tape(tape)
}
