//! The environment interface: observations, actions, one step's outcome, and the
//! [`FlowEnv`] trait every environment implements on top of gymnasium-rs's `Env`.

use gymnasium_rs::core::{Info, Space};
use ndarray::Array1;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::EnvError;

/// An observation: a flat vector of 32-bit floats.
pub type Obs = Vec<f32>;

/// An action, discrete or continuous.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Action {
    /// The index of one of `n` actions.
    Discrete(usize),
    /// A vector of reals, clipped to the action bounds where Gymnasium clips.
    Continuous(Vec<f32>),
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Discrete(a) => write!(f, "discrete action {a}"),
            Action::Continuous(v) => write!(f, "continuous action {v:?} ({} values)", v.len()),
        }
    }
}

/// One step's outcome with the environment's native f64 reward.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The observation after the step.
    pub obs: Obs,
    /// The reward, in the environment's native precision.
    pub reward: f64,
    /// The episode ended inside the task (goal, failure, or the task's own horizon).
    pub terminated: bool,
    /// The time limit cut the episode.
    pub truncated: bool,
    /// Whether the task was solved, on the step that ends an episode of a task that
    /// defines success (T-Mazes, Key-to-Door); `None` otherwise.
    pub success: Option<bool>,
}

impl Step {
    /// The episode is over (terminated or truncated).
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}

/// The action space in a form that is cheap to query on every step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ActionSpec {
    /// `n` discrete actions `0..n`.
    Discrete {
        /// Number of actions.
        n: usize,
    },
    /// `dim` reals, each in `[low, high]`.
    Continuous {
        /// Number of values.
        dim: usize,
        /// Lower bound of every value.
        low: f32,
        /// Upper bound of every value.
        high: f32,
    },
}

impl ActionSpec {
    /// The gymnasium-rs space.
    pub fn space(&self) -> Space {
        match *self {
            ActionSpec::Discrete { n } => Space::Discrete(n as i32),
            ActionSpec::Continuous { dim, low, high } => Space::Box {
                low: Array1::from_elem(dim, low),
                high: Array1::from_elem(dim, high),
            },
        }
    }

    /// Whether `action` has the right kind and size and holds only finite values.
    pub fn accepts(&self, action: &Action) -> bool {
        match (*self, action) {
            (ActionSpec::Discrete { n }, Action::Discrete(a)) => *a < n,
            (ActionSpec::Continuous { dim, .. }, Action::Continuous(v)) => {
                v.len() == dim && v.iter().all(|x| x.is_finite())
            }
            _ => false,
        }
    }

    /// Checks that `action` has the right kind and size and holds only finite values; the error
    /// names the environment `env`, what the space accepts and what was found.
    pub fn check(&self, env: &str, action: &Action) -> Result<(), EnvError> {
        if self.accepts(action) {
            return Ok(());
        }
        let expected = match *self {
            ActionSpec::Discrete { n } => format!("a discrete action in 0..{n}"),
            ActionSpec::Continuous { dim, low, high } => {
                format!("a continuous action of {dim} finite values in [{low}, {high}]")
            }
        };
        Err(EnvError::BadAction {
            env: env.to_string(),
            expected,
            found: action.to_string(),
        })
    }

    /// A uniformly random action.
    pub fn sample(&self, rng: &mut ChaCha8Rng) -> Action {
        match *self {
            ActionSpec::Discrete { n } => Action::Discrete(rng.gen_range(0..n)),
            ActionSpec::Continuous { dim, low, high } => {
                Action::Continuous((0..dim).map(|_| rng.gen_range(low..=high)).collect())
            }
        }
    }
}

/// Every environment: gymnasium-rs's `Env` trait (its reward is f32) plus the native step.
///
/// Through the gymnasium-rs trait, `reset(Some(seed))` reseeds the environment's reset
/// generator (numpy's PCG64 for classic control, ChaCha8 for the memory tasks) with
/// `seed as u64` (sign-extended), `reset(None)` continues its
/// stream, and `options` are ignored; `step` is [`FlowEnv::step_native`] with the
/// reward narrowed to f32 and `"success"` in the info when the step reports it;
/// `render` returns `None`. Like `step_native`, the trait's `step` panics on an
/// action of the wrong kind or size: use [`FlowEnv::try_step`] for an error instead.
pub trait FlowEnv: gymnasium_rs::core::Env<Obs, Action> + Send {
    /// The registry id, e.g. `Pendulum-v1` or `TMaze-Passive-L500`.
    fn id(&self) -> String;

    /// Starts an episode: `Some(seed)` reseeds the generator (same seed, same
    /// initial state), `None` continues its stream. Returns the first observation.
    fn reset_native(&mut self, seed: Option<u64>) -> Obs;

    /// Advances one step with the native f64 reward.
    ///
    /// Panics on an action of the wrong kind or size (a discrete index out of range,
    /// a continuous vector of the wrong length); [`FlowEnv::try_step`] returns an error.
    fn step_native(&mut self, action: &Action) -> Step;

