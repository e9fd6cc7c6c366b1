//! Eval-mode forward pass that computes only the token outputs that are read.
//!
//! Acting in `window` mode re-encodes the whole window every step but reads one
//! token's output per row. Every block but the last must still run on every token
//! (later tokens attend to them), and the last block needs its keys, queries and
//! values for every token; after its attention, though, the output projection, the
//! MLP and the final LayerNorm run on the read rows only
//! ([`Backbone::forward_rows`]). On `Cpu`, the last block's causal Flow-Attention is
//! evaluated at the read positions only as well
//! ([`flow_readout`]): `A_p (Q_p I_p / p)^T sum_{j<=p} K_j (C_j v_j)^T` equals
//! `A_p I_p / p sum_{j<=p} (Q_p . K_j) C_j v_j`, which needs the running sums of the
//! tokens up to `p` but no `D x M` state.

use std::any::TypeId;

use dfdx::prelude::*;
use num_traits::Float;
use rayon::prelude::*;

use super::recurrent::host::cast;
use super::{Backbone, BackboneError};
use crate::attention::recurrence::{advance, axpy, sigmoid_into, sums_len, Consts, Real};
use crate::attention::{AttentionDevice, AttentionKind, FlowConfig};
use crate::layers::{Tensor2, Tensor3};
use crate::params::ParamStore;

/// Causal Flow-Attention of one head at one position only, `out (M)`: `q`, `k` hold
/// the head's `(positions, D)` rows with stride `stride`, `v` its `(positions, M)` rows
/// with the same stride; the output is for position `p` (0-based) and depends on rows
/// `0..=p`.
fn head_readout<E: Real>(
    q: &[E],
    k: &[E],
    v: &[E],
    stride: usize,
    p: usize,
    consts: Consts<E>,
    out: &mut [E],
) {
    // Queries, keys and values all have the head width.
    let d = out.len();
    let (mut qp, mut qf, mut kf) = (vec![E::zero(); d], vec![E::zero(); d], vec![E::zero(); d]);
    let mut sums = vec![E::zero(); sums_len(d)];
    sigmoid_into(&q[p * stride..p * stride + d], &mut qp);
    out.fill(E::zero());
    let mut scale = E::zero();
    for j in 0..=p {
        sigmoid_into(&q[j * stride..j * stride + d], &mut qf);
        sigmoid_into(&k[j * stride..j * stride + d], &mut kf);
        let token = advance(&mut sums, &qf, &kf, cast((j + 1) as f64), consts);
        let weight = qp
            .iter()
            .zip(&kf)
            .fold(E::zero(), |acc, (&a, &b)| acc + a * b)
            * token.competition;
        axpy(out, weight, &v[j * stride..j * stride + d]);
        scale = token.scale();
    }
    for x in out.iter_mut() {
        *x *= scale;
    }
}

/// Causal Flow-Attention outputs at position `positions[r]` of every batch row `r`
/// only, `[B, W]`: `q`, `k`, `v` are `[B, L, W]` with `heads` contiguous heads of the
/// width. Rows run in parallel when the batch is large.
fn flow_readout<E: Dtype + Float>(
    (q, k, v): (&[E], &[E], &[E]),
    (l, w, heads): (usize, usize, usize),
    positions: &[usize],
    cfg: &FlowConfig,
) -> Vec<E> {
    let hw = w / heads.max(1);
    let consts = Consts {
        eps: cast(cfg.eps),
        clamp: cast(cfg.clamp),
    };
    let mut out = vec![E::zero(); positions.len() * w];
    let row = |r: usize, out: &mut [E]| {
        let at = r * l * w;
        for (h, o) in out.chunks_exact_mut(hw).enumerate() {
            let head = at + h * hw..at + l * w;
            head_readout(
                &q[head.clone()],
                &k[head.clone()],
                &v[head],
                w,
                positions[r],
                consts,
                o,
            );
        }
    };
    if positions.len() >= 8 {
        out.par_chunks_mut(w)
            .enumerate()
            .for_each(|(r, o)| row(r, o));
    } else {
        out.chunks_mut(w).enumerate().for_each(|(r, o)| row(r, o));
    }
    out
}

impl Backbone {
    /// The eval-mode outputs at position `positions[r]` of every batch row `r` of the
    /// tokens `x (B, L, width)`, `(B, width)`: [`Backbone::forward_rows`] of the rows
    /// `r·L + positions[r]` with `train == false`. With causal Flow-Attention on `Cpu`
    /// the last block's attention, too, is computed at those positions only.
    pub fn forward_readout<E, D>(
        &self,
        store: &ParamStore<E, D>,
        x: Tensor3<E, D>,
        positions: &[usize],
    ) -> Result<Tensor2<E, D>, BackboneError>
    where
        E: Dtype + num_traits::Float,
        D: AttentionDevice<E>,
    {
        let (b, l, w) = self.check_input(x.shape())?;
        if positions.len() != b || positions.iter().any(|&p| p >= l) {
            return Err(BackboneError::Input {
                expected: format!("one readout position below {l} per batch row ({b})"),
                found: positions.to_vec(),
            });
        }
        let rows: Vec<usize> = positions
            .iter()
            .enumerate()
            .map(|(r, &p)| r * l + p)
            .collect();
        let on_cpu = TypeId::of::<D>() == TypeId::of::<Cpu>();
        let Some((last, blocks)) = self.blocks.split_last() else {
            return self.forward_rows(store, x, &rows, false);
        };
        if self.cfg.attention != AttentionKind::CausalFlow || !on_cpu {
            return self.forward_rows(store, x, &rows, false);
        }
        let mut h = x.reshape_like(&(b * l, w));
        for block in blocks {
            h = block.forward(store, h, (b, l), &self.cfg, false);
        }
        let a = last.ln_1.forward(store, h.clone());
        let q = last.query.forward(store, a.clone());
        let k = last.key.forward(store, a.clone());
        let v = last.value.forward(store, a);
        let o = flow_readout(
            (&q.as_vec(), &k.as_vec(), &v.as_vec()),
            (l, w, self.cfg.heads),
            positions,
            &self.cfg.flow,
        );
        let o = q.device().tensor_from_vec(o, (b, w));
        let readout = h.device().tensor_from_vec(rows, (b,));
        let h = last.out.forward(store, o) + h.gather(readout);
        let m = last
            .c_fc
            .forward_relu(store, last.ln_2.forward(store, h.clone()));
        Ok(self.ln_f.forward(store, last.c_proj.forward(store, m) + h))
    }
}
