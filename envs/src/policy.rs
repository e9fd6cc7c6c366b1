//! Behaviour policies: the uniform random policy, the scripted experts (on each
//! environment, see [`FlowEnv::expert_action`]), their degraded versions, and the
//! quality tiers datasets are collected with.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::{Action, ActionSpec, EnvError, FlowEnv};

/// A dataset quality tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// The uniform random policy.
    Random,
    /// The expert degraded to roughly a third to a half of its normalised score
    /// (T-Mazes: walks the corridor but picks the junction side at random).
    Medium,
    /// The scripted expert.
    Expert,
    /// Half medium, half expert episodes (odd-numbered episodes are expert).
    MediumExpert,
    /// A sweep from random up to medium over the episodes, like a learning agent's
    /// replay buffer: episode `k` of `n` takes a random action with probability
    /// `1 - k / (n - 1)` and the medium action otherwise. On the MuJoCo locomotion
    /// tasks: the learner's own training rollouts up to the medium snapshot (from a
    /// behaviour set, see `flowrl::behaviour::set`).
    MediumReplay,
    /// Every training rollout of the learner (MuJoCo locomotion tasks, from a behaviour
    /// set). The scripted environments have no learner: [`crate::collect()`] refuses it
    /// there, naming the tier and the environment.
    FullReplay,
}

impl Tier {
    /// Every tier, in order of the names.
    pub const ALL: [Tier; 6] = [
        Tier::Random,
        Tier::Medium,
        Tier::Expert,
        Tier::MediumExpert,
        Tier::MediumReplay,
        Tier::FullReplay,
    ];

    /// The tiers the scripted behaviour policies give (every tier but `full-replay`).
    pub const SCRIPTED: [Tier; 5] = [
        Tier::Random,
        Tier::Medium,
        Tier::Expert,
        Tier::MediumExpert,
        Tier::MediumReplay,
    ];

    /// The tier's name, as accepted by `from_str`.
    pub fn name(&self) -> &'static str {
        match self {
            Tier::Random => "random",
            Tier::Medium => "medium",
            Tier::Expert => "expert",
            Tier::MediumExpert => "medium-expert",
            Tier::MediumReplay => "medium-replay",
            Tier::FullReplay => "full-replay",
        }
    }

    /// The behaviour of episode `index` out of `episodes` collected for this tier.
    /// `full-replay` has no scripted behaviour ([`crate::collect()`] refuses it); it gives
    /// the random behaviour here.
    pub fn behaviour(&self, index: usize, episodes: usize) -> Behaviour {
        match self {
            Tier::Random | Tier::FullReplay => Behaviour::Random,
            Tier::Medium => Behaviour::Medium { epsilon: 0.0 },
            Tier::Expert => Behaviour::Expert,
            Tier::MediumExpert if index % 2 == 1 => Behaviour::Expert,
            Tier::MediumExpert => Behaviour::Medium { epsilon: 0.0 },
            Tier::MediumReplay => {
                let progress = if episodes > 1 {
                    index as f64 / (episodes - 1) as f64
                } else {
                    1.0
                };
                Behaviour::Medium {
                    epsilon: 1.0 - progress,
                }
            }
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Tier {
    type Err = EnvError;

    fn from_str(s: &str) -> Result<Self, EnvError> {
        Tier::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| EnvError::UnknownTier(s.to_string()))
    }
}

/// How one episode chooses its actions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Behaviour {
    /// Uniform random actions.
    Random,
    /// The scripted expert.
    Expert,
    /// The medium behaviour, with an extra probability `epsilon` of a random action.
    Medium {
        /// Probability of a uniform random action instead of the medium one.
        epsilon: f64,
    },
}

impl Behaviour {
    /// The action in the environment's current state.
    pub fn act(&self, env: &dyn FlowEnv, rng: &mut ChaCha8Rng) -> Action {
        match *self {
            Behaviour::Random => env.action_spec().sample(rng),
            Behaviour::Expert => env.expert_action(rng),
            Behaviour::Medium { epsilon } => {
                if epsilon > 0.0 && rng.gen_bool(epsilon.min(1.0)) {
                    env.action_spec().sample(rng)
                } else {
                    env.medium_action(rng)
                }
            }
        }
    }
}

/// The expert action degraded: a uniform random action with probability `epsilon`,
/// else the expert action with Gaussian noise of standard deviation `noise` added to
/// continuous values (then clipped to the bounds).
pub(crate) fn degrade(
    expert: Action,
    spec: ActionSpec,
    epsilon: f64,
    noise: f32,
    rng: &mut ChaCha8Rng,
) -> Action {
    if rng.gen_bool(epsilon) {
        return spec.sample(rng);
    }
    match (expert, spec) {
        (Action::Continuous(values), ActionSpec::Continuous { low, high, .. }) if noise > 0.0 => {
            Action::Continuous(
                values
                    .into_iter()
                    .map(|v| {
                        let z: f32 = StandardNormal.sample(rng);
                        (v + noise * z).clamp(low, high)
                    })
                    .collect(),
            )
        }
        (expert, _) => expert,
    }
}
