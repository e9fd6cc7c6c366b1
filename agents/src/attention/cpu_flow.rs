//! Fused causal Flow-Attention on the CPU: a custom dfdx op whose forward and backward
//! passes run the chunked head kernels of [`super::chunked`] (heads in parallel with
//! rayon), O(L (C + D) M) time for chunks of C positions and O(L (D + M)) memory, and the `Cpu` step of the
//! step-by-step state.

use super::chunked::{backward_head, forward_head, Dims, Head, HeadGrads, Saved};
use super::recurrence::{Consts, Real};
use super::{add_into, cast, cpu_data as read, FlowConfig, Tensor4};
use dfdx::prelude::*;
use rayon::prelude::*;

fn consts<F: Real>(cfg: &FlowConfig, sigmoid: fn(&mut [F])) -> Consts<F> {
    Consts {
        eps: cast(cfg.eps),
        clamp: cast(cfg.clamp),
        sigmoid,
    }
}

/// The head kernels compiled for the widest vector unit the CPU has, chosen at run time
/// (the matrix products inside pick their own). The arithmetic and its order are the same
/// in every build (no fused multiply-add outside the products).
mod wide {
    use super::{Head, HeadGrads, Real, Saved};

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn forward_head_avx2<F: Real>(head: Head<F>, out: &mut [F], saved: Option<Saved<&mut [F]>>) {
        super::forward_head(head, out, saved)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn backward_head_avx2<F: Real>(
        head: Head<F>,
        dout: &[F],
        saved: Saved<&[F]>,
        grads: HeadGrads<F>,
    ) {
        super::backward_head(head, dout, saved, grads)
    }

    /// See [`super::forward_head`].
    pub(super) fn forward_head<F: Real>(
        head: Head<F>,
        out: &mut [F],
        saved: Option<Saved<&mut [F]>>,
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { forward_head_avx2(head, out, saved) };
        }
        super::forward_head(head, out, saved)
    }

    /// See [`super::backward_head`].
    pub(super) fn backward_head<F: Real>(
        head: Head<F>,
        dout: &[F],
        saved: Saved<&[F]>,
        grads: HeadGrads<F>,
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { backward_head_avx2(head, dout, saved, grads) };
        }
        super::backward_head(head, dout, saved, grads)
    }
}

/// A buffer of `len` values that the kernels overwrite completely before reading.
fn scratch<F: Real>(len: usize) -> Vec<F> {
    vec![F::zero(); len]
}

/// Fused causal Flow-Attention on `Cpu` (shapes already checked).
pub(crate) fn causal_flow<F, T>(
    q: Tensor4<F, Cpu, T>,
    k: Tensor4<F, Cpu, T>,
    v: Tensor4<F, Cpu, T>,
    cfg: &FlowConfig,
    sigmoid: fn(&mut [F]),
) -> Tensor4<F, Cpu, T>
where
    F: Real,
    T: Tape<F, Cpu> + Merge<T>,
{
    let (b, h, l, d) = *q.shape();
    let m = v.shape().3;
    let dims = Dims::new(l, d, m);
    let c = consts::<F>(cfg, sigmoid);
    let (q, tape_q) = q.contiguous().split_tape();
    let (k, tape_k) = k.contiguous().split_tape();
    let (v, tape_v) = v.contiguous().split_tape();
    let heads = b * h;
    let mut out = scratch(heads * l * m);
    // sigmoid(q), sigmoid(k) and v, computed once, and what the backward pass needs.
    let record = T::OWNS_TAPE && !out.is_empty();
    let mut saved = record.then(|| Saved {
        readout: scratch(heads * l * m),
        states: scratch(heads * dims.states_len()),
        checkpoints: scratch(heads * dims.checkpoints_len()),
    });
    let inputs = (!out.is_empty()).then(|| {
        let (mut qf, mut kf) = (read(&q), read(&k));
        qf.par_chunks_mut(l * d)
            .chain(kf.par_chunks_mut(l * d))
            .for_each(sigmoid);
        (qf, kf, read(&v))
    });
    if let Some((qd, kd, vd)) = &inputs {
        let inputs = qd
            .par_chunks(l * d)
            .zip(kd.par_chunks(l * d))
            .zip(vd.par_chunks(l * m));
        let outputs = out.par_chunks_mut(l * m);
        match saved.as_mut() {
            Some(s) => {
                let kept = s
                    .readout
                    .par_chunks_mut(l * m)
                    .zip(s.states.par_chunks_mut(dims.states_len()))
                    .zip(s.checkpoints.par_chunks_mut(dims.checkpoints_len()));
                inputs.zip(outputs).zip(kept).for_each(
                    |((((qh, kh), vh), o), ((readout, states), checkpoints))| {
                        let head = Saved {
                            readout,
                            states,
                            checkpoints,
                        };
                        let inputs = Head {
                            qf: qh,
                            kf: kh,
                            v: vh,
                            dims,
                            c,
                        };
                        wide::forward_head(inputs, o, Some(head))
                    },
                );
            }
            None => inputs.zip(outputs).for_each(|(((qf, kf), v), o)| {
                wide::forward_head(Head { qf, kf, v, dims, c }, o, None)
            }),
        }
    }
    let out = q.device().tensor_from_vec(out, (b, h, l, m));
    let mut tape = tape_q.merge(tape_k).merge(tape_v);
    let (q_ghost, k_ghost, v_ghost, out_ghost) = (q.ghost(), k.ghost(), v.ghost(), out.ghost());
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&out_ghost)?;
        let n = heads * l;
        let (mut gq, mut gk, mut gv) = (scratch(n * d), scratch(n * d), scratch(n * m));
        // Consumed: the copies are freed before the gradients are added.
        if let (Some((qd, kd, vd)), Some(s)) = (inputs, saved) {
            let dout: &[F] = grads.get_or_alloc_mut(&out_ghost)?;
            let inputs = qd
                .par_chunks(l * d)
                .zip(kd.par_chunks(l * d))
                .zip(vd.par_chunks(l * m));
            let kept = s
                .readout
                .par_chunks(l * m)
                .zip(s.states.par_chunks(dims.states_len()))
                .zip(s.checkpoints.par_chunks(dims.checkpoints_len()));
            let outputs = gq
                .par_chunks_mut(l * d)
                .zip(gk.par_chunks_mut(l * d))
                .zip(gv.par_chunks_mut(l * m));
            inputs
                .zip(kept)
                .zip(outputs)
                .zip(dout.par_chunks(l * m))
                .for_each(
                    |(
                        ((((qh, kh), vh), ((readout, states), checkpoints)), ((gqh, gkh), gvh)),
                        doh,
                    )| {
                        let saved = Saved {
                            readout,
                            states,
                            checkpoints,
                        };
                        let grads = HeadGrads {
                            q: gqh,
                            k: gkh,
                            v: gvh,
                        };
                        let head = Head {
                            qf: qh,
                            kf: kh,
                            v: vh,
                            dims,
                            c,
                        };
                        wide::backward_head(head, doh, saved, grads);
                    },
                );
        }
        // One local at a time: each is freed once added.
        for (ghost, local) in [(&q_ghost, gq), (&k_ghost, gk)] {
            add_into(grads.get_or_alloc_mut(ghost)?, &local);
        }
        add_into(grads.get_or_alloc_mut(&v_ghost)?, &gv);
        Ok(())
    });
    out.put_tape(tape)
}
