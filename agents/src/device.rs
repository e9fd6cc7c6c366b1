//! The one place where a device chooses its implementation of the model's operations.
//!
//! [`ModelDevice`] lists the operations the model is made of (linear maps, LayerNorm,
//! dropout and the residual sum, the MLP sub-layer as one op, the head layout, the
//! attention cores, and
//! Flow-Attention's feature map on host slices). Every method's default is the
//! composition of stock dfdx ops ([`crate::kernels::composed`],
//! [`crate::attention::composed`]): what `Cuda` runs, and the oracle the tests compare
//! the fast paths with. `Cpu` overrides them with fused kernels (one pass per
//! direction, rows in parallel, only what the backward pass needs kept). Model code
//! calls the checked free functions of [`crate::kernels`] and [`crate::attention`],
//! not the tensor methods directly.
//!
//! The trait also says where acting keeps its working state: devices with
//! [`ModelDevice::HOST_ACTING`] act from a host-memory copy of the parameters
//! ([`crate::acting`]'s host engine, the recurrent state's host form).

use dfdx::prelude::*;
use num_traits::Float;

use crate::attention::{self, composed as attention_composed, FlowConfig, Tensor4};
use crate::kernels::{
    composed as kernels_composed, Activation, Affine, Mlp, Norm, Tensor1, Tensor2,
};
use crate::kernels::{cpu_layout, cpu_linear, cpu_mlp, cpu_norm, cpu_pointwise, record};

/// A device the model runs on; see the module documentation.
pub trait ModelDevice<E: Dtype>: Device<E> {
    /// Whether acting works on host-memory copies of the parameters and states.
    const HOST_ACTING: bool = false;

    /// `act(x W + b)`; shapes already checked.
    fn linear<T: Tape<E, Self>>(
        x: Tensor2<E, Self, T>,
        map: Affine<E, Self>,
        act: Activation,
    ) -> Tensor2<E, Self, T>
    where
        E: Float,
    {
        kernels_composed::linear(x, map, act)
    }

    /// Several linear maps of one input, each split into attention heads; shapes
    /// already checked.
    fn linear_heads<T: Tape<E, Self>>(
        x: Tensor2<E, Self, T>,
        maps: Vec<Affine<E, Self>>,
        heads: (usize, usize, usize),
    ) -> Vec<Tensor4<E, Self, T>>
    where
        E: Float,
    {
        kernels_composed::linear_heads(x, maps, heads)
    }

    /// LayerNorm over rows; shapes already checked.
    fn layer_norm<T: Tape<E, Self>>(
        x: Tensor2<E, Self, T>,
        weight: Tensor1<E, Self>,
        bias: Tensor1<E, Self>,
        eps: f64,
    ) -> Tensor2<E, Self, T>
    where
        E: Float,
    {
        kernels_composed::layer_norm(x, weight, bias, eps)
    }

    /// Inverted dropout with dfdx's mask.
    fn dropout<S: Shape, T: Tape<E, Self>>(
        x: Tensor<S, E, Self, T>,
        p: f64,
    ) -> Tensor<S, E, Self, T>
    where
        E: Float,
    {
        x.dropout(p)
    }

    /// `dropout(x, p) + residual` (`x + residual` for `p == 0`); shapes already checked.
    fn dropout_add<S: Shape, T: Tape<E, Self> + Merge<T>>(
        x: Tensor<S, E, Self, T>,
        residual: Tensor<S, E, Self, T>,
        p: f64,
    ) -> Tensor<S, E, Self, T>
    where
        E: Float,
    {
        kernels_composed::dropout_add(x, residual, p)
    }

    /// The MLP sub-layer with its residual; widths already checked.
    fn mlp_residual<T: Tape<E, Self> + Merge<T>>(
        x: Tensor2<E, Self, T>,
        mlp: Mlp<E, Self>,
        p: f64,
    ) -> Tensor2<E, Self, T>
    where
        E: Float,
    {
        kernels_composed::mlp_residual(x, mlp, p)
    }

    /// Attention heads `(B, H, L, M)` back to token rows `(B·L, H·M)`.
    fn merge_heads<T: Tape<E, Self>>(o: Tensor4<E, Self, T>) -> Tensor2<E, Self, T>
    where
        E: Float,
    {
        kernels_composed::merge_heads(o)
    }

