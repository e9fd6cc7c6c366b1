//! flowrl environments: the world the agent is evaluated in and its datasets are
//! collected from. No tensors here.
//!
//! - [`classic`]: Gymnasium 1.4's CartPole-v1, Pendulum-v1, MountainCarContinuous-v0
//!   and Acrobot-v1, bit-exact (their states can be set to replay recorded episodes).
//! - [`numpy_rng`]: numpy's `Generator(PCG64(SeedSequence(seed)))`, bit for bit.
//! - [`mujoco`]: Gymnasium's Hopper, HalfCheetah and Walker2d (v5, v4) on MuJoCo
//!   3.17.0, loaded at run time (`flowrl setup mujoco`), bit-exact from `reset(seed)` on.
//! - [`memory`]: long-memory tasks whose memory length is part of the id
//!   (`TMaze-Passive-L500`, `TMaze-Active-L100`, `KeyToDoor-L60`).
//! - [`make`]: the registry; every environment implements gymnasium-rs's `Env` trait
//!   and [`FlowEnv`] (native f64 rewards, checked steps, scripted experts).
//! - [`VecEnv`]: environments in lockstep; [`collect`]: seeded datasets of a [`Tier`];
//!   [`reference_returns`]: random and expert returns for normalised scores.

pub mod classic;
mod collect;
mod error;
pub mod flow_env;
pub mod memory;
pub mod mujoco;
pub mod numpy_rng;
mod policy;
mod reference;
mod registry;
mod time_limit;
mod vec_env;

pub use collect::{collect, Episode};
pub use error::EnvError;
pub use flow_env::{Action, ActionSpec, FlowEnv, Obs, Step};
pub use policy::{Behaviour, Tier};
pub use reference::{
    d4rl_locomotion, measure_reference_returns, reference_returns, ReferenceReturns,
    REFERENCE_EPISODES, REFERENCE_SEED,
};
pub use registry::{make, CLASSIC_IDS, KNOWN_IDS};
pub use time_limit::TimeLimit;
pub use vec_env::VecEnv;
