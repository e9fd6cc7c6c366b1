//! Fused causal Flow-Attention on the CPU: one sequential pass per head (heads in
//! parallel with rayon), O(L D M) time and O(L (D + M)) memory, with a hand-derived
//! backward pass registered on the dfdx tape.
//!
//! The forward pass keeps only the feature-mapped inputs (`sigmoid(q)`, `sigmoid(k)`, `v`).
//! The backward pass recomputes: a
//! forward sweep rebuilds the `D x M` state to get `dQ += S_i dr_i` and the row products
//! `dout_i . (Q_i^T S_i)`, saving the running sums every [`CHECKPOINT`] positions; a
//! reverse sweep then walks the chunks from the end, recomputes each chunk's prefix sums
//! from its checkpoint and accumulates the adjoints of the prefix sums in reverse.

use super::recurrence::{
    accumulate, advance, axpy, dot, forward_token, readout, sigmoid_in_place, sigmoid_into,
    sums_len, Consts, Real, Token,
};
use super::{cast, cpu_data as read, FlowConfig, FlowSums, Tensor3, Tensor4};
use dfdx::prelude::*;
use rayon::prelude::*;

/// Positions between two saved copies of the running sums in the backward pass.
const CHECKPOINT: usize = 64;

fn consts<F: Real>(cfg: &FlowConfig) -> Consts<F> {
    Consts {
        eps: cast(cfg.eps),
        clamp: cast(cfg.clamp),
    }
}

/// Sizes of one call.
#[derive(Clone, Copy)]
struct Dims {
    l: usize,
    d: usize,
    m: usize,
}

/// Forward pass of one head: feature-mapped `qf = sigmoid(q)`, `kf = sigmoid(k)` `(L,D)`
/// and `v (L,M)` -> `out (L,M)`.
#[inline(always)]
fn forward_head<F: Real>(qf: &[F], kf: &[F], v: &[F], out: &mut [F], dims: Dims, c: Consts<F>) {
    let Dims { d, m, .. } = dims;
    let mut sums = vec![F::zero(); sums_len(d)];
    let mut kv = vec![F::zero(); d * m];
    let mut w = vec![F::zero(); m];
    let rows = qf
        .chunks_exact(d)
        .zip(kf.chunks_exact(d))
        .zip(v.chunks_exact(m));
    for (i, (((qi, ki), vi), oi)) in rows.zip(out.chunks_exact_mut(m)).enumerate() {
        forward_token(
            &mut sums,
            &mut kv,
            qi,
            ki,
            vi,
            cast(i as f64 + 1.0),
            c,
            &mut w,
            oi,
        );
    }
}

/// Gradients of one head.
struct HeadGrads<'a, F> {
    q: &'a mut [F],
    k: &'a mut [F],
    v: &'a mut [F],
}

/// Reverse-sweep accumulators: adjoints of the prefix sums, summed from the end.
struct Reverse<F> {
    /// `sum_{i>=j} Q_i dr_i^T`, the adjoint of the `D x M` state.
    state: Vec<F>,
    key: Vec<F>,
    query: Vec<F>,
    key_out: Vec<F>,
    query_in: Vec<F>,
    exp: F,
}

