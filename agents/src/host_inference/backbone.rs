//! The backbone's eval-mode forward pass on host slices, read out at the last token
//! of every sequence: every block but the last runs on every token; the last one
//! computes its attention output, output projection, MLP and the final LayerNorm at
//! the last tokens only (what [`crate::backbone::Backbone::forward_readout`] computes).

use rayon::prelude::*;

use super::attention::{self, Head, Out};
use super::dense::{HostLinear, HostNorm};
use crate::attention::recurrence::{Consts, Real};
use crate::attention::{AttentionKind, FlowConfig};
use crate::params::from_f64;

/// Sequences per step below which the attention runs on the calling thread.
const PARALLEL_SEQUENCES: usize = 2;

/// One pre-LayerNorm block, its query, key and value maps fused into one.
#[derive(Clone, Debug)]
pub(crate) struct HostBlock<E> {
    ln_1: HostNorm<E>,
    qkv: HostLinear<E>,
    out: HostLinear<E>,
    ln_2: HostNorm<E>,
    c_fc: HostLinear<E>,
    c_proj: HostLinear<E>,
}

/// The layers of a block, host copies: `ln_1`, the query, key and value maps, the
/// attention's output map, `ln_2`, `c_fc` and `c_proj`.
pub(crate) type BlockLayers<E> = (
    HostNorm<E>,
    [HostLinear<E>; 3],
    HostLinear<E>,
    HostNorm<E>,
    HostLinear<E>,
    HostLinear<E>,
);

impl<E: Real> HostBlock<E> {
    /// A block from its layers.
    pub(crate) fn new((ln_1, qkv, out, ln_2, c_fc, c_proj): BlockLayers<E>) -> Self {
        Self {
            ln_1,
            qkv: HostLinear::concat(&qkv),
            out,
            ln_2,
            c_fc,
            c_proj,
        }
    }
}

/// The backbone's blocks and final LayerNorm with its attention settings.
#[derive(Clone, Debug)]
pub(crate) struct HostBackbone<E> {
    blocks: Vec<HostBlock<E>>,
    ln_f: HostNorm<E>,
    width: usize,
    heads: usize,
    attention: AttentionKind,
    consts: Consts<E>,
}

/// Reusable buffers of the forward pass (grown on demand, never shrunk).
#[derive(Clone, Debug, Default)]
pub(crate) struct Scratch<E> {
    normed: Vec<E>,
    qkv: Vec<E>,
    attended: Vec<E>,
    hidden: Vec<E>,
    last: Vec<E>,
    head: Vec<E>,
}

/// `buf` with at least `n` values.
fn sized<E: Real>(buf: &mut Vec<E>, n: usize) -> &mut [E] {
    if buf.len() < n {
        buf.resize(n, E::zero());
    }
    &mut buf[..n]
}

impl<E: Real> HostBackbone<E> {
    /// The backbone of `blocks` and `ln_f`, `heads` heads of a `width`-wide stream.
    pub(crate) fn new(
        blocks: Vec<HostBlock<E>>,
        ln_f: HostNorm<E>,
        (width, heads): (usize, usize),
        attention: AttentionKind,
        flow: &FlowConfig,
    ) -> Self {
        Self {
            blocks,
            ln_f,
            width,
            heads,
            attention,
            consts: Consts {
                eps: from_f64(flow.eps),
                clamp: from_f64(flow.clamp),
            },
        }
    }

