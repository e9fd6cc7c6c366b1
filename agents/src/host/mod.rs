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

use std::collections::VecDeque;

use rayon::prelude::*;

pub(crate) use backbone::HostBackbone;
pub(crate) use layers::{HostLinear, HostNorm};

use crate::attention::recurrence::Real;
use crate::params::from_f64;
use crate::spec::ActionSpace;
use backbone::Scratch;

/// Episodes per step from which the tokens are embedded in parallel.
const PARALLEL_EPISODES: usize = 8;

/// One step of an episode's history, host-side.
#[derive(Clone, Debug)]
pub(crate) struct StepRecord {
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
/// memory, and the buffers of its forward pass.
#[derive(Clone, Debug)]
pub(crate) struct HostDecision<E> {
    embedding: HostEmbedding<E>,
    backbone: HostBackbone<E>,
    head: HostLinear<E>,
    action: ActionSpace,
    width: usize,
    scratch: Scratch<E>,
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
            tokens: Vec::new(),
            last: Vec::new(),
        }
    }

    /// The prediction (`tanh` values or logits) at the last step of every episode
    /// `rows` (each with at least one step), `[B, outputs]`, in eval mode; the last
    /// step's action is not read.
    pub(crate) fn predict_last(&mut self, rows: &[VecDeque<StepRecord>]) -> Vec<E> {
        let w = self.width;
        // Tokens R, s, a of every step but the last, whose a is not needed.
        let lens: Vec<usize> = rows
            .iter()
            .map(|r| (3 * r.len()).saturating_sub(1))
            .collect();
        let n: usize = lens.iter().sum();
        self.tokens.clear();
        self.tokens.resize(n * w, E::zero());
        let mut jobs = Vec::with_capacity(rows.len());
        let mut rest = self.tokens.as_mut_slice();
        for (row, &len) in rows.iter().zip(&lens) {
            let (x, tail) = std::mem::take(&mut rest).split_at_mut(len * w);
            rest = tail;
            jobs.push((row, x));
        }
        let embedding = &self.embedding;
        if rows.len() >= PARALLEL_EPISODES {
            jobs.into_par_iter()
                .for_each(|(row, x)| embedding.embed(row, x, w));
        } else {
            jobs.into_iter()
                .for_each(|(row, x)| embedding.embed(row, x, w));
        }
        self.last.clear();
        self.last.resize(rows.len() * w, E::zero());
        self.backbone
            .forward_last(&mut self.tokens, &lens, &mut self.scratch, &mut self.last);
        let outputs = self.action.outputs();
        let mut out = vec![E::zero(); rows.len() * outputs];
        self.head
            .apply(&self.last, &mut out, rows.len(), false, false);
        if let ActionSpace::Continuous { .. } = self.action {
            out.iter_mut().for_each(|y| *y = y.tanh());
        }
        out
    }
}

impl<E: Real> HostEmbedding<E> {
    /// The normalised tokens `R_0, s_0, a_0, R_1, ...` of an episode's steps into `x`
    /// (`x.len() / width` tokens: the last action token is left out).
    fn embed(&self, row: &VecDeque<StepRecord>, x: &mut [E], w: usize) {
        for (i, token) in x.chunks_exact_mut(w).enumerate() {
            let step = &row[i / 3];
            let at = step.timestep * w;
            match i % 3 {
                0 => affine(&self.ret, &[step.ret], token),
                1 => affine(&self.state, &step.state, token),
                _ => match &self.action {
                    HostActionEmbedding::Linear(map) => affine(map, &step.action, token),
                    HostActionEmbedding::Table(table) => {
                        token.copy_from_slice(&table[step.index * w..(step.index + 1) * w])
                    }
                },
            }
            for (t, &v) in token.iter_mut().zip(&self.timestep[at..at + w]) {
                *t += v;
            }
        }
        self.norm.apply_in_place(x);
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
