//! From an experiment config and a dataset to what training needs: the agent's
//! config, the sampler's settings and the preprocessing a policy must reproduce at
//! evaluation time (observation normalisation, reward scale, action scaling).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context};
use flowrl_agents::agent::{self, ActionSpace};
use serde::{Deserialize, Serialize};

use crate::collect::collect_with_bar;
use crate::config::{Config, ContextMode, DatasetSource};
use crate::data::stats::Normalisation;
use crate::data::windows::{RewardMode, WindowConfig, WindowMode};
use crate::data::{store, Actions, Dataset, Space};

/// LayerNorm epsilon of every agent trained by flowrl (the reference value).
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// How dataset actions map to the model's outputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ActionScaling {
    /// Action indices `0..n`: no scaling.
    Discrete {
        /// Number of actions.
        n: usize,
    },
    /// Continuous actions in `[low, high]` per dimension, mapped affinely onto the
    /// model's `tanh` range `[-1, 1]`.
    Continuous {
        /// Lower bound per dimension.
        low: Vec<f32>,
        /// Upper bound per dimension.
        high: Vec<f32>,
    },
}

impl ActionScaling {
    /// The action space's bounds where they are finite and ordered; otherwise (an
    /// unbounded dimension) the dataset's smallest and largest value of that dimension
    /// (widened by 1 on each side when they are equal).
    pub fn of(ds: &Dataset) -> Self {
        match (ds.actions(), &ds.meta().action_space) {
            (Actions::Discrete { .. }, Space::Discrete { n }) => Self::Discrete { n: *n },
            (Actions::Discrete { values }, Space::Box { .. }) => Self::Discrete {
                n: values.iter().max().map_or(1, |m| m + 1),
            },
            (Actions::Continuous { dim, values }, space) => {
                let (mut low, mut high) =
                    (vec![f32::INFINITY; *dim], vec![f32::NEG_INFINITY; *dim]);
                for row in values.chunks_exact(*dim) {
                    for (j, &a) in row.iter().enumerate() {
                        low[j] = low[j].min(a);
                        high[j] = high[j].max(a);
                    }
                }
                if let Space::Box { low: lo, high: hi } = space {
                    for j in 0..*dim {
                        if lo[j].is_finite() && hi[j].is_finite() && lo[j] < hi[j] {
                            low[j] = lo[j];
                            high[j] = hi[j];
                        }
                    }
                }
                for j in 0..*dim {
                    if low[j] >= high[j] {
                        low[j] -= 1.0;
                        high[j] += 1.0;
                    }
                }
                Self::Continuous { low, high }
            }
        }
    }

    /// The model's action space.
    pub fn space(&self) -> ActionSpace {
        match self {
            Self::Discrete { n } => ActionSpace::Discrete { n: *n },
            Self::Continuous { low, .. } => ActionSpace::Continuous { dim: low.len() },
        }
    }

    /// Maps dataset actions (one or several vectors back to back) into `[-1, 1]`,
    /// clamping values outside the bounds. Identity for discrete actions.
    pub fn to_model(&self, actions: &[f32], out: &mut [f32]) {
        match self {
            Self::Discrete { .. } => out.copy_from_slice(actions),
            Self::Continuous { low, high } => {
                let d = low.len();
                for (o_row, a_row) in out.chunks_exact_mut(d).zip(actions.chunks_exact(d)) {
                    for j in 0..d {
                        let y = 2.0 * (a_row[j] - low[j]) / (high[j] - low[j]) - 1.0;
                        o_row[j] = y.clamp(-1.0, 1.0);
                    }
                }
            }
        }
    }

    /// Maps model outputs in `[-1, 1]` back to environment actions in `[low, high]`.
    /// Identity for discrete actions.
    pub fn from_model(&self, outputs: &[f32], out: &mut [f32]) {
        match self {
            Self::Discrete { .. } => out.copy_from_slice(outputs),
            Self::Continuous { low, high } => {
                let d = low.len();
                for (o_row, y_row) in out.chunks_exact_mut(d).zip(outputs.chunks_exact(d)) {
                    for j in 0..d {
                        o_row[j] = low[j] + (y_row[j] + 1.0) * 0.5 * (high[j] - low[j]);
                    }
                }
            }
        }
    }
}

/// What a trained policy needs to see the world as it did in training; saved in every
/// checkpoint as `normalisation.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// Observation mean and standard deviation, and the reward scale of returns-to-go.
    pub normalisation: Normalisation,
    /// Dataset actions to model outputs and back.
    pub actions: ActionScaling,
    /// The dataset's environment id.
    pub env_id: String,
    /// Size of the timestep table: timesteps at or beyond it use its last entry.
    pub max_episode_length: usize,
    /// The dataset's best undiscounted episode return (the default evaluation target).
    pub best_return: f64,
    /// Discount of the returns-to-go.
    pub gamma: f64,
    /// Whether rewards were moved to each episode's last step.
    pub delayed_reward: bool,
}

