//! The episode-structured dataset held in memory: flat per-step arrays plus episode
//! offsets, with the metadata that says what it is and how it was made.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::error::{check_finite, Problem};
use super::space::Space;

/// Actions of every step: continuous vectors (row-major `[N, dim]`) or discrete indices.
#[derive(Clone, Debug, PartialEq)]
pub enum Actions {
    /// `values.len() == N * dim`.
    Continuous {
        /// Action dimension.
        dim: usize,
        /// Row-major `[N, dim]` values.
        values: Vec<f32>,
    },
    /// One index per step, each below the action space's `n`.
    Discrete {
        /// `[N]` indices.
        values: Vec<usize>,
    },
}

impl Actions {
    /// Number of steps the actions cover.
    pub fn steps(&self) -> usize {
        match self {
            Actions::Continuous { dim, values } => values.len().checked_div(*dim).unwrap_or(0),
            Actions::Discrete { values } => values.len(),
        }
    }

    /// Width of one action in a batch: `dim` for continuous actions, 1 for discrete.
    pub fn width(&self) -> usize {
        match self {
            Actions::Continuous { dim, .. } => *dim,
            Actions::Discrete { .. } => 1,
        }
    }
}

/// Returns of a uniform-random and an expert policy, for D4RL-style normalised scores.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferenceReturns {
    /// Mean return of a uniform-random policy.
    pub random: f64,
    /// Mean return of an expert policy.
    pub expert: f64,
}

impl ReferenceReturns {
    /// `100 * (ret - random) / (expert - random)`.
    pub fn normalised(&self, ret: f64) -> f64 {
        100.0 * (ret - self.random) / (self.expert - self.random)
    }
}

/// How a dataset was made.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// "collect", "d4rl", "minari", or another tool's name.
    pub source: String,
    /// The behaviour policy that acted, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behaviour_policy: Option<String>,
    /// The behaviour tier ("medium", "expert", ...), when collected by flowrl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The collection seed, when collected by flowrl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The number of episodes asked for when collecting, or found when importing.
    pub episodes: usize,
    /// The file or folder a dataset was imported from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// For a dataset collected from a behaviour set (MuJoCo locomotion tiers): the set's
    /// snapshots and which policy made each episode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behaviour_set: Option<BehaviourSetProvenance>,
}

/// Where the episodes of a dataset collected from a behaviour set come from (see
/// `flowrl::behaviour::set`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BehaviourSetProvenance {
    /// The set's folder.
    pub folder: String,
    /// Name of the medium snapshot in the training run it was selected from.
    pub medium_snapshot: String,
    /// Evaluated return (no action noise) of the medium snapshot, from its metadata.
    pub medium_return: f64,
    /// ARS iterations the medium snapshot had taken.
    pub medium_iteration: u64,
    /// Name of the expert snapshot in the training run it was selected from.
    pub expert_snapshot: String,
    /// Evaluated return (no action noise) of the expert snapshot, from its metadata.
    pub expert_return: f64,
    /// ARS iterations the expert snapshot had taken.
    pub expert_iteration: u64,
    /// Standard deviation of the Gaussian action noise added to the snapshot policies
    /// (`None` for the replay tiers, which are the stored rollouts as they were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_noise: Option<f64>,
    /// The policy of every episode, in order: `medium`, `expert`, or `iter-NNNNNN` (a
    /// training rollout of ARS iteration NNNNNN, in the order of its rollouts file).
    pub episode_policies: Vec<String>,
}

/// What a dataset is: environment, spaces, provenance and reference returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    /// Environment id, e.g. "Pendulum-v1" or "hopper-medium-v2".
    pub env_id: String,
    /// Observation space (a `Box`; observations are flat vectors).
    pub observation_space: Space,
    /// Action space: `Box` for continuous actions, `Discrete` for indices.
    pub action_space: Space,
    /// How the data was made.
    pub provenance: Provenance,
    /// Random and expert returns, when known.
    pub reference_returns: Option<ReferenceReturns>,
}

