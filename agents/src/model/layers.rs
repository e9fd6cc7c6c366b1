//! Building blocks on runtime-shaped tensors: linear maps, LayerNorm, dropout, activations.
//!
//! Layers hold the [`ParamId`]s of their parameters; the values live in a
//! [`ParamStore`] passed to `forward`. Rows are tokens: 3-D inputs `(B, L, W)` are
//! flattened to `(B·L, W)` so that every linear map is one large gemm. Biases,
//! activations, LayerNorm and dropout go through [`crate::kernels`] (fused on `Cpu`).

use dfdx::prelude::*;

use crate::device::ModelDevice;

use crate::attention::Tensor4;
use crate::kernels::{self, Activation, Affine, Norm};
use crate::params::{Init, ParamError, ParamId, ParamStore};

/// Row-major token matrix `(tokens, features)` with runtime sizes.
pub type Tensor2<E, D, T = NoneTape> = Tensor<(usize, usize), E, D, T>;
/// Token sequences `(batch, positions, features)` with runtime sizes.
pub type Tensor3<E, D, T = NoneTape> = Tensor<(usize, usize, usize), E, D, T>;

/// How a linear map's weight matrix is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// PyTorch `nn.Linear`: weight `[out, in]`, `y = x Wᵀ + b`.
    OutIn,
    /// GPT-2 `Conv1D`: weight `[in, out]`, `y = x W + b`.
    InOut,
}

/// An affine map `inputs -> outputs` whose weight and bias live in a [`ParamStore`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Linear {
    weight: ParamId,
    bias: Option<ParamId>,
    inputs: usize,
    outputs: usize,
    layout: WeightLayout,
}

impl Linear {
    /// Registers a PyTorch-default `nn.Linear` under `prefix`: `[out, in]`, weight and
    /// bias uniform ±1/sqrt(in).
    pub fn register_torch<E, D>(
        store: &mut ParamStore<E, D>,
        prefix: &str,
        inputs: usize,
        outputs: usize,
    ) -> Result<Self, ParamError>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
    {
        let init = Init::pytorch_linear(inputs);
        let layout = WeightLayout::OutIn;
        Self::register(store, prefix, inputs, outputs, layout, init, Some(init))
    }

    /// Registers `{prefix}.weight` (shape by `layout`) and, if `bias` is given,
    /// `{prefix}.bias` (`[outputs]`).
    pub fn register<E, D>(
        store: &mut ParamStore<E, D>,
        prefix: &str,
        inputs: usize,
        outputs: usize,
        layout: WeightLayout,
        weight: Init,
        bias: Option<Init>,
    ) -> Result<Self, ParamError>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
    {
        let shape = match layout {
            WeightLayout::OutIn => [outputs, inputs],
            WeightLayout::InOut => [inputs, outputs],
        };
        let weight = store.register(format!("{prefix}.weight"), &shape, weight)?;
        let bias = bias
            .map(|init| store.register(format!("{prefix}.bias"), &[outputs], init))
            .transpose()?;
        Ok(Self {
            weight,
            bias,
            inputs,
            outputs,
            layout,
        })
    }

    /// Input width.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Output width.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// The weight's id and layout and the bias's id (host-side inference copies the values).
    pub(crate) fn parts(&self) -> (ParamId, WeightLayout, Option<ParamId>) {
        (self.weight, self.layout, self.bias)
    }

    /// `(N, inputs) -> (N, outputs)`: one gemm plus the broadcast bias (one fused op on `Cpu`).
    ///
    /// # Panics
    /// If `x` does not have `inputs` columns.
    pub fn forward<E, D, T>(
        &self,
        store: &ParamStore<E, D>,
        x: Tensor2<E, D, T>,
    ) -> Tensor2<E, D, T>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
        T: Tape<E, D>,
    {
        self.forward_with(store, x, Activation::Identity)
    }

    /// `relu(x W + b)`: [`Linear::forward`] followed by ReLU, fused with the bias on `Cpu`.
    ///
    /// # Panics
    /// If `x` does not have `inputs` columns.
    pub fn forward_relu<E, D, T>(
        &self,
        store: &ParamStore<E, D>,
        x: Tensor2<E, D, T>,
    ) -> Tensor2<E, D, T>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
        T: Tape<E, D>,
    {
        self.forward_with(store, x, Activation::Relu)
    }

    /// `act(x W + b)`, the bias and activation fused on `Cpu`.
    fn forward_with<E, D, T>(
        &self,
        store: &ParamStore<E, D>,
        x: Tensor2<E, D, T>,
        act: Activation,
    ) -> Tensor2<E, D, T>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
        T: Tape<E, D>,
    {
        assert_eq!(x.shape().1, self.inputs, "linear map: input width");
        kernels::linear(x, self.affine(store), act)
    }

