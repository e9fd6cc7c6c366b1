//! Fused causal softmax attention on the CPU: row by row with a numerically stable
//! softmax, keeping only the log-normaliser of each row for the backward pass, so memory
//! is O(L (D + M)) instead of O(L^2). Time stays O(L^2 D); heads run in parallel.

use super::recurrence::{axpy, dot, Real};
use super::{cast, cpu_data as read, Tensor4};
use dfdx::prelude::*;
use rayon::prelude::*;

/// Sizes of one call.
#[derive(Clone, Copy)]
struct Dims {
    l: usize,
    d: usize,
    m: usize,
}

/// Scores `scale q_i . k_j` for `j <= i` into `row[..=i]`; returns their maximum.
#[inline(always)]
fn scores<F: Real>(q: &[F], k: &[F], i: usize, d: usize, scale: F, row: &mut [F]) -> F {
    let qi = &q[i * d..(i + 1) * d];
    let mut top = F::neg_infinity();
    for (s, kj) in row[..=i].iter_mut().zip(k.chunks_exact(d)) {
        *s = scale * dot(qi, kj);
        top = top.max(*s);
    }
    top
}

/// Forward pass of one head: writes `out (L,M)` and the log-normaliser of every row.
#[inline(always)]
fn forward_head<F: Real>(q: &[F], k: &[F], v: &[F], out: &mut [F], lse: &mut [F], dims: Dims) {
    let Dims { l, d, m } = dims;
    let scale: F = cast(1.0 / (d as f64).sqrt());
    let mut row = vec![F::zero(); l];
    for i in 0..l {
        let top = scores(q, k, i, d, scale, &mut row);
        let mut total = F::zero();
        for s in row[..=i].iter_mut() {
            *s = (*s - top).exp();
            total += *s;
        }
        let oi = &mut out[i * m..(i + 1) * m];
        for (&p, vj) in row[..=i].iter().zip(v.chunks_exact(m)) {
            axpy(oi, p, vj);
        }
        let inv = F::one() / total;
        for o in oi.iter_mut() {
            *o *= inv;
        }
        lse[i] = top + total.ln();
    }
}

/// Backward pass of one head; writes (overwrites) the gradients.
#[inline(always)]
fn backward_head<F: Real>(
    (q, k, v): (&[F], &[F], &[F]),
    out: &[F],
    lse: &[F],
    dout: &[F],
    (gq, gk, gv): (&mut [F], &mut [F], &mut [F]),
    dims: Dims,
) {
    let Dims { l, d, m } = dims;
    let scale: F = cast(1.0 / (d as f64).sqrt());
    let mut row = vec![F::zero(); l];
    gk.fill(F::zero());
    gv.fill(F::zero());
    for i in 0..l {
        scores(q, k, i, d, scale, &mut row);
        let doi = &dout[i * m..(i + 1) * m];
        let delta = dot(doi, &out[i * m..(i + 1) * m]);
        let qi = &q[i * d..(i + 1) * d];
        let gqi = &mut gq[i * d..(i + 1) * d];
        gqi.fill(F::zero());
        for (j, &s) in row[..=i].iter().enumerate() {
            let p = (s - lse[i]).exp();
            axpy(&mut gv[j * m..(j + 1) * m], p, doi);
            let ds = p * (dot(doi, &v[j * m..(j + 1) * m]) - delta) * scale;
            axpy(gqi, ds, &k[j * d..(j + 1) * d]);
            axpy(&mut gk[j * d..(j + 1) * d], ds, qi);
        }
    }
}

/// The head kernels compiled for AVX2 when the CPU has it, chosen at run time (same
/// arithmetic in the same order, so the same results).
mod wide {
    use super::{Dims, Real};