/// The arrays and metadata of a dataset before validation.
#[derive(Clone, Debug)]
pub struct DatasetParts {
    /// Metadata.
    pub meta: Metadata,
    /// Row-major `[N, obs_dim]` observations; `obs_dim` is the observation space's size.
    pub observations: Vec<f32>,
    /// `[N]` actions.
    pub actions: Actions,
    /// `[N]` rewards.
    pub rewards: Vec<f32>,
    /// `[N]`: true on the last step of an episode that ended in a terminal state.
    pub terminated: Vec<bool>,
    /// `[N]`: true on the last step of an episode cut short (time limit, end of data).
    pub truncated: Vec<bool>,
    /// `[E + 1]`: episode `e` covers steps `offsets[e]..offsets[e + 1]`.
    pub episode_offsets: Vec<usize>,
}

/// A validated, episode-structured dataset.
///
/// Invariants (checked by [`Dataset::new`]): at least one episode, every episode at
/// least one step; all arrays agree on the number of steps `N`; offsets start at 0,
/// increase and end at `N`; observations, actions and rewards are finite; the last
/// step of each episode is flagged either terminated or truncated (never both) and no
/// other step is flagged; the spaces match the arrays (observation box size, action
/// box size or discrete indices below `n`).
#[derive(Clone, Debug)]
pub struct Dataset {
    parts: DatasetParts,
    obs_dim: usize,
}

impl Dataset {
    /// Validates the parts and wraps them; the error names the array and the problem.
    pub fn new(parts: DatasetParts) -> Result<Self, Problem> {
        let obs_dim = validate(&parts)?;
        Ok(Self { parts, obs_dim })
    }

    /// Gives the parts back (e.g. to edit and re-validate).
    pub fn into_parts(self) -> DatasetParts {
        self.parts
    }

    /// Metadata.
    pub fn meta(&self) -> &Metadata {
        &self.parts.meta
    }

    /// Number of steps (transitions) `N`.
    pub fn len(&self) -> usize {
        self.parts.rewards.len()
    }

    /// Always false: a valid dataset has at least one step.
    pub fn is_empty(&self) -> bool {
        self.parts.rewards.is_empty()
    }

    /// Number of episodes `E`.
    pub fn num_episodes(&self) -> usize {
        self.parts.episode_offsets.len() - 1
    }

    /// Observation dimension.
    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    /// Row-major `[N, obs_dim]` observations.
    pub fn observations(&self) -> &[f32] {
        &self.parts.observations
    }

    /// The observation of step `i`.
    pub fn observation(&self, i: usize) -> &[f32] {
        &self.parts.observations[i * self.obs_dim..(i + 1) * self.obs_dim]
    }

    /// Actions of all steps.
    pub fn actions(&self) -> &Actions {
        &self.parts.actions
    }

    /// `[N]` rewards.
    pub fn rewards(&self) -> &[f32] {
        &self.parts.rewards
    }

    /// `[N]` terminated flags.
    pub fn terminated(&self) -> &[bool] {
        &self.parts.terminated
    }

    /// `[N]` truncated flags.
    pub fn truncated(&self) -> &[bool] {
        &self.parts.truncated
    }

    /// `[E + 1]` episode offsets.
    pub fn episode_offsets(&self) -> &[usize] {
        &self.parts.episode_offsets
    }

    /// Steps of episode `e`.
    pub fn episode(&self, e: usize) -> Range<usize> {
        self.parts.episode_offsets[e]..self.parts.episode_offsets[e + 1]
    }

    /// Length of every episode, in order.
    pub fn episode_lengths(&self) -> impl Iterator<Item = usize> + '_ {
        self.parts.episode_offsets.windows(2).map(|w| w[1] - w[0])
    }

    /// Length of the longest episode.
    pub fn max_episode_len(&self) -> usize {
        self.episode_lengths().max().unwrap_or(0)
    }

    /// Undiscounted return of every episode (summed in f64).
    pub fn episode_returns(&self) -> Vec<f64> {
        (0..self.num_episodes())
            .map(|e| {
                self.parts.rewards[self.episode(e)]
                    .iter()
                    .map(|&r| f64::from(r))
                    .sum()
            })
            .collect()
    }

    /// Whether episode `e` ended in a terminal state (else it was truncated).
    pub fn episode_terminated(&self, e: usize) -> bool {
        self.parts.terminated[self.parts.episode_offsets[e + 1] - 1]
    }
}

