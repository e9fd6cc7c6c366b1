//! Experiment configuration: one TOML file holds every hyperparameter, the dataset,
//! the environment, the agent kind, the context mode, the seeds and the evaluation
//! schedule of a run.
//!
//! Defaults are those of the original Decision Transformer (Chen et al., 2021):
//! K 20, width 128, 3 layers, 1 head, dropout 0.1, AdamW with lr 1e-4 and weight decay
//! 1e-4, 10,000 warm-up steps, batch 64, gradient clip 0.25, reward scale 1000.
//! Unknown keys, wrong types and out-of-range values are rejected with the file,
//! the full dotted key and what was expected (see [`ConfigError`]). `configs/README.md`
//! lists every key.

mod error;
mod load;
pub(crate) mod locate;
mod seed;
mod validate;

use std::path::{Path, PathBuf};

use flowrl_agents::named::by_name;
use serde::{Deserialize, Serialize};

pub use error::{ConfigError, KeySource, Problem};
pub use flowrl_agents::acting::ContextMode;
pub use flowrl_agents::agent::AgentKind;
pub use load::Override;

/// Names of the behaviour tiers a dataset can be collected at (the names
/// `flowrl_envs::Tier` parses).
pub const TIERS: [&str; 6] = [
    "random",
    "medium",
    "expert",
    "medium-expert",
    "medium-replay",
    "full-replay",
];

/// Episodes collected when `dataset.episodes` is absent.
pub const DEFAULT_COLLECT_EPISODES: usize = 1000;

/// A whole experiment: seed, dataset, agent, training and evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Seed of the training run: parameter initialisation, batch sampling, dropout
    /// (above `i64::MAX`, written as a string: TOML integers are `i64`).
    #[serde(with = "seed")]
    pub seed: u64,
    /// Where the trajectories come from.
    pub dataset: DatasetConfig,
    /// The model.
    pub agent: AgentConfig,
    /// The optimisation.
    pub train: TrainConfig,
    /// The evaluation rollouts.
    pub eval: EvalConfig,
}

/// The dataset: either a native dataset file (`path`) or a collection to run before
/// training (`env`, `tier`, `episodes`, `seed`). Exactly one of `path` and `env` is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatasetConfig {
    /// A native dataset file (relative paths are relative to the working folder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Environment id to collect from (e.g. `Pendulum-v1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Behaviour tier of the collection, one of [`TIERS`]; required with `env`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Episodes to collect; [`DEFAULT_COLLECT_EPISODES`] when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub episodes: Option<usize>,
    /// Seed of the collection; 0 when absent.
    #[serde(skip_serializing_if = "Option::is_none", with = "seed::option")]
    pub seed: Option<u64>,
}

/// Where a run's trajectories come from, resolved from a [`DatasetConfig`].
#[derive(Clone, Debug, PartialEq)]
pub enum DatasetSource {
    /// Load a native dataset file.
    File(PathBuf),
    /// Collect episodes before training.
    Collect {
        /// Environment id.
        env: String,
        /// Behaviour tier name (one of [`TIERS`]).
        tier: String,
        /// Number of episodes.
        episodes: usize,
        /// Collection seed.
        seed: u64,
    },
}

/// The model's sizes and regularisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Policy kind, written by name (`decision-flowformer`, `decision-transformer`,
    /// `mlp-bc`).
    #[serde(with = "by_name")]
    pub kind: AgentKind,
    /// Embedding width (model dimension).
    pub width: usize,
    /// Number of backbone blocks.
    pub layers: usize,
    /// Attention heads; must divide `width`.
    pub heads: usize,
    /// Dropout probability, in [0, 1).
    pub dropout: f64,
    /// K: timesteps per training window (3K tokens).
    pub context: usize,
    /// Training context: windows of `context` steps or whole episodes (`window`,
    /// `episode`).
    pub context_mode: ContextMode,
    /// Size of the timestep embedding table; 0 takes the dataset's longest episode.
    pub max_episode_length: usize,
    /// Clamp bound of the conserved source in Flow-Attention (10 in the RL variant).
    pub flow_clamp: f64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            kind: AgentKind::default(),
            width: 128,
            layers: 3,
            heads: 1,
            dropout: 0.1,
            context: 20,
            context_mode: ContextMode::default(),
            max_episode_length: 0,
            flow_clamp: 10.0,
        }
    }
}

