//! Attention cores: Flow-Attention (normal, causal, step-by-step) and causal softmax.
//!
//! Every core takes projected, head-split tensors `q (B,H,L,D)`, `k (B,H,S,D)`,
//! `v (B,H,S,M)` and returns `(B,H,L,M)`, before the output projection. The public
//! functions check shapes and dispatch through [`crate::device::ModelDevice`]: `Cpu`
//! runs fused kernels with hand-derived backward passes, `Cuda` runs the
//! device-generic compositions of stock dfdx ops in [`composed`]. Both record on the
//! usual dfdx tapes.

mod chunked;
pub mod composed;
pub(crate) mod cpu_flow;
pub(crate) mod cpu_projected;
pub(crate) mod cpu_softmax;
mod exp;
pub(crate) mod gemm;
pub(crate) mod logistic;
mod prefix;
pub(crate) mod recurrence;
mod state;

use dfdx::prelude::*;
use num_traits::Float;

use crate::device::ModelDevice;
use crate::kernels::{check_heads, Affine, Norm, Tensor2};
pub use state::{FlowState, FlowSums};

/// (batch, heads, positions, features) with runtime sizes.
pub type Shape4 = (usize, usize, usize, usize);
/// A four-dimensional runtime-shaped tensor in `(B, H, L, features)` layout.
pub type Tensor4<E, D, T = NoneTape> = Tensor<Shape4, E, D, T>;
/// (batch, heads, features): one position of a [`Tensor4`].
pub type Shape3 = (usize, usize, usize);
/// A three-dimensional runtime-shaped tensor in `(B, H, features)` layout.
pub type Tensor3<E, D, T = NoneTape> = Tensor<Shape3, E, D, T>;

/// Which causal attention a backbone uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AttentionKind {
    /// Causal Flow-Attention: linear time and memory in the sequence length.
    CausalFlow,
    /// Causal scaled-dot-product softmax attention: quadratic in the sequence length.
    CausalSoftmax,
}

/// Flow-Attention constants: clamp bound of the conserved source (10 RL, 1 generic),
/// eps (1e-6), and the chunk length of the device-generic causal path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlowConfig {
    /// The conserved source is clamped to `[-clamp, clamp]`.
    pub clamp: f64,
    /// Added elementwise to feature maps and sums (Flowformer uses 1e-6).
    pub eps: f64,
    /// Chunk length of the composed causal path (prefix sums and aggregation).
    pub chunk: usize,
}

impl FlowConfig {
    /// The reinforcement-learning variant (Flowformer RL): clamp 10.
    pub fn rl() -> Self {
        Self {
            clamp: 10.0,
            eps: 1e-6,
            chunk: 64,
        }
    }

    /// The generic Flowformer variant: clamp 1.
    pub fn generic() -> Self {
        Self {
            clamp: 1.0,
            ..Self::rl()
        }
    }

    /// Checks the constants: a clamp in `(0, 60]` (the competition sums `exp(Sr)` over
    /// the sequence without max-subtraction, as the original does, so the bound keeps it
    /// finite in f32), a finite non-negative eps and a positive chunk; the error names the
    /// field, what was expected and what was found.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.clamp > 0.0 && self.clamp <= 60.0) {
            return Err(format!(
                "flow clamp: expected a number in (0, 60], found {}",
                self.clamp
            ));
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(format!(
                "flow eps: expected a finite number >= 0, found {}",
                self.eps
            ));
        }
        if self.chunk == 0 {
            return Err("flow chunk: expected a length >= 1, found 0".into());
        }
        Ok(())
    }
}

/// Checks `q (B,H,L,D)`, `k (B,H,S,D)`, `v (B,H,S,M)`; returns `(B,H,L,S,D,M)`.
///
/// # Panics
/// On inconsistent shapes, naming the tensor and both sizes (a bug in the caller's
/// model code, like any dfdx shape mismatch).
fn check_shapes(q: &Shape4, k: &Shape4, v: &Shape4) -> (usize, usize, usize, usize, usize, usize) {
    let (b, h, l, d) = *q;
    let (kb, kh, s, kd) = *k;
    let (vb, vh, vs, m) = *v;
    assert_eq!(
        (kb, kh),
        (b, h),
        "attention: k batch/heads {:?} differ from q's {:?}",
        (kb, kh),
        (b, h)
    );
    assert_eq!(
        (vb, vh),
        (b, h),
        "attention: v batch/heads {:?} differ from q's {:?}",
        (vb, vh),
        (b, h)
    );
    assert_eq!(kd, d, "attention: k feature size {kd} differs from q's {d}");
    assert_eq!(vs, s, "attention: v has {vs} positions but k has {s}");
    assert!(
        d > 0 && m > 0,
        "attention: head sizes must be positive, got D={d} M={m}"
    );
    (b, h, l, s, d, m)
}