/// Backward pass of one head; writes (overwrites) `grads`.
#[inline(always)]
fn backward_head<F: Real>(
    qf: &[F],
    kf: &[F],
    v: &[F],
    dout: &[F],
    grads: HeadGrads<F>,
    dims: Dims,
    c: Consts<F>,
) {
    let Dims { l, d, m } = dims;
    let width = sums_len(d);
    let (mut w, mut r, mut dr) = (vec![F::zero(); m], vec![F::zero(); m], vec![F::zero(); m]);

    // Forward sweep: checkpoints, row products and the state term of dQ.
    let mut sums = vec![F::zero(); width];
    let mut kv = vec![F::zero(); d * m];
    let mut checkpoints = Vec::with_capacity(l.div_ceil(CHECKPOINT) * width);
    let mut row_dot = vec![F::zero(); l];
    for i in 0..l {
        if i % CHECKPOINT == 0 {
            checkpoints.extend_from_slice(&sums);
        }
        let (qi, ki) = (&qf[i * d..(i + 1) * d], &kf[i * d..(i + 1) * d]);
        let t = advance(&mut sums, qi, ki, cast(i as f64 + 1.0), c);
        accumulate(&mut kv, ki, &v[i * m..(i + 1) * m], t.competition, &mut w);
        readout(&kv, qi, &mut r);
        let douti = &dout[i * m..(i + 1) * m];
        row_dot[i] = dot(douti, &r);
        let scale = t.scale();
        for (o, &g) in dr.iter_mut().zip(douti) {
            *o = scale * g;
        }
        for (o, row) in grads.q[i * d..(i + 1) * d]
            .iter_mut()
            .zip(kv.chunks_exact(m))
        {
            *o = dot(row, &dr);
        }
    }

    // Reverse sweep, chunk by chunk.
    let mut rev = Reverse {
        state: vec![F::zero(); d * m],
        key: vec![F::zero(); d],
        query: vec![F::zero(); d],
        key_out: vec![F::zero(); d],
        query_in: vec![F::zero(); d],
        exp: F::zero(),
    };
    let mut chunk_sums = vec![F::zero(); CHECKPOINT * width];
    let mut tokens = [Token::default(); CHECKPOINT];
    let (mut dq, mut dk, mut dw) = (vec![F::zero(); d], vec![F::zero(); d], vec![F::zero(); m]);
    for (chunk, start) in (0..l).step_by(CHECKPOINT).enumerate().rev() {
        let end = (start + CHECKPOINT).min(l);
        sums.copy_from_slice(&checkpoints[chunk * width..(chunk + 1) * width]);
        for i in start..end {
            let j = i - start;
            let (qi, ki) = (&qf[i * d..(i + 1) * d], &kf[i * d..(i + 1) * d]);
            tokens[j] = advance(&mut sums, qi, ki, cast(i as f64 + 1.0), c);
            chunk_sums[j * width..(j + 1) * width].copy_from_slice(&sums);
        }
        for i in (start..end).rev() {
            let j = i - start;
            let token = Position {
                t: tokens[j],
                qf: &qf[i * d..(i + 1) * d],
                kf: &kf[i * d..(i + 1) * d],
                sums: &chunk_sums[j * width..(j + 1) * width],
                v: &v[i * m..(i + 1) * m],
                dout: &dout[i * m..(i + 1) * m],
                row_dot: row_dot[i],
            };
            token.backward(&mut rev, &mut dq, &mut dk, &mut dw, &mut w, &mut dr, c);
            let (gq, gk) = (
                &mut grads.q[i * d..(i + 1) * d],
                &mut grads.k[i * d..(i + 1) * d],
            );
            for x in 0..d {
                let (qx, kx) = (token.qf[x], token.kf[x]);
                gq[x] = (gq[x] + dq[x]) * qx * (F::one() - qx);
                gk[x] = dk[x] * kx * (F::one() - kx);
            }
            for (o, &g) in grads.v[i * m..(i + 1) * m].iter_mut().zip(&dw) {
                *o = token.t.competition * g;
            }
        }
    }
}

/// Everything the reverse sweep needs about one position.
struct Position<'a, F> {
    t: Token<F>,
    qf: &'a [F],
    kf: &'a [F],
    /// The packed prefix sums up to and including this position.
    sums: &'a [F],
    v: &'a [F],
    dout: &'a [F],
    /// `dout . (qf^T S)`.
    row_dot: F,
}

impl<F: Real> Position<'_, F> {
    /// Adjoints of this position: writes `dq`, `dk` (before the sigmoid derivative) and
    /// `dw` (the adjoint of `C v`), and adds its terms to the reverse accumulators.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        rev: &mut Reverse<F>,
        dq: &mut [F],
        dk: &mut [F],
        dw: &mut [F],
        w: &mut [F],
        dr: &mut [F],
        c: Consts<F>,
    ) {
        let (t, qf, kf) = (&self.t, self.qf, self.kf);
        let d = qf.len();
        let m = self.v.len();
        let (sum_k, rest) = self.sums.split_at(d);
        let (sum_q, rest) = rest.split_at(d);
        let (sum_ko, rest) = rest.split_at(d);
        let sum_qi = &rest[..d];
        let (one, eps, pos) = (F::one(), c.eps, t.pos);

        // out = scale * qf^T S, S = sum_j kf_j w_j^T with w = C v.
        let scale = t.scale();
        for (o, &g) in dr.iter_mut().zip(self.dout) {
            *o = scale * g;
        }
        for (row, &qx) in rev.state.chunks_exact_mut(m).zip(qf) {
            axpy(row, qx, dr);
        }
        for (o, &x) in w.iter_mut().zip(self.v) {
            *o = t.competition * x;
        }
        for (o, row) in dk.iter_mut().zip(rev.state.chunks_exact(m)) {
            *o = dot(row, w);
        }
        dw.fill(F::zero());
        for (row, &kx) in rev.state.chunks_exact(m).zip(kf) {
            axpy(dw, kx, row);
        }
        let d_comp = dot(self.v, dw);
        let d_alloc = t.incoming / pos * self.row_dot;
        let d_scale_in = t.allocation * self.row_dot / pos;

        // C = pos exp / sum exp.
        rev.exp -= d_comp * t.competition / t.sum_exp;
        let d_exp = d_comp * pos / t.sum_exp + rev.exp;
        let d_source = if t.unclamped(c.clamp) {
            d_exp * t.exp
        } else {
            F::zero()
        };

        // Sr = (K + eps) . (sum QI + eps) / pos.
        for x in 0..d {
            dk[x] += d_source * (sum_qi[x] + eps) / pos;
            rev.query_in[x] += d_source * (kf[x] + eps) / pos;
        }
        // A = sigmoid(Sk), Sk = (Q + eps) . (sum KO + eps) / pos.
        let d_sink = d_alloc * t.allocation * (one - t.allocation);
        for x in 0..d {
            dq[x] = d_sink * (sum_ko[x] + eps) / pos;
            rev.key_out[x] += d_sink * (qf[x] + eps) / pos;
        }
        // I enters the output scale and sum QI; O enters sum KO.
        let d_in = d_scale_in + dot(qf, &rev.query_in);
        let d_out = dot(kf, &rev.key_out);
        let d_den_in = -d_in * t.incoming / t.den_in;
        let d_den_out = -d_out * t.outgoing / t.den_out;
        for x in 0..d {
            dq[x] += t.incoming * rev.query_in[x] + d_den_in * (sum_k[x] + eps);
            dk[x] += t.outgoing * rev.key_out[x] + d_den_out * (sum_q[x] + eps);
            rev.key[x] += d_den_in * (qf[x] + eps);
            rev.query[x] += d_den_out * (kf[x] + eps);
            dq[x] += rev.query[x];
            dk[x] += rev.key[x];
        }
    }
}

