//! Token-by-token inference with causal Flow-Attention: one fixed-size
//! Flow-Attention state per block, O(1) cost per token.
//!
//! On `Cpu` the states live in host memory and are updated in place
//! (`crate::host::recurrent`); on other devices they are [`FlowState`]s stepped with
//! the composed ops.

use dfdx::prelude::*;

use super::block::Context;
use super::{Backbone, BackboneError};
use crate::attention::{AttentionKind, FlowState};
use crate::device::ModelDevice;
use crate::host::recurrent::HostFlow;
use crate::model::layers::{Tensor2, Tensor3};
use crate::params::ParamStore;

/// One block's Flow-Attention state.
#[derive(Clone, Debug)]
pub(crate) enum LayerState<E: Dtype, D: Storage<E>> {
    /// On the device, stepped token by token with the device's ops.
    Device(Box<FlowState<E, D>>),
    /// In host memory (`Cpu`), all tokens of a step in one pass.
    Host(HostFlow<E>),
}

/// The recurrent state of a [`Backbone`] for a batch: one Flow-Attention state per block.
#[derive(Clone, Debug)]
pub struct BackboneState<E: Dtype, D: Storage<E>> {
    layers: Vec<LayerState<E, D>>,
    batch: usize,
}

impl<E: Dtype + num_traits::Float, D: ModelDevice<E>> BackboneState<E, D> {
    /// How many tokens have been fed.
    pub fn position(&self) -> usize {
        self.layers.first().map_or(0, |layer| match layer {
            LayerState::Device(flow) => flow.position(),
            LayerState::Host(flow) => flow.position(),
        })
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
        assert!(
            rows.iter().all(|&r| r < self.batch),
            "BackboneState::keep_rows: row index not below the batch size {}",
            self.batch
        );
        for layer in &mut self.layers {
            match layer {
                LayerState::Device(flow) => flow.keep_rows(rows),
                LayerState::Host(flow) => flow.keep_rows(rows),
            }
        }
        self.batch = rows.len();
    }
}

impl<E: Dtype + num_traits::Float, D: ModelDevice<E>> LayerState<E, D> {
    /// Causal Flow-Attention (`h` heads) of the next `n` tokens of `b` sequences, `q`,
    /// `k`, `v` `(n·b, W)` token-major, advancing the state by each in order; the outputs
    /// `(n·B, W)`, or the last token's `(B, W)` when `last_only`.
    pub(crate) fn advance(
        &mut self,
        q: Tensor2<E, D>,
        k: Tensor2<E, D>,
        v: Tensor2<E, D>,
        (b, h): (usize, usize),
        last_only: bool,
    ) -> Tensor2<E, D> {
        let (rows, w) = *q.shape();
        let n = rows / b;
        let from = if last_only { n - 1 } else { 0 };
        match self {
            LayerState::Host(flow) => {
                let out = flow.step_tokens(&q.as_vec(), &k.as_vec(), &v.as_vec(), n, from);
                q.device().tensor_from_vec(out, ((n - from) * b, w))
            }
            LayerState::Device(flow) => {
                let hw = w / h;
                let token = |t: &Tensor2<E, D>, i: usize| -> Tensor3<E, D> {
                    let rows = if n == 1 {
                        t.clone()
                    } else {
                        t.clone().slice((i * b..(i + 1) * b, ..))
                    };
                    rows.reshape_like(&(b, h, hw))
                };
                let mut outputs = (0..n).map(|i| {
                    flow.step(token(&q, i), token(&k, i), token(&v, i))
                        .reshape_like(&(b, w))
                });
                let first = outputs.by_ref().take(from + 1).last();
                let first = first.unwrap_or_else(|| unreachable!("n >= 1 tokens"));
                outputs.fold(first, |acc, o| (acc, o).concat_along(Axis::<0>))
            }
        }
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
        D: ModelDevice<E>,
    {
        if self.cfg.attention != AttentionKind::CausalFlow {
            return Err(BackboneError::NoRecurrentState(self.cfg.attention));
        }
        let (h, hw) = (self.cfg.heads, self.cfg.head_width());
        let layers = self
            .blocks
            .iter()
            .map(|_| {
                if D::HOST_ACTING {
                    LayerState::Host(HostFlow::new(
                        (batch, h),
                        (hw, hw),
                        self.cfg.flow,
                        D::sigmoid_in_place,
                    ))
                } else {
                    LayerState::Device(Box::new(FlowState::new(
                        dev,
                        batch,
                        h,
                        hw,
                        hw,
                        self.cfg.flow,
                    )))
                }
            })
            .collect();
        Ok(BackboneState { layers, batch })
    }

    /// Feeds the next `n >= 1` tokens of every sequence at once, `x (n·B, width)`
    /// token-major (rows `i·B..(i+1)·B` hold token `i` of every sequence), and returns the
    /// output of the last one, `(B, width)`: row `state.position() - 1` of
    /// [`Backbone::forward`] (eval mode) over all tokens fed so far, at a cost per token
    /// that does not grow with the position.
    /// Each block's layer norm and projections run once on all `n·B` rows, and the last
    /// block computes its output for the last token only (nobody reads the others).
    pub fn step_tokens<E, D>(
        &self,
        store: &ParamStore<E, D>,
        state: &mut BackboneState<E, D>,
        x: Tensor2<E, D>,
    ) -> Result<Tensor2<E, D>, BackboneError>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
    {
        let (rows, w) = *x.shape();
        let b = state.batch;
        if b == 0 || rows == 0 || rows % b != 0 || w != self.cfg.width {
            return Err(BackboneError::Input {
                expected: format!("(n · batch {b} rows with n >= 1, width {})", self.cfg.width),
                found: vec![rows, w],
            });
        }
        let last = self.blocks.len().saturating_sub(1);
        let mut h = x;
        for (i, (block, flow)) in self.blocks.iter().zip(&mut state.layers).enumerate() {
            let context = Context::Step {
                batch: b,
                state: flow,
                last_only: i == last,
            };
            h = block.forward(store, h, context, &self.cfg, false);
        }
        Ok(self.ln_f.forward(store, h))
    }
}
