//! The models, defined once. Read in this order:
//!
//! 1. [`config`]: the backbone's sizes, attention kind and Flow-Attention constants.
//! 2. [`layers`]: the linear map and LayerNorm as parameters in a
//!    [`crate::params::ParamStore`] under the reference names, and dropout.
//! 3. `block` (private): one pre-LayerNorm block, `x + drop(out(attn(ln_1(x))))` then
//!    `x + drop(c_proj(relu(c_fc(ln_2(x)))))`; the attention cores themselves are in
//!    [`crate::attention`], whose [`crate::attention::composed`] module is their math.
//! 4. [`backbone`]: input dropout, the blocks, the final LayerNorm, over whole
//!    sequences or only the rows a caller reads.
//! 5. [`recurrent`]: the same backbone token by token with causal Flow-Attention, each
//!    block carrying its Flow-Attention state, through the block's shared tail.
//! 6. [`decision`]: the Decision Transformer around the backbone: return, state and
//!    action tokens with a timestep embedding, the embedding LayerNorm, the action
//!    head, the loss positions; and its recurrent acting state.
//! 7. [`mlp_bc`]: the behaviour-cloning baseline (state to action).
//!
//! Every operation goes through the checked free functions of [`crate::kernels`] and
//! [`crate::attention`], which run the device's implementation
//! ([`crate::device::ModelDevice`]). Acting on the CPU runs a second backend, a copy
//! of these models in host memory (`crate::host`, files named after these).

pub mod backbone;
mod block;
pub mod config;
pub mod decision;
pub mod layers;
pub mod mlp_bc;
pub mod recurrent;

pub use backbone::{Backbone, BackboneError};
pub use config::BackboneConfig;
pub use recurrent::BackboneState;
