//! Device-generic attention cores composed of stock dfdx ops (the `Cuda` path, and the
//! reference the fused CPU kernels are tested against).
//!
//! The causal Flow-Attention pads the sequence to a multiple of `FlowConfig::chunk`
//! (zeros at the end: causality keeps them out of real positions) and computes its
//! five prefix sums and the aggregation chunk by chunk, so memory stays linear in L.

use super::prefix::{causal_linear, cumsum};
use super::{cast, FlowConfig, FlowSums, Tensor3, Tensor4};
use dfdx::prelude::*;
use num_traits::Float;

type Seq<E, D, T> = Tensor<(usize, usize, usize), E, D, T>;
type Rows<E, D, T> = Tensor<(usize, usize), E, D, T>;

/// Appends zero positions to `x (N, L, X)` up to length `len`.
fn pad<E, D, T>(x: Seq<E, D, T>, len: usize) -> Seq<E, D, T>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D> + Merge<T>,
{
    let (n, l, w) = *x.shape();
    if len == l {
        return x;
    }
    let zeros: Seq<E, D, NoneTape> = x.device().zeros_like(&(n, len - l, w));
    (x, zeros).concat_along(Axis::<1>)
}

/// Broadcasts per-position scalars `(N, L)` over `w` features.
fn spread<E, D, T>(x: Rows<E, D, T>, w: usize) -> Seq<E, D, T>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D>,
{
    let (n, l) = *x.shape();
    x.broadcast_like::<_, Axis<2>>(&(n, l, w))
}

/// Row-wise dot product over the feature axis: `(N, L, X) x (N, L, X) -> (N, L)`.
fn dot<E, D, T>(a: Seq<E, D, T>, b: Seq<E, D, T>) -> Rows<E, D, T>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D> + Merge<T>,
{
    (a * b).sum::<_, Axis<2>>()
}

/// Causal Flow-Attention from stock ops: `q, k (B,H,L,D)`, `v (B,H,L,M)` -> `(B,H,L,M)`.
/// Chunked prefix sums and aggregation (chunk `cfg.chunk`); memory linear in L.
pub fn causal_flow<E, D, T>(
    q: Tensor4<E, D, T>,
    k: Tensor4<E, D, T>,
    v: Tensor4<E, D, T>,
    cfg: &FlowConfig,
) -> Tensor4<E, D, T>
where
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D> + Merge<T>,
{
    let (b, h, l, d) = *q.shape();
    let m = v.shape().3;
    let n = b * h;
    let chunk = cfg.chunk.clamp(1, l.max(1));
    let len = l.div_ceil(chunk) * chunk;
    let dev = q.device().clone();
    let eps: E = cast(cfg.eps);
    let q = pad(q.reshape_like(&(n, l, d)), len).sigmoid();
    let k = pad(k.reshape_like(&(n, l, d)), len).sigmoid();
    let v = pad(v.reshape_like(&(n, l, m)), len);
    let pos: Rows<E, D, NoneTape> = dev
        .tensor_from_vec((1..=len).map(|i| cast(i as f64)).collect(), (len,))
        .broadcast_like::<_, Axis<0>>(&(n, len));
    let inv_pos = pos.clone().recip();

    let sum_k = cumsum(k.with_empty_tape(), chunk) + eps;
    let sum_q = cumsum(q.with_empty_tape(), chunk) + eps;
    let incoming = dot(q.with_empty_tape() + eps, sum_k).recip() * pos.clone();
    let outgoing = dot(k.with_empty_tape() + eps, sum_q).recip() * pos.clone();
    let sum_ko = cumsum(k.with_empty_tape() * spread(outgoing, d), chunk) + eps;
    let sum_qi = cumsum(
        q.with_empty_tape() * spread(incoming.with_empty_tape(), d),
        chunk,
    ) + eps;
    let sink = dot(q.with_empty_tape() + eps, sum_ko) * inv_pos.clone();
    let source =
        (dot(k.with_empty_tape() + eps, sum_qi) * inv_pos.clone()).clamp(-cfg.clamp, cfg.clamp);
    let allocation = sink.sigmoid();
    let exp_source = source.exp();
    let sum_exp = cumsum(
        exp_source.with_empty_tape().reshape_like(&(n, len, 1)),
        chunk,
    )
    .reshape_like(&(n, len));
    let competition = exp_source / sum_exp * pos;
    let q_norm = q * spread(incoming * inv_pos, d);
    let w = v * spread(competition, m);
    let out = causal_linear(q_norm, k, w, chunk) * spread(allocation, m);
    let out = if len == l {
        out
    } else {
        out.slice((.., ..l, ..))
    };
    out.reshape_like(&(b, h, l, m))
}

