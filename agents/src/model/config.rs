//! The backbone's sizes and constants, with validation.

use serde::{Deserialize, Serialize};

use super::BackboneError;
use crate::attention::{AttentionKind, FlowConfig};

/// Sizes and constants of the backbone (all runtime values).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackboneConfig {
    /// Token width (`d_model`); the MLP is `width -> 4 width -> width`.
    pub width: usize,
    /// Attention heads: contiguous chunks of `width / heads` features.
    pub heads: usize,
    /// Number of blocks.
    pub layers: usize,
    /// Causal flow or causal softmax attention.
    pub attention: AttentionKind,
    /// Dropout probability on the input sequence (GPT-2's embedding dropout), after
    /// the attention output projection and after the MLP (the reference uses 0.1 for
    /// all three: `embd_pdrop` and `resid_pdrop` keep their GPT-2 defaults).
    pub dropout: f64,
    /// LayerNorm epsilon (1e-5 in the reference).
    pub layer_norm_eps: f64,
    /// Flow-Attention constants (used when `attention` is causal flow).
    #[serde(with = "FlowConfigDef")]
    pub flow: FlowConfig,
}

/// Serde mirror of [`FlowConfig`].
#[derive(Serialize, Deserialize)]
#[serde(remote = "FlowConfig")]
struct FlowConfigDef {
    clamp: f64,
    eps: f64,
    chunk: usize,
}

impl Default for BackboneConfig {
    /// The Decision Transformer's sizes (width 128, 1 head, 3 layers, dropout 0.1) with
    /// causal Flow-Attention in its reinforcement-learning variant.
    fn default() -> Self {
        Self {
            width: 128,
            heads: 1,
            layers: 3,
            attention: AttentionKind::CausalFlow,
            dropout: 0.1,
            layer_norm_eps: 1e-5,
            flow: FlowConfig::rl(),
        }
    }
}

impl BackboneConfig {
    /// Width of one head.
    pub fn head_width(&self) -> usize {
        self.width / self.heads
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), BackboneError> {
        let bad = |field: &'static str, expected: &str, found: String| {
            Err(BackboneError::Config {
                field,
                expected: expected.to_string(),
                found,
            })
        };
        if self.width == 0 {
            return bad("width", "> 0", self.width.to_string());
        }
        if self.heads == 0 {
            return bad("heads", "> 0", self.heads.to_string());
        }
        if !self.width.is_multiple_of(self.heads) {
            return bad(
                "heads",
                &format!("a divisor of width {}", self.width),
                self.heads.to_string(),
            );
        }
        if self.layers == 0 {
            return bad("layers", ">= 1", self.layers.to_string());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", "in [0, 1)", self.dropout.to_string());
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return bad(
                "layer_norm_eps",
                "finite and > 0",
                self.layer_norm_eps.to_string(),
            );
        }
        if !(self.flow.clamp.is_finite() && self.flow.clamp > 0.0) {
            return bad("flow.clamp", "finite and > 0", self.flow.clamp.to_string());
        }
        if !(self.flow.eps.is_finite() && self.flow.eps > 0.0) {
            return bad("flow.eps", "finite and > 0", self.flow.eps.to_string());
        }
        if self.flow.chunk == 0 {
            return bad("flow.chunk", ">= 1", self.flow.chunk.to_string());
        }
        Ok(())
    }
}