/// Causal Flow-Attention: `q, k (B,H,L,D)`, `v (B,H,L,M)` -> `(B,H,L,M)`; sigmoid feature
/// map inside; the conserved source is clamped to `[-cfg.clamp, cfg.clamp]`.
///
/// # Panics
/// If the shapes disagree or `k` has a different length than `q`.
pub fn causal_flow<E, D, T>(
    q: Tensor4<E, D, T>,
    k: Tensor4<E, D, T>,
    v: Tensor4<E, D, T>,
    cfg: &FlowConfig,
) -> Tensor4<E, D, T>
where
    E: Dtype + Float,
    D: ModelDevice<E>,
    T: Tape<E, D> + Merge<T>,
{
    let (_, _, l, s, _, _) = check_shapes(q.shape(), k.shape(), v.shape());
    assert_eq!(l, s, "causal_flow: q has {l} positions but k has {s}");
    D::causal_flow(q, k, v, cfg)
}

/// A pre-LayerNorm block's attention up to its output projection: causal Flow-Attention
/// of the queries, keys and values that `maps` (in that order) make of `layer_norm(x)`
/// for `x (B·L, W)` holding `(b, l)` sequences, in `h` heads, the heads merged back into
/// token rows. The same as [`crate::kernels::merge_heads`] of [`causal_flow`] of
/// [`crate::kernels::linear_heads`]`(`[`crate::kernels::layer_norm`]`(x), maps, (b, l,
/// h))`, `(B·L, H·M)`. On `Cpu` one op, in which the normalised rows, queries, keys,
/// values and the heads' outputs never become tensors.
///
/// # Panics
/// If the sizes disagree (as for `layer_norm` and `linear_heads`; the queries and keys
/// must have the same width).
pub fn projected_causal_flow<E, D, T>(
    x: Tensor2<E, D, T>,
    norm: Norm<E, D>,
    maps: [Affine<E, D>; 3],
    (b, l, h): (usize, usize, usize),
    cfg: &FlowConfig,
) -> Tensor2<E, D, T>
where
    E: Dtype + Float,
    D: ModelDevice<E>,
    T: Tape<E, D> + Merge<T>,
{
    norm.check("projected_causal_flow", x.shape().1);
    check_heads("projected_causal_flow", *x.shape(), &maps, (b, l, h));
    let (q, k) = (maps[0].outputs(), maps[1].outputs());
    assert_eq!(
        q, k,
        "projected_causal_flow: query width {q}, key width {k}"
    );
    D::projected_causal_flow(x, norm, maps, (b, l, h), cfg)
}

/// Normal (non-causal) Flow-Attention: `q (B,H,L,D)`, `k (B,H,S,D)`, `v (B,H,S,M)` ->
/// `(B,H,L,M)`; queries and keys may have different lengths.
///
/// # Panics
/// If the shapes disagree.
pub fn normal_flow<E, D, T>(
    q: Tensor4<E, D, T>,
    k: Tensor4<E, D, T>,
    v: Tensor4<E, D, T>,
    cfg: &FlowConfig,
) -> Tensor4<E, D, T>
where
    E: Dtype + Float,
    D: ModelDevice<E>,
    T: Tape<E, D> + Merge<T>,
{
    check_shapes(q.shape(), k.shape(), v.shape());
    composed::normal_flow(q, k, v, cfg)
}

/// Causal scaled-dot-product softmax attention (scale `1/sqrt(D)`), same shapes as
/// [`causal_flow`].
///
/// # Panics
/// If the shapes disagree or `k` has a different length than `q`.
pub fn causal_softmax<E, D, T>(
    q: Tensor4<E, D, T>,
    k: Tensor4<E, D, T>,
    v: Tensor4<E, D, T>,
) -> Tensor4<E, D, T>
where
    E: Dtype + Float,
    D: ModelDevice<E>,
    T: Tape<E, D> + Merge<T>,
{
    let (_, _, l, s, _, _) = check_shapes(q.shape(), k.shape(), v.shape());
    assert_eq!(l, s, "causal_softmax: q has {l} positions but k has {s}");
    D::causal_softmax(q, k, v)
}

/// Converts an `f64` constant to the float type (exact for f64, rounded for f32).
fn cast<E: Float>(x: f64) -> E {
    // NumCast from f64 into f32/f64 never fails; infinity stands for other types' overflow.
    E::from(x).unwrap_or_else(E::infinity)
}
