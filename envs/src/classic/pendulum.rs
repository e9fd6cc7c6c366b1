//! Pendulum-v1, as in Gymnasium 1.4.

use std::f64::consts::PI;

use rand_chacha::ChaCha8Rng;

use super::{check_state, ClassicControl, StateDtype};
use crate::flow_env::{continuous1, impl_gym_env};
use crate::numpy_rng::Generator;
use crate::policy::degrade;
use crate::{Action, ActionSpec, EnvError, FlowEnv, Obs, Step};

const ID: &str = "Pendulum-v1";
const MAX_SPEED: f64 = 8.0;
const MAX_TORQUE: f32 = 2.0;
const DT: f64 = 0.05;
const G: f64 = 10.0;
const M: f64 = 1.0;
const L: f64 = 1.0;
/// Gymnasium's time limit.
pub(crate) const MAX_STEPS: usize = 200;
/// Probability of a random torque in the medium behaviour.
const MEDIUM_EPSILON: f64 = 0.7;
/// Standard deviation of the Gaussian torque noise in the medium behaviour.
const MEDIUM_NOISE: f32 = 0.5;

/// The inverted pendulum: swing up and balance with a torque in `[-2, 2]`.
/// State `[theta, theta_dot]` in f64 (theta 0 is upright and is not wrapped),
/// observation `[cos theta, sin theta, theta_dot]` in f32.
#[derive(Clone, Debug)]
pub struct Pendulum {
    state: [f64; 2],
    /// The environment's generator (Gymnasium's `env.np_random`).
    rng: Generator,
}

impl Default for Pendulum {
    fn default() -> Self {
        Self::new()
    }
}

/// `((x + pi) mod 2 pi) - pi` with numpy's floor modulo.
fn angle_normalize(x: f64) -> f64 {
    let period = 2.0 * PI;
    let shifted = x + PI;
    let mut m = shifted % period;
    if m != 0.0 && m < 0.0 {
        m += period;
    }
    m - PI
}

impl Pendulum {
    /// A pendulum in a reset state drawn from a generator seeded with 0.
    pub fn new() -> Self {
        let mut env = Pendulum {
            state: [0.0; 2],
            rng: Generator::seeded(0),
        };
        env.reset_native(None);
        env
    }

    /// The generator that draws the resets (Gymnasium's `env.unwrapped.np_random`):
    /// `reset_native(Some(seed))` replaces it with `Generator::seeded(seed)`.
    pub fn np_random(&self) -> &Generator {
        &self.rng
    }

    fn obs(&self) -> Obs {
        let [theta, theta_dot] = self.state;
        vec![theta.cos() as f32, theta.sin() as f32, theta_dot as f32]
    }
}

impl ClassicControl for Pendulum {
    fn state(&self) -> Vec<f64> {
        self.state.to_vec()
    }

    fn set_state(&mut self, state: &[f64], _dtype: StateDtype) -> Result<(), EnvError> {
        self.state = check_state(ID, state)?;
        Ok(())
    }

    fn observation(&self) -> Obs {
        self.obs()
    }
}

impl FlowEnv for Pendulum {
    fn id(&self) -> String {
        ID.to_string()
    }

    fn reset_native(&mut self, seed: Option<u64>) -> Obs {
        if let Some(seed) = seed {
            self.rng = Generator::seeded(seed);
        }
        self.state[0] = self.rng.uniform(-PI, PI);
        self.state[1] = self.rng.uniform(-1.0, 1.0);
        self.obs()
    }

    fn step_native(&mut self, action: &Action) -> Step {
        // The action is float32: numpy keeps `3 u` and `0.001 u^2` in float32.
        let u = continuous1(ID, action).clamp(-MAX_TORQUE, MAX_TORQUE);
        let [theta, theta_dot] = self.state;
        let normalized = angle_normalize(theta);
        let costs =
            normalized * normalized + 0.1 * (theta_dot * theta_dot) + f64::from(0.001f32 * (u * u));
        let accel = 3.0 * G / (2.0 * L) * theta.sin() + f64::from((3.0 / (M * L * L)) as f32 * u);
        let new_theta_dot = (theta_dot + accel * DT).clamp(-MAX_SPEED, MAX_SPEED);
        let new_theta = theta + new_theta_dot * DT;
        self.state = [new_theta, new_theta_dot];
        Step {
            obs: self.obs(),
            reward: -costs,
            terminated: false,
            truncated: false,
            success: None,
        }
    }

    fn action_spec(&self) -> ActionSpec {
        ActionSpec::Continuous {
            dim: 1,
            low: -MAX_TORQUE,
            high: MAX_TORQUE,
        }
    }

    fn observation_bounds(&self) -> (Vec<f32>, Vec<f32>) {
        let high = vec![1.0, 1.0, MAX_SPEED as f32];
        (high.iter().map(|h| -h).collect(), high)
    }

    fn obs_dim(&self) -> usize {
        3
    }

    fn max_episode_steps(&self) -> Option<usize> {
        None
    }

    /// Energy pumping far from the top, linear feedback near it.
    fn expert_action(&self, _rng: &mut ChaCha8Rng) -> Action {
        let [theta, theta_dot] = self.state;
        let angle = angle_normalize(theta);
        // Dynamics: theta_ddot = 15 sin(theta) + 3 u, so E = theta_dot^2 / 2 + 15 cos(theta)
        // has dE/dt = 3 u theta_dot and equals 15 upright at rest.
        let torque = if angle.abs() < 0.6 && theta_dot.abs() < 4.0 {
            -(10.0 * angle + 2.0 * theta_dot)
        } else {
            let energy = 0.5 * theta_dot * theta_dot + 15.0 * theta.cos();
            let pump = (15.0 - energy) * theta_dot;
            if pump == 0.0 {
                f64::from(MAX_TORQUE)
            } else {
                pump
            }
        };
        Action::Continuous(vec![(torque as f32).clamp(-MAX_TORQUE, MAX_TORQUE)])
    }

    fn medium_action(&self, rng: &mut ChaCha8Rng) -> Action {
        degrade(
            self.expert_action(rng),
            self.action_spec(),
            MEDIUM_EPSILON,
            MEDIUM_NOISE,
            rng,
        )
    }
}

impl_gym_env!(Pendulum);

#[cfg(test)]
mod tests {
    use super::angle_normalize;
    use std::f64::consts::PI;

    #[test]
    fn angle_normalize_is_a_floor_modulo() {
        assert!((angle_normalize(3.0 * PI / 2.0) + PI / 2.0).abs() < 1e-12);
        assert!((angle_normalize(-3.0 * PI / 2.0) - PI / 2.0).abs() < 1e-12);
        assert_eq!(angle_normalize(PI), -PI);
        assert!(
            (angle_normalize(-62.83950772234284) - (-62.83950772234284 + 20.0 * PI)).abs() < 1e-9
        );
    }
}