/// The head kernels compiled for the widest vector unit the CPU has, chosen at run time.
/// The arithmetic and its order are the same in every build (no fused multiply-add), so
/// the results are too, and equal to the step-by-step state's.
mod wide {
    use super::{Consts, Dims, HeadGrads, Real};

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn forward_head_avx2<F: Real>(
        q: &[F],
        k: &[F],
        v: &[F],
        out: &mut [F],
        dims: Dims,
        c: Consts<F>,
    ) {
        super::forward_head(q, k, v, out, dims, c)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn backward_head_avx2<F: Real>(
        q: &[F],
        k: &[F],
        v: &[F],
        dout: &[F],
        grads: HeadGrads<F>,
        dims: Dims,
        c: Consts<F>,
    ) {
        super::backward_head(q, k, v, dout, grads, dims, c)
    }

    /// See [`super::forward_head`].
    pub(super) fn forward_head<F: Real>(
        q: &[F],
        k: &[F],
        v: &[F],
        out: &mut [F],
        dims: Dims,
        c: Consts<F>,
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { forward_head_avx2(q, k, v, out, dims, c) };
        }
        super::forward_head(q, k, v, out, dims, c)
    }

    /// See [`super::backward_head`].
    pub(super) fn backward_head<F: Real>(
        q: &[F],
        k: &[F],
        v: &[F],
        dout: &[F],
        grads: HeadGrads<F>,
        dims: Dims,
        c: Consts<F>,
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { backward_head_avx2(q, k, v, dout, grads, dims, c) };
        }
        super::backward_head(q, k, v, dout, grads, dims, c)
    }
}

