//! The kernels as compositions of stock dfdx ops: the path of every device without
//! fused kernels (`Cuda`), and the reference the fused `Cpu` kernels are tested against.

use dfdx::prelude::*;
use num_traits::Float;

use super::{Activation, Affine, Mlp, Norm, Tensor1, Tensor2, Tensor4};

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

/// `x W` without the bias.
fn product<E, D, T>(x: Tensor2<E, D, T>, map: &Affine<E, D>) -> Tensor2<E, D, T>
where
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D>,
{
    let w = map.weight.clone();
    if map.out_in {
        x.matmul(w.permute::<_, Axes2<1, 0>>())
    } else {
        x.matmul(w)
    }
}

/// See [`super::linear`].
pub fn linear<E, D, T>(x: Tensor2<E, D, T>, map: Affine<E, D>, act: Activation) -> Tensor2<E, D, T>
where
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D>,
{
    let y = product(x, &map);
    match (map.bias, act) {
        (Some(b), act) => bias_act(y, b, act),
        (None, Activation::Identity) => y,
        (None, Activation::Relu) => y.relu(),
    }
}

/// See [`super::linear_heads`].
pub fn linear_heads<E, D, T>(
    x: Tensor2<E, D, T>,
    maps: Vec<Affine<E, D>>,
    heads: (usize, usize, usize),
) -> Vec<Tensor4<E, D, T>>
where
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D>,
{
    // Extra uses of x carry empty tapes; the last map takes x's tape.
    let mut outs: Vec<Tensor4<E, D, T>> = maps[..maps.len().saturating_sub(1)]
        .iter()
        .map(|map| head_split(product(x.with_empty_tape(), map), map, heads))
        .collect();
    if let Some(map) = maps.last() {
        outs.push(head_split(product(x, map), map, heads));
    }
    outs
}

/// A product `x W` plus the map's bias (zeros without one), split into heads.
fn head_split<E, D, T>(
    y: Tensor2<E, D, T>,
    map: &Affine<E, D>,
    heads: (usize, usize, usize),
) -> Tensor4<E, D, T>
where
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D>,
{
    let bias = match &map.bias {
        Some(b) => b.clone(),
        None => y.device().zeros_like(&(map.outputs(),)),
    };
    split_heads(y, bias, heads)
}

/// `act(y + bias)` over the rows of `y (N, O)` with `bias (O,)`: the bias and
/// activation after [`linear`]'s product.
fn bias_act<E, D, T>(y: Tensor2<E, D, T>, bias: Tensor1<E, D>, act: Activation) -> Tensor2<E, D, T>
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

/// See [`super::mlp_residual`].
pub fn mlp_residual<E, D, T>(x: Tensor2<E, D, T>, mlp: Mlp<E, D>, p: f64) -> Tensor2<E, D, T>
where
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D> + Merge<T>,
{
    let Norm { weight, bias, eps } = mlp.norm;
    let m = layer_norm(x.with_empty_tape(), weight, bias, eps);
    let m = linear(m, mlp.fc, Activation::Relu);
    dropout_add(linear(m, mlp.proj, Activation::Identity), x, p)
}

/// `y (B·L, H·D) + bias (H·D,)` -> `(B, H, L, D)`, head `i` being features
/// `i·D..(i+1)·D`, as a permuted view: [`linear_heads`]' head split.
fn split_heads<E, D, T>(
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
