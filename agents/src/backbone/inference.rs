//! Eval-mode forward pass that computes only the token outputs that are read.
//!
//! Acting in `window` mode re-encodes the whole window every step but reads one
//! token's output per row. Every block but the last must still run on every token
//! (later tokens attend to them), and the last block needs its keys, queries and
//! values for every token; after its attention, though, the output projection, the
//! MLP and the final LayerNorm run on the read rows only
//! ([`Backbone::forward_rows`]). On `Cpu`, the last block's causal Flow-Attention is
//! evaluated at the read positions only as well
//! ([`flow_readout`], through the host kernel of [`crate::host_inference`]).
//!
//! [`Backbone::host`] copies the backbone into host memory for the CPU acting path.

use std::any::TypeId;

use dfdx::prelude::*;
use num_traits::Float;
use rayon::prelude::*;

use super::recurrent::host::cast;
use super::{Backbone, BackboneError};
use crate::attention::recurrence::{Consts, Real};
use crate::attention::{AttentionKind, FlowConfig};
use crate::device::ModelDevice;
use crate::host_inference::{flow, Head, HostBackbone, HostBlock, HostLinear, HostNorm, Out};
use crate::layers::{Tensor2, Tensor3};
use crate::params::ParamStore;

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
    let parallel = positions.len() >= 8;
    let row = |r: usize, out: &mut [E]| {
        let at = r * l * w;
        let mut scratch = Vec::new();
        for (h, o) in out.chunks_exact_mut(hw).enumerate() {
            let head = at + h * hw..at + l * w;
            let head = Head {
                q: &q[head.clone()],
                k: &k[head.clone()],
                v: &v[head],
                stride: w,
                len: positions[r] + 1,
                width: hw,
            };
            let out = Out { data: o, stride: w };
            flow(head, positions[r], consts, &mut scratch, out, !parallel);
        }
    };
    if parallel {
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
        D: ModelDevice<E>,
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

impl Backbone {
    /// A copy of the backbone in host memory ([`crate::host_inference`]).
    pub(crate) fn host<E, D>(&self, store: &ParamStore<E, D>) -> HostBackbone<E>
    where
        E: Real,
        D: ModelDevice<E>,
    {
        let linear = |layer| HostLinear::new(store, layer);
        let blocks = self
            .blocks
            .iter()
            .map(|b| {
                HostBlock::new((
                    HostNorm::new(store, &b.ln_1),
                    [linear(&b.query), linear(&b.key), linear(&b.value)],
                    linear(&b.out),
                    HostNorm::new(store, &b.ln_2),
                    linear(&b.c_fc),
                    linear(&b.c_proj),
                ))
            })
            .collect();
        HostBackbone::new(
            blocks,
            HostNorm::new(store, &self.ln_f),
            (self.cfg.width, self.cfg.heads),
            self.cfg.attention,
            &self.cfg.flow,
        )
    }
}
