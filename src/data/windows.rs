//! Training windows for the sequence model: returns-to-go, and a seeded sampler that
//! assembles batches of K-step windows into reusable flat buffers.
//!
//! Windows are right-padded (padding masked out of the loss): causal attention never
//! lets a real token see a padded one, while left padding would leak into the prefix
//! sums of Flow-Attention.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::dataset::{Actions, Dataset};
use super::stats::Normalisation;

/// Where the reward sits when computing returns-to-go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RewardMode {
    /// Rewards as recorded.
    #[default]
    Dense,
    /// Every episode's total reward moved to its last step (sparse-reward setting).
    Delayed,
}

/// How windows are placed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum WindowMode {
    /// K-step windows: an episode drawn with probability proportional to its length,
    /// then a uniform start inside it (as the original Decision Transformer).
    #[default]
    Uniform,
    /// Whole episodes: each window starts at an episode's first step (episodes drawn
    /// uniformly); needs K >= the longest episode.
    WholeEpisode,
}

/// Returns-to-go of every step, `R_t = sum_{t' >= t} gamma^(t'-t) r_t'` within its
/// episode, summed backwards in f64 (not yet divided by a reward scale).
pub fn returns_to_go(ds: &Dataset, gamma: f64, mode: RewardMode) -> Vec<f64> {
    let rewards = ds.rewards();
    let mut out = vec![0.0; ds.len()];
    for e in 0..ds.num_episodes() {
        let steps = ds.episode(e);
        let mut acc = 0.0;
        match mode {
            RewardMode::Dense => {
                for t in steps.rev() {
                    acc = f64::from(rewards[t]) + gamma * acc;
                    out[t] = acc;
                }
            }
            RewardMode::Delayed => {
                let total: f64 = rewards[steps.clone()].iter().map(|&r| f64::from(r)).sum();
                let mut g = total;
                for t in steps.rev() {
                    out[t] = g;
                    g *= gamma;
                }
            }
        }
    }
    out
}

/// Settings of the window sampler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowConfig {
    /// Timesteps per window (K).
    pub context: usize,
    /// Windows per batch (B).
    pub batch_size: usize,
    /// Window placement.
    pub mode: WindowMode,
    /// Discount of the returns-to-go (1 = undiscounted).
    pub gamma: f64,
    /// Dense or delayed rewards.
    pub reward_mode: RewardMode,
    /// Returns-to-go are divided by this; default: the largest |return-to-go| of the
    /// dataset (1 if that is 0), so scaled returns-to-go lie in [-1, 1].
    pub reward_scale: Option<f32>,
    /// Size of the model's timestep table; timesteps are clamped to it minus one.
    /// Default: the longest episode of the dataset.
    pub max_episode_len: Option<usize>,
    /// Seed of the sampler's random stream.
    pub seed: u64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            context: 20,
            batch_size: 64,
            mode: WindowMode::Uniform,
            gamma: 1.0,
            reward_mode: RewardMode::Dense,
            reward_scale: None,
            max_episode_len: None,
            seed: 0,
        }
    }
}

/// An invalid sampler setting.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum WindowError {
    /// K = 0.
    #[error("context length K must be at least 1, found 0")]
    ZeroContext,
    /// B = 0.
    #[error("batch size must be at least 1, found 0")]
    ZeroBatch,
    /// gamma outside [0, 1].
    #[error("gamma must be in [0, 1], found {0}")]
    Gamma(f64),
    /// A reward scale that is not a positive finite number.
    #[error("reward scale must be finite and positive, found {0}")]
    RewardScale(f32),
    /// A zero-sized timestep table.
    #[error("maximum episode length must be at least 1, found 0")]
    ZeroMaxEpisodeLen,
    /// Whole-episode windows shorter than an episode.
    #[error(
        "whole-episode windows need K >= the longest episode ({longest} steps), found K = {context}"
    )]
    ContextTooShort {
        /// K.
        context: usize,
        /// Longest episode length.
        longest: usize,
    },
}

/// One batch of windows as flat row-major arrays, reused from batch to batch.
/// Padded positions hold zeros and a mask of 0.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// B.
    pub batch_size: usize,
    /// K.
    pub context: usize,
    /// Observation dimension.
    pub obs_dim: usize,
    /// Continuous action dimension (0 for discrete actions).
    pub act_dim: usize,
    /// `[B, K, obs_dim]` normalised states.
    pub states: Vec<f32>,
    /// `[B, K, act_dim]` continuous actions (empty for discrete actions).
    pub actions: Vec<f32>,
    /// `[B, K]` discrete action indices (empty for continuous actions).
    pub action_indices: Vec<usize>,
    /// `[B, K]` returns-to-go divided by the reward scale.
    pub returns_to_go: Vec<f32>,
    /// `[B, K]` timesteps within the episode, clamped to the maximum episode length - 1.
    pub timesteps: Vec<usize>,
    /// `[B, K]` 1 for real steps, 0 for padding.
    pub mask: Vec<f32>,
    /// `[B]` episode of each window.
    pub episodes: Vec<usize>,
    /// `[B]` dataset step at which each window starts.
    pub starts: Vec<usize>,
}

impl Batch {
    /// Number of real (unpadded) timesteps in the batch.
    pub fn valid_steps(&self) -> usize {
        self.mask.iter().filter(|&&m| m > 0.0).count()
    }
}

/// Draws seeded, reproducible batches of training windows from a dataset.
pub struct Sampler<'a> {
    data: &'a Dataset,
    cfg: WindowConfig,
    norm: Normalisation,
    rtg: Vec<f32>,
    timestep_limit: usize,
    rng: ChaCha8Rng,
}

