//! flowrl-agents: the models. Flow-Attention (normal, causal, step-by-step), causal
//! softmax attention, the Flowformer backbone, its parameter store and optimiser, and
//! the agents built on them (Decision-Flowformer, the softmax Decision Transformer and
//! MLP behaviour cloning, behind [`agent::Agent`]) with episode acting ([`acting`]).
//! Generic over dfdx's `Device` and the float type; knows nothing of files or environments
//! beyond the names of agent kinds and context modes ([`named`]).

pub mod acting;
pub mod agent;
pub mod attention;
pub mod device;
pub(crate) mod host;
pub mod kernels;
pub mod model;
pub mod named;
pub mod optim;
pub mod params;
pub mod spec;
