//! The linear behaviour policy `a = clip(M (s - mu) / sigma, low, high)`.

use flowrl_envs::Action;

use super::snapshot::SnapshotInfo;

/// Writes `clip(weights (obs - mean) / std, low, high)` into `out` (`weights` row-major
/// `[out.len(), obs.len()]`; computed in f64, narrowed to f32 after clipping).
pub(crate) fn linear_action(
    weights: &[f64],
    mean: &[f64],
    std: &[f64],
    (low, high): (f32, f32),
    obs: &[f32],
    out: &mut [f32],
) {
    let dim = obs.len();
    for (a, row) in out.iter_mut().zip(weights.chunks_exact(dim)) {
        let mut sum = 0.0;
        for j in 0..dim {
            sum += row[j] * ((f64::from(obs[j]) - mean[j]) / std[j]);
        }
        *a = sum.clamp(f64::from(low), f64::from(high)) as f32;
    }
}

/// A trained linear policy with its observation normalisation, as saved in a snapshot
/// ([`BehaviourPolicy::save`], [`BehaviourPolicy::load`]).
#[derive(Clone, Debug, PartialEq)]
pub struct BehaviourPolicy {
    pub(crate) weights: Vec<f64>,
    pub(crate) obs_mean: Vec<f64>,
    pub(crate) obs_std: Vec<f64>,
    pub(crate) action_low: f32,
    pub(crate) action_high: f32,
    pub(crate) info: SnapshotInfo,
}

impl BehaviourPolicy {
    /// Observation size.
    pub fn obs_dim(&self) -> usize {
        self.obs_mean.len()
    }

    /// Action size.
    pub fn act_dim(&self) -> usize {
        self.weights.len() / self.obs_dim().max(1)
    }

    /// M, row-major `[act_dim, obs_dim]`.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// mu: the observation mean.
    pub fn obs_mean(&self) -> &[f64] {
        &self.obs_mean
    }

    /// sigma: the observation standard deviation (every value > 0).
    pub fn obs_std(&self) -> &[f64] {
        &self.obs_std
    }

    /// Lower and upper bound of every action value.
    pub fn action_bounds(&self) -> (f32, f32) {
        (self.action_low, self.action_high)
    }

    /// Where the policy comes from (environment, return, iteration, budget, seed).
    pub fn info(&self) -> &SnapshotInfo {
        &self.info
    }

    /// The action in state `obs` (deterministic). Panics when `obs` does not have
    /// [`BehaviourPolicy::obs_dim`] values.
    pub fn act(&self, obs: &[f32]) -> Action {
        assert_eq!(
            obs.len(),
            self.obs_dim(),
            "{} policy: expected an observation of {} values, found {}",
            self.info.env_id,
            self.obs_dim(),
            obs.len()
        );
        let mut out = vec![0.0; self.act_dim()];
        linear_action(
            &self.weights,
            &self.obs_mean,
            &self.obs_std,
            (self.action_low, self.action_high),
            obs,
            &mut out,
        );
        Action::Continuous(out)
    }
}