/// How an episode ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// A terminal state of the environment.
    Terminated,
    /// Cut short: time limit, or the data ran out.
    Truncated,
}

/// Accumulates steps episode by episode and produces a validated [`Dataset`].
#[derive(Clone, Debug)]
pub struct DatasetBuilder {
    obs_dim: usize,
    observations: Vec<f32>,
    actions: Actions,
    rewards: Vec<f32>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    episode_offsets: Vec<usize>,
    mismatch: Option<&'static str>,
}

impl DatasetBuilder {
    /// An empty builder for observations of `obs_dim` and continuous actions of `act_dim`
    /// (`discrete: true` for discrete actions, pushed with [`push_discrete`](Self::push_discrete)).
    pub fn new(obs_dim: usize, act_dim: usize, discrete: bool) -> Self {
        let actions = if discrete {
            Actions::Discrete { values: Vec::new() }
        } else {
            Actions::Continuous {
                dim: act_dim,
                values: Vec::new(),
            }
        };
        Self {
            obs_dim,
            observations: Vec::new(),
            actions,
            rewards: Vec::new(),
            terminated: Vec::new(),
            truncated: Vec::new(),
            episode_offsets: vec![0],
            mismatch: None,
        }
    }

    /// Number of steps pushed so far.
    pub fn len(&self) -> usize {
        self.rewards.len()
    }

    /// True when no step was pushed.
    pub fn is_empty(&self) -> bool {
        self.rewards.is_empty()
    }

    /// Number of finished episodes.
    pub fn episodes(&self) -> usize {
        self.episode_offsets.len() - 1
    }

    /// Steps pushed since the last finished episode.
    pub fn open_steps(&self) -> usize {
        self.len() - self.episode_offsets[self.episode_offsets.len() - 1]
    }

    /// Appends one step with a continuous action. Wrong sizes, or a continuous action
    /// pushed into a discrete builder, are reported by [`build`](Self::build).
    pub fn push_continuous(&mut self, obs: &[f32], action: &[f32], reward: f32) {
        self.observations.extend_from_slice(obs);
        match &mut self.actions {
            Actions::Continuous { values, .. } => values.extend_from_slice(action),
            Actions::Discrete { .. } => self.mismatch = Some("a continuous action"),
        }
        self.push_reward(reward);
    }

    /// Appends one step with a discrete action (a discrete action pushed into a
    /// continuous builder is reported by [`build`](Self::build)).
    pub fn push_discrete(&mut self, obs: &[f32], action: usize, reward: f32) {
        self.observations.extend_from_slice(obs);
        match &mut self.actions {
            Actions::Continuous { .. } => self.mismatch = Some("a discrete action"),
            Actions::Discrete { values } => values.push(action),
        }
        self.push_reward(reward);
    }

    fn push_reward(&mut self, reward: f32) {
        self.rewards.push(reward);
        self.terminated.push(false);
        self.truncated.push(false);
    }

    /// Closes the open episode (if it has steps) with the given ending.
    pub fn end_episode(&mut self, ending: Ending) {
        if self.open_steps() == 0 {
            return;
        }
        let last = self.len() - 1;
        match ending {
            Ending::Terminated => self.terminated[last] = true,
            Ending::Truncated => self.truncated[last] = true,
        }
        self.episode_offsets.push(self.len());
    }

    /// Drops the steps of the open episode.
    pub fn discard_open_episode(&mut self) {
        let keep = self.episode_offsets[self.episode_offsets.len() - 1];
        self.observations.truncate(keep * self.obs_dim);
        match &mut self.actions {
            Actions::Continuous { dim, values } => values.truncate(keep * *dim),
            Actions::Discrete { values } => values.truncate(keep),
        }
        self.rewards.truncate(keep);
        self.terminated.truncate(keep);
        self.truncated.truncate(keep);
    }