/// The optimisation: AdamW with linear warm-up, gradient clipping and returns-to-go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Gradient steps.
    pub steps: usize,
    /// Windows per batch.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// AdamW beta1 and beta2, each in [0, 1).
    pub adam_betas: [f64; 2],
    /// AdamW epsilon.
    pub adam_eps: f64,
    /// Steps of linear learning-rate warm-up from 0 to `lr`.
    pub warmup_steps: usize,
    /// Global gradient-norm clip; 0 disables clipping.
    pub grad_clip: f64,
    /// Returns-to-go are divided by this.
    pub reward_scale: f64,
    /// Discount of the returns-to-go, in (0, 1].
    pub gamma: f64,
    /// Move every episode's return to its last step (the delayed-reward setting).
    pub delayed_reward: bool,
    /// Steps between logged training scalars.
    pub log_every: usize,
    /// Steps between checkpoints; 0 saves only the final one.
    pub checkpoint_every: usize,
    /// Warm start: a run folder (its newest checkpoint) or one checkpoint folder
    /// (`<run>/checkpoints/step-<N>`) whose parameters initialise this run's agent
    /// instead of the random initialisation. Only parameters are copied: the optimiser,
    /// the step count (0), the random streams and the preprocessing are this run's own.
    /// A timestep table of another size is stretched over the new one (see
    /// [`crate::train::warm_start`]). Relative paths are relative to the working folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 100_000,
            batch: 64,
            lr: 1e-4,
            weight_decay: 1e-4,
            adam_betas: [0.9, 0.999],
            adam_eps: 1e-8,
            warmup_steps: 10_000,
            grad_clip: 0.25,
            reward_scale: 1000.0,
            gamma: 1.0,
            delayed_reward: false,
            log_every: 100,
            checkpoint_every: 10_000,
            init_from: None,
        }
    }
}

/// The evaluation schedule and rollouts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Environment id; absent means the dataset's environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Steps between evaluations; 0 evaluates only after training.
    pub every: usize,
    /// Episodes per target return; 0 disables evaluation.
    pub episodes: usize,
    /// Target returns (unscaled) to condition on; empty means the dataset's best
    /// episode return.
    pub targets: Vec<f64>,
    /// Rollout context; absent means `agent.context_mode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_mode: Option<ContextMode>,
    /// Seed of the evaluation episodes.
    #[serde(with = "seed")]
    pub seed: u64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            env: None,
            every: 10_000,
            episodes: 10,
            targets: Vec::new(),
            context_mode: None,
            seed: 1_000_000,
        }
    }
}

impl Config {
    /// Reads, overrides and validates the config file at `path`. Each override is a
    /// `--set` argument `key.path=value` (see [`Override`]).
    pub fn load<S: AsRef<str>>(path: &Path, overrides: &[S]) -> Result<Self, ConfigError> {
        let overrides = overrides
            .iter()
            .map(|s| s.as_ref().parse())
            .collect::<Result<Vec<Override>, _>>()?;
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        load::parse(&text, &path.display().to_string(), &overrides)
    }

    /// Parses and validates config text; `origin` names it in errors (a file name).
    pub fn from_toml_str(
        text: &str,
        origin: &str,
        overrides: &[Override],
    ) -> Result<Self, ConfigError> {
        load::parse(text, origin, overrides)
    }

    /// The config as TOML that [`Config::from_toml_str`] reads back to an equal config.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Serialize(e.to_string()))
    }

    /// Writes the config as TOML to `path` atomically (e.g. into a run folder).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        crate::atomic::write_bytes_atomic(path, self.to_toml_string()?.as_bytes())
    }

    /// Checks every value's range and the relations between values; the error lists
    /// every problem found, each naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                origin: "config".into(),
                problems,
            })
        }
    }

    /// The dataset to use, or the problems of the `[dataset]` section.
    pub fn dataset_source(&self) -> Result<DatasetSource, ConfigError> {
        let mut problems = Vec::new();
        let source = self.dataset.resolve(&mut problems);
        match source {
            Some(source) if problems.is_empty() => Ok(source),
            _ => Err(ConfigError::Invalid {
                origin: "config".into(),
                problems,
            }),
        }
    }

    /// The rollout context mode: `eval.context_mode`, else `agent.context_mode`.
    pub fn eval_context_mode(&self) -> ContextMode {
        self.eval.context_mode.unwrap_or(self.agent.context_mode)
    }

    fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        self.dataset.resolve(&mut p);
        self.agent.check(&mut p);
        self.train.check(&mut p);
        self.eval.check(&mut p);
        p
    }
}

#[cfg(test)]
mod tests;
