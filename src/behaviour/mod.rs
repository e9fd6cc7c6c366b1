//! Behaviour policies made in flowrl: linear policies trained with Augmented Random
//! Search (Mania, Guy and Recht 2018, the V2-t variant), as D4RL's recipe needs for its
//! locomotion datasets (snapshots at several returns, and every rollout of training).
//!
//! # The algorithm ([`ars`])
//!
//! The policy is `a = clip(M (s - mu) / sigma, low, high)` with `M` of shape
//! `[act_dim, obs_dim]` (zero at the start) and `mu`, `sigma` the running mean and
//! standard deviation of every state visited by the training rollouts ([`normaliser`]).
//! Each iteration draws `N` directions `delta` (standard normal, from a ChaCha8 stream),
//! rolls out `M + nu delta` and `M - nu delta` from the same reset seed (the pair of
//! direction `k` is rollouts `2k` and `2k + 1`), keeps the `b` directions with the
//! largest `max(r+, r-)` and steps
//! `M += alpha / (b sigma_R) * sum_k (r+_k - r-_k) delta_k`, `sigma_R` being the standard
//! deviation of the `2b` returns kept. The normaliser used during an iteration is the
//! one from before it; the states of the iteration's rollouts are merged in, in rollout
//! order, after the update.
//!
//! Training returns subtract `--reward-shift` per step (the paper's "shift" that removes
//! the survival bonus); evaluation, logs and stored rollouts use the environment's own
//! reward.
//!
//! # Defaults ([`ArsConfig::defaults`])
//!
//! | environment | N (`--directions`) | b (`--top`) | alpha (`--step-size`) | nu (`--noise`) | `--reward-shift` | `--iterations` |
//! |-------------|----|----|-------|-------|---|------|
//! | Hopper-v4/v5      | 8  | 4  | 0.01  | 0.025 | 1 | 1000 |
//! | HalfCheetah-v4/v5 | 32 | 4  | 0.02  | 0.03  | 0 | 1000 |
//! | Walker2d-v4/v5    | 40 | 30 | 0.03  | 0.025 | 1 | 1000 |
//! | any other (continuous actions) | 8 | 4 | 0.02 | 0.03 | 0 | 100 |
//!
//! The Hopper and HalfCheetah rows are the paper's V2-t settings. Walker2d takes a
//! larger step and noise than the 0.025 / 0.01 it had first: with those, seed 0 stayed
//! below 550 for 400 iterations; with 0.03 / 0.025, seeds 0 and 2 still stalled
//! near 450 (ARS on Walker2d depends on the seed, as the paper's 100-seed study
//! shows) and seed 1, the repository's set, passed 80 normalised. Every environment: `--horizon` 1000
//! (episodes also end at the environment's own time limit), `--eval-every` 10,
//! `--eval-episodes` 10, `--milestone-step` 250, `--checkpoint-every` 10.
//!
//! # Reproducibility
//!
//! Everything derives from `--seed`: three ChaCha8 streams of the same key (stream 1:
//! the directions, stream 2: one reset seed per direction pair, stream 3: the fixed
//! reset seeds of the evaluation episodes). Rollouts run in parallel on the rayon
//! pool, each on its own environment with its own seed, and every reduction (returns,
//! normaliser statistics, the update) is taken in a fixed order: the same seed gives
//! the same run bit for bit whatever the number of threads, and a resumed run ends
//! exactly like an uninterrupted one.
//!
//! # Output folder ([`run`])
//!
//! ```text
//! <out>/
//!   log.csv                 one row per iteration (iteration 0: the initial policy), see [`LogRow`]
//!   learning_curve.png      evaluated return against training env steps
//!   tb/events.out.tfevents.* TensorBoard: behaviour/eval_return, behaviour/rollout_return,
//!                           behaviour/env_steps, behaviour/reward_std (step = iteration)
//!   checkpoint.safetensors  the whole learner state, every --checkpoint-every iterations
//!   snapshots/<name>.safetensors  policies (see [`snapshot`]): return-<m>, best, final
//!   rollouts/iter-<i>.safetensors every rollout of iteration i (a native dataset)
//! ```
//!
//! Snapshots: after each evaluation (mean return of `--eval-episodes` episodes, the
//! environment's reward, no noise), the policy is saved as `return-<m>` when the return
//! reaches a multiple `m` of `--milestone-step` above every multiple reached before
//! (the first evaluation always saves its multiple, e.g. `return-0`; negative multiples
//! are written `return-minus<|m|>`; a jump over several multiples saves the highest), as
//! `best` when it beats every earlier evaluation, and as `final` at the last iteration.
//!
//! Rollouts: one native dataset file per iteration (see [`crate::data::store`]) holding
//! its `2N` training episodes in rollout order (episode `2k`: direction `k`, `+nu`;
//! `2k + 1`: `-nu`), with the observations the policy saw (raw), the clipped actions,
//! the environment's rewards and its terminated / truncated flags (truncated also when
//! `--horizon` cut the episode). Evaluation episodes are not stored. Files are written
//! atomically after each iteration; resuming deletes those of iterations after the
//! checkpoint, which the resumed run writes again identically. They are large: about
//! `2N x steps x 4 x (obs_dim + act_dim + 1)` bytes per iteration, e.g. 6 MB for a
//! HalfCheetah iteration (64 episodes of 1000 steps), so 1000 iterations take ~6 GB.
//!
//! # Behaviour sets ([`set`], [`tiers`])
//!
//! `flowrl behaviour select` copies a run's medium and expert snapshots and its
//! rollouts into a set folder; `flowrl collect` takes the D4RL-style tiers of the
//! MuJoCo locomotion tasks from it (snapshots with Gaussian action noise, σ = 0.05 by
//! default, and the rollouts as replay data).

pub mod ars;
mod checkpoint;
mod config;
pub mod normaliser;
pub mod policy;
pub mod recipe;
mod rollout;
pub mod run;
pub mod set;
pub mod snapshot;
pub mod tiers;

pub use ars::{ars_update, DirectionReturns, UpdateStats};
pub use config::ArsConfig;
pub use normaliser::RunningStats;
pub use policy::BehaviourPolicy;
pub use run::{read_log, resume, start, LogRow, Outcome, TrainOptions};
pub use set::BehaviourSet;
pub use snapshot::SnapshotInfo;
pub use tiers::{Size, DEFAULT_ACTION_NOISE};