    /// The action space.
    fn action_spec(&self) -> ActionSpec;

    /// Lower and upper bounds of every observation value.
    fn observation_bounds(&self) -> (Vec<f32>, Vec<f32>);

    /// The length of the observation vector.
    fn obs_dim(&self) -> usize {
        self.observation_bounds().0.len()
    }

    /// The longest possible episode: the time limit, or the task's own horizon.
    fn max_episode_steps(&self) -> Option<usize>;

    /// The scripted expert's action in the current state.
    fn expert_action(&self, rng: &mut ChaCha8Rng) -> Action;

    /// The medium behaviour's action in the current state (a degraded expert).
    fn medium_action(&self, rng: &mut ChaCha8Rng) -> Action;

    /// Whether the scripted `expert_action` and `medium_action` exist (tasks without
    /// them, such as the MuJoCo locomotion tasks, collect only the random tier).
    fn scripted_behaviour(&self) -> bool {
        true
    }

    /// Whether a step costs enough (tens of microseconds) that a vector of these
    /// environments is stepped on the thread pool.
    fn steps_in_parallel(&self) -> bool {
        false
    }

    /// Extra values of the last step's Gymnasium `info` (name, value widened to f64),
    /// empty by default and after a reset.
    fn info(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }

    /// Checks the action, then steps.
    fn try_step(&mut self, action: &Action) -> Result<Step, EnvError> {
        let spec = self.action_spec();
        if !spec.accepts(action) {
            spec.check(&self.id(), action)?;
        }
        Ok(self.step_native(action))
    }
}

/// The seed gymnasium-rs's `reset(Some(seed))` passes on: the i32 sign-extended.
pub(crate) fn widen_seed(seed: i32) -> u64 {
    seed as i64 as u64
}

/// The gymnasium-rs observation space of an environment.
pub(crate) fn observation_space<E: FlowEnv + ?Sized>(env: &E) -> Space {
    let (low, high) = env.observation_bounds();
    Space::Box {
        low: Array1::from(low),
        high: Array1::from(high),
    }
}

/// gymnasium-rs's `step`: the native step with the reward narrowed to f32.
pub(crate) fn gym_step<E: FlowEnv + ?Sized>(
    env: &mut E,
    action: &Action,
) -> (Obs, f32, bool, bool, Info) {
    let step = env.step_native(action);
    let mut info = Info::new();
    for (key, value) in env.info() {
        info.insert(key.to_string(), value.into());
    }
    if let Some(success) = step.success {
        info.insert("success".to_string(), success.into());
    }
    (
        step.obs,
        step.reward as f32,
        step.terminated,
        step.truncated,
        info,
    )
}

/// The discrete action index, panicking (as documented on [`FlowEnv::step_native`])
/// when the action is not a discrete index below `n`; `env` names the environment.
pub(crate) fn discrete(env: impl FnOnce() -> String, action: &Action, n: usize) -> usize {
    match action {
        Action::Discrete(a) if *a < n => *a,
        _ => panic!(
            "{}: expected a discrete action in 0..{n}, found {action}; use try_step for an error",
            env()
        ),
    }
}

/// The single value of a one-dimensional continuous action, panicking (as documented
/// on [`FlowEnv::step_native`]) when the action is not one continuous value.
pub(crate) fn continuous1(env: &str, action: &Action) -> f32 {
    match action {
        Action::Continuous(v) if v.len() == 1 => v[0],
        _ => panic!("{env}: expected a continuous action of 1 value, found {action}; use try_step for an error"),
    }
}

/// Implements gymnasium-rs's `Env` for a type that implements [`FlowEnv`].
macro_rules! impl_gym_env {
    ($ty:ty) => {
        impl gymnasium_rs::core::Env<$crate::Obs, $crate::Action> for $ty {
            fn observation_space(&self) -> gymnasium_rs::core::Space {
                $crate::flow_env::observation_space(self)
            }

            fn action_space(&self) -> gymnasium_rs::core::Space {
                $crate::FlowEnv::action_spec(self).space()
            }

            fn reset(
                &mut self,
                seed: Option<i32>,
                _options: gymnasium_rs::core::Options,
            ) -> ($crate::Obs, gymnasium_rs::core::Info) {
                let seed = seed.map($crate::flow_env::widen_seed);
                (
                    $crate::FlowEnv::reset_native(self, seed),
                    gymnasium_rs::core::Info::new(),
                )
            }

            fn step(
                &mut self,
                action: $crate::Action,
            ) -> ($crate::Obs, f32, bool, bool, gymnasium_rs::core::Info) {
                $crate::flow_env::gym_step(self, &action)
            }

            fn render(&self) -> Option<ndarray::Array3<u8>> {
                None
            }

            fn close(&mut self) {}
        }
    };
}

pub(crate) use impl_gym_env;
