//! The backbone's eval-mode forward pass on host slices, read out at the last token
//! of every sequence: every block but the last runs on every token; the last one
//! computes its attention output, output projection, MLP and the final LayerNorm at
//! the last tokens only (what [`crate::model::Backbone::forward_rows`] computes).
//!
//! Everything between two attentions works on each token alone (the output map, both
//! residual connections, the MLP, the next block's LayerNorm and query/key/value map),
//! so it runs as one job per chunk of tokens, each chunk on one thread with its own
//! buffers; the products inside stay on that thread.

use std::ops::Range;
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
/// Tokens per group of sequences run through every block on one thread.
const GROUP_TOKENS: usize = 256;
/// Groups per thread from which sequences run in groups: fewer would leave threads
/// idle while the last groups finish.
const GROUPS_PER_THREAD: usize = 2;

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

    /// The attention's input: `qkv (rows, 3 width) = ln_1(x) W_qkv + b_qkv`, the
    /// queries and keys then through `map` (Flow-Attention's feature map) while the rows
    /// are in cache.
    fn start(
        &self,
        x: &[E],
        qkv: &mut [E],
        rows: usize,
        buf: &mut RowBuffers<E>,
        map: Option<fn(&mut [E])>,
    ) {
        let a = sized(&mut buf.normed, x.len());
        self.ln_1.apply(x, a);
        self.qkv.apply(a, qkv, rows, false, false);
        if let Some(map) = map {
            let w = self.qkv.outputs() / 3;
            for row in qkv.chunks_exact_mut(3 * w) {
                map(&mut row[..2 * w]);
            }
        }
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
    /// One set of buffers per rayon thread for groups of sequences.
    groups: Vec<Mutex<Scratch<E>>>,
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
            groups: Vec::new(),
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
pub(super) fn sized<E: Real>(buf: &mut Vec<E>, n: usize) -> &mut [E] {
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

    /// The feature map of the queries and keys: the sigmoid for Flow-Attention, none
    /// for softmax attention.
    fn feature_map(&self) -> Option<fn(&mut [E])> {
        match self.attention {
            AttentionKind::CausalFlow => Some(self.consts.sigmoid),
            AttentionKind::CausalSoftmax => None,
        }
    }

    /// Values per token of the first block's query, key and value rows (none without
    /// blocks).
    pub(crate) fn first_qkv_width(&self) -> usize {
        if self.blocks.is_empty() {
            0
        } else {
            3 * self.width
        }
    }

    /// The first block's query, key and value rows `qkv (n, 3 width)` of the tokens
    /// `x (n, width)`, the queries and keys feature-mapped (nothing without blocks).
    pub(crate) fn encode_first(&self, x: &mut [E], qkv: &mut [E], scratch: &mut Scratch<E>) {
        let Some(first) = self.blocks.first() else {
            return;
        };
        let w = self.width;
        let o = sized(&mut scratch.attended, x.len());
        let map = self.feature_map();
        by_rows(
            &mut scratch.rows,
            w,
            x,
            o,
            qkv,
            true,
            |x, _, qkv, rows, buf| first.start(x, qkv, rows, buf, map),
        );
    }

    /// The outputs at the last token of every sequence, `out (B, width)` after `ln_f`:
    /// `x` holds the sequences' tokens one after the other, `(sum lens, width)`, and is
    /// overwritten (it is the residual stream); `first_qkv` holds each sequence's
    /// first-block query, key and value rows ([`Self::encode_first`]).
    ///
    /// Sequences are independent, so many of them run in groups of about
    /// [`GROUP_TOKENS`] tokens, each group through every block on one thread, its
    /// buffers staying in that core's cache; a few run one block at a time with the
    /// work of each block split over the threads.
    pub(crate) fn forward_last(
        &self,
        x: &mut [E],
        lens: &[usize],
        first_qkv: &[&[E]],
        scratch: &mut Scratch<E>,
        out: &mut [E],
    ) {
        let w = self.width;
        let groups = groups(lens, GROUP_TOKENS);
        let threads = rayon::current_num_threads().max(1);
        if groups.len() < GROUPS_PER_THREAD * threads {
            return self.forward_group(x, lens, first_qkv, scratch, out, true);
        }
        if scratch.groups.len() < threads {
            scratch.groups.resize_with(threads, Default::default);
        }
        let mut jobs = Vec::with_capacity(groups.len());
        let (mut x, mut out) = (x, out);
        for g in groups {
            let tokens: usize = lens[g.clone()].iter().sum();
            let (xg, xt) = std::mem::take(&mut x).split_at_mut(tokens * w);
            let (og, ot) = std::mem::take(&mut out).split_at_mut(g.len() * w);
            (x, out) = (xt, ot);
            jobs.push((g, xg, og));
        }
        let pool = &scratch.groups;
        jobs.into_par_iter().for_each(|(g, x, out)| {
            let at = rayon::current_thread_index().unwrap_or(0) % pool.len();
            let mut s = pool[at].lock().unwrap_or_else(PoisonError::into_inner);
            self.forward_group(x, &lens[g.clone()], &first_qkv[g], &mut s, out, false);
        });
    }

    /// [`Self::forward_last`] of some sequences, block by block: each block's work
    /// split over the threads with `parallel`, all of it on the calling thread without.
    fn forward_group(
        &self,
        x: &mut [E],
        lens: &[usize],
        first_qkv: &[&[E]],
        scratch: &mut Scratch<E>,
        out: &mut [E],
        parallel: bool,
    ) {
        let (w, b) = (self.width, lens.len());
        let n: usize = lens.iter().sum();
        let Some(last) = self.blocks.last() else {
            for (o, &end) in out.chunks_exact_mut(w).zip(&ends(lens)) {
                self.ln_f.apply(&x[(end - 1) * w..end * w], o);
            }
            return;
        };
        let qkv = sized(&mut scratch.qkv, n * 3 * w);
        let o = sized(&mut scratch.attended, n * w);
        let pool = &mut scratch.rows;
        let map = self.feature_map();
        let head = &mut scratch.head;
        for (i, pair) in self.blocks.windows(2).enumerate() {
            if i == 0 {
                self.attend(first_qkv, false, o, head, parallel);
            } else {
                self.attend(&by_sequence(qkv, lens, 3 * w), false, o, head, parallel);
            }
            by_rows(pool, w, x, o, qkv, parallel, |x, o, qkv, rows, buf| {
                pair[0].finish(o, x, rows, buf);
                pair[1].start(x, qkv, rows, buf, map);
            });
        }
        let o = &mut o[..b * w];
        if self.blocks.len() == 1 {
            self.attend(first_qkv, true, o, head, parallel);
        } else {
            self.attend(&by_sequence(qkv, lens, 3 * w), true, o, head, parallel);
        }
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
            parallel,
            |x, o, _, rows, buf| last.finish(o, x, rows, buf),
        );
        self.ln_f.apply(r, out);
    }

    /// The attention outputs of every token (`(sum lens, width)`), or of each
    /// sequence's last token only (`(B, width)`) with `last_only`, from each
    /// sequence's fused query, key and value rows `(len, 3 width)`; over the threads
    /// with `parallel`.
    fn attend(
        &self,
        sequences: &[&[E]],
        last_only: bool,
        out: &mut [E],
        scratch: &mut Vec<E>,
        parallel: bool,
    ) {
        let w = self.width;
        let mut jobs = Vec::with_capacity(sequences.len());
        let mut rest = out;
        for &qkv in sequences {
            let len = qkv.len() / (3 * w).max(1);
            let rows = if last_only { 1 } else { len };
            let (o, tail) = std::mem::take(&mut rest).split_at_mut(rows * w);
            rest = tail;
            jobs.push((qkv, len, o));
        }
        let across = parallel && sequences.len() >= PARALLEL_SEQUENCES;
        let split = parallel && !across;
        let sequence = |(qkv, len, o): (&[E], usize, &mut [E]), scratch: &mut Vec<E>| {
            self.attend_sequence(qkv, len, last_only, o, scratch, split);
        };
        if across {
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
/// same rows of `o (n, w)` and `qkv (n, 3w)`: with `parallel`, each chunk on one
/// rayon thread with that thread's buffers from `pool`, once there are enough rows;
/// without, all rows at once on the calling thread.
fn by_rows<E: Real>(
    pool: &mut Vec<Mutex<RowBuffers<E>>>,
    w: usize,
    x: &mut [E],
    o: &[E],
    qkv: &mut [E],
    parallel: bool,
    f: impl Fn(&mut [E], &[E], &mut [E], usize, &mut RowBuffers<E>) + Sync,
) {
    let n = x.len() / w.max(1);
    let threads = rayon::current_num_threads().max(1);
    if pool.len() < threads {
        pool.resize_with(threads, Default::default);
    }
    let chunk = n.div_ceil(threads).clamp(CHUNK_MIN, CHUNK_MAX);
    if !parallel || chunk >= n {
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

/// The sequences of `lens` in consecutive groups of at least `tokens` tokens (the last
/// may have fewer).
fn groups(lens: &[usize], tokens: usize) -> Vec<Range<usize>> {
    let mut groups = Vec::new();
    let (mut start, mut sum) = (0, 0);
    for (i, &len) in lens.iter().enumerate() {
        sum += len;
        if sum >= tokens {
            groups.push(start..i + 1);
            (start, sum) = (i + 1, 0);
        }
    }
    if start < lens.len() {
        groups.push(start..lens.len());
    }
    groups
}

/// The rows (`row` values each) of every sequence of `lens` in the concatenated `rows`.
fn by_sequence<'a, E>(rows: &'a [E], lens: &[usize], row: usize) -> Vec<&'a [E]> {
    let mut rest = rows;
    lens.iter()
        .map(|&len| {
            let (head, tail) = rest.split_at(len * row);
            rest = tail;
            head
        })
        .collect()
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