    /// Validates and builds the dataset (an open episode must be ended or discarded first).
    pub fn build(self, meta: Metadata) -> Result<Dataset, Problem> {
        if let Some(found) = self.mismatch {
            return Err(Problem::BadArray {
                name: "actions".into(),
                expected: format!("actions of one kind ({})", kind(&self.actions)),
                found: found.into(),
            });
        }
        if self.open_steps() != 0 {
            return Err(Problem::BadEpisode {
                episode: self.episode_offsets.len() - 1,
                detail: format!(
                    "{} steps were never closed into an episode",
                    self.open_steps()
                ),
            });
        }
        Dataset::new(DatasetParts {
            meta,
            observations: self.observations,
            actions: self.actions,
            rewards: self.rewards,
            terminated: self.terminated,
            truncated: self.truncated,
            episode_offsets: self.episode_offsets,
        })
    }
}

fn kind(actions: &Actions) -> &'static str {
    match actions {
        Actions::Continuous { .. } => "continuous",
        Actions::Discrete { .. } => "discrete",
    }
}

fn length_error(name: &str, expected: usize, found: usize, what: &str) -> Problem {
    Problem::BadArray {
        name: name.into(),
        expected: format!("{expected} {what}"),
        found: format!("{found}"),
    }
}

fn meta_error(key: &str, detail: impl Into<String>) -> Problem {
    Problem::BadMetadata {
        key: key.into(),
        detail: detail.into(),
    }
}

/// Checks every invariant of [`Dataset`]; returns the observation dimension.
fn validate(p: &DatasetParts) -> Result<usize, Problem> {
    let n = p.rewards.len();
    if n == 0 {
        return Err(Problem::EmptyDataset(
            "no steps (`rewards` has length 0)".into(),
        ));
    }
    if p.episode_offsets.len() < 2 {
        return Err(Problem::EmptyDataset(format!(
            "no episodes (`episode_offsets` has {} entries, needs at least 2)",
            p.episode_offsets.len()
        )));
    }
    p.meta
        .observation_space
        .check()
        .map_err(|e| meta_error("observation_space", e))?;
    p.meta
        .action_space
        .check()
        .map_err(|e| meta_error("action_space", e))?;
    let obs_dim = match &p.meta.observation_space {
        Space::Box { low, .. } => low.len(),
        Space::Discrete { .. } => {
            return Err(meta_error(
                "observation_space",
                "a Discrete observation space is not supported (observations are f32 vectors)",
            ))
        }
    };
    if p.observations.len() != n * obs_dim {
        return Err(length_error(
            "observations",
            n * obs_dim,
            p.observations.len(),
            &format!("values ({n} steps x {obs_dim} from the observation space)"),
        ));
    }
    match (&p.actions, &p.meta.action_space) {
        (Actions::Continuous { dim, values }, Space::Box { low, .. }) => {
            if *dim != low.len() {
                return Err(meta_error(
                    "action_space",
                    format!("Box of {} dimensions, but actions have {dim}", low.len()),
                ));
            }
            if values.len() != n * dim {
                return Err(length_error(
                    "actions",
                    n * dim,
                    values.len(),
                    &format!("values ({n} steps x {dim})"),
                ));
            }
        }
        (Actions::Discrete { values }, Space::Discrete { n: choices }) => {
            if values.len() != n {
                return Err(length_error("actions", n, values.len(), "steps"));
            }
            if let Some(i) = values.iter().position(|&a| a >= *choices) {
                return Err(Problem::BadArray {
                    name: "actions".into(),
                    expected: format!("indices below {choices} (Discrete({choices}))"),
                    found: format!("{} at step {i}", values[i]),
                });
            }
        }
        (Actions::Continuous { .. }, space) => {
            return Err(meta_error(
                "action_space",
                format!("{} but the actions are continuous", space.describe()),
            ))
        }
        (Actions::Discrete { .. }, space) => {
            return Err(meta_error(
                "action_space",
                format!("{} but the actions are discrete", space.describe()),
            ))
        }
    }
    if p.terminated.len() != n {
        return Err(length_error("terminated", n, p.terminated.len(), "steps"));
    }
    if p.truncated.len() != n {
        return Err(length_error("truncated", n, p.truncated.len(), "steps"));
    }
    validate_offsets(&p.episode_offsets, n)?;
    check_finite("observations", &p.observations)?;
    if let Actions::Continuous { values, dim } = &p.actions {
        check_finite("actions", values)?;
        if let Space::Box { low, high } = &p.meta.action_space {
            check_bounds(values, *dim, low, high)?;
        }
    }
    check_finite("rewards", &p.rewards)?;
    validate_flags(p)?;
    if let Some(r) = &p.meta.reference_returns {
        if !(r.random.is_finite() && r.expert.is_finite()) || r.random == r.expert {
            return Err(meta_error(
                "reference_returns",
                format!(
                    "random {} and expert {} must be finite and different",
                    r.random, r.expert
                ),
            ));
        }
    }
    Ok(obs_dim)
}

