//! Acrobot-v1 ("book" dynamics, one RK4 step), as in Gymnasium 1.4.

use std::f64::consts::PI;

use rand_chacha::ChaCha8Rng;

use super::{check_state, ClassicControl, StateDtype};
use crate::flow_env::{discrete, impl_gym_env};
use crate::numpy_rng::Generator;
use crate::policy::degrade;
use crate::{Action, ActionSpec, EnvError, FlowEnv, Obs, Step};

const ID: &str = "Acrobot-v1";
const DT: f64 = 0.2;
const LINK_LENGTH_1: f64 = 1.0;
const LINK_MASS_1: f64 = 1.0;
const LINK_MASS_2: f64 = 1.0;
const LINK_COM_POS_1: f64 = 0.5;
const LINK_COM_POS_2: f64 = 0.5;
const LINK_MOI: f64 = 1.0;
const MAX_VEL_1: f64 = 4.0 * PI;
const MAX_VEL_2: f64 = 9.0 * PI;
const AVAIL_TORQUE: [f64; 3] = [-1.0, 0.0, 1.0];
const GRAVITY: f64 = 9.8;
/// Gymnasium's time limit.
pub(crate) const MAX_STEPS: usize = 500;
/// Probability of a random torque in the medium behaviour.
const MEDIUM_EPSILON: f64 = 0.8;

/// Two links hanging from a pivot, torque on the joint between them; swing the tip
/// above the line one link length over the pivot. State `[theta1, theta2, dtheta1,
/// dtheta2]` (float32 values after reset, float64 after a step), observation
/// `[cos t1, sin t1, cos t2, sin t2, dtheta1, dtheta2]` in f32.
#[derive(Clone, Debug)]
pub struct Acrobot {
    state: [f64; 4],
    /// The environment's generator (Gymnasium's `env.np_random`).
    rng: Generator,
}

impl Default for Acrobot {
    fn default() -> Self {
        Self::new()
    }
}

/// The time derivative of `[theta1, theta2, dtheta1, dtheta2, torque]`, with
/// Gymnasium's operation order.
fn dsdt(s: &[f64; 5]) -> [f64; 5] {
    let (m1, m2, l1, lc1, lc2) = (
        LINK_MASS_1,
        LINK_MASS_2,
        LINK_LENGTH_1,
        LINK_COM_POS_1,
        LINK_COM_POS_2,
    );
    let (i1, i2, g) = (LINK_MOI, LINK_MOI, GRAVITY);
    let [theta1, theta2, dtheta1, dtheta2, a] = *s;
    let d1 =
        m1 * (lc1 * lc1) + m2 * (l1 * l1 + lc2 * lc2 + 2.0 * l1 * lc2 * theta2.cos()) + i1 + i2;
    let d2 = m2 * (lc2 * lc2 + l1 * lc2 * theta2.cos()) + i2;
    let phi2 = m2 * lc2 * g * (theta1 + theta2 - PI / 2.0).cos();
    let phi1 = -m2 * l1 * lc2 * (dtheta2 * dtheta2) * theta2.sin()
        - 2.0 * m2 * l1 * lc2 * dtheta2 * dtheta1 * theta2.sin()
        + (m1 * lc1 + m2 * l1) * g * (theta1 - PI / 2.0).cos()
        + phi2;
    let ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * (dtheta1 * dtheta1) * theta2.sin() - phi2)
        / (m2 * (lc2 * lc2) + i2 - (d2 * d2) / d1);
    let ddtheta1 = -(d2 * ddtheta2 + phi1) / d1;
    [dtheta1, dtheta2, ddtheta1, ddtheta2, 0.0]
}

/// `y + h k`, elementwise.
fn axpy(y: &[f64; 5], h: f64, k: &[f64; 5]) -> [f64; 5] {
    std::array::from_fn(|i| y[i] + h * k[i])
}