/// Normal (non-causal) Flow-Attention from stock ops: `q (B,H,L,D)`, `k (B,H,S,D)`,
/// `v (B,H,S,M)` -> `(B,H,L,M)`; the conserved source is clamped to `[-clamp, clamp]`.
pub fn normal_flow<E, D, T>(
    q: Tensor4<E, D, T>,
    k: Tensor4<E, D, T>,
    v: Tensor4<E, D, T>,
    cfg: &FlowConfig,
) -> Tensor4<E, D, T>
where
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D> + Merge<T>,
{
    let (b, h, l, d) = *q.shape();
    let (s, m) = (k.shape().2, v.shape().3);
    let n = b * h;
    let eps: E = cast(cfg.eps);
    let q = q.reshape_like(&(n, l, d)).sigmoid();
    let k = k.reshape_like(&(n, s, d)).sigmoid();
    let v = v.reshape_like(&(n, s, m));
    let over = |t: Rows<E, D, T>, len: usize| t.broadcast_like::<_, Axis<1>>(&(n, len, d));

    let sum_k = over(k.with_empty_tape().sum::<_, Axis<1>>() + eps, l);
    let sum_q = over(q.with_empty_tape().sum::<_, Axis<1>>() + eps, s);
    let incoming = dot(q.with_empty_tape() + eps, sum_k).recip();
    let outgoing = dot(k.with_empty_tape() + eps, sum_q).recip();
    let sum_ko = (k.with_empty_tape() * spread(outgoing, d)).sum::<_, Axis<1>>() + eps;
    let sum_qi =
        (q.with_empty_tape() * spread(incoming.with_empty_tape(), d)).sum::<_, Axis<1>>() + eps;
    let sink = dot(q.with_empty_tape() + eps, over(sum_ko, l));
    let source = dot(k.with_empty_tape() + eps, over(sum_qi, s)).clamp(-cfg.clamp, cfg.clamp);
    let allocation = (sink * cast::<E>(l as f64 / s as f64)).sigmoid();
    let competition = source.softmax::<Axis<1>>() * cast::<E>(s as f64);
    let kv = k
        .permute::<_, Axes3<0, 2, 1>>()
        .matmul(v * spread(competition, m));
    let out = (q * spread(incoming, d)).matmul(kv) * spread(allocation, m);
    out.reshape_like(&(b, h, l, m))
}

/// Causal scaled-dot-product softmax attention from stock ops (materialises `(B,H,L,L)`).
pub fn causal_softmax<E, D, T>(
    q: Tensor4<E, D, T>,
    k: Tensor4<E, D, T>,
    v: Tensor4<E, D, T>,
) -> Tensor4<E, D, T>
where
    E: Dtype + Float,
    D: Device<E>,
    T: Tape<E, D> + Merge<T>,
{
    let (b, h, l, d) = *q.shape();
    let dev = q.device().clone();
    let scale: E = cast(1.0 / (d as f64).sqrt());
    let scores = q.matmul(k.permute::<_, Axes4<0, 1, 3, 2>>()) * scale;
    let mask = dev
        .upper_tri_like(&(l, l), E::neg_infinity(), 1)
        .broadcast_like::<_, Axes2<0, 1>>(&(b, h, l, l));
    (scores + mask).softmax::<Axis<3>>().matmul(v)
}

/// One token of causal Flow-Attention from stock ops: advances `sums` by `q, k (B,H,D)`,
/// `v (B,H,M)` at 1-based `position` and returns the token's output `(B,H,M)`.
pub fn flow_step<E, D>(
    sums: &mut FlowSums<E, D>,
    position: usize,
    q: Tensor3<E, D>,
    k: Tensor3<E, D>,
    v: Tensor3<E, D>,
    cfg: &FlowConfig,
) -> Tensor3<E, D>
where
    E: Dtype + Float,
    D: Device<E>,
{
    let (b, h, d) = *q.shape();
    let m = v.shape().2;
    let pos: E = cast(position as f64);
    let eps: E = cast(cfg.eps);
    let spread = |t: Rows<E, D, NoneTape>, w: usize| t.broadcast_like::<_, Axis<2>>(&(b, h, w));
    let q = q.sigmoid();
    let k = k.sigmoid();

    sums.key = sums.key.clone() + k.clone();
    sums.query = sums.query.clone() + q.clone();
    let incoming = ((q.clone() + eps) * (sums.key.clone() + eps))
        .sum::<_, Axis<2>>()
        .recip()
        * pos;
    let outgoing = ((k.clone() + eps) * (sums.query.clone() + eps))
        .sum::<_, Axis<2>>()
        .recip()
        * pos;
    sums.key_out = sums.key_out.clone() + k.clone() * spread(outgoing, d);
    sums.query_in = sums.query_in.clone() + q.clone() * spread(incoming.clone(), d);
    let sink = ((q.clone() + eps) * (sums.key_out.clone() + eps)).sum::<_, Axis<2>>() / pos;
    let source = (((k.clone() + eps) * (sums.query_in.clone() + eps)).sum::<_, Axis<2>>() / pos)
        .clamp(-cfg.clamp, cfg.clamp);
    let allocation = sink.sigmoid();
    let exp_source = source.exp();
    sums.exp = sums.exp.clone() + exp_source.clone();
    let competition = exp_source / sums.exp.clone() * pos;
    let w = v * spread(competition, m);
    sums.kv = sums.kv.clone()
        + k.reshape_like(&(b, h, d, 1))
            .matmul(w.reshape_like(&(b, h, 1, m)));
    let q_norm = q * spread(incoming / pos, d);
    q_norm
        .reshape_like(&(b, h, 1, d))
        .matmul(sums.kv.clone())
        .reshape_like(&(b, h, m))
        * spread(allocation, m)
}