impl<'a> Sampler<'a> {
    /// Checks the settings and precomputes returns-to-go and normalisation.
    pub fn new(data: &'a Dataset, cfg: WindowConfig) -> Result<Self, WindowError> {
        if cfg.context == 0 {
            return Err(WindowError::ZeroContext);
        }
        if cfg.batch_size == 0 {
            return Err(WindowError::ZeroBatch);
        }
        if !(0.0..=1.0).contains(&cfg.gamma) {
            return Err(WindowError::Gamma(cfg.gamma));
        }
        if cfg.max_episode_len == Some(0) {
            return Err(WindowError::ZeroMaxEpisodeLen);
        }
        let longest = data.max_episode_len();
        if cfg.mode == WindowMode::WholeEpisode && cfg.context < longest {
            return Err(WindowError::ContextTooShort {
                context: cfg.context,
                longest,
            });
        }
        let rtg = returns_to_go(data, cfg.gamma, cfg.reward_mode);
        let scale = match cfg.reward_scale {
            Some(s) if s.is_finite() && s > 0.0 => s,
            Some(s) => return Err(WindowError::RewardScale(s)),
            None => {
                let max = rtg.iter().fold(0.0f64, |m, r| m.max(r.abs()));
                if max > 0.0 {
                    max as f32
                } else {
                    1.0
                }
            }
        };
        let rtg = rtg.iter().map(|&r| (r / f64::from(scale)) as f32).collect();
        Ok(Self {
            data,
            norm: Normalisation::of(data, scale),
            timestep_limit: cfg.max_episode_len.unwrap_or(longest),
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            rtg,
            cfg,
        })
    }

    /// The observation normalisation and reward scale in use (save it with the model).
    pub fn normalisation(&self) -> &Normalisation {
        &self.norm
    }

    /// Scaled returns-to-go of every dataset step.
    pub fn returns_to_go(&self) -> &[f32] {
        &self.rtg
    }

    /// The settings.
    pub fn config(&self) -> &WindowConfig {
        &self.cfg
    }

    /// Timesteps are clamped to this minus one.
    pub fn timestep_limit(&self) -> usize {
        self.timestep_limit
    }

    /// A batch with buffers sized for this sampler.
    pub fn new_batch(&self) -> Batch {
        let (b, k, d) = (self.cfg.batch_size, self.cfg.context, self.data.obs_dim());
        let (act_dim, actions, indices) = match self.data.actions() {
            Actions::Continuous { dim, .. } => (*dim, vec![0.0; b * k * dim], Vec::new()),
            Actions::Discrete { .. } => (0, Vec::new(), vec![0; b * k]),
        };
        Batch {
            batch_size: b,
            context: k,
            obs_dim: d,
            act_dim,
            states: vec![0.0; b * k * d],
            actions,
            action_indices: indices,
            returns_to_go: vec![0.0; b * k],
            timesteps: vec![0; b * k],
            mask: vec![0.0; b * k],
            episodes: vec![0; b],
            starts: vec![0; b],
        }
    }

    /// Fills `batch` (from [`new_batch`](Self::new_batch)) with the next windows.
    pub fn sample(&mut self, batch: &mut Batch) {
        let offsets = self.data.episode_offsets();
        for row in 0..self.cfg.batch_size {
            let (episode, start) = match self.cfg.mode {
                WindowMode::Uniform => {
                    // A uniform step picks its episode in proportion to the length.
                    let step = self.rng.gen_range(0..self.data.len());
                    (offsets.partition_point(|&o| o <= step) - 1, step)
                }
                WindowMode::WholeEpisode => {
                    let e = self.rng.gen_range(0..self.data.num_episodes());
                    (e, offsets[e])
                }
            };
            self.fill(batch, row, episode, start);
        }
    }

    fn fill(&self, batch: &mut Batch, row: usize, episode: usize, start: usize) {
        let (k, d) = (self.cfg.context, self.data.obs_dim());
        let first = self.data.episode_offsets()[episode];
        let end = self.data.episode_offsets()[episode + 1].min(start + k);
        let len = end - start;
        batch.episodes[row] = episode;
        batch.starts[row] = start;
        let at = row * k;
        let states = &mut batch.states[at * d..(at + k) * d];
        let obs = &self.data.observations()[start * d..end * d];
        self.norm.normalise_into(obs, &mut states[..len * d]);
        states[len * d..].fill(0.0);
        match self.data.actions() {
            Actions::Continuous { dim, values } => {
                let out = &mut batch.actions[at * dim..(at + k) * dim];
                out[..len * dim].copy_from_slice(&values[start * dim..end * dim]);
                out[len * dim..].fill(0.0);
            }
            Actions::Discrete { values } => {
                let out = &mut batch.action_indices[at..at + k];
                out[..len].copy_from_slice(&values[start..end]);
                out[len..].fill(0);
            }
        }
        let rtg = &mut batch.returns_to_go[at..at + k];
        rtg[..len].copy_from_slice(&self.rtg[start..end]);
        rtg[len..].fill(0.0);
        let last_timestep = self.timestep_limit - 1;
        let times = &mut batch.timesteps[at..at + k];
        for (j, t) in times[..len].iter_mut().enumerate() {
            *t = (start - first + j).min(last_timestep);
        }
        times[len..].fill(0);
        let mask = &mut batch.mask[at..at + k];
        mask[..len].fill(1.0);
        mask[len..].fill(0.0);
    }
}
