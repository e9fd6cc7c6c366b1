//! Fused causal Flow-Attention on the CPU: a custom dfdx op whose forward and backward
//! passes run the chunked head kernels of [`super::chunked`] (heads in parallel with
//! rayon), O(L (C + D) M) time for chunks of C positions and O(L (D + M)) memory, and the `Cpu` step of the
//! step-by-step state.

use super::chunked::{backward_head, forward_head, Dims, Head, HeadGrads, Saved};
use super::recurrence::{Consts, Real};
use super::{cast, FlowConfig, Tensor4};
use crate::kernels::{add_into, read, zeroed};
use dfdx::prelude::*;
use rayon::prelude::*;

/// Flow-Attention's constants for the kernels, with the device's sigmoid.
pub(crate) fn consts<F: Real>(cfg: &FlowConfig, sigmoid: fn(&mut [F])) -> Consts<F> {
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

/// A buffer of `len` values that the kernels overwrite completely before reading
/// (zeroed by the rayon pool when large).
pub(crate) fn scratch<F: Real>(len: usize) -> Vec<F> {
    zeroed(len)
}

/// The host inputs of causal Flow-Attention over `heads` heads: `sigmoid(q)`,
/// `sigmoid(k)` `(heads, L, D)` and `v (heads, L, M)`, with the sizes and constants.
pub(crate) struct HostHeads<F> {
    pub qf: Vec<F>,
    pub kf: Vec<F>,
    pub v: Vec<F>,
    pub dims: Dims,
    pub c: Consts<F>,
}

impl<F: Real> HostHeads<F> {
    /// The inputs from the raw `q`, `k` (the feature map `c.sigmoid` applied here, in
    /// place) and `v`, each `(heads, L, ·)`.
    pub(crate) fn new(mut q: Vec<F>, mut k: Vec<F>, v: Vec<F>, dims: Dims, c: Consts<F>) -> Self {
        let len = dims.l * dims.d;
        if len > 0 {
            q.par_chunks_mut(len)
                .chain(k.par_chunks_mut(len))
                .for_each(c.sigmoid);
        }
        Self {
            qf: q,
            kf: k,
            v,
            dims,
            c,
        }
    }

    /// The forward pass of every head (heads in parallel) into `out (heads, L, M)`;
    /// with `record`, also what [`HostHeads::backward`] needs.
    pub(crate) fn forward(&self, out: &mut [F], record: bool) -> Option<Saved<Vec<F>>> {
        let Dims { l, d, m, .. } = self.dims;
        let heads = out.len() / (l * m).max(1);
        let (dims, c) = (self.dims, self.c);
        let mut saved = record.then(|| Saved {
            readout: scratch(heads * l * m),
            states: scratch(heads * dims.states_len()),
            checkpoints: scratch(heads * dims.checkpoints_len()),
        });
        if out.is_empty() {
            return saved;
        }
        let inputs = self
            .qf
            .par_chunks(l * d)
            .zip(self.kf.par_chunks(l * d))
            .zip(self.v.par_chunks(l * m));
        let outputs = out.par_chunks_mut(l * m);
        match saved.as_mut() {
            Some(s) => {
                let kept = s
                    .readout
                    .par_chunks_mut(l * m)
                    .zip(s.states.par_chunks_mut(dims.states_len()))
                    .zip(s.checkpoints.par_chunks_mut(dims.checkpoints_len()));
                inputs.zip(outputs).zip(kept).for_each(
                    |((((qf, kf), v), o), ((readout, states), checkpoints))| {
                        let head = Saved {
                            readout,
                            states,
                            checkpoints,
                        };
                        wide::forward_head(Head { qf, kf, v, dims, c }, o, Some(head))
                    },
                );
            }
            None => inputs.zip(outputs).for_each(|(((qf, kf), v), o)| {
                wide::forward_head(Head { qf, kf, v, dims, c }, o, None)
            }),
        }
        saved
    }

    /// The backward pass of every head (heads in parallel) from the output's gradient
    /// `dout (heads, L, M)`: overwrites `grads` (`q`, `k` before the feature map, and
    /// `v`, laid out as the inputs).
    pub(crate) fn backward(&self, saved: &Saved<Vec<F>>, dout: &[F], grads: HeadGrads<F>) {
        let Dims { l, d, m, .. } = self.dims;
        let (dims, c) = (self.dims, self.c);
        if l * m == 0 {
            return;
        }
        let inputs = self
            .qf
            .par_chunks(l * d)
            .zip(self.kf.par_chunks(l * d))
            .zip(self.v.par_chunks(l * m));
        let kept = saved
            .readout
            .par_chunks(l * m)
            .zip(saved.states.par_chunks(dims.states_len()))
            .zip(saved.checkpoints.par_chunks(dims.checkpoints_len()));
        let outputs = grads
            .q
            .par_chunks_mut(l * d)
            .zip(grads.k.par_chunks_mut(l * d))
            .zip(grads.v.par_chunks_mut(l * m));
        inputs
            .zip(kept)
            .zip(outputs)
            .zip(dout.par_chunks(l * m))
            .for_each(
                |(((((qf, kf), v), ((readout, states), checkpoints)), ((q, k), gv)), doh)| {
                    let saved = Saved {
                        readout,
                        states,
                        checkpoints,
                    };
                    let grads = HeadGrads { q, k, v: gv };
                    wide::backward_head(Head { qf, kf, v, dims, c }, doh, saved, grads);
                },
            );
    }
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
    let (q, tape_q) = q.contiguous().split_tape();
    let (k, tape_k) = k.contiguous().split_tape();
    let (v, tape_v) = v.contiguous().split_tape();
    let heads = b * h;
    let mut out = scratch(heads * l * m);
    // sigmoid(q), sigmoid(k) and v, computed once.
    let dims = Dims::new(l, d, m);
    let inputs = HostHeads::new(read(&q), read(&k), read(&v), dims, consts(cfg, sigmoid));
    let saved = inputs.forward(&mut out, T::OWNS_TAPE);
    let out = q.device().tensor_from_vec(out, (b, h, l, m));
    let mut tape = tape_q.merge(tape_k).merge(tape_v);
    let (q_ghost, k_ghost, v_ghost, out_ghost) = (q.ghost(), k.ghost(), v.ghost(), out.ghost());
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&out_ghost)?;
        let n = heads * l;
        let (mut gq, mut gk, mut gv) = (scratch(n * d), scratch(n * d), scratch(n * m));
        if let Some(saved) = saved {
            let dout: &[F] = grads.get_or_alloc_mut(&out_ghost)?;
            let head_grads = HeadGrads {
                q: &mut gq,
                k: &mut gk,
                v: &mut gv,
            };
            inputs.backward(&saved, dout, head_grads);
        }
        // The copies are freed before the gradients are added, and each local once added.
        drop(inputs);
        for (ghost, local) in [(&q_ghost, gq), (&k_ghost, gk)] {
            add_into(grads.get_or_alloc_mut(ghost)?, &local);
        }
        add_into(grads.get_or_alloc_mut(&v_ghost)?, &gv);
        Ok(())
    });
    out.put_tape(tape)
}