    /// Inputs `(q, k, v)` of one head.
    type Inputs<'a, F> = (&'a [F], &'a [F], &'a [F]);
    /// Gradients `(dq, dk, dv)` of one head.
    type Grads<'a, F> = (&'a mut [F], &'a mut [F], &'a mut [F]);

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn forward_head_avx2<F: Real>(
        q: &[F],
        k: &[F],
        v: &[F],
        out: &mut [F],
        lse: &mut [F],
        dims: Dims,
    ) {
        super::forward_head(q, k, v, out, lse, dims)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn backward_head_avx2<F: Real>(
        x: Inputs<F>,
        out: &[F],
        lse: &[F],
        dout: &[F],
        g: Grads<F>,
        dims: Dims,
    ) {
        super::backward_head(x, out, lse, dout, g, dims)
    }

    /// See [`super::forward_head`].
    pub(super) fn forward_head<F: Real>(
        q: &[F],
        k: &[F],
        v: &[F],
        out: &mut [F],
        lse: &mut [F],
        dims: Dims,
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { forward_head_avx2(q, k, v, out, lse, dims) };
        }
        super::forward_head(q, k, v, out, lse, dims)
    }

    /// See [`super::backward_head`].
    pub(super) fn backward_head<F: Real>(
        x: Inputs<F>,
        out: &[F],
        lse: &[F],
        dout: &[F],
        g: Grads<F>,
        dims: Dims,
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { backward_head_avx2(x, out, lse, dout, g, dims) };
        }
        super::backward_head(x, out, lse, dout, g, dims)
    }
}

/// Fused causal softmax attention on `Cpu` (shapes already checked).
pub(crate) fn causal_softmax<F, T>(
    q: Tensor4<F, Cpu, T>,
    k: Tensor4<F, Cpu, T>,
    v: Tensor4<F, Cpu, T>,
) -> Tensor4<F, Cpu, T>
where
    F: Real,
    T: Tape<F, Cpu> + Merge<T>,
{
    let (b, h, l, d) = *q.shape();
    let m = v.shape().3;
    let dims = Dims { l, d, m };
    let (q, tape_q) = q.contiguous().split_tape();
    let (k, tape_k) = k.contiguous().split_tape();
    let (v, tape_v) = v.contiguous().split_tape();
    let mut out = vec![F::zero(); b * h * l * m];
    let mut lse = vec![F::zero(); b * h * l];
    // The backward pass reuses these copies (dfdx has no borrowed view of tensor data).
    let copies = (!out.is_empty()).then(|| (read(&q), read(&k), read(&v)));
    if let Some((qd, kd, vd)) = &copies {
        let inputs = qd
            .par_chunks(l * d)
            .zip(kd.par_chunks(l * d))
            .zip(vd.par_chunks(l * m));
        out.par_chunks_mut(l * m)
            .zip(lse.par_chunks_mut(l))
            .zip(inputs)
            .for_each(|((o, s), ((qh, kh), vh))| wide::forward_head(qh, kh, vh, o, s, dims));
    }
    let out = q.device().tensor_from_vec(out, (b, h, l, m));
    let mut tape = tape_q.merge(tape_k).merge(tape_v);
    let out_values = out.clone();
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
        if let Some((qd, kd, vd)) = copies {
            let od = read(&out_values);
            let dout: &[F] = grads.get_or_alloc_mut(&out_ghost)?;
            let inputs = qd
                .par_chunks(l * d)
                .zip(kd.par_chunks(l * d))
                .zip(vd.par_chunks(l * m));
            let saved = od
                .par_chunks(l * m)
                .zip(lse.par_chunks(l))
                .zip(dout.par_chunks(l * m));
            let outputs = gq
                .par_chunks_mut(l * d)
                .zip(gk.par_chunks_mut(l * d))
                .zip(gv.par_chunks_mut(l * m));
            inputs.zip(saved).zip(outputs).for_each(
                |((((qh, kh), vh), ((oh, sh), doh)), ((gqh, gkh), gvh))| {
                    wide::backward_head((qh, kh, vh), oh, sh, doh, (gqh, gkh, gvh), dims);
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