    /// The outputs at the last token of every sequence, `out (B, width)` after `ln_f`:
    /// `x` holds the sequences' tokens one after the other, `(sum lens, width)`, and is
    /// overwritten (it is the residual stream).
    pub(crate) fn forward_last(
        &self,
        x: &mut [E],
        lens: &[usize],
        scratch: &mut Scratch<E>,
        out: &mut [E],
    ) {
        let (w, b) = (self.width, lens.len());
        let n: usize = lens.iter().sum();
        let Some((last, blocks)) = self.blocks.split_last() else {
            for (o, &end) in out.chunks_exact_mut(w).zip(&ends(lens)) {
                self.ln_f.apply(&x[(end - 1) * w..end * w], o);
            }
            return;
        };
        for block in blocks {
            let a = sized(&mut scratch.normed, n * w);
            block.ln_1.apply(x, a);
            let qkv = sized(&mut scratch.qkv, n * 3 * w);
            block.qkv.apply(a, qkv, n, false, false);
            let o = sized(&mut scratch.attended, n * w);
            self.attend(qkv, lens, false, o, &mut scratch.head);
            block.out.apply(o, x, n, true, false);
            let a = sized(&mut scratch.normed, n * w);
            block.ln_2.apply(x, a);
            let h = sized(&mut scratch.hidden, n * block.c_fc.outputs());
            block.c_fc.apply(a, h, n, false, true);
            block.c_proj.apply(h, x, n, true, false);
        }
        let a = sized(&mut scratch.normed, n * w);
        last.ln_1.apply(x, a);
        let qkv = sized(&mut scratch.qkv, n * 3 * w);
        last.qkv.apply(a, qkv, n, false, false);
        let o = sized(&mut scratch.attended, b * w);
        self.attend(qkv, lens, true, o, &mut scratch.head);
        let r = sized(&mut scratch.last, b * w);
        for (r, &end) in r.chunks_exact_mut(w).zip(&ends(lens)) {
            r.copy_from_slice(&x[(end - 1) * w..end * w]);
        }
        last.out.apply(o, r, b, true, false);
        let a = sized(&mut scratch.normed, b * w);
        last.ln_2.apply(r, a);
        let h = sized(&mut scratch.hidden, b * last.c_fc.outputs());
        last.c_fc.apply(a, h, b, false, true);
        last.c_proj.apply(h, r, b, true, false);
        self.ln_f.apply(r, out);
    }

    /// The attention outputs of every token (`(sum lens, width)`), or of each
    /// sequence's last token only (`(B, width)`) with `last_only`, from the fused
    /// `qkv (sum lens, 3 width)` rows.
    fn attend(
        &self,
        qkv: &[E],
        lens: &[usize],
        last_only: bool,
        out: &mut [E],
        scratch: &mut Vec<E>,
    ) {
        let w = self.width;
        let mut jobs = Vec::with_capacity(lens.len());
        let (mut rest, mut start) = (out, 0);
        for &len in lens {
            let rows = if last_only { 1 } else { len };
            let (o, tail) = std::mem::take(&mut rest).split_at_mut(rows * w);
            rest = tail;
            jobs.push((start, len, o));
            start += len;
        }
        let sequence = |(start, len, o): (usize, usize, &mut [E]), scratch: &mut Vec<E>| {
            self.attend_sequence(&qkv[start * 3 * w..], len, last_only, o, scratch);
        };
        if lens.len() >= PARALLEL_SEQUENCES {
            jobs.into_par_iter()
                .for_each_init(Vec::new, |s, job| sequence(job, s));
        } else {
            jobs.into_iter().for_each(|job| sequence(job, scratch));
        }
    }

    /// Every head of one sequence of `len` tokens.
    fn attend_sequence(
        &self,
        qkv: &[E],
        len: usize,
        last_only: bool,
        out: &mut [E],
        scratch: &mut Vec<E>,
    ) {
        let (w, hw) = (self.width, self.width / self.heads.max(1));
        let from = if last_only { len.saturating_sub(1) } else { 0 };
        for h in 0..self.heads {
            let at = h * hw;
            let head = Head {
                q: &qkv[at..],
                k: &qkv[w + at..],
                v: &qkv[2 * w + at..],
                stride: 3 * w,
                len,
                width: hw,
            };
            let out = Out {
                data: &mut out[at..],
                stride: w,
            };
            match self.attention {
                AttentionKind::CausalFlow => attention::flow(head, from, self.consts, scratch, out),
                AttentionKind::CausalSoftmax => attention::softmax(head, from, scratch, out),
            }
        }
    }
}

/// The end (exclusive) of every sequence in the concatenated tokens.
fn ends(lens: &[usize]) -> Vec<usize> {
    lens.iter()
        .scan(0, |end, &len| {
            *end += len;
            Some(*end)
        })
        .collect()
}
