//! Gymnasium 1.4's classic-control environments, ported to replay its episodes bit for bit.
//!
//! Two kinds of random streams are involved:
//! - reset noise: each environment owns a [`numpy_rng::Generator`] (numpy's PCG64, as
//!   Gymnasium's `env.np_random`). `reset_native(Some(seed))` replaces it with
//!   `Generator::seeded(seed)`, exactly as `env.reset(seed=seed)` does, so a seeded reset
//!   returns Gymnasium's observation bit for bit; `reset_native(None)` continues the stream;
//!   a freshly constructed environment is seeded with 0 (Gymnasium would use OS entropy).
//! - behaviour policies (expert, medium, random actions) and the per-episode reset seeds of
//!   [`collect`](crate::collect()) come from ChaCha8 streams, which are not numpy's.
//!
//! [`numpy_rng::Generator`]: crate::numpy_rng::Generator

mod acrobot;
mod cartpole;
mod mountain_car;
mod pendulum;

pub use acrobot::Acrobot;
pub use cartpole::CartPole;
pub use mountain_car::MountainCarContinuous;
pub use pendulum::Pendulum;

pub(crate) use acrobot::MAX_STEPS as ACROBOT_STEPS;
pub(crate) use cartpole::MAX_STEPS as CARTPOLE_STEPS;
pub(crate) use mountain_car::MAX_STEPS as MOUNTAIN_CAR_STEPS;
pub(crate) use pendulum::MAX_STEPS as PENDULUM_STEPS;

use crate::EnvError;

/// The precision a Gymnasium state array is held in (it changes the next step's arithmetic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateDtype {
    /// `float32` values.
    F32,
    /// `float64` values.
    F64,
}

impl std::str::FromStr for StateDtype {
    type Err = EnvError;

    fn from_str(s: &str) -> Result<Self, EnvError> {
        match s {
            "float32" => Ok(StateDtype::F32),
            "float64" => Ok(StateDtype::F64),
            other => Err(EnvError::BadArgument {
                what: "state dtype".into(),
                expected: "`float32` or `float64`".into(),
                found: format!("`{other}`"),
            }),
        }
    }
}

/// Access to the internal state of a classic-control environment, for replaying
/// recorded Gymnasium episodes and for scripted policies.
pub trait ClassicControl {
    /// The internal state as Gymnasium holds it (`env.unwrapped.state`), widened to f64.
    fn state(&self) -> Vec<f64>;

    /// Sets the internal state; `dtype` is the precision Gymnasium held it in.
    /// Errors when the number of values is wrong or a value is not finite.
    fn set_state(&mut self, state: &[f64], dtype: StateDtype) -> Result<(), EnvError>;

    /// The observation of the current state.
    fn observation(&self) -> crate::Obs;
}

/// Checks a state's length and finiteness.
fn check_state<const N: usize>(env: &str, state: &[f64]) -> Result<[f64; N], EnvError> {
    let bad = |expected: String| EnvError::BadState {
        env: env.to_string(),
        expected,
        found: format!("{state:?}"),
    };
    let values: [f64; N] = state.try_into().map_err(|_| bad(format!("{N} values")))?;
    if values.iter().all(|v| v.is_finite()) {
        Ok(values)
    } else {
        Err(bad("finite values".to_string()))
    }
}
