//! The causal Flow-Attention recurrence of one head on plain slices: the prefix sums and
//! per-position scalars shared by the fused CPU kernel and the CPU step-by-step state
//! (both compute them with the same arithmetic in the same order), and the step's
//! token-by-token update of the `D x M` state (the fused kernel uses chunked products).

use dfdx::prelude::Dtype;
use num_traits::Float;

/// Float types of the CPU kernels (f32, f64).
pub(crate) trait Real: Dtype + Float {}
impl<F: Dtype + Float> Real for F {}

/// Constants of the recurrence.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Consts<F> {
    pub eps: F,
    pub clamp: F,
    /// The feature map applied in place to queries and keys: the device's sigmoid.
    pub sigmoid: fn(&mut [F]),
}

/// Length of the packed running sums of one head: `sum K`, `sum Q`, `sum K O`, `sum Q I`
/// (D each) and `sum exp(Sr)`, in that order.
pub(crate) fn sums_len(d: usize) -> usize {
    4 * d + 1
}

/// The scalars of one position.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Token<F> {
    /// 1-based position.
    pub pos: F,
    /// `(Q + eps) . (sum K + eps)`.
    pub den_in: F,
    /// `(K + eps) . (sum Q + eps)`.
    pub den_out: F,
    /// Incoming flow `I = pos / den_in`.
    pub incoming: F,
    /// Outgoing flow `O = pos / den_out`.
    pub outgoing: F,
    /// Allocation `A = sigmoid(Sk)`.
    pub allocation: F,
    /// Conserved source before the clamp.
    pub source: F,
    /// `exp(clamp(source))`.
    pub exp: F,
    /// `sum exp` up to this position.
    pub sum_exp: F,
    /// Competition `C = pos exp / sum exp`.
    pub competition: F,
}

impl<F: Real> Token<F> {
    /// The factor of the output row: `A I / pos`.
    pub fn scale(&self) -> F {
        self.allocation * self.incoming / self.pos
    }

    /// Whether the conserved source is inside the clamp (gradient passes).
    pub fn unclamped(&self, clamp: F) -> bool {
        self.source >= -clamp && self.source <= clamp
    }
}

/// The logistic function.
#[inline(always)]
pub(crate) fn sigmoid<F: Real>(x: F) -> F {
    F::one() / (F::one() + (-x).exp())
}

/// Independent partial sums of [`lane_sum`]: four AVX-512 vectors of `f32`, so the
/// additions into each partial sum are four apart in a 128-wide head instead of a
/// chain of sixteen.
const PARTIAL_SUMS: usize = 32;

/// `sum term(a_i, b_i)` with [`PARTIAL_SUMS`] independent partial sums (vectorisable
/// without reassociation), folded in halves in a fixed order, then the tail.
#[inline(always)]
pub(crate) fn lane_sum<F: Real>(a: &[F], b: &[F], term: impl Fn(F, F) -> F) -> F {
    let mut acc = [F::zero(); PARTIAL_SUMS];
    let (ac, bc) = (a.chunks_exact(PARTIAL_SUMS), b.chunks_exact(PARTIAL_SUMS));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..PARTIAL_SUMS {
            acc[i] += term(x[i], y[i]);
        }
    }
    let mut tail = F::zero();
    for (&x, &y) in ar.iter().zip(br) {
        tail += term(x, y);
    }
    let mut half = PARTIAL_SUMS / 2;
    while half > 0 {
        for i in 0..half {
            acc[i] += acc[i + half];
        }
        half /= 2;
    }
    acc[0] + tail
}

/// `sum (a + eps)(b + eps)`, summed like [`lane_sum`].
#[inline(always)]
fn dot_eps<F: Real>(a: &[F], b: &[F], eps: F) -> F {
    lane_sum(a, b, |x, y| (x + eps) * (y + eps))
}

/// Dot product, summed like [`lane_sum`].
#[inline(always)]
pub(crate) fn dot<F: Real>(a: &[F], b: &[F]) -> F {
    lane_sum(a, b, |x, y| x * y)
}

/// `y += a x`.
#[inline(always)]
pub(crate) fn axpy<F: Real>(y: &mut [F], a: F, x: &[F]) {
    for (o, &b) in y.iter_mut().zip(x) {
        *o += a * b;
    }
}

/// Advances the packed `sums` (see [`sums_len`]) by the feature-mapped token `(qf, kf)`
/// at 1-based position `pos` and returns the position's scalars.
#[inline(always)]
pub(crate) fn advance<F: Real>(
    sums: &mut [F],
    qf: &[F],
    kf: &[F],
    pos: F,
    c: Consts<F>,
) -> Token<F> {
    let d = qf.len();
    let (key, rest) = sums.split_at_mut(d);
    let (query, rest) = rest.split_at_mut(d);
    let (key_out, rest) = rest.split_at_mut(d);
    let (query_in, exp_sum) = rest.split_at_mut(d);
    axpy(key, F::one(), kf);
    axpy(query, F::one(), qf);
    let den_in = dot_eps(qf, key, c.eps);
    let den_out = dot_eps(kf, query, c.eps);
    let incoming = pos / den_in;
    let outgoing = pos / den_out;
    axpy(key_out, outgoing, kf);
    axpy(query_in, incoming, qf);
    let sink = dot_eps(qf, key_out, c.eps) / pos;
    let source = dot_eps(kf, query_in, c.eps) / pos;
    let exp = source.max(-c.clamp).min(c.clamp).exp();
    exp_sum[0] += exp;
    Token {
        pos,
        den_in,
        den_out,
        incoming,
        outgoing,
        allocation: sigmoid(sink),
        source,
        exp,
        sum_exp: exp_sum[0],
        competition: pos * exp / exp_sum[0],
    }
}

/// Adds the token to the `D x M` state: `w = C v`, `kv += kf w^T`.
#[inline(always)]
pub(crate) fn accumulate<F: Real>(kv: &mut [F], kf: &[F], v: &[F], competition: F, w: &mut [F]) {
    for (o, &x) in w.iter_mut().zip(v) {
        *o = competition * x;
    }
    for (row, &kx) in kv.chunks_exact_mut(v.len()).zip(kf) {
        axpy(row, kx, w);
    }
}

/// `out = qf^T kv` (an M-vector).
#[inline(always)]
pub(crate) fn readout<F: Real>(kv: &[F], qf: &[F], out: &mut [F]) {
    out.fill(F::zero());
    for (row, &qx) in kv.chunks_exact(out.len()).zip(qf) {
        axpy(out, qx, row);
    }
}

/// One position of the forward pass: advances `sums` and `kv` by the token and writes its
/// output row `A I / pos * qf^T kv` into `out` (`w` is scratch of size M).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_token<F: Real>(
    sums: &mut [F],
    kv: &mut [F],
    qf: &[F],
    kf: &[F],
    v: &[F],
    pos: F,
    c: Consts<F>,
    w: &mut [F],
    out: &mut [F],
) {
    let t = advance(sums, qf, kf, pos, c);
    accumulate(kv, kf, v, t.competition, w);
    readout(kv, qf, out);
    let scale = t.scale();
    for o in out.iter_mut() {
        *o *= scale;
    }
}
