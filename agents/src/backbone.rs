//! The Flowformer backbone: pre-LayerNorm blocks over a selectable causal attention.
