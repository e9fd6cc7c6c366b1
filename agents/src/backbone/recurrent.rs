//! Token-by-token inference with causal Flow-Attention: one fixed-size
//! [`FlowState`] per block, O(1) cost per token.

use dfdx::prelude::*;

use super::block::Block;
use super::{Backbone, BackboneConfig, BackboneError};
use crate::attention::{AttentionDevice, AttentionKind, FlowState};
use crate::layers::{relu, Tensor2};
use crate::params::ParamStore;

/// The recurrent state of a [`Backbone`] for a batch: one Flow-Attention state per block.
#[derive(Clone, Debug)]
pub struct BackboneState<E: Dtype, D: Storage<E>> {
    layers: Vec<FlowState<E, D>>,
    batch: usize,
}

impl<E: Dtype + num_traits::Float, D: AttentionDevice<E>> BackboneState<E, D> {
    /// How many tokens have been fed.
    pub fn position(&self) -> usize {
        self.layers.first().map_or(0, FlowState::position)
    }

    /// The batch size (rows still held).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Keeps only the batch rows `rows`, in that order (drops finished sequences).
    ///
    /// # Panics
    /// If a row index is not below the batch size.
    pub fn keep_rows(&mut self, rows: &[usize]) {
        for flow in &mut self.layers {
            flow.keep_rows(rows);
        }
        self.batch = rows.len();
    }
}

impl Block {
    /// The block on one token per batch row, `(B, W)`, advancing `state`.
    fn step<E, D>(
        &self,
        store: &ParamStore<E, D>,
        x: Tensor2<E, D>,
        state: &mut FlowState<E, D>,
        cfg: &BackboneConfig,
    ) -> Tensor2<E, D>
    where
        E: Dtype + num_traits::Float,
        D: AttentionDevice<E>,
    {
        let b = x.shape().0;
        let (h, hw) = (cfg.heads, cfg.head_width());
        let a = self.ln_1.forward(store, x.clone());
        let q = self
            .query
            .forward(store, a.clone())
            .reshape_like(&(b, h, hw));
        let k = self.key.forward(store, a.clone()).reshape_like(&(b, h, hw));
        let v = self.value.forward(store, a).reshape_like(&(b, h, hw));
        let o = state.step(q, k, v).reshape_like(&(b, cfg.width));
        let x = self.out.forward(store, o) + x;
        let m = relu(
            self.c_fc
                .forward(store, self.ln_2.forward(store, x.clone())),
        );
        self.c_proj.forward(store, m) + x
    }
}

impl Backbone {
    /// An empty recurrent state (position 0) for `batch` sequences. Only causal
    /// Flow-Attention has one; softmax attention is an error.
    pub fn recurrent_state<E, D>(
        &self,
        dev: &D,
        batch: usize,
    ) -> Result<BackboneState<E, D>, BackboneError>
    where
        E: Dtype + num_traits::Float,
        D: AttentionDevice<E>,
    {
        if self.cfg.attention != AttentionKind::CausalFlow {
            return Err(BackboneError::NoRecurrentState(self.cfg.attention));
        }
        let (h, hw) = (self.cfg.heads, self.cfg.head_width());
        let layers = self
            .blocks
            .iter()
            .map(|_| FlowState::new(dev, batch, h, hw, hw, self.cfg.flow))
            .collect();
        Ok(BackboneState { layers, batch })
    }

    /// Feeds the next token of every sequence, `x (B, width)`, and returns its output
    /// `(B, width)`: row `state.position()` of [`Backbone::forward`] (eval mode) over all
    /// tokens fed so far, at a cost that does not grow with the position.
    pub fn step<E, D>(
        &self,
        store: &ParamStore<E, D>,
        state: &mut BackboneState<E, D>,
        x: Tensor2<E, D>,
    ) -> Result<Tensor2<E, D>, BackboneError>
    where
        E: Dtype + num_traits::Float,
        D: AttentionDevice<E>,
    {
        let (b, w) = *x.shape();
        if (b, w) != (state.batch, self.cfg.width) {
            return Err(BackboneError::Input {
                expected: format!("(batch {}, width {})", state.batch, self.cfg.width),
                found: vec![b, w],
            });
        }
        let mut h = x;
        for (block, flow) in self.blocks.iter().zip(&mut state.layers) {
            h = block.step(store, h, flow, &self.cfg);
        }
        Ok(self.ln_f.forward(store, h))
    }
}
