//! Dataset statistics: summaries for `flowrl dataset info`, and the per-dataset
//! normalisation the trainer and the evaluator share.

use serde::{Deserialize, Serialize};

use super::dataset::{Actions, Dataset};
use super::space::Space;

/// Added to every observation standard deviation before dividing by it.
pub const STD_EPS: f32 = 1e-6;

/// Mean, standard deviation (population), minimum and maximum of a set of values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Mean.
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Summary {
    /// Summarises `values` (two passes, f64); all zeros for an empty set.
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self {
                mean: 0.0,
                std: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        Self {
            mean,
            std: var.sqrt(),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// Per-column summaries of a row-major `[rows, dim]` f32 matrix.
pub fn column_summaries(values: &[f32], dim: usize) -> Vec<Summary> {
    let rows = values.len().checked_div(dim).unwrap_or(0);
    if rows == 0 {
        return vec![Summary::of(&[]); dim];
    }
    let mut sum = vec![0.0f64; dim];
    let mut min = vec![f64::INFINITY; dim];
    let mut max = vec![f64::NEG_INFINITY; dim];
    for row in values.chunks_exact(dim) {
        for (j, &v) in row.iter().enumerate() {
            let v = f64::from(v);
            sum[j] += v;
            min[j] = min[j].min(v);
            max[j] = max[j].max(v);
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / rows as f64).collect();
    let mut sq = vec![0.0f64; dim];
    for row in values.chunks_exact(dim) {
        for (j, &v) in row.iter().enumerate() {
            let d = f64::from(v) - mean[j];
            sq[j] += d * d;
        }
    }
    (0..dim)
        .map(|j| Summary {
            mean: mean[j],
            std: (sq[j] / rows as f64).sqrt(),
            min: min[j],
            max: max[j],
        })
        .collect()
}

/// Action statistics: per dimension for continuous actions, counts for discrete ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStats {
    /// Per-dimension summaries.
    Continuous(Vec<Summary>),
    /// How often each action index was taken.
    Discrete(Vec<usize>),
}

/// Everything `flowrl dataset info` reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Environment id.
    pub env_id: String,
    /// Observation space, e.g. `Box(17)`.
    pub observation_space: String,
    /// Action space, e.g. `Discrete(2)`.
    pub action_space: String,
    /// Provenance source ("collect", "d4rl", "minari").
    pub source: String,
    /// Behaviour policy, when known.
    pub behaviour_policy: Option<String>,
    /// Behaviour tier, when known.
    pub tier: Option<String>,
    /// Collection seed, when known.
    pub seed: Option<u64>,
    /// Number of episodes.
    pub episodes: usize,
    /// Number of steps.
    pub transitions: usize,
    /// Episodes that ended in a terminal state.
    pub terminated_episodes: usize,
    /// Episodes cut short.
    pub truncated_episodes: usize,
    /// Episode lengths.
    pub episode_length: Summary,
    /// Undiscounted episode returns.
    pub episode_return: Summary,
    /// Random and expert reference returns, when known.
    pub reference_returns: Option<(f64, f64)>,
    /// Normalised score of the episode returns, when reference returns are known.
    pub normalised_score: Option<Summary>,
    /// For data collected from a behaviour set: its folder and the evaluated returns
    /// (no action noise) of its medium and expert snapshots, from their metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behaviour_set: Option<BehaviourSetReturns>,
    /// Per-dimension observation statistics.
    pub observations: Vec<Summary>,
    /// Action statistics.
    pub actions: ActionStats,
}

/// Episodes per policy name, in order of first appearance; the training rollouts of
/// every iteration (`iter-NNNNNN`) count as one policy, `training rollouts`.
fn count_policies(names: &[String]) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for name in names {
        let key = if name.starts_with("iter-") {
            "training rollouts"
        } else {
            name.as_str()
        };
        match counts.iter_mut().find(|(k, _)| k == key) {
            Some((_, c)) => *c += 1,
            None => counts.push((key.to_string(), 1)),
        }
    }
    counts
}

/// The snapshots' returns of the behaviour set a dataset was collected from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BehaviourSetReturns {
    /// The set's folder.
    pub folder: String,
    /// Evaluated return of the medium snapshot.
    pub medium_return: f64,
    /// Evaluated return of the expert snapshot.
    pub expert_return: f64,
    /// The expert snapshot's normalised score, when reference returns are known.
    pub expert_normalised: Option<f64>,
    /// Episodes per policy, in order of first appearance (`medium`, `expert`, or
    /// `training rollouts` for every `iter-NNNNNN`).
    pub episodes_by_policy: Vec<(String, usize)>,
}

