//! Hyper-parameters of an ARS run, their per-environment defaults and their checks.

use anyhow::{bail, Context};
use flowrl_envs::ActionSpec;
use serde::{Deserialize, Serialize};

/// Everything that defines an ARS run (saved in its checkpoint; resuming reuses it).
/// The flag of each field is `--<field>` with `-` for `_`, except `env_id` (`--env`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArsConfig {
    /// Environment id (continuous actions).
    pub env_id: String,
    /// Seed of every random stream.
    pub seed: u64,
    /// N: directions per iteration (each rolled out with `+nu` and `-nu`).
    pub directions: usize,
    /// b: directions kept for the update (`1..=N`).
    pub top: usize,
    /// alpha: the step size.
    #[serde(with = "exact_f64")]
    pub step_size: f64,
    /// nu: the scale of the exploration noise.
    #[serde(with = "exact_f64")]
    pub noise: f64,
    /// Subtracted from every reward of a training rollout (the survival bonus).
    #[serde(with = "exact_f64")]
    pub reward_shift: f64,
    /// Longest rollout, in steps (the environment's time limit also ends episodes).
    pub horizon: usize,
    /// Iterations (updates) in total.
    pub iterations: u64,
    /// Evaluate every this many iterations (and at iteration 0 and the last).
    pub eval_every: u64,
    /// Episodes per evaluation.
    pub eval_episodes: usize,
    /// Snapshots are saved at multiples of this return.
    #[serde(with = "exact_f64")]
    pub milestone_step: f64,
    /// Checkpoint every this many iterations (and at the end, and where stopped).
    pub checkpoint_every: u64,
}

impl ArsConfig {
    /// The defaults for `env_id` (documented in [`crate::behaviour`]): the ARS paper's
    /// V2-t settings for Hopper, HalfCheetah and Walker2d, generic ones otherwise.
    pub fn defaults(env_id: &str, seed: u64) -> Self {
        let family = env_id.split('-').next().unwrap_or_default();
        let (directions, top, step_size, noise, reward_shift, iterations) = match family {
            "Hopper" => (8, 4, 0.01, 0.025, 1.0, 1000),
            "HalfCheetah" => (32, 4, 0.02, 0.03, 0.0, 1000),
            "Walker2d" => (40, 30, 0.03, 0.025, 1.0, 1000),
            _ => (8, 4, 0.02, 0.03, 0.0, 100),
        };
        Self {
            env_id: env_id.to_string(),
            seed,
            directions,
            top,
            step_size,
            noise,
            reward_shift,
            horizon: 1000,
            iterations,
            eval_every: 10,
            eval_episodes: 10,
            milestone_step: 250.0,
            checkpoint_every: 10,
        }
    }

    /// Checks every value; errors name the flag, what it accepts and what was found.
    pub fn validate(&self) -> anyhow::Result<()> {
        let at_least_one = [
            ("--directions", self.directions as u64),
            ("--horizon", self.horizon as u64),
            ("--iterations", self.iterations),
            ("--eval-every", self.eval_every),
            ("--eval-episodes", self.eval_episodes as u64),
            ("--checkpoint-every", self.checkpoint_every),
        ];
        for (flag, value) in at_least_one {
            if value == 0 {
                bail!("{flag} must be at least 1, found 0");
            }
        }
        if self.top == 0 || self.top > self.directions {
            bail!(
                "--top must be between 1 and --directions ({}), found {}",
                self.directions,
                self.top
            );
        }
        let positive = [
            ("--step-size", self.step_size),
            ("--noise", self.noise),
            ("--milestone-step", self.milestone_step),
        ];
        for (flag, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                bail!("{flag} must be a finite number above 0, found {value}");
            }
        }
        if !self.reward_shift.is_finite() {
            bail!(
                "--reward-shift must be a finite number, found {}",
                self.reward_shift
            );
        }
        Ok(())
    }

    /// Makes one environment of the run and returns it with its action bounds and
    /// size; fails (naming `--env`) for an unknown id or discrete actions.
    pub(crate) fn make_env(&self) -> anyhow::Result<MadeEnv> {
        let env = flowrl_envs::make(&self.env_id)
            .with_context(|| format!("--env {}: cannot make the environment", self.env_id))?;
        match env.action_spec() {
            ActionSpec::Continuous { dim, low, high } => Ok((env, (low, high), dim)),
            ActionSpec::Discrete { n } => bail!(
                "--env {}: ARS trains a linear policy for continuous actions, found {n} \
                 discrete actions",
                self.env_id
            ),
        }
    }
}

/// An environment of a run with its action bounds `(low, high)` and action size.
pub(crate) type MadeEnv = (Box<dyn flowrl_envs::FlowEnv>, (f32, f32), usize);

/// Serde of f64 values as their shortest exact decimal text (read back bit for bit).
pub(crate) mod exact_f64 {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    /// Writes `value` as a string.
    pub fn serialize<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.to_string())
    }

    /// Reads a string written by [`serialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|_| D::Error::custom(format!("expected a number, found `{text}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_defaults_and_shift() {
        let h = ArsConfig::defaults("Hopper-v5", 0);
        assert_eq!(
            (h.directions, h.top, h.step_size, h.noise),
            (8, 4, 0.01, 0.025)
        );
        assert_eq!(h.reward_shift, 1.0);
        let c = ArsConfig::defaults("HalfCheetah-v4", 0);
        assert_eq!(
            (c.directions, c.top, c.step_size, c.noise),
            (32, 4, 0.02, 0.03)
        );
        assert_eq!(c.reward_shift, 0.0);
        let w = ArsConfig::defaults("Walker2d-v5", 0);
        assert_eq!(
            (w.directions, w.top, w.step_size, w.noise),
            (40, 30, 0.03, 0.025)
        );
        assert_eq!(w.reward_shift, 1.0);
        assert_eq!(ArsConfig::defaults("Pendulum-v1", 0).reward_shift, 0.0);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let mut c = ArsConfig::defaults("Hopper-v5", 0);
        c.top = 9;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("--top") && err.contains("found 9"), "{err}");
        let mut c = ArsConfig::defaults("Hopper-v5", 0);
        c.noise = -1.0;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("--noise") && err.contains("found -1"), "{err}");
        let mut c = ArsConfig::defaults("Hopper-v5", 0);
        c.eval_every = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--eval-every"));
    }
}
