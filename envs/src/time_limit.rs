//! Gymnasium's `TimeLimit`: truncates an episode after a fixed number of steps.

use gymnasium_rs::core::{Env, Info, Options, Space};
use rand_chacha::ChaCha8Rng;

use crate::classic::{ClassicControl, StateDtype};
use crate::flow_env::{gym_step, observation_space, widen_seed};
use crate::{Action, ActionSpec, EnvError, FlowEnv, Obs, Step};

/// Wraps an environment so that the step that reaches `max_steps` since the last
/// reset reports `truncated = true` (also when it terminates, as Gymnasium does).
#[derive(Clone, Debug)]
pub struct TimeLimit<E> {
    env: E,
    max_steps: usize,
    elapsed: usize,
}

impl<E> TimeLimit<E> {
    /// Wraps `env` with a limit of `max_steps` steps per episode.
    pub fn new(env: E, max_steps: usize) -> Self {
        TimeLimit {
            env,
            max_steps,
            elapsed: 0,
        }
    }

    /// The wrapped environment.
    pub fn inner(&self) -> &E {
        &self.env
    }

    /// The wrapped environment, e.g. to set a classic-control state.
    pub fn inner_mut(&mut self) -> &mut E {
        &mut self.env
    }

    /// Steps taken since the last reset.
    pub fn elapsed(&self) -> usize {
        self.elapsed
    }
}

impl<E: FlowEnv> FlowEnv for TimeLimit<E> {
    fn id(&self) -> String {
        self.env.id()
    }

    fn reset_native(&mut self, seed: Option<u64>) -> Obs {
        self.elapsed = 0;
        self.env.reset_native(seed)
    }

    fn step_native(&mut self, action: &Action) -> Step {
        let mut step = self.env.step_native(action);
        self.elapsed += 1;
        if self.elapsed >= self.max_steps {
            step.truncated = true;
        }
        step
    }

    fn action_spec(&self) -> ActionSpec {
        self.env.action_spec()
    }

    fn observation_bounds(&self) -> (Vec<f32>, Vec<f32>) {
        self.env.observation_bounds()
    }

    fn obs_dim(&self) -> usize {
        self.env.obs_dim()
    }

    fn max_episode_steps(&self) -> Option<usize> {
        Some(self.max_steps)
    }

    fn expert_action(&self, rng: &mut ChaCha8Rng) -> Action {
        self.env.expert_action(rng)
    }

    fn medium_action(&self, rng: &mut ChaCha8Rng) -> Action {
        self.env.medium_action(rng)
    }

    fn scripted_behaviour(&self) -> bool {
        self.env.scripted_behaviour()
    }

    fn steps_in_parallel(&self) -> bool {
        self.env.steps_in_parallel()
    }

    fn info(&self) -> Vec<(&'static str, f64)> {
        self.env.info()
    }
}

impl<E: FlowEnv> Env<Obs, Action> for TimeLimit<E> {
    fn observation_space(&self) -> Space {
        observation_space(self)
    }

    fn action_space(&self) -> Space {
        self.action_spec().space()
    }

    fn reset(&mut self, seed: Option<i32>, _options: Options) -> (Obs, Info) {
        (self.reset_native(seed.map(widen_seed)), Info::new())
    }

    fn step(&mut self, action: Action) -> (Obs, f32, bool, bool, Info) {
        gym_step(self, &action)
    }

    fn render(&self) -> Option<ndarray::Array3<u8>> {
        None
    }

    fn close(&mut self) {}
}

impl<E: ClassicControl> ClassicControl for TimeLimit<E> {
    fn state(&self) -> Vec<f64> {
        self.env.state()
    }

    fn set_state(&mut self, state: &[f64], dtype: StateDtype) -> Result<(), EnvError> {
        self.env.set_state(state, dtype)
    }

    fn observation(&self) -> Obs {
        self.env.observation()
    }
}
