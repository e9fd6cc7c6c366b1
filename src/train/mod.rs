//! Training: AdamW with decoupled weight decay, linear learning-rate warm-up, gradient
//! clipping by global norm, dropout in training only, masked loss; TensorBoard
//! scalars, a progress bar, atomic checkpoints and exact resumption.
//!
//! Entry points: [`start`] (a new run from a [`crate::config::Config`]), [`resume`]
//! (continue a run folder from its newest checkpoint) and [`checkpoint::load`] (a
//! trained agent with its preprocessing, for evaluation).
//!
//! # Run folder
//!
//! ```text
//! <run>/
//!   config.toml              the resolved config (after --set; dataset path absolute)
//!   dataset.safetensors      the collected dataset, when the config collects one
//!   train_log.csv            step,loss,lr,grad_norm for every step up to the last checkpoint
//!   tb/events.out.tfevents.* TensorBoard: train/loss, train/lr, train/grad_norm,
//!                            train/steps_per_s every train.log_every steps; eval/* if evaluated
//!   eval/step-<N>-<context>-seed-<S>.json  evaluation reports (training's and `flowrl eval`'s)
//!   checkpoints/
//!     latest                 `step-<N>`: the newest complete checkpoint (written last, atomically)
//!     step-<N>/
//!       params.safetensors     parameters; metadata: agent config, `flowrl.step`
//!       optimizer.safetensors  AdamW moments and step count
//!       state.json             step, seed, sampler and dropout stream positions, dataset
//!                              fingerprint (with the content hash of its arrays)
//!       normalisation.json     observation mean/std, reward scale, action scaling, timestep table size
//! ```
//!
//! Checkpoints are written every `train.checkpoint_every` steps, at the end, and where
//! a run is stopped early ([`TrainOptions::stop_at`]).
//!
//! # Lifecycle
//!
//! A start that fails before the config is saved removes the folder it created. A run
//! that never reached a checkpoint (killed, diverged, failed) is restarted in place by
//! [`start`] (with the new config) or [`resume`] (with its own), from step 0; a run
//! with a checkpoint is only continued by [`resume`], which refuses a dataset whose
//! content hash differs from the one recorded, removes temporaries that interrupted
//! writes left behind, and drops TensorBoard events of steps after the checkpoint
//! (they are trained and logged again). Parameter and dataset files are
//! byte-reproducible: the same seed gives the same bytes.
//!
//! # Reproducibility
//!
//! Everything is seeded from the config seed (see [`streams`]): the same config and
//! seed give the same loss curve bit for bit on the CPU, and a resumed run ends with
//! the same parameters, bit for bit, as an uninterrupted one.

pub mod checkpoint;
pub mod prepare;
pub mod run_dir;
pub mod schedule;
pub mod streams;
mod trainer;
pub mod warm_start;

pub use checkpoint::{load, LoadedRun};
pub use prepare::{ActionScaling, Preprocessing};
pub use trainer::{
    read_train_log, resume, start, EvalHook, RunStart, StepRecord, TrainOptions, TrainOutcome,
};
