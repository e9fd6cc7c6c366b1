//! `make(id)`: every environment by its Gymnasium-style id, time limit applied.

use crate::classic::{Acrobot, CartPole, MountainCarContinuous, Pendulum};
use crate::memory::{KeyToDoor, TMaze};
use crate::mujoco::{Locomotion, LocomotionSpec, LOCOMOTION_STEPS};
use crate::{EnvError, FlowEnv, TimeLimit};

/// The classic-control ids.
pub const CLASSIC_IDS: [&str; 4] = [
    "CartPole-v1",
    "Pendulum-v1",
    "MountainCarContinuous-v0",
    "Acrobot-v1",
];

/// The known ids, for error messages and help texts.
pub const KNOWN_IDS: &str = "CartPole-v1, Pendulum-v1, MountainCarContinuous-v0, Acrobot-v1, \
     Hopper-v5, HalfCheetah-v5, Walker2d-v5, Hopper-v4, HalfCheetah-v4, Walker2d-v4, \
     TMaze-Passive-L<L>, TMaze-Active-L<L>, KeyToDoor-L<L> (memory length L >= 1)";

/// A parsed environment id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EnvId {
    CartPole,
    Pendulum,
    MountainCarContinuous,
    Acrobot,
    Locomotion(LocomotionSpec),
    TMaze { active: bool, length: usize },
    KeyToDoor { length: usize },
}

/// Parses an id, with an error listing the known ids.
pub(crate) fn parse(id: &str) -> Result<EnvId, EnvError> {
    let memory_length = |digits: &str| -> Result<usize, EnvError> {
        match digits.parse::<usize>() {
            Ok(length) if length >= 1 => Ok(length),
            _ => Err(EnvError::BadId {
                id: id.to_string(),
                reason: format!("memory length must be an integer >= 1, found `{digits}`"),
            }),
        }
    };
    Ok(match id {
        "CartPole-v1" => EnvId::CartPole,
        "Pendulum-v1" => EnvId::Pendulum,
        "MountainCarContinuous-v0" => EnvId::MountainCarContinuous,
        "Acrobot-v1" => EnvId::Acrobot,
        _ => {
            if let Some(spec) = LocomotionSpec::from_id(id) {
                EnvId::Locomotion(spec)
            } else if let Some(rest) = id.strip_prefix("TMaze-Passive-L") {
                EnvId::TMaze {
                    active: false,
                    length: memory_length(rest)?,
                }
            } else if let Some(rest) = id.strip_prefix("TMaze-Active-L") {
                EnvId::TMaze {
                    active: true,
                    length: memory_length(rest)?,
                }
            } else if let Some(rest) = id.strip_prefix("KeyToDoor-L") {
                EnvId::KeyToDoor {
                    length: memory_length(rest)?,
                }
            } else {
                return Err(EnvError::UnknownId {
                    id: id.to_string(),
                    known: KNOWN_IDS.to_string(),
                });
            }
        }
    })
}

/// The environment named `id` with Gymnasium's time limit applied (classic control:
/// 500 CartPole, 200 Pendulum, 999 MountainCarContinuous, 500 Acrobot steps; 1000
/// for the MuJoCo locomotion tasks, which need `flowrl setup mujoco` first). The
/// long-memory tasks end by themselves (terminated) at their horizon and are not wrapped.
pub fn make(id: &str) -> Result<Box<dyn FlowEnv>, EnvError> {
    use crate::classic::{ACROBOT_STEPS, CARTPOLE_STEPS, MOUNTAIN_CAR_STEPS, PENDULUM_STEPS};
    Ok(match parse(id)? {
        EnvId::CartPole => Box::new(TimeLimit::new(CartPole::new(), CARTPOLE_STEPS)),
        EnvId::Pendulum => Box::new(TimeLimit::new(Pendulum::new(), PENDULUM_STEPS)),
        EnvId::MountainCarContinuous => Box::new(TimeLimit::new(
            MountainCarContinuous::new(),
            MOUNTAIN_CAR_STEPS,
        )),
        EnvId::Acrobot => Box::new(TimeLimit::new(Acrobot::new(), ACROBOT_STEPS)),
        EnvId::Locomotion(spec) => {
            Box::new(TimeLimit::new(Locomotion::new(spec)?, LOCOMOTION_STEPS))
        }
        EnvId::TMaze { active, length } => Box::new(TMaze::new(active, length)?),
        EnvId::KeyToDoor { length } => Box::new(KeyToDoor::new(length)?),
    })
}
