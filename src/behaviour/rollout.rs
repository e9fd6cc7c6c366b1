//! One episode of a linear policy, recorded for the dataset and the normaliser or not.

use anyhow::Context;
use flowrl_envs::{Action, FlowEnv};

use super::normaliser::RunningStats;
use super::policy::linear_action;

/// What every rollout of an iteration shares: the frozen normaliser, the action bounds,
/// the horizon and the reward shift.
pub(crate) struct Setting<'a> {
    /// Observation mean.
    pub mean: &'a [f64],
    /// Observation standard deviation.
    pub std: &'a [f64],
    /// Action bounds.
    pub bounds: (f32, f32),
    /// Longest episode.
    pub horizon: usize,
    /// Subtracted from every reward of the training return.
    pub reward_shift: f64,
}

/// A finished episode.
pub(crate) struct Rollout {
    /// Observations acted on, row-major (empty unless recorded).
    pub observations: Vec<f32>,
    /// Actions taken, row-major (empty unless recorded).
    pub actions: Vec<f32>,
    /// The environment's rewards (empty unless recorded).
    pub rewards: Vec<f32>,
    /// Steps taken.
    pub steps: usize,
    /// Whether the episode ended in a terminal state.
    pub terminated: bool,
    /// Sum of the environment's rewards.
    pub native_return: f64,
    /// Sum of the rewards minus the shift (the training return).
    pub shifted_return: f64,
    /// Statistics of the observations acted on (empty unless recorded).
    pub stats: RunningStats,
}

/// Runs one episode of `weights` from `reset_seed`; `record` keeps the steps and the
/// observation statistics.
pub(crate) fn rollout(
    env: &mut dyn FlowEnv,
    weights: &[f64],
    setting: &Setting<'_>,
    reset_seed: u64,
    record: bool,
) -> anyhow::Result<Rollout> {
    let dim = setting.mean.len();
    let act_dim = weights.len() / dim;
    let mut out = Rollout {
        observations: Vec::new(),
        actions: Vec::new(),
        rewards: Vec::new(),
        steps: 0,
        terminated: false,
        native_return: 0.0,
        shifted_return: 0.0,
        stats: RunningStats::new(if record { dim } else { 0 }),
    };
    let mut obs = env.reset_native(Some(reset_seed));
    let mut action = vec![0.0f32; act_dim];
    while out.steps < setting.horizon {
        linear_action(
            weights,
            setting.mean,
            setting.std,
            setting.bounds,
            &obs,
            &mut action,
        );
        if record {
            out.stats.push(&obs);
            out.observations.extend_from_slice(&obs);
            out.actions.extend_from_slice(&action);
        }
        let step = env
            .try_step(&Action::Continuous(action.clone()))
            .with_context(|| {
                format!(
                    "step {} of the episode from reset seed {reset_seed} (has the policy diverged?)",
                    out.steps
                )
            })?;
        out.steps += 1;
        out.native_return += step.reward;
        out.shifted_return += step.reward - setting.reward_shift;
        if record {
            out.rewards.push(step.reward as f32);
        }
        if step.done() {
            out.terminated = step.terminated;
            break;
        }
        obs = step.obs;
    }
    Ok(out)
}
