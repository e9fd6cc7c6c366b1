//! Evaluation reports: per target return, the mean and standard deviation of the
//! return, the normalised score (when reference returns exist), the episode length and
//! the success rate (for tasks that define success); as a terminal table and as JSON.

use serde::{Deserialize, Serialize};

use super::rollout::EpisodeOutcome;

/// `(tag, value)` pairs for TensorBoard.
pub type Scalars = Vec<(String, f64)>;

/// Random and expert reference returns of an environment.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct References {
    /// Mean return of the uniform random policy.
    pub random: f64,
    /// Mean return of the expert.
    pub expert: f64,
}

impl References {
    /// The reference returns of `env_id`, if recorded.
    pub fn of(env_id: &str) -> Option<Self> {
        flowrl_envs::reference_returns(env_id).map(|r| Self {
            random: r.random,
            expert: r.expert,
        })
    }

    /// `100 (R - R_random) / (R_expert - R_random)`.
    pub fn normalised(&self, ret: f64) -> f64 {
        100.0 * (ret - self.random) / (self.expert - self.random)
    }
}

/// Mean and (population) standard deviation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    /// Mean.
    pub mean: f64,
    /// Standard deviation (divisor n).
    pub std: f64,
}

impl MeanStd {
    /// Of `values` (0 ± 0 for none).
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self {
                mean: 0.0,
                std: 0.0,
            };
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        Self {
            mean,
            std: var.sqrt(),
        }
    }
}

/// The results of one target return.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetResult {
    /// The target return (unscaled).
    pub target: f64,
    /// Episodes run.
    pub episodes: usize,
    /// Episode return.
    pub ret: MeanStd,
    /// Normalised score, when the environment has reference returns.
    pub normalised: Option<MeanStd>,
    /// Episode length.
    pub length: MeanStd,
    /// Fraction of episodes solved, for tasks that define success.
    pub success_rate: Option<f64>,
    /// Every episode's return, in episode order.
    pub returns: Vec<f64>,
}

impl TargetResult {
    /// Summarises the outcomes of the episodes conditioned on `target`.
    pub fn of(target: f64, outcomes: &[EpisodeOutcome], refs: Option<References>) -> Self {
        let returns: Vec<f64> = outcomes.iter().map(|o| o.ret).collect();
        let lengths: Vec<f64> = outcomes.iter().map(|o| o.length as f64).collect();
        let flags: Vec<bool> = outcomes.iter().filter_map(|o| o.success).collect();
        let success_rate = (!flags.is_empty())
            .then(|| flags.iter().filter(|&&s| s).count() as f64 / outcomes.len() as f64);
        Self {
            target,
            episodes: outcomes.len(),
            ret: MeanStd::of(&returns),
            normalised: refs.map(|r| {
                MeanStd::of(&returns.iter().map(|&x| r.normalised(x)).collect::<Vec<_>>())
            }),
            length: MeanStd::of(&lengths),
            success_rate,
            returns,
        }
    }
}

/// A whole evaluation: what was run and the results per target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Environment id.
    pub env_id: String,
    /// Agent kind (`decision-flowformer`, ...).
    pub agent: String,
    /// Context mode (`window` or `episode`).
    pub context: String,
    /// How the context mode runs for this agent.
    pub context_note: String,
    /// Evaluation seed.
    pub seed: u64,
    /// Training step of the evaluated checkpoint, when known.
    pub checkpoint_step: Option<u64>,
    /// Reward scale the targets were divided by.
    pub reward_scale: f64,
    /// Discrete action choice: `greedy` or `temperature T`.
    pub action_choice: String,
    /// Reference returns used for the normalised scores.
    pub references: Option<References>,
    /// One entry per target, in the order given.
    pub targets: Vec<TargetResult>,
}

impl EvalReport {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// The report as a fixed-width terminal table with a header line.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} on {} | context {} ({}) | seed {}{}\n",
            self.agent,
            self.env_id,
            self.context,
            self.context_note,
            self.seed,
            self.checkpoint_step
                .map(|s| format!(" | checkpoint step {s}"))
                .unwrap_or_default()
        );
        out.push_str(&format!(
            "{:>12} {:>9} {:>22} {:>18} {:>14} {:>9}\n",
            "target", "episodes", "return (mean ± std)", "normalised", "length", "success"
        ));
        for t in &self.targets {
            out.push_str(&format!(
                "{:>12.2} {:>9} {:>22} {:>18} {:>14} {:>9}\n",
                t.target,
                t.episodes,
                format!("{:.2} ± {:.2}", t.ret.mean, t.ret.std),
                t.normalised
                    .map(|n| format!("{:.1} ± {:.1}", n.mean, n.std))
                    .unwrap_or_else(|| "-".into()),
                format!("{:.1} ± {:.1}", t.length.mean, t.length.std),
                t.success_rate
                    .map(|s| format!("{:.1}%", 100.0 * s))
                    .unwrap_or_else(|| "-".into()),
            ));
        }
        out
    }

    /// Scalars for TensorBoard with the target in the tag, e.g.
    /// `return_mean/target_-150` (the trainer logs them under `eval/`).
    pub fn scalars(&self) -> Scalars {
        let mut out = Vec::new();
        for t in &self.targets {
            let tag = target_tag(t.target);
            out.push((format!("return_mean/{tag}"), t.ret.mean));
            out.push((format!("return_std/{tag}"), t.ret.std));
            out.push((format!("length_mean/{tag}"), t.length.mean));
            if let Some(n) = t.normalised {
                out.push((format!("normalised_score/{tag}"), n.mean));
            }
            if let Some(s) = t.success_rate {
                out.push((format!("success_rate/{tag}"), s));
            }
        }
        out
    }
}

/// `target_<value>` with the value printed compactly (`-150`, `0.5`).
pub fn target_tag(target: f64) -> String {
    format!("target_{target}")
}
