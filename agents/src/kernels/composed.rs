//! The kernels as compositions of stock dfdx ops: the path of every device without
//! fused kernels (`Cuda`), and the reference the fused `Cpu` kernels are tested against.

use dfdx::prelude::*;
use num_traits::Float;

use super::{Activation, Tensor1, Tensor2, Tensor4};

/// See [`super::layer_norm`].
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
    let shape = *x.shape();
    x.normalize::<Axis<1>>(eps) * weight.broadcast_like::<_, Axis<0>>(&shape)
        + bias.broadcast_like::<_, Axis<0>>(&shape)
}

/// See [`super::bias_act`].
pub fn bias_act<E, D, T>(
    y: Tensor2<E, D, T>,
    bias: Tensor1<E, D>,
    act: Activation,
) -> Tensor2<E, D, T>
where
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D>,
{
    let shape = *y.shape();
    let z = y + bias.broadcast_like::<_, Axis<0>>(&shape);
    match act {
        Activation::Identity => z,
        Activation::Relu => z.relu(),
    }
}

/// See [`super::dropout_add`].
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
    if p > 0.0 {
        x.dropout(p) + residual
    } else {
        x + residual
    }
}

/// See [`super::split_heads`].
pub fn split_heads<E, D, T>(
    y: Tensor2<E, D, T>,
    bias: Tensor1<E, D>,
    (b, l, h): (usize, usize, usize),
) -> Tensor4<E, D, T>
where
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D>,
{
    let w = y.shape().1;
    bias_act(y, bias, Activation::Identity)
        .reshape_like(&(b, l, h, w / h))
        .permute::<_, Axes4<0, 2, 1, 3>>()
}

/// See [`super::merge_heads`].
pub fn merge_heads<E, D, T>(o: Tensor4<E, D, T>) -> Tensor2<E, D, T>
where
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D>,
{
    let (b, h, l, m) = *o.shape();
    if h == 1 {
        // One head: (B, 1, L, M) is already the row layout.
        return o.reshape_like(&(b * l, m));
    }
    o.permute::<_, Axes4<0, 2, 1, 3>>()
        .reshape_like(&(b * l, h * m))
}

/// See [`super::gather_rows`].
pub fn gather_rows<E, D, T>(x: Tensor2<E, D, T>, rows: &[usize]) -> Tensor2<E, D, T>
where
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D>,
{
    let idx = x.device().tensor_from_vec(rows.to_vec(), (rows.len(),));
    x.gather(idx)
}