    /// Rows of `x` in the given order; rows already checked.
    fn gather_rows<T: Tape<E, Self>>(x: Tensor2<E, Self, T>, rows: &[usize]) -> Tensor2<E, Self, T>
    where
        E: Float,
    {
        kernels_composed::gather_rows(x, rows)
    }

    /// Replaces every value of a host slice by its sigmoid: Flow-Attention's feature
    /// map, as the fused kernels and the host-memory backend apply it.
    fn sigmoid_in_place(x: &mut [E])
    where
        E: Float,
    {
        x.iter_mut()
            .for_each(|v| *v = attention::recurrence::sigmoid(*v));
    }

    /// Causal Flow-Attention; shapes already checked.
    fn causal_flow<T: Tape<E, Self> + Merge<T>>(
        q: Tensor4<E, Self, T>,
        k: Tensor4<E, Self, T>,
        v: Tensor4<E, Self, T>,
        cfg: &FlowConfig,
    ) -> Tensor4<E, Self, T>
    where
        E: Float,
    {
        attention_composed::causal_flow(q, k, v, cfg)
    }

    /// Causal Flow-Attention of the query, key and value maps of `layer_norm(x)`, the
    /// heads merged into token rows; shapes already checked.
    fn projected_causal_flow<T: Tape<E, Self> + Merge<T>>(
        x: Tensor2<E, Self, T>,
        norm: Norm<E, Self>,
        maps: [Affine<E, Self>; 3],
        heads: (usize, usize, usize),
        cfg: &FlowConfig,
    ) -> Tensor2<E, Self, T>
    where
        E: Float,
    {
        let a = Self::layer_norm(x, norm.weight, norm.bias, norm.eps);
        let [q, k, v]: [_; 3] = Self::linear_heads(a, maps.into(), heads)
            .try_into()
            .unwrap_or_else(|_| unreachable!("three maps give three outputs"));
        Self::merge_heads(Self::causal_flow(q, k, v, cfg))
    }

    /// Causal softmax attention; shapes already checked.
    fn causal_softmax<T: Tape<E, Self> + Merge<T>>(
        q: Tensor4<E, Self, T>,
        k: Tensor4<E, Self, T>,
        v: Tensor4<E, Self, T>,
    ) -> Tensor4<E, Self, T>
    where
        E: Float,
    {
        attention_composed::causal_softmax(q, k, v)
    }
}

