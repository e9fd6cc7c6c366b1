//! The agent's vocabulary, which the models and the [`crate::agent::Agent`] built on
//! them share: its config (kind, sizes, action space), its errors and the window
//! batches it takes. A leaf: it knows nothing of the models.

mod config;
mod window;

use crate::attention::AttentionKind;
use crate::model::BackboneError;
use crate::params::ParamError;

pub use config::{
    ActionSpace, AgentConfig, AgentKind, MAX_FEATURES, MAX_LAYERS, MAX_STEPS, MAX_WIDTH,
};
pub(crate) use window::{check_finite, check_len, to_device, ActionInputs, Targets};
pub use window::{HostActions, HostWindow, Window};

/// Errors of agents: configuration, inputs, acting order and parameters.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AgentError {
    /// A configuration value out of range.
    #[error("agent config: `{field}` must be {expected}, found {found}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is valid.
        expected: String,
        /// The value given.
        found: String,
    },
    /// An input batch with a wrong size or value.
    #[error("agent input `{field}`: expected {expected}, found {found}")]
    Window {
        /// The input.
        field: &'static str,
        /// What is valid.
        expected: String,
        /// What was given.
        found: String,
    },
    /// Recurrent (`episode`) acting asked of a model without a fixed-size state.
    #[error("{0:?} attention has no recurrent state: the recurrent episode mode needs the Decision-Flowformer (causal Flow-Attention); with softmax attention a whole-episode context means re-encoding the whole history")]
    NoRecurrentState(AttentionKind),
    /// Acting calls out of order or with bad row indices.
    #[error("acting: {0}")]
    Acting(String),
    /// A checkpoint's metadata without a readable agent config.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The backbone rejected its config or input.
    #[error(transparent)]
    Backbone(#[from] BackboneError),
    /// Registering, finding or loading parameters.
    #[error(transparent)]
    Params(#[from] ParamError),
}
