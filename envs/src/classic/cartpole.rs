//! CartPole-v1 (Barto, Sutton and Anderson), as in Gymnasium 1.4.

use rand_chacha::ChaCha8Rng;

use super::{check_state, ClassicControl, StateDtype};
use crate::flow_env::{discrete, impl_gym_env};
use crate::numpy_rng::Generator;
use crate::policy::degrade;
use crate::{Action, ActionSpec, EnvError, FlowEnv, Obs, Step};

const ID: &str = "CartPole-v1";
const GRAVITY: f64 = 9.8;
const MASS_CART: f64 = 1.0;
const MASS_POLE: f64 = 0.1;
const TOTAL_MASS: f64 = MASS_POLE + MASS_CART;
/// Half the pole's length.
const LENGTH: f64 = 0.5;
const POLE_MASS_LENGTH: f64 = MASS_POLE * LENGTH;
const FORCE_MAG: f64 = 10.0;
const TAU: f64 = 0.02;
const THETA_THRESHOLD: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;
const X_THRESHOLD: f64 = 2.4;
/// Gymnasium's time limit.
pub(crate) const MAX_STEPS: usize = 500;
/// Probability of a random action in the medium behaviour.
const MEDIUM_EPSILON: f64 = 0.5;

/// The cart-pole: push the cart left (0) or right (1) to keep the pole upright.
/// State `[x, x_dot, theta, theta_dot]` in f64, observation in f32.
#[derive(Clone, Debug)]
pub struct CartPole {
    state: [f64; 4],
    /// The environment's generator (Gymnasium's `env.np_random`).
    rng: Generator,
    steps_beyond_terminated: Option<u64>,
}

impl Default for CartPole {
    fn default() -> Self {
        Self::new()
    }
}

impl CartPole {
    /// A cart-pole in a reset state drawn from a generator seeded with 0.
    pub fn new() -> Self {
        let mut env = CartPole {
            state: [0.0; 4],
            rng: Generator::seeded(0),
            steps_beyond_terminated: None,
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
        self.state.iter().map(|&v| v as f32).collect()
    }
}

impl ClassicControl for CartPole {
    fn state(&self) -> Vec<f64> {
        self.state.to_vec()
    }

    fn set_state(&mut self, state: &[f64], _dtype: StateDtype) -> Result<(), EnvError> {
        self.state = check_state(ID, state)?;
        self.steps_beyond_terminated = None;
        Ok(())
    }

    fn observation(&self) -> Obs {
        self.obs()
    }
}

impl FlowEnv for CartPole {
    fn id(&self) -> String {
        ID.to_string()
    }

    fn reset_native(&mut self, seed: Option<u64>) -> Obs {
        if let Some(seed) = seed {
            self.rng = Generator::seeded(seed);
        }
        for v in &mut self.state {
            *v = self.rng.uniform(-0.05, 0.05);
        }
        self.steps_beyond_terminated = None;
        self.obs()
    }

    fn step_native(&mut self, action: &Action) -> Step {
        let push_right = discrete(|| ID.to_string(), action, 2) == 1;
        let [mut x, mut x_dot, mut theta, mut theta_dot] = self.state;
        let force = if push_right { FORCE_MAG } else { -FORCE_MAG };
        let costheta = theta.cos();
        let sintheta = theta.sin();
        let temp = (force + POLE_MASS_LENGTH * (theta_dot * theta_dot) * sintheta) / TOTAL_MASS;
        let thetaacc = (GRAVITY * sintheta - costheta * temp)
            / (LENGTH * (4.0 / 3.0 - MASS_POLE * (costheta * costheta) / TOTAL_MASS));
        let xacc = temp - POLE_MASS_LENGTH * thetaacc * costheta / TOTAL_MASS;
        x += TAU * x_dot;
        x_dot += TAU * xacc;
        theta += TAU * theta_dot;
        theta_dot += TAU * thetaacc;
        self.state = [x, x_dot, theta, theta_dot];
        let terminated = !(-X_THRESHOLD..=X_THRESHOLD).contains(&x)
            || !(-THETA_THRESHOLD..=THETA_THRESHOLD).contains(&theta);
        let reward = if !terminated {
            1.0
        } else if let Some(beyond) = &mut self.steps_beyond_terminated {
            *beyond += 1;
            0.0
        } else {
            self.steps_beyond_terminated = Some(0);
            1.0
        };
        Step {
            obs: self.obs(),
            reward,
            terminated,
            truncated: false,
            success: None,
        }
    }

    fn action_spec(&self) -> ActionSpec {
        ActionSpec::Discrete { n: 2 }
    }

    fn observation_bounds(&self) -> (Vec<f32>, Vec<f32>) {
        let high = vec![
            (X_THRESHOLD * 2.0) as f32,
            f32::MAX,
            (THETA_THRESHOLD * 2.0) as f32,
            f32::MAX,
        ];
        (high.iter().map(|h| -h).collect(), high)
    }

    fn obs_dim(&self) -> usize {
        4
    }

    fn max_episode_steps(&self) -> Option<usize> {
        None
    }

    /// Linear state feedback: push towards the side the weighted state leans to.
    fn expert_action(&self, _rng: &mut ChaCha8Rng) -> Action {
        let [x, x_dot, theta, theta_dot] = self.state;
        let lean = 0.5 * x + 1.0 * x_dot + 20.0 * theta + 3.0 * theta_dot;
        Action::Discrete(usize::from(lean > 0.0))
    }

    fn medium_action(&self, rng: &mut ChaCha8Rng) -> Action {
        degrade(
            self.expert_action(rng),
            self.action_spec(),
            MEDIUM_EPSILON,
            0.0,
            rng,
        )
    }
}

impl_gym_env!(CartPole);