/// The dataset of a run, from a file or collected (and then saved as `collected`).
pub fn load_dataset(cfg: &Config, collected: &Path) -> anyhow::Result<Dataset> {
    match cfg.dataset_source()? {
        DatasetSource::File(path) => store::load(&path)
            .with_context(|| format!("cannot load the dataset file {}", path.display())),
        DatasetSource::Collect {
            env,
            tier,
            episodes,
            seed,
        } => {
            if collected.exists() {
                return store::load(collected).with_context(|| {
                    format!("cannot load the collected dataset {}", collected.display())
                });
            }
            let tier = flowrl_envs::Tier::from_str(&tier)
                .map_err(|e| anyhow::anyhow!("dataset.tier: {e}"))?;
            let bar = crate::progress::bar(episodes as u64, "episodes");
            bar.set_message(format!("collecting {env} {tier}"));
            let ds = collect_with_bar(&env, tier, episodes, seed, &bar)
                .with_context(|| format!("cannot collect the dataset of `{env}`"))?;
            store::save(&ds, collected).with_context(|| {
                format!("cannot save the collected dataset {}", collected.display())
            })?;
            Ok(ds)
        }
    }
}

/// A config whose relative dataset path is made absolute (against the working
/// folder), so that a run can be resumed from anywhere.
pub fn with_absolute_dataset_path(mut cfg: Config) -> anyhow::Result<Config> {
    if let Some(path) = &cfg.dataset.path {
        if path.is_relative() {
            let cwd = std::env::current_dir().context("cannot read the working folder")?;
            cfg.dataset.path = Some(cwd.join(path));
        }
    }
    Ok(cfg)
}

/// Everything derived from a config and its dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The agent to build.
    pub agent: agent::AgentConfig,
    /// The window sampler's settings (its seed included).
    pub windows: WindowConfig,
    /// The preprocessing to save with the model.
    pub preprocessing: Preprocessing,
}

/// Derives the agent config, the sampler settings and the preprocessing. In `episode`
/// context mode the context is the dataset's longest episode and windows are whole
/// episodes.
pub fn plan(cfg: &Config, ds: &Dataset, sampler_seed: u64) -> anyhow::Result<Plan> {
    let longest = ds.max_episode_len();
    let (context, mode) = match cfg.agent.context_mode {
        ContextMode::Window => (cfg.agent.context, WindowMode::Uniform),
        ContextMode::Episode => (longest, WindowMode::WholeEpisode),
    };
    let max_episode_length = match cfg.agent.max_episode_length {
        0 => longest,
        n => n,
    };
    let actions = ActionScaling::of(ds);
    let agent_cfg = agent::AgentConfig {
        kind: cfg.agent.kind,
        obs_dim: ds.obs_dim(),
        action: actions.space(),
        width: cfg.agent.width,
        layers: cfg.agent.layers,
        heads: cfg.agent.heads,
        dropout: cfg.agent.dropout,
        context,
        max_ep_len: max_episode_length,
        flow_clamp: cfg.agent.flow_clamp,
        layer_norm_eps: LAYER_NORM_EPS,
    };
    agent_cfg.validate().with_context(|| {
        format!(
            "the agent of this config does not fit the dataset of `{}`",
            ds.meta().env_id
        )
    })?;
    crate::limits::check_training(&agent_cfg, cfg.train.batch)?;
    if cfg.eval.episodes > 0 {
        let targets = cfg.eval.targets.len().max(1);
        crate::limits::check_rollout(
            &agent_cfg,
            cfg.eval.episodes * targets,
            &format!(
                "eval.episodes = {} x {targets} target(s)",
                cfg.eval.episodes
            ),
        )?;
    }
    let reward_scale = cfg.train.reward_scale as f32;
    if !(reward_scale.is_finite() && reward_scale > 0.0) {
        bail!(
            "train.reward_scale: expected a positive number representable as f32, found {}",
            cfg.train.reward_scale
        );
    }
    let windows = WindowConfig {
        context,
        batch_size: cfg.train.batch,
        mode,
        gamma: cfg.train.gamma,
        reward_mode: if cfg.train.delayed_reward {
            RewardMode::Delayed
        } else {
            RewardMode::Dense
        },
        reward_scale: Some(reward_scale),
        max_episode_len: Some(max_episode_length),
        seed: sampler_seed,
    };
    let best_return = ds
        .episode_returns()
        .into_iter()
        .fold(f64::NEG_INFINITY, f64::max);
    Ok(Plan {
        agent: agent_cfg,
        windows,
        preprocessing: Preprocessing {
            normalisation: Normalisation::of(ds, reward_scale),
            actions,
            env_id: ds.meta().env_id.clone(),
            max_episode_length,
            best_return,
            gamma: cfg.train.gamma,
            delayed_reward: cfg.train.delayed_reward,
        },
    })
}

/// The collected dataset's file inside a run folder.
pub fn collected_path(run_dir: &Path) -> PathBuf {
    run_dir.join(super::run_dir::COLLECTED_DATASET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuous_scaling_round_trips_and_clamps() {
        let s = ActionScaling::Continuous {
            low: vec![-2.0, 0.0],
            high: vec![2.0, 10.0],
        };
        let mut y = [0.0; 4];
        s.to_model(&[-2.0, 5.0, 1.0, 20.0], &mut y);
        assert_eq!(y, [-1.0, 0.0, 0.5, 1.0]);
        let mut a = [0.0; 4];
        s.from_model(&y, &mut a);
        assert_eq!(a, [-2.0, 5.0, 1.0, 10.0]);
    }
}