impl DatasetInfo {
    /// Computes the report of a dataset.
    pub fn of(ds: &Dataset) -> Self {
        let meta = ds.meta();
        let lengths: Vec<f64> = ds.episode_lengths().map(|l| l as f64).collect();
        let returns = ds.episode_returns();
        let terminated = (0..ds.num_episodes())
            .filter(|&e| ds.episode_terminated(e))
            .count();
        let normalised_score = meta.reference_returns.map(|r| {
            let scores: Vec<f64> = returns.iter().map(|&g| r.normalised(g)).collect();
            Summary::of(&scores)
        });
        let actions = match (ds.actions(), &meta.action_space) {
            (Actions::Continuous { dim, values }, _) => {
                ActionStats::Continuous(column_summaries(values, *dim))
            }
            (Actions::Discrete { values }, space) => {
                let n = match space {
                    Space::Discrete { n } => *n,
                    Space::Box { .. } => values.iter().max().map_or(0, |m| m + 1),
                };
                let mut counts = vec![0; n];
                for &a in values {
                    counts[a] += 1;
                }
                ActionStats::Discrete(counts)
            }
        };
        Self {
            env_id: meta.env_id.clone(),
            observation_space: meta.observation_space.describe(),
            action_space: meta.action_space.describe(),
            source: meta.provenance.source.clone(),
            behaviour_policy: meta.provenance.behaviour_policy.clone(),
            tier: meta.provenance.tier.clone(),
            seed: meta.provenance.seed,
            episodes: ds.num_episodes(),
            transitions: ds.len(),
            terminated_episodes: terminated,
            truncated_episodes: ds.num_episodes() - terminated,
            episode_length: Summary::of(&lengths),
            episode_return: Summary::of(&returns),
            reference_returns: meta.reference_returns.map(|r| (r.random, r.expert)),
            normalised_score,
            behaviour_set: meta
                .provenance
                .behaviour_set
                .as_ref()
                .map(|b| BehaviourSetReturns {
                    folder: b.folder.clone(),
                    medium_return: b.medium_return,
                    expert_return: b.expert_return,
                    expert_normalised: meta
                        .reference_returns
                        .map(|r| r.normalised(b.expert_return)),
                    episodes_by_policy: count_policies(&b.episode_policies),
                }),
            observations: column_summaries(ds.observations(), ds.obs_dim()),
            actions,
        }
    }
}

/// Observation normalisation and reward scale of a dataset: what a trained policy
/// needs at evaluation time to see states and returns as it saw them in training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalisation {
    /// Per-dimension observation mean.
    pub obs_mean: Vec<f32>,
    /// Per-dimension observation standard deviation plus [`STD_EPS`].
    pub obs_std: Vec<f32>,
    /// Returns-to-go are divided by this.
    pub reward_scale: f32,
}

impl Normalisation {
    /// Observation mean and `std + 1e-6` of the dataset, with the given reward scale.
    pub fn of(ds: &Dataset, reward_scale: f32) -> Self {
        let cols = column_summaries(ds.observations(), ds.obs_dim());
        Self {
            obs_mean: cols.iter().map(|c| c.mean as f32).collect(),
            obs_std: cols.iter().map(|c| c.std as f32 + STD_EPS).collect(),
            reward_scale,
        }
    }

    /// Writes `(obs - mean) / std` into `out` (same length as `obs`): one observation,
    /// or several back to back.
    pub fn normalise_into(&self, obs: &[f32], out: &mut [f32]) {
        let d = self.obs_mean.len();
        for (o_row, x_row) in out.chunks_exact_mut(d).zip(obs.chunks_exact(d)) {
            for (((o, x), m), s) in o_row
                .iter_mut()
                .zip(x_row)
                .zip(&self.obs_mean)
                .zip(&self.obs_std)
            {
                *o = (x - m) / s;
            }
        }
    }
}
