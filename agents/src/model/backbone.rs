//! The Flowformer backbone: pre-LayerNorm blocks over a selectable causal attention.
//!
//! Dropout on the input sequence (GPT-2's embedding dropout `transformer.drop`), then
//! `N` blocks `x + drop(out(attn(ln_1(x))))`, `x + drop(c_proj(relu(c_fc(ln_2(x)))))`,
//! then a final LayerNorm `ln_f`, exactly as the reference Decision Transformer with
//! Flowformer attention (see `tests/fixtures/decision_flowformer/STRUCTURE.md`). Heads
//! are contiguous chunks of the width. Sizes are runtime values: the parameters live
//! in a [`ParamStore`] under the reference names, with GPT-2 initialisation.
//!
//! [`Backbone::forward_rows`] returns only some rows of the output (a loss's state
//! tokens, an actor's last token per window) and skips the last block's output
//! projection, MLP and `ln_f` for the others, in training as in evaluation.
//!
//! With causal Flow-Attention the backbone also runs token by token
//! ([`Backbone::recurrent_state`], [`Backbone::step_tokens`]) at a cost per token that does
//! not depend on the position, with the same outputs as [`Backbone::forward`].

use dfdx::prelude::*;

use crate::device::ModelDevice;
use crate::model::layers::{dropout, LayerNorm, Tensor2, Tensor3};
use crate::params::{ParamError, ParamStore};

use super::block::{Block, Context};
use super::config::BackboneConfig;

/// Errors of the backbone: configuration, inputs and parameters.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BackboneError {
    /// A configuration value out of range.
    #[error("backbone config: `{field}` must be {expected}, found {found}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is valid.
        expected: String,
        /// The value given.
        found: String,
    },
    /// An input tensor of the wrong shape.
    #[error("backbone input: expected {expected}, found shape {found:?}")]
    Input {
        /// What the backbone needs.
        expected: String,
        /// The shape given.
        found: Vec<usize>,
    },
    /// Rows to keep ([`Backbone::forward_rows`]) that are empty or out of range.
    #[error("backbone rows to keep: expected {expected}, found {found}")]
    Rows {
        /// What is valid.
        expected: String,
        /// What was given.
        found: String,
    },
    /// Step-by-step inference asked of an attention without a fixed-size state.
    #[error("{0:?} attention has no fixed-size recurrent state: step-by-step inference needs causal flow attention")]
    NoRecurrentState(crate::attention::AttentionKind),
    /// Registering or finding the parameters.
    #[error(transparent)]
    Params(#[from] ParamError),
}

/// The backbone's layers; parameter values live in the [`ParamStore`] it was registered in.
#[derive(Clone, Debug, PartialEq)]
pub struct Backbone {
    pub(crate) cfg: BackboneConfig,
    pub(crate) blocks: Vec<Block>,
    pub(crate) ln_f: LayerNorm,
}

/// `prefix.rest`, or `rest` when the prefix is empty.
pub(super) fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_string()
    } else {
        format!("{prefix}.{rest}")
    }
}

impl Backbone {
    /// Validates `cfg` and registers the parameters in `store` under `prefix`
    /// (`transformer` gives the reference names `transformer.h.{i}.ln_1.weight`, ...,
    /// `transformer.ln_f.bias`), initialised as GPT-2: weights N(0, 0.02²), biases 0,
    /// LayerNorm weight 1 and bias 0.
    pub fn register<E, D>(
        store: &mut ParamStore<E, D>,
        prefix: &str,
        cfg: BackboneConfig,
    ) -> Result<Self, BackboneError>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
    {
        cfg.validate()?;
        let blocks = (0..cfg.layers)
            .map(|i| Block::register(store, &join(prefix, &format!("h.{i}")), &cfg))
            .collect::<Result<Vec<_>, _>>()?;
        let ln_f =
            LayerNorm::register(store, &join(prefix, "ln_f"), cfg.width, cfg.layer_norm_eps)?;
        Ok(Self { cfg, blocks, ln_f })
    }

    /// The configuration.
    pub fn config(&self) -> &BackboneConfig {
        &self.cfg
    }

    /// `(B, L, width) -> (B, L, width)`: input dropout, every block, then `ln_f`.
    /// Dropout (all three sites, one probability) is active only when `train` is true,
    /// so callers must not drop the embedded tokens again. Causal: output `t` depends
    /// on inputs `0..=t` only.
    pub fn forward<E, D, T>(
        &self,
        store: &ParamStore<E, D>,
        x: Tensor3<E, D, T>,
        train: bool,
    ) -> Result<Tensor3<E, D, T>, BackboneError>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
        T: Tape<E, D> + Merge<T>,
    {
        let (b, l, w) = self.check_input(x.shape())?;
        let h = self.run(store, x, train, None);
        Ok(h.reshape_like(&(b, l, w)))
    }

    /// The rows `rows` (flat token indices `b·L + t`, any order, repeats allowed) of
    /// [`Backbone::forward`]'s output, `(rows.len(), width)`, computing less: the last
    /// block's attention still reads every token, but its output projection, MLP and
    /// residual additions and `ln_f` run on the kept rows only. Equal to gathering
    /// those rows from [`Backbone::forward`] when `train` is false or dropout is 0
    /// (with dropout the last block draws its masks for the kept rows only).
    ///
    /// For example the state tokens of a Decision Transformer's loss (`3 (b·K + t) + 1`),
    /// or each window's last state token when acting.
    pub fn forward_rows<E, D, T>(
        &self,
        store: &ParamStore<E, D>,
        x: Tensor3<E, D, T>,
        rows: &[usize],
        train: bool,
    ) -> Result<Tensor2<E, D, T>, BackboneError>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
        T: Tape<E, D> + Merge<T>,
    {
        let (b, l, _) = self.check_input(x.shape())?;
        if rows.is_empty() {
            return Err(BackboneError::Rows {
                expected: "at least one row".into(),
                found: "none".into(),
            });
        }
        if let Some(&r) = rows.iter().find(|&&r| r >= b * l) {
            return Err(BackboneError::Rows {
                expected: format!("token indices below batch {b} x length {l} = {}", b * l),
                found: format!("row {r}"),
            });
        }
        Ok(self.run(store, x, train, Some(rows)))
    }

    /// `(batch, length, width)` of a valid input.
    fn check_input(
        &self,
        shape: &(usize, usize, usize),
    ) -> Result<(usize, usize, usize), BackboneError> {
        let (b, l, w) = *shape;
        if w != self.cfg.width || b == 0 || l == 0 {
            return Err(BackboneError::Input {
                expected: format!("(batch > 0, length > 0, width {})", self.cfg.width),
                found: vec![b, l, w],
            });
        }
        Ok((b, l, w))
    }

    /// Input dropout, the blocks (the last one restricted to `keep`) and `ln_f` on the
    /// flat rows of a checked input.
    fn run<E, D, T>(
        &self,
        store: &ParamStore<E, D>,
        x: Tensor3<E, D, T>,
        train: bool,
        keep: Option<&[usize]>,
    ) -> Tensor2<E, D, T>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
        T: Tape<E, D> + Merge<T>,
    {
        let (b, l, w) = *x.shape();
        let mut h = dropout(x.reshape_like(&(b * l, w)), self.cfg.dropout, train);
        let last = self.blocks.len() - 1;
        for (i, block) in self.blocks.iter().enumerate() {
            let keep = if i == last { keep } else { None };
            let context = Context::Sequence {
                batch: b,
                len: l,
                keep,
            };
            h = block.forward(store, h, context, &self.cfg, train);
        }
        self.ln_f.forward(store, h)
    }
}