/// One classical Runge-Kutta step over `[0, DT]`, as Gymnasium's `rk4`.
fn rk4(y0: &[f64; 5]) -> [f64; 5] {
    let dt = DT - 0.0;
    let dt2 = dt / 2.0;
    let k1 = dsdt(y0);
    let k2 = dsdt(&axpy(y0, dt2, &k1));
    let k3 = dsdt(&axpy(y0, dt2, &k2));
    let k4 = dsdt(&axpy(y0, dt, &k3));
    let sum: [f64; 5] = std::array::from_fn(|i| k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]);
    axpy(y0, dt / 6.0, &sum)
}

/// Gymnasium's `wrap`: shifts by whole periods into `[low, high]`.
fn wrap(mut x: f64, low: f64, high: f64) -> f64 {
    let diff = high - low;
    while x > high {
        x -= diff;
    }
    while x < low {
        x += diff;
    }
    x
}

/// Gymnasium's `bound`: `min(max(x, low), high)` with Python's `min`/`max`.
fn bound(x: f64, low: f64, high: f64) -> f64 {
    let x = if low > x { low } else { x };
    if high < x {
        high
    } else {
        x
    }
}

impl Acrobot {
    /// An acrobot in a reset state drawn from a generator seeded with 0.
    pub fn new() -> Self {
        let mut env = Acrobot {
            state: [0.0; 4],
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
        let [t1, t2, d1, d2] = self.state;
        vec![
            t1.cos() as f32,
            t1.sin() as f32,
            t2.cos() as f32,
            t2.sin() as f32,
            d1 as f32,
            d2 as f32,
        ]
    }

    fn terminal(&self) -> bool {
        let [t1, t2, ..] = self.state;
        -t1.cos() - (t2 + t1).cos() > 1.0
    }
}

impl ClassicControl for Acrobot {
    fn state(&self) -> Vec<f64> {
        self.state.to_vec()
    }

    fn set_state(&mut self, state: &[f64], dtype: StateDtype) -> Result<(), EnvError> {
        self.state = check_state(ID, state)?;
        if dtype == StateDtype::F32 {
            self.state = self.state.map(|v| f64::from(v as f32));
        }
        Ok(())
    }

    fn observation(&self) -> Obs {
        self.obs()
    }
}

impl FlowEnv for Acrobot {
    fn id(&self) -> String {
        ID.to_string()
    }

    fn reset_native(&mut self, seed: Option<u64>) -> Obs {
        if let Some(seed) = seed {
            self.rng = Generator::seeded(seed);
        }
        for v in &mut self.state {
            *v = f64::from(self.rng.uniform(-0.1, 0.1) as f32);
        }
        self.obs()
    }

    fn step_native(&mut self, action: &Action) -> Step {
        let torque = AVAIL_TORQUE[discrete(|| ID.to_string(), action, 3)];
        let [t1, t2, d1, d2] = self.state;
        let ns = rk4(&[t1, t2, d1, d2, torque]);
        self.state = [
            wrap(ns[0], -PI, PI),
            wrap(ns[1], -PI, PI),
            bound(ns[2], -MAX_VEL_1, MAX_VEL_1),
            bound(ns[3], -MAX_VEL_2, MAX_VEL_2),
        ];
        let terminated = self.terminal();
        Step {
            obs: self.obs(),
            reward: if terminated { 0.0 } else { -1.0 },
            terminated,
            truncated: false,
            success: None,
        }
    }

    fn action_spec(&self) -> ActionSpec {
        ActionSpec::Discrete { n: 3 }
    }

    fn observation_bounds(&self) -> (Vec<f32>, Vec<f32>) {
        let high = vec![1.0, 1.0, 1.0, 1.0, MAX_VEL_1 as f32, MAX_VEL_2 as f32];
        (high.iter().map(|h| -h).collect(), high)
    }

    fn obs_dim(&self) -> usize {
        6
    }

    fn max_episode_steps(&self) -> Option<usize> {
        None
    }

    /// Energy pumping: torque in the direction the joint turns (positive work).
    fn expert_action(&self, _rng: &mut ChaCha8Rng) -> Action {
        let [_, _, _, d2] = self.state;
        Action::Discrete(if d2 > 0.0 { 2 } else { 0 })
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

impl_gym_env!(Acrobot);