/// `Cpu` runs the fused kernels (f32 and f64), except for normal Flow-Attention (plain
/// matmuls, no prefix sums).
macro_rules! cpu_model_device {
    ($($float:ty => $sigmoid:path),*) => {$(
        impl ModelDevice<$float> for Cpu {
            const HOST_ACTING: bool = true;

            fn sigmoid_in_place(x: &mut [$float]) {
                $sigmoid(x)
            }

            fn linear<T: Tape<$float, Self>>(
                x: Tensor2<$float, Self, T>,
                map: Affine<$float, Self>,
                act: Activation,
            ) -> Tensor2<$float, Self, T> {
                let (x, mut tape) = x.contiguous().split_tape();
                let (out, backward) = cpu_linear::linear(x, map, act, T::OWNS_TAPE);
                record(&mut tape, backward);
                out.put_tape(tape)
            }

            fn linear_heads<T: Tape<$float, Self>>(
                x: Tensor2<$float, Self, T>,
                maps: Vec<Affine<$float, Self>>,
                heads: (usize, usize, usize),
            ) -> Vec<Tensor4<$float, Self, T>> {
                let (x, mut tape) = x.contiguous().split_tape();
                let (outs, backward) = cpu_linear::linear_heads(x, maps, heads, T::OWNS_TAPE);
                record(&mut tape, backward);
                let mut tape = Some(tape);
                outs.into_iter()
                    .map(|o| o.put_tape(tape.take().unwrap_or_default()))
                    .collect()
            }

            fn layer_norm<T: Tape<$float, Self>>(
                x: Tensor2<$float, Self, T>,
                weight: Tensor1<$float, Self>,
                bias: Tensor1<$float, Self>,
                eps: f64,
            ) -> Tensor2<$float, Self, T> {
                let (x, mut tape) = x.contiguous().split_tape();
                let (out, backward) = cpu_norm::layer_norm(x, weight, bias, eps, T::OWNS_TAPE);
                record(&mut tape, backward);
                out.put_tape(tape)
            }

            fn dropout<S: Shape, T: Tape<$float, Self>>(
                x: Tensor<S, $float, Self, T>,
                p: f64,
            ) -> Tensor<S, $float, Self, T> {
                let (x, mut tape) = x.contiguous().split_tape();
                let (out, backward) = cpu_pointwise::dropout_add(x, None, p, T::OWNS_TAPE);
                record(&mut tape, backward);
                out.put_tape(tape)
            }

            fn dropout_add<S: Shape, T: Tape<$float, Self> + Merge<T>>(
                x: Tensor<S, $float, Self, T>,
                residual: Tensor<S, $float, Self, T>,
                p: f64,
            ) -> Tensor<S, $float, Self, T> {
                let (x, tape_x) = x.contiguous().split_tape();
                let (r, tape_r) = residual.contiguous().split_tape();
                let mut tape = tape_x.merge(tape_r);
                let (out, backward) = cpu_pointwise::dropout_add(x, Some(r), p, T::OWNS_TAPE);
                record(&mut tape, backward);
                out.put_tape(tape)
            }

            fn mlp_residual<T: Tape<$float, Self> + Merge<T>>(
                x: Tensor2<$float, Self, T>,
                mlp: Mlp<$float, Self>,
                p: f64,
            ) -> Tensor2<$float, Self, T> {
                let (x, mut tape) = x.contiguous().split_tape();
                let (out, backward) = cpu_mlp::mlp_residual(x, mlp, p, T::OWNS_TAPE);
                record(&mut tape, backward);
                out.put_tape(tape)
            }

            fn merge_heads<T: Tape<$float, Self>>(
                o: Tensor4<$float, Self, T>,
            ) -> Tensor2<$float, Self, T> {
                if o.shape().1 == 1 {
                    return kernels_composed::merge_heads(o);
                }
                let (o, mut tape) = o.contiguous().split_tape();
                let (out, backward) = cpu_layout::merge_heads(o, T::OWNS_TAPE);
                record(&mut tape, backward);
                out.put_tape(tape)
            }

            fn gather_rows<T: Tape<$float, Self>>(
                x: Tensor2<$float, Self, T>,
                rows: &[usize],
            ) -> Tensor2<$float, Self, T> {
                let (x, mut tape) = x.contiguous().split_tape();
                let (out, backward) = cpu_layout::gather_rows(x, rows, T::OWNS_TAPE);
                record(&mut tape, backward);
                out.put_tape(tape)
            }

            fn causal_flow<T: Tape<$float, Self> + Merge<T>>(
                q: Tensor4<$float, Self, T>,
                k: Tensor4<$float, Self, T>,
                v: Tensor4<$float, Self, T>,
                cfg: &FlowConfig,
            ) -> Tensor4<$float, Self, T> {
                attention::cpu_flow::causal_flow(q, k, v, cfg, Self::sigmoid_in_place)
            }

            fn projected_causal_flow<T: Tape<$float, Self> + Merge<T>>(
                x: Tensor2<$float, Self, T>,
                norm: Norm<$float, Self>,
                maps: [Affine<$float, Self>; 3],
                heads: (usize, usize, usize),
                cfg: &FlowConfig,
            ) -> Tensor2<$float, Self, T> {
                let (x, mut tape) = x.contiguous().split_tape();
                let (out, backward) = attention::cpu_projected::projected_causal_flow(
                    x,
                    norm,
                    maps,
                    heads,
                    cfg,
                    Self::sigmoid_in_place,
                    T::OWNS_TAPE,
                );
                record(&mut tape, backward);
                out.put_tape(tape)
            }

            fn causal_softmax<T: Tape<$float, Self> + Merge<T>>(
                q: Tensor4<$float, Self, T>,
                k: Tensor4<$float, Self, T>,
                v: Tensor4<$float, Self, T>,
            ) -> Tensor4<$float, Self, T> {
                attention::cpu_softmax::causal_softmax(q, k, v)
            }
        }
    )*};
}

cpu_model_device!(
    f32 => attention::logistic::sigmoid_f32,
    f64 => attention::logistic::sigmoid_f64
);

#[cfg(feature = "cuda")]
impl<E: Dtype> ModelDevice<E> for Cuda where Cuda: Device<E> {}
