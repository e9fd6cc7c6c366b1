//! The agent's kind, sizes and constants (all runtime values), with validation and serde.

use serde::{Deserialize, Serialize};

use super::AgentError;
use crate::attention::{AttentionKind, FlowConfig};
use crate::model::BackboneConfig;

/// Which model an [`crate::agent::Agent`] is. Configs and the command line name it in
/// kebab-case ([`crate::named`]); the agent config of a checkpoint in snake_case.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum AgentKind {
    /// Decision Transformer with causal Flow-Attention (has a recurrent `episode` mode).
    #[default]
    DecisionFlowformer,
    /// The original Decision Transformer: the same model with causal softmax attention.
    DecisionTransformer,
    /// Behaviour cloning: state -> action with a 3-layer MLP, no context.
    MlpBc,
}

impl AgentKind {
    /// The attention of the sequence models (`None` for the MLP).
    pub fn attention(self) -> Option<AttentionKind> {
        match self {
            AgentKind::DecisionFlowformer => Some(AttentionKind::CausalFlow),
            AgentKind::DecisionTransformer => Some(AttentionKind::CausalSoftmax),
            AgentKind::MlpBc => None,
        }
    }
}

/// The action space as the model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ActionSpace {
    /// Vectors of `dim` values; the model predicts `tanh` outputs in `[-1, 1]`, so the
    /// caller scales dataset actions into `[-1, 1]` and predictions back to the bounds.
    Continuous {
        /// Number of action dimensions.
        dim: usize,
    },
    /// Indices `0..n`; the model predicts `n` logits.
    Discrete {
        /// Number of actions.
        n: usize,
    },
}

impl ActionSpace {
    /// Width of one prediction: `dim` values or `n` logits.
    pub fn outputs(self) -> usize {
        match self {
            ActionSpace::Continuous { dim } => dim,
            ActionSpace::Discrete { n } => n,
        }
    }
}

/// Everything needed to rebuild an agent's layers (a checkpoint stores it next to the
/// parameters). Observation and action sizes come from the dataset; the rest from the
/// experiment config.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The model.
    pub kind: AgentKind,
    /// Observation (state) size.
    pub obs_dim: usize,
    /// Action space.
    pub action: ActionSpace,
    /// Token width of the sequence models; hidden width of the MLP.
    pub width: usize,
    /// Transformer blocks (sequence models only).
    pub layers: usize,
    /// Attention heads, a divisor of `width` (sequence models only).
    pub heads: usize,
    /// Dropout probability (train mode only).
    pub dropout: f64,
    /// Context length K: timesteps per training window and per `window` acting context.
    pub context: usize,
    /// Size of the timestep embedding table; timesteps must be below it.
    pub max_ep_len: usize,
    /// Flow-Attention clamp bound of the conserved source (10 in the RL variant).
    pub flow_clamp: f64,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

/// Largest observation size, action dimension and number of discrete actions an
/// agent accepts (2^20): larger ones are rejected before anything is allocated.
pub const MAX_FEATURES: usize = 1 << 20;
/// Largest token width (2^16).
pub const MAX_WIDTH: usize = 1 << 16;
/// Largest number of transformer blocks (2^10).
pub const MAX_LAYERS: usize = 1 << 10;
/// Largest context length and timestep table (2^24 steps, about 16.7 million).
pub const MAX_STEPS: usize = 1 << 24;

impl AgentConfig {
    /// The reference Decision Transformer's sizes (width 128, 3 layers, 1 head,
    /// dropout 0.1, K 20, max episode length 1000, clamp 10, eps 1e-5) for the given
    /// kind and dataset sizes.
    pub fn new(kind: AgentKind, obs_dim: usize, action: ActionSpace) -> Self {
        Self {
            kind,
            obs_dim,
            action,
            width: 128,
            layers: 3,
            heads: 1,
            dropout: 0.1,
            context: 20,
            max_ep_len: 1000,
            flow_clamp: 10.0,
            layer_norm_eps: 1e-5,
        }
    }

    /// Checks every field, naming the first bad one. Sizes are bounded
    /// ([`MAX_FEATURES`], [`MAX_WIDTH`], [`MAX_LAYERS`], [`MAX_STEPS`]) so a config read
    /// from an untrusted file cannot ask for an absurd model; whether a valid config
    /// fits the machine's memory is the caller's check.
    pub fn validate(&self) -> Result<(), AgentError> {
        let bad = |field: &'static str, expected: &str, found: String| {
            Err(AgentError::Config {
                field,
                expected: expected.to_string(),
                found,
            })
        };
        let within = |field: &'static str, value: usize, min: usize, max: usize| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                bad(field, &format!("in [{min}, {max}]"), value.to_string())
            }
        };
        within("obs_dim", self.obs_dim, 1, MAX_FEATURES)?;
        match self.action {
            ActionSpace::Continuous { dim } => within("action.dim", dim, 1, MAX_FEATURES)?,
            ActionSpace::Discrete { n } => within("action.n", n, 2, MAX_FEATURES)?,
        }
        within("width", self.width, 1, MAX_WIDTH)?;
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", "in [0, 1)", self.dropout.to_string());
        }
        within("context", self.context, 1, MAX_STEPS)?;
        if self.kind == AgentKind::MlpBc {
            return Ok(());
        }
        within("max_ep_len", self.max_ep_len, 1, MAX_STEPS)?;
        within("layers", self.layers, 1, MAX_LAYERS)?;
        if self.heads == 0 || !self.width.is_multiple_of(self.heads) {
            return bad(
                "heads",
                &format!("a divisor of width {}", self.width),
                self.heads.to_string(),
            );
        }
        if !(self.flow_clamp.is_finite() && self.flow_clamp > 0.0) {
            return bad("flow_clamp", "finite and > 0", self.flow_clamp.to_string());
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return bad(
                "layer_norm_eps",
                "finite and > 0",
                self.layer_norm_eps.to_string(),
            );
        }
        Ok(())
    }

    /// The backbone of a sequence model (`None` for the MLP).
    pub fn backbone(&self) -> Option<BackboneConfig> {
        self.kind.attention().map(|attention| BackboneConfig {
            width: self.width,
            heads: self.heads,
            layers: self.layers,
            attention,
            dropout: self.dropout,
            layer_norm_eps: self.layer_norm_eps,
            flow: FlowConfig {
                clamp: self.flow_clamp,
                ..FlowConfig::rl()
            },
        })
    }
}