/// Checks that every action lies within the action space's box; the error gives the
/// value furthest outside it, its step and dimension, and the bound it breaks.
fn check_bounds(values: &[f32], dim: usize, low: &[f32], high: &[f32]) -> Result<(), Problem> {
    let mut worst: Option<(f32, usize)> = None;
    for (i, &v) in values.iter().enumerate() {
        let j = i % dim;
        let excess = (low[j] - v).max(v - high[j]);
        if excess > 0.0 && worst.is_none_or(|(e, _)| excess > e) {
            worst = Some((excess, i));
        }
    }
    let Some((_, i)) = worst else {
        return Ok(());
    };
    let (step, j, v) = (i / dim, i % dim, values[i]);
    let (side, bound) = if v < low[j] {
        ("low", low[j])
    } else {
        ("high", high[j])
    };
    Err(Problem::BadArray {
        name: "actions".into(),
        expected: format!("values within the bounds of `action_space` ({side}[{j}] = {bound})"),
        found: format!(
            "{v:e} at step {step}, dimension {j} (the value furthest outside the bounds)"
        ),
    })
}

fn validate_offsets(offsets: &[usize], n: usize) -> Result<(), Problem> {
    if offsets[0] != 0 {
        return Err(Problem::BadArray {
            name: "episode_offsets".into(),
            expected: "a first offset of 0".into(),
            found: format!("{}", offsets[0]),
        });
    }
    if let Some(e) = offsets.windows(2).position(|w| w[1] <= w[0]) {
        return Err(Problem::BadArray {
            name: "episode_offsets".into(),
            expected: "strictly increasing offsets (every episode has at least one step)".into(),
            found: format!(
                "{} then {} at entries {e} and {}",
                offsets[e],
                offsets[e + 1],
                e + 1
            ),
        });
    }
    let last = offsets[offsets.len() - 1];
    if last != n {
        return Err(Problem::BadArray {
            name: "episode_offsets".into(),
            expected: format!("a last offset equal to the number of steps ({n})"),
            found: format!("{last}"),
        });
    }
    Ok(())
}

fn validate_flags(p: &DatasetParts) -> Result<(), Problem> {
    for (e, w) in p.episode_offsets.windows(2).enumerate() {
        let last = w[1] - 1;
        if let Some(i) = (w[0]..last).find(|&i| p.terminated[i] || p.truncated[i]) {
            return Err(Problem::BadEpisode {
                episode: e,
                detail: format!(
                    "step {i} is flagged {} but is not the episode's last step ({last})",
                    if p.terminated[i] {
                        "terminated"
                    } else {
                        "truncated"
                    }
                ),
            });
        }
        match (p.terminated[last], p.truncated[last]) {
            (true, false) | (false, true) => {}
            (true, true) => {
                return Err(Problem::BadEpisode {
                    episode: e,
                    detail: format!("last step {last} is flagged both terminated and truncated"),
                })
            }
            (false, false) => {
                return Err(Problem::BadEpisode {
                    episode: e,
                    detail: format!("last step {last} is flagged neither terminated nor truncated"),
                })
            }
        }
    }
    Ok(())
}
