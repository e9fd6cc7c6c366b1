//! Window re-encoding for acting on the CPU, on plain slices.
//!
//! Acting in `window` mode re-encodes the last K steps of every episode each step. On
//! `Cpu` the Decision-Flowformer and the softmax Decision Transformer do it here
//! instead of through dfdx tensors: the parameters are copied once into host buffers
//! laid out for the products (the query, key and value maps fused into one), the
//! intermediate buffers are kept and reused from step to step ([`Scratch`]), the
//! linear maps call the `gemm` crate directly (split over the rayon pool only when
//! large enough to pay for it), and each episode's tokens are encoded without padding
//! up to its last state token (the current step's action token is never read). The
//! result is the eval-mode prediction of [`crate::agent::Agent::predict_last`] on the
//! same window, up to rounding.

mod attention;
mod backbone;
mod decision;
mod layers;
pub(crate) mod recurrent;
mod tokens;

use std::collections::VecDeque;

use rayon::prelude::*;

pub(crate) use backbone::HostBackbone;
pub(crate) use layers::{HostLinear, HostNorm};

use crate::attention::recurrence::Real;
use crate::params::from_f64;
use crate::spec::ActionSpace;
use backbone::{sized, Scratch};
use tokens::EpisodeTokens;

/// Episodes per step from which the tokens are copied into the residual stream in
/// parallel.
const PARALLEL_EPISODES: usize = 8;

/// One step of an episode's history, host-side.
#[derive(Clone, Debug)]
pub(crate) struct StepRecord {
    /// The step's index in its episode (from 0, not clamped).
    pub step: usize,
    /// Return-to-go.
    pub ret: f32,
    /// State (normalised).
    pub state: Vec<f32>,
    /// Continuous action in `[-1, 1]` (empty for discrete actions).
    pub action: Vec<f32>,
    /// Discrete action index (0 for continuous actions).
    pub index: usize,
    /// Timestep, already clamped below `max_ep_len`.
    pub timestep: usize,
}

/// The action token's embedding.
#[derive(Clone, Debug)]
pub(crate) enum HostActionEmbedding<E> {
    /// Continuous actions: a linear map.
    Linear(HostLinear<E>),
    /// Discrete actions: the table `[n, width]`.
    Table(Vec<E>),
}

/// The embedding layers of a Decision Transformer, host copies.
#[derive(Clone, Debug)]
pub(crate) struct HostEmbedding<E> {
    /// `[max_ep_len, width]`.
    pub timestep: Vec<E>,
    /// `R_t -> width`.
    pub ret: HostLinear<E>,
    /// `s_t -> width`.
    pub state: HostLinear<E>,
    /// `a_t -> width`.
    pub action: HostActionEmbedding<E>,
    /// LayerNorm of every token.
    pub norm: HostNorm<E>,
}

/// A Decision Transformer (Flow-Attention or softmax) with its parameters in host
/// memory, the buffers of its forward pass, and every live episode's encoded tokens.
#[derive(Clone, Debug)]
pub(crate) struct HostDecision<E> {
    embedding: HostEmbedding<E>,
    backbone: HostBackbone<E>,
    head: HostLinear<E>,
    action: ActionSpace,
    width: usize,
    scratch: Scratch<E>,
    /// The live episodes' tokens, in the order of the rows passed to
    /// [`Self::predict_last`].
    episodes: Vec<EpisodeTokens<E>>,
    /// Tokens encoded in this step: their residual-stream rows...
    fresh_x: Vec<E>,
    /// ... and their first-block query, key and value rows.
    fresh_qkv: Vec<E>,
    tokens: Vec<E>,
    last: Vec<E>,
}

impl<E: Real> HostDecision<E> {
    /// The model of `embedding`, `backbone` and the action head `head` for `action`.
    pub(crate) fn new(
        embedding: HostEmbedding<E>,
        backbone: HostBackbone<E>,
        head: HostLinear<E>,
        action: ActionSpace,
    ) -> Self {
        let width = head.inputs();
        Self {
            embedding,
            backbone,
            head,
            action,
            width,
            scratch: Scratch::default(),
            episodes: Vec::new(),
            fresh_x: Vec::new(),
            fresh_qkv: Vec::new(),
            tokens: Vec::new(),
            last: Vec::new(),
        }
    }

    /// Keeps the encoded tokens of the episodes `rows` (indices into the current
    /// rows, in the order given), as the actor keeps their histories.
    pub(crate) fn keep_rows(&mut self, rows: &[usize]) {
        let episodes = std::mem::take(&mut self.episodes);
        self.episodes = rows
            .iter()
            .map(|&r| episodes.get(r).cloned().unwrap_or_default())
            .collect();
    }

