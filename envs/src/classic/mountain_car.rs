//! MountainCarContinuous-v0, as in Gymnasium 1.4, including numpy's mixed precision.

use rand_chacha::ChaCha8Rng;

use super::{check_state, ClassicControl, StateDtype};
use crate::flow_env::{continuous1, impl_gym_env};
use crate::numpy_rng::Generator;
use crate::policy::degrade;
use crate::{Action, ActionSpec, EnvError, FlowEnv, Obs, Step};

const ID: &str = "MountainCarContinuous-v0";
const MIN_ACTION: f32 = -1.0;
const MAX_ACTION: f32 = 1.0;
const MIN_POSITION: f64 = -1.2;
const MAX_POSITION: f64 = 0.6;
const MAX_SPEED: f64 = 0.07;
const GOAL_POSITION: f64 = 0.45;
const POWER: f64 = 0.0015;
/// Gymnasium's time limit.
pub(crate) const MAX_STEPS: usize = 999;
/// Probability of a random force in the medium behaviour.
const MEDIUM_EPSILON: f64 = 0.92;

/// The clipped force: a float32 action when inside the bounds, else a Python float bound.
enum Force {
    F32(f32),
    F64(f64),
}

/// A car in a valley that must rock back and forth to reach the flag at 0.45.
/// State `[position, velocity]`: float64 right after reset, float32 after a step
/// (Gymnasium stores `np.array([...], dtype=float32)`), observation in f32.
#[derive(Clone, Debug)]
pub struct MountainCarContinuous {
    state: [f64; 2],
    dtype: StateDtype,
    /// The environment's generator (Gymnasium's `env.np_random`).
    rng: Generator,
}

impl Default for MountainCarContinuous {
    fn default() -> Self {
        Self::new()
    }
}

impl MountainCarContinuous {
    /// A car in a reset state drawn from a generator seeded with 0.
    pub fn new() -> Self {
        let mut env = MountainCarContinuous {
            state: [0.0; 2],
            dtype: StateDtype::F64,
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
        self.state.iter().map(|&v| v as f32).collect()
    }

    /// One step from a float64 state (the first step after reset): the new
    /// position and velocity before they are stored as float32, and termination.
    fn step_f64(&self, force: &Force) -> (f64, f64, bool) {
        let [position, mut velocity] = self.state;
        let gravity = 0.0025 * (3.0 * position).cos();
        velocity += match *force {
            Force::F32(f) => f64::from(f * POWER as f32 - gravity as f32),
            Force::F64(f) => f * POWER - gravity,
        };
        velocity = velocity.clamp(-MAX_SPEED, MAX_SPEED);
        let position = (position + velocity).clamp(MIN_POSITION, MAX_POSITION);
        if position == MIN_POSITION && velocity < 0.0 {
            velocity = 0.0;
        }
        (
            position,
            velocity,
            position >= GOAL_POSITION && velocity >= 0.0,
        )
    }

    /// One step from a float32 state: numpy keeps the arithmetic in float32, casting
    /// Python floats down, and compares against the float32 constants.
    fn step_f32(&self, force: &Force) -> (f64, f64, bool) {
        let position = self.state[0] as f32;
        let mut velocity = self.state[1] as f32;
        let gravity = 0.0025 * f64::from(3.0f32 * position).cos();
        velocity += match *force {
            Force::F32(f) => f * POWER as f32 - gravity as f32,
            Force::F64(f) => (f * POWER - gravity) as f32,
        };
        velocity = velocity.clamp(-MAX_SPEED as f32, MAX_SPEED as f32);
        let position = (position + velocity).clamp(MIN_POSITION as f32, MAX_POSITION as f32);
        if position == MIN_POSITION as f32 && velocity < 0.0 {
            velocity = 0.0;
        }
        let terminated = position >= GOAL_POSITION as f32 && velocity >= 0.0;
        (f64::from(position), f64::from(velocity), terminated)
    }
}

impl ClassicControl for MountainCarContinuous {
    fn state(&self) -> Vec<f64> {
        self.state.to_vec()
    }

    fn set_state(&mut self, state: &[f64], dtype: StateDtype) -> Result<(), EnvError> {
        self.state = check_state(ID, state)?;
        self.dtype = dtype;
        if dtype == StateDtype::F32 {
            self.state = self.state.map(|v| f64::from(v as f32));
        }
        Ok(())
    }

    fn observation(&self) -> Obs {
        self.obs()
    }
}

impl FlowEnv for MountainCarContinuous {
    fn id(&self) -> String {
        ID.to_string()
    }

    fn reset_native(&mut self, seed: Option<u64>) -> Obs {
        if let Some(seed) = seed {
            self.rng = Generator::seeded(seed);
        }
        self.state = [self.rng.uniform(-0.6, -0.4), 0.0];
        self.dtype = StateDtype::F64;
        self.obs()
    }

    fn step_native(&mut self, action: &Action) -> Step {
        let a = continuous1(ID, action);
        let force = if a < MIN_ACTION {
            Force::F64(f64::from(MIN_ACTION))
        } else if a > MAX_ACTION {
            Force::F64(f64::from(MAX_ACTION))
        } else {
            Force::F32(a)
        };
        let (position, velocity, terminated) = match self.dtype {
            StateDtype::F64 => self.step_f64(&force),
            StateDtype::F32 => self.step_f32(&force),
        };
        self.state = [f64::from(position as f32), f64::from(velocity as f32)];
        self.dtype = StateDtype::F32;
        let a = f64::from(a);
        let reward = if terminated { 100.0 } else { 0.0 } - a * a * 0.1;
        Step {
            obs: self.obs(),
            reward,
            terminated,
            truncated: false,
            success: None,
        }
    }

    fn action_spec(&self) -> ActionSpec {
        ActionSpec::Continuous {
            dim: 1,
            low: MIN_ACTION,
            high: MAX_ACTION,
        }
    }

    fn observation_bounds(&self) -> (Vec<f32>, Vec<f32>) {
        (
            vec![MIN_POSITION as f32, -MAX_SPEED as f32],
            vec![MAX_POSITION as f32, MAX_SPEED as f32],
        )
    }

    fn obs_dim(&self) -> usize {
        2
    }

    fn max_episode_steps(&self) -> Option<usize> {
        None
    }

    /// Full force in the direction of the velocity (right when at rest).
    fn expert_action(&self, _rng: &mut ChaCha8Rng) -> Action {
        let force = if self.state[1] >= 0.0 {
            MAX_ACTION
        } else {
            MIN_ACTION
        };
        Action::Continuous(vec![force])
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

impl_gym_env!(MountainCarContinuous);
