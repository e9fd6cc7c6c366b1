//! The integration tests of flowrl-agents, one test binary with a module per subject.
//!
//! - [`params`]: the parameter store (lookup, initialisation, safetensors);
//! - [`optim`]: AdamW and gradient clipping;
//! - [`layers`]: `Linear`, `LayerNorm` and dropout;
//! - [`kernels`], [`linear_kernels`]: the fused `Cpu` kernels against stock dfdx ops;
//! - [`attention`]: the attention cores (PyTorch fixtures, finite differences, state);
//! - [`backbone`]: the Flowformer backbone;
//! - [`parity_model`]: the fixture's Decision Transformer built around the backbone;
//! - [`decision`]: the Decision-Flowformer agent against the reference model;
//! - [`training`]: agent losses, masking, gradients and toy-task training;
//! - [`agent`]: agent configs, window validation and checkpoints;
//! - [`acting`]: acting in both context modes, and acting errors;
//! - [`host_acting`]: the host-memory acting path against the tensor forward pass.
//!
//! [`common`] holds what they share: the error measures, the typed fixture loader, and
//! random agent inputs.

mod common;

mod acting;
mod agent;
mod attention;
mod backbone;
mod decision;
mod host_acting;
mod kernels;
mod layers;
mod linear_kernels;
mod optim;
mod params;
mod parity_model;
mod training;
