//! The agent's kind, sizes and constants (all runtime values), with validation and serde.

use serde::{Deserialize, Serialize};

use super::AgentError;
use crate::attention::{AttentionKind, FlowConfig};
use crate::backbone::BackboneConfig;

/// Which model an [`super::Agent`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentKind {
    /// Decision Transformer with causal Flow-Attention (has a recurrent `episode` mode).
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

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), AgentError> {
        let bad = |field: &'static str, expected: &str, found: String| {
            Err(AgentError::Config {
                field,
                expected: expected.to_string(),
                found,
            })
        };
        if self.obs_dim == 0 {
            return bad("obs_dim", ">= 1", self.obs_dim.to_string());
        }
        match self.action {
            ActionSpace::Continuous { dim: 0 } => return bad("action.dim", ">= 1", "0".into()),
            ActionSpace::Discrete { n } if n < 2 => return bad("action.n", ">= 2", n.to_string()),
            _ => {}
        }
        if self.width == 0 {
            return bad("width", ">= 1", self.width.to_string());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", "in [0, 1)", self.dropout.to_string());
        }
        if self.context == 0 {
            return bad("context", ">= 1", self.context.to_string());
        }
        if self.kind == AgentKind::MlpBc {
            return Ok(());
        }
        if self.max_ep_len == 0 {
            return bad("max_ep_len", ">= 1", self.max_ep_len.to_string());
        }
        if self.layers == 0 {
            return bad("layers", ">= 1", self.layers.to_string());
        }
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