/// Fused causal Flow-Attention on `Cpu` (shapes already checked).
pub(super) fn causal_flow<F, T>(
    q: Tensor4<F, Cpu, T>,
    k: Tensor4<F, Cpu, T>,
    v: Tensor4<F, Cpu, T>,
    cfg: &FlowConfig,
) -> Tensor4<F, Cpu, T>
where
    F: Real,
    T: Tape<F, Cpu> + Merge<T>,
{
    let (b, h, l, d) = *q.shape();
    let m = v.shape().3;
    let dims = Dims { l, d, m };
    let c = consts::<F>(cfg);
    let (q, tape_q) = q.contiguous().split_tape();
    let (k, tape_k) = k.contiguous().split_tape();
    let (v, tape_v) = v.contiguous().split_tape();
    let mut out = vec![F::zero(); b * h * l * m];
    // sigmoid(q), sigmoid(k) and v, computed once; the backward pass reuses them.
    let inputs = (!out.is_empty()).then(|| {
        let (mut qf, mut kf) = (read(&q), read(&k));
        qf.par_chunks_mut(l * d)
            .chain(kf.par_chunks_mut(l * d))
            .for_each(|x| sigmoid_in_place(x));
        (qf, kf, read(&v))
    });
    if let Some((qd, kd, vd)) = &inputs {
        out.par_chunks_mut(l * m)
            .zip(
                qd.par_chunks(l * d)
                    .zip(kd.par_chunks(l * d))
                    .zip(vd.par_chunks(l * m)),
            )
            .for_each(|(o, ((qh, kh), vh))| wide::forward_head(qh, kh, vh, o, dims, c));
    }
    let out = q.device().tensor_from_vec(out, (b, h, l, m));
    let mut tape = tape_q.merge(tape_k).merge(tape_v);
    let (q_ghost, k_ghost, v_ghost, out_ghost) = (q.ghost(), k.ghost(), v.ghost(), out.ghost());
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&out_ghost)?;
        let n = b * h * l;
        let (mut gq, mut gk, mut gv) = (
            vec![F::zero(); n * d],
            vec![F::zero(); n * d],
            vec![F::zero(); n * m],
        );
        // Consumed: the copies are freed before the gradients are allocated.
        if let Some((qd, kd, vd)) = inputs {
            let dout: &[F] = grads.get_or_alloc_mut(&out_ghost)?;
            let inputs = qd
                .par_chunks(l * d)
                .zip(kd.par_chunks(l * d))
                .zip(vd.par_chunks(l * m));
            let outputs = gq
                .par_chunks_mut(l * d)
                .zip(gk.par_chunks_mut(l * d))
                .zip(gv.par_chunks_mut(l * m));
            inputs.zip(outputs).zip(dout.par_chunks(l * m)).for_each(
                |((((qh, kh), vh), ((gqh, gkh), gvh)), doh)| {
                    let grads = HeadGrads {
                        q: gqh,
                        k: gkh,
                        v: gvh,
                    };
                    wide::backward_head(qh, kh, vh, doh, grads, dims, c);
                },
            );
        }
        // One local at a time: each is freed once added.
        for (ghost, local) in [(&q_ghost, gq), (&k_ghost, gk)] {
            for (g, &x) in grads.get_or_alloc_mut(ghost)?.iter_mut().zip(&local) {
                *g += x;
            }
        }
        for (g, &x) in grads.get_or_alloc_mut(&v_ghost)?.iter_mut().zip(&gv) {
            *g += x;
        }
        Ok(())
    });
    out.put_tape(tape)
}

/// One token of causal Flow-Attention on `Cpu`: the same arithmetic, in the same order,
/// as one position of [`causal_flow`].
pub(super) fn flow_step<F: Real>(
    sums: &mut FlowSums<F, Cpu>,
    position: usize,
    q: Tensor3<F, Cpu>,
    k: Tensor3<F, Cpu>,
    v: Tensor3<F, Cpu>,
    cfg: &FlowConfig,
) -> Tensor3<F, Cpu> {
    let (b, h, d) = *q.shape();
    let m = v.shape().2;
    let c = consts::<F>(cfg);
    let dev = q.device().clone();
    let (qd, kd, vd) = (
        read(&q.contiguous()),
        read(&k.contiguous()),
        read(&v.contiguous()),
    );
    let mut key = read(&sums.key);
    let mut query = read(&sums.query);
    let mut key_out = read(&sums.key_out);
    let mut query_in = read(&sums.query_in);
    let mut exp = read(&sums.exp);
    let mut kv = read(&sums.kv);
    let mut out = vec![F::zero(); b * h * m];
    let mut packed = vec![F::zero(); sums_len(d)];
    let (mut qf, mut kf, mut w) = (vec![F::zero(); d], vec![F::zero(); d], vec![F::zero(); m]);
    let pos: F = cast(position as f64);
    for n in 0..b * h {
        let feat = n * d..(n + 1) * d;
        let parts = [&key, &query, &key_out, &query_in];
        for (dst, src) in packed.chunks_exact_mut(d).zip(parts) {
            dst.copy_from_slice(&src[feat.clone()]);
        }
        packed[4 * d] = exp[n];
        sigmoid_into(&qd[feat.clone()], &mut qf);
        sigmoid_into(&kd[feat.clone()], &mut kf);
        let kv_head = &mut kv[n * d * m..(n + 1) * d * m];
        let out_head = &mut out[n * m..(n + 1) * m];
        forward_token(
            &mut packed,
            kv_head,
            &qf,
            &kf,
            &vd[n * m..(n + 1) * m],
            pos,
            c,
            &mut w,
            out_head,
        );
        let parts = [&mut key, &mut query, &mut key_out, &mut query_in];
        for (src, dst) in packed.chunks_exact(d).zip(parts) {
            dst[feat.clone()].copy_from_slice(src);
        }
        exp[n] = packed[4 * d];
    }
    sums.key.copy_from(&key);
    sums.query.copy_from(&query);
    sums.key_out.copy_from(&key_out);
    sums.query_in.copy_from(&query_in);
    sums.exp.copy_from(&exp);
    sums.kv.copy_from(&kv);
    dev.tensor_from_vec(out, (b, h, m))
}
