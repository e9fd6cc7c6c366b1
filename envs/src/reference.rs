//! Reference returns of the random and expert policies, for D4RL-style normalised scores.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::memory::tmaze_random_return;
use crate::mujoco::Robot;
use crate::registry::{parse, EnvId};
use crate::{collect, EnvError, Tier};

/// Episodes each reference return averages.
pub const REFERENCE_EPISODES: usize = 100;
/// The collection seed of the reference episodes.
pub const REFERENCE_SEED: u64 = 0;

/// Mean returns of the uniform random policy and of the scripted expert.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReferenceReturns {
    /// Mean return of the uniform random policy.
    pub random: f64,
    /// Mean return of the scripted expert.
    pub expert: f64,
}

impl ReferenceReturns {
    /// The normalised score `100 (R - R_random) / (R_expert - R_random)`.
    pub fn normalized(&self, ret: f64) -> f64 {
        100.0 * (ret - self.random) / (self.expert - self.random)
    }
}

// Classic control: means over `REFERENCE_EPISODES` episodes collected with
// `collect(id, tier, 100, REFERENCE_SEED)`, published here as constants
// (`measure_reference_returns` recomputes them; a test checks they agree).
const CARTPOLE: ReferenceReturns = ReferenceReturns {
    random: 22.17,
    expert: 500.0,
};
const PENDULUM: ReferenceReturns = ReferenceReturns {
    random: -1284.8187783861913,
    expert: -155.57861162698765,
};
const MOUNTAIN_CAR: ReferenceReturns = ReferenceReturns {
    random: -33.28788447616652,
    expert: 89.35999999999991,
};
const ACROBOT: ReferenceReturns = ReferenceReturns {
    random: -497.83,
    expert: -93.44,
};

/// D4RL's random and expert returns of a locomotion robot (`REF_MIN_SCORE` and
/// `REF_MAX_SCORE` in `d4rl/infos.py`), used for every version of its task.
pub fn d4rl_locomotion(robot: Robot) -> ReferenceReturns {
    let (random, expert) = match robot {
        Robot::Hopper => (-20.272305, 3234.3),
        Robot::HalfCheetah => (-280.178953, 12135.0),
        Robot::Walker2d => (1.629008, 4592.3),
    };
    ReferenceReturns { random, expert }
}

/// The reference returns of `id`, `None` for an unknown id.
///
/// Classic control: published constants (see [`measure_reference_returns`]).
/// MuJoCo locomotion: D4RL's ([`d4rl_locomotion`]).
/// T-Mazes: exact values from L, expert 1 (the optimal route is never penalised and
/// always succeeds) and random the exact expectation of the uniform random policy
/// (dynamic programming over the agent's position). Key-to-Door: the apple count of
/// the expert depends on L, so both are measured like the constants. Values that
/// depend on L are computed on the first call for each id and kept for the process.
pub fn reference_returns(id: &str) -> Option<ReferenceReturns> {
    let parsed = parse(id).ok()?;
    match parsed {
        EnvId::CartPole => return Some(CARTPOLE),
        EnvId::Pendulum => return Some(PENDULUM),
        EnvId::MountainCarContinuous => return Some(MOUNTAIN_CAR),
        EnvId::Acrobot => return Some(ACROBOT),
        EnvId::Locomotion(spec) => return Some(d4rl_locomotion(spec.robot)),
        EnvId::TMaze { .. } | EnvId::KeyToDoor { .. } => {}
    }
    static COMPUTED: OnceLock<Mutex<HashMap<String, ReferenceReturns>>> = OnceLock::new();
    let cache = COMPUTED.get_or_init(Default::default);
    if let Some(found) = cache.lock().ok()?.get(id) {
        return Some(*found);
    }
    let reference = match parsed {
        EnvId::TMaze { active, length } => ReferenceReturns {
            random: tmaze_random_return(active, length).ok()?,
            expert: 1.0,
        },
        _ => measure_reference_returns(id).ok()?,
    };
    cache.lock().ok()?.insert(id.to_string(), reference);
    Some(reference)
}

/// Measures the reference returns: the mean returns of [`REFERENCE_EPISODES`]
/// episodes of the random and the expert tier collected with [`REFERENCE_SEED`].
pub fn measure_reference_returns(id: &str) -> Result<ReferenceReturns, EnvError> {
    let mean = |tier| -> Result<f64, EnvError> {
        let episodes = collect(id, tier, REFERENCE_EPISODES, REFERENCE_SEED, &mut |_| {})?;
        Ok(episodes.iter().map(|e| e.total_reward()).sum::<f64>() / episodes.len() as f64)
    };
    Ok(ReferenceReturns {
        random: mean(Tier::Random)?,
        expert: mean(Tier::Expert)?,
    })
}