    /// `(B·L, inputs) -> (B, H, L, outputs / H)`: [`Linear::forward`] with its output
    /// split into `heads` attention heads of `b` sequences of `l` tokens (head `i` is
    /// features `i·outputs/H..`), the bias added by the fused head split on `Cpu`.
    ///
    /// # Panics
    /// If `x` does not have `inputs` columns and `b·l` rows, or `heads` does not
    /// divide `outputs`.
    pub fn forward_heads<E, D, T>(
        &self,
        store: &ParamStore<E, D>,
        x: Tensor2<E, D, T>,
        (b, l, heads): (usize, usize, usize),
    ) -> Tensor4<E, D, T>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
        T: Tape<E, D>,
    {
        Self::forward_heads_of(&[self], store, x, (b, l, heads))
            .pop()
            .unwrap_or_else(|| unreachable!("one map gives one output"))
    }

    /// [`Linear::forward_heads`] of several maps of the same input (an attention's
    /// queries, keys and values), in the order of `maps`: on `Cpu` one product of the
    /// maps' weights side by side, the same values as one map at a time.
    ///
    /// # Panics
    /// If `maps` is empty, a map's input width is not `x`'s, `x` does not have `b·l`
    /// rows, or `heads` does not divide a map's output width.
    pub fn forward_heads_of<E, D, T>(
        maps: &[&Self],
        store: &ParamStore<E, D>,
        x: Tensor2<E, D, T>,
        (b, l, heads): (usize, usize, usize),
    ) -> Vec<Tensor4<E, D, T>>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
        T: Tape<E, D>,
    {
        for map in maps {
            assert_eq!(x.shape().1, map.inputs, "linear map: input width");
        }
        let affine = maps.iter().map(|m| m.affine(store)).collect();
        kernels::linear_heads(x, affine, (b, l, heads))
    }

    /// The parameters as the kernels take them.
    pub(crate) fn affine<E, D>(&self, store: &ParamStore<E, D>) -> Affine<E, D>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
    {
        Affine {
            weight: store.matrix(self.weight),
            out_in: self.layout == WeightLayout::OutIn,
            bias: self.bias.map(|b| store.vector(b)),
        }
    }
}

/// LayerNorm over the feature axis with a learned scale (`weight`) and shift (`bias`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNorm {
    weight: ParamId,
    bias: ParamId,
    width: usize,
    eps: f64,
}

impl LayerNorm {
    /// Registers `{prefix}.weight` (ones) and `{prefix}.bias` (zeros), both `[width]`.
    pub fn register<E, D>(
        store: &mut ParamStore<E, D>,
        prefix: &str,
        width: usize,
        eps: f64,
    ) -> Result<Self, ParamError>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
    {
        let weight = store.register(format!("{prefix}.weight"), &[width], Init::Ones)?;
        let bias = store.register(format!("{prefix}.bias"), &[width], Init::Zeros)?;
        Ok(Self {
            weight,
            bias,
            width,
            eps,
        })
    }

    /// The ids of the scale and the shift, and eps (host-side inference copies the values).
    pub(crate) fn parts(&self) -> (ParamId, ParamId, f64) {
        (self.weight, self.bias, self.eps)
    }

    /// `(N, width) -> (N, width)`: `(x - mean) / sqrt(var + eps) * weight + bias` per row,
    /// with the biased variance (as PyTorch).
    ///
    /// # Panics
    /// If `x` does not have `width` columns.
    pub fn forward<E, D, T>(
        &self,
        store: &ParamStore<E, D>,
        x: Tensor2<E, D, T>,
    ) -> Tensor2<E, D, T>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
        T: Tape<E, D>,
    {
        assert_eq!(x.shape().1, self.width, "LayerNorm: input width");
        let Norm { weight, bias, eps } = self.params(store);
        kernels::layer_norm(x, weight, bias, eps)
    }

    /// The parameters as the kernels take them.
    pub(crate) fn params<E, D>(&self, store: &ParamStore<E, D>) -> Norm<E, D>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
    {
        Norm {
            weight: store.vector(self.weight),
            bias: store.vector(self.bias),
            eps: self.eps,
        }
    }
}

/// Inverted dropout with probability `p` when `train` is true (kept values scaled by
/// `1 / (1 - p)`), the identity otherwise or when `p == 0`. The mask comes from the
/// device's seeded random stream, so a device seeded alike drops alike.
pub fn dropout<S, E, D, T>(x: Tensor<S, E, D, T>, p: f64, train: bool) -> Tensor<S, E, D, T>
where
    S: Shape,
    E: Dtype + num_traits::Float,
    D: ModelDevice<E>,
    T: Tape<E, D>,
{
    if train && p > 0.0 {
        kernels::dropout(x, p)
    } else {
        x
    }
}

/// A residual connection after a dropped sub-layer: `dropout(x, p, train) + residual`
/// (the same mask as [`dropout`]), fused into one pass on `Cpu`.
///
/// # Panics
/// If the shapes differ.
pub fn dropout_add<S, E, D, T>(
    x: Tensor<S, E, D, T>,
    residual: Tensor<S, E, D, T>,
    p: f64,
    train: bool,
) -> Tensor<S, E, D, T>
where
    S: Shape,
    E: Dtype + num_traits::Float,
    D: ModelDevice<E>,
    T: Tape<E, D> + Merge<T>,
{
    kernels::dropout_add(x, residual, if train { p } else { 0.0 })
}