    /// The prediction (`tanh` values or logits) at the last step of every episode
    /// `rows` (each with at least one step, the steps of each consecutive), `[B,
    /// outputs]`, in eval mode; the last step's action is not read. Tokens encoded by
    /// an earlier call for the same episode (same row, [`Self::keep_rows`] followed)
    /// are not encoded again.
    pub(crate) fn predict_last(&mut self, rows: &[VecDeque<StepRecord>]) -> Vec<E> {
        let (w, q) = (self.width, self.backbone.first_qkv_width());
        self.episodes.resize_with(rows.len(), Default::default);
        // The tokens R, s, a of every step but the last, whose a is not needed; those
        // not encoded yet are embedded here.
        let mut fresh = Vec::new();
        let mut counts = Vec::with_capacity(rows.len());
        for (row, episode) in rows.iter().zip(&mut self.episodes) {
            let first = row.front().map_or(0, |s| s.step);
            let end = row.back().map_or(0, |s| 3 * s.step + 2);
            let next = episode.keep_from(3 * first);
            fresh.extend((next..end).map(|token| (&row[token / 3 - first], token % 3)));
            counts.push(end.saturating_sub(next));
        }
        let x = sized(&mut self.fresh_x, fresh.len() * w);
        for (token, &(step, kind)) in x.chunks_exact_mut(w.max(1)).zip(&fresh) {
            self.embedding.embed(step, kind, token);
        }
        self.embedding.norm.apply_in_place(x);
        let qkv = sized(&mut self.fresh_qkv, fresh.len() * q);
        self.backbone.encode_first(x, qkv, &mut self.scratch);
        let (mut x, mut qkv) = (&*x, &*qkv);
        for (episode, &n) in self.episodes.iter_mut().zip(&counts) {
            let (xe, rest) = x.split_at(n * w);
            let (qe, qrest) = qkv.split_at(n * q);
            episode.append(xe, qe, (w, q));
            (x, qkv) = (rest, qrest);
        }
        // The residual stream starts as the episodes' embedded tokens, one after the
        // other.
        let lens: Vec<usize> = self
            .episodes
            .iter()
            .map(|e| e.x(w).len() / w.max(1))
            .collect();
        let tokens = sized(&mut self.tokens, lens.iter().sum::<usize>() * w);
        let mut jobs = Vec::with_capacity(rows.len());
        let mut rest = &mut *tokens;
        for episode in &self.episodes {
            let (x, tail) = std::mem::take(&mut rest).split_at_mut(episode.x(w).len());
            rest = tail;
            jobs.push((episode.x(w), x));
        }
        if rows.len() >= PARALLEL_EPISODES {
            jobs.into_par_iter()
                .for_each(|(from, to)| to.copy_from_slice(from));
        } else {
            jobs.into_iter()
                .for_each(|(from, to)| to.copy_from_slice(from));
        }
        let first_qkv: Vec<&[E]> = self.episodes.iter().map(|e| e.qkv(q)).collect();
        let last = sized(&mut self.last, rows.len() * w);
        self.backbone
            .forward_last(tokens, &lens, &first_qkv, &mut self.scratch, last);
        let outputs = self.action.outputs();
        let mut out = vec![E::zero(); rows.len() * outputs];
        self.head.apply(last, &mut out, rows.len(), false, false);
        if let ActionSpace::Continuous { .. } = self.action {
            out.iter_mut().for_each(|y| *y = y.tanh());
        }
        out
    }
}

impl<E: Real> HostEmbedding<E> {
    /// The embedding of `step`'s return (`kind` 0), state (1) or action (2) token plus
    /// its timestep's, into `token` (before the embedding LayerNorm).
    fn embed(&self, step: &StepRecord, kind: usize, token: &mut [E]) {
        match kind {
            0 => affine(&self.ret, &[step.ret], token),
            1 => affine(&self.state, &step.state, token),
            _ => match &self.action {
                HostActionEmbedding::Linear(map) => affine(map, &step.action, token),
                HostActionEmbedding::Table(table) => {
                    let w = token.len();
                    token.copy_from_slice(&table[step.index * w..(step.index + 1) * w])
                }
            },
        }
        let at = step.timestep * token.len();
        for (t, &v) in token.iter_mut().zip(&self.timestep[at..]) {
            *t += v;
        }
    }
}

/// `token = x W + b` for a short host input `x`.
fn affine<E: Real>(map: &HostLinear<E>, x: &[f32], token: &mut [E]) {
    token.fill(E::zero());
    for (i, &v) in x.iter().enumerate() {
        let v: E = from_f64(f64::from(v));
        for (t, &m) in token.iter_mut().zip(map.weight_row(i)) {
            *t += v * m;
        }
    }
    for (t, &b) in token.iter_mut().zip(map.bias()) {
        *t += b;
    }
}
