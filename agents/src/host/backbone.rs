//! The backbone's eval-mode forward pass on host slices, read out at the last token
//! of every sequence: every block but the last runs on every token; the last one
//! computes its attention output, output projection, MLP and the final LayerNorm at
//! the last tokens only (what [`crate::model::Backbone::forward_rows`] computes).
//!
//! Everything between two attentions works on each token alone (the output map, both
//! residual connections, the MLP, the next block's LayerNorm and query/key/value map),
//! so it runs as one job per chunk of tokens, each chunk on one thread with its own
//! buffers; the products inside stay on that thread.

use std::sync::{Mutex, PoisonError};

use rayon::prelude::*;

use super::attention::{self, Head, Out};
use super::layers::{HostLinear, HostNorm};
use crate::attention::recurrence::{Consts, Real};
use crate::attention::{AttentionKind, FlowConfig};
use crate::device::ModelDevice;
use crate::model::Backbone;
use crate::params::{from_f64, ParamStore};

/// Sequences per step below which the attention runs on the calling thread.
const PARALLEL_SEQUENCES: usize = 2;

/// Fewest tokens per chunk of the token-wise work: smaller chunks are not worth
/// handing to another thread.
const CHUNK_MIN: usize = 8;
/// Most tokens per chunk of the token-wise work (many episodes in lockstep make many
/// chunks, which balance across the threads).
const CHUNK_MAX: usize = 256;

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

    /// The attention's input: `qkv (rows, 3 width) = ln_1(x) W_qkv + b_qkv`.
    fn start(&self, x: &[E], qkv: &mut [E], rows: usize, buf: &mut RowBuffers<E>) {
        let a = sized(&mut buf.normed, x.len());
        self.ln_1.apply(x, a);
        self.qkv.apply(a, qkv, rows, false, false);
    }

    /// The rest of the block from the attention output `o (rows, width)`, into the
    /// residual stream: `x += o W_out + b_out`, then `x += MLP(ln_2(x))`.
    fn finish(&self, o: &[E], x: &mut [E], rows: usize, buf: &mut RowBuffers<E>) {
        self.out.apply(o, x, rows, true, false);
        let a = sized(&mut buf.normed, x.len());
        self.ln_2.apply(x, a);
        let h = sized(&mut buf.hidden, rows * self.c_fc.outputs());
        self.c_fc.apply(a, h, rows, false, true);
        self.c_proj.apply(h, x, rows, true, false);
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
#[derive(Debug, Default)]
pub(crate) struct Scratch<E> {
    qkv: Vec<E>,
    attended: Vec<E>,
    last: Vec<E>,
    head: Vec<E>,
    /// One set of token-wise buffers per rayon thread.
    rows: Vec<Mutex<RowBuffers<E>>>,
}

impl<E> Clone for Scratch<E> {
    /// Fresh buffers (they hold nothing between calls).
    fn clone(&self) -> Self {
        Self {
            qkv: Vec::new(),
            attended: Vec::new(),
            last: Vec::new(),
            head: Vec::new(),
            rows: Vec::new(),
        }
    }
}

/// The buffers of one chunk of token-wise work.
#[derive(Debug, Default)]
struct RowBuffers<E> {
    normed: Vec<E>,
    hidden: Vec<E>,
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
        sigmoid: fn(&mut [E]),
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
                sigmoid,
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
        let (Some(first), Some(last)) = (self.blocks.first(), self.blocks.last()) else {
            for (o, &end) in out.chunks_exact_mut(w).zip(&ends(lens)) {
                self.ln_f.apply(&x[(end - 1) * w..end * w], o);
            }
            return;
        };
        let qkv = sized(&mut scratch.qkv, n * 3 * w);
        let o = sized(&mut scratch.attended, n * w);
        let pool = &mut scratch.rows;
        by_rows(pool, w, x, o, qkv, |x, _, qkv, rows, buf| {
            first.start(x, qkv, rows, buf)
        });
        for pair in self.blocks.windows(2) {
            self.attend(qkv, lens, false, o, &mut scratch.head);
            by_rows(pool, w, x, o, qkv, |x, o, qkv, rows, buf| {
                pair[0].finish(o, x, rows, buf);
                pair[1].start(x, qkv, rows, buf);
            });
        }
        let o = &mut o[..b * w];
        self.attend(qkv, lens, true, o, &mut scratch.head);
        let r = sized(&mut scratch.last, b * w);
        for (r, &end) in r.chunks_exact_mut(w).zip(&ends(lens)) {
            r.copy_from_slice(&x[(end - 1) * w..end * w]);
        }
        by_rows(
            pool,
            w,
            r,
            o,
            &mut qkv[..b * 3 * w],
            |x, o, _, rows, buf| last.finish(o, x, rows, buf),
        );
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
        let parallel = lens.len() >= PARALLEL_SEQUENCES;
        let sequence = |(start, len, o): (usize, usize, &mut [E]), scratch: &mut Vec<E>| {
            let qkv = &qkv[start * 3 * w..];
            self.attend_sequence(qkv, len, last_only, o, scratch, !parallel);
        };
        if parallel {
            jobs.into_par_iter()
                .for_each_init(Vec::new, |s, job| sequence(job, s));
        } else {
            jobs.into_iter().for_each(|job| sequence(job, scratch));
        }
    }

    /// Every head of one sequence of `len` tokens; `split` shares each head's
    /// Flow-Attention with another thread (nothing else runs in parallel).
    fn attend_sequence(
        &self,
        qkv: &[E],
        len: usize,
        last_only: bool,
        out: &mut [E],
        scratch: &mut Vec<E>,
        split: bool,
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
                AttentionKind::CausalFlow => {
                    attention::flow(head, from, self.consts, scratch, out, split)
                }
                AttentionKind::CausalSoftmax => attention::softmax(head, from, scratch, out),
            }
        }
    }
}

/// Runs `f(x, o, qkv, rows, buffers)` on chunks of the rows of `x (n, w)` with the
/// same rows of `o (n, w)` and `qkv (n, 3w)`: in parallel, each chunk on one rayon
/// thread with that thread's buffers from `pool`, once there are enough rows.
fn by_rows<E: Real>(
    pool: &mut Vec<Mutex<RowBuffers<E>>>,
    w: usize,
    x: &mut [E],
    o: &[E],
    qkv: &mut [E],
    f: impl Fn(&mut [E], &[E], &mut [E], usize, &mut RowBuffers<E>) + Sync,
) {
    let n = x.len() / w.max(1);
    let threads = rayon::current_num_threads().max(1);
    if pool.len() < threads {
        pool.resize_with(threads, Default::default);
    }
    let chunk = n.div_ceil(threads).clamp(CHUNK_MIN, CHUNK_MAX);
    if chunk >= n {
        let buf = pool[0].get_mut().unwrap_or_else(PoisonError::into_inner);
        return f(x, o, qkv, n, buf);
    }
    let pool = &*pool;
    x.par_chunks_mut(chunk * w)
        .zip(o.par_chunks(chunk * w))
        .zip(qkv.par_chunks_mut(chunk * 3 * w))
        .for_each(|((x, o), qkv)| {
            let at = rayon::current_thread_index().unwrap_or(0) % pool.len();
            let mut buf = pool[at].lock().unwrap_or_else(PoisonError::into_inner);
            f(x, o, qkv, x.len() / w, &mut buf);
        });
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

impl Backbone {
    /// A copy of the backbone in host memory ([`crate::host`]).
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
            D::sigmoid_in_place,
        )
    }
}
