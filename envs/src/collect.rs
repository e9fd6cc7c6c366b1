//! Seeded, reproducible collection of episodes with a behaviour tier.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::policy::Behaviour;
use crate::{Action, EnvError, Obs, Tier, VecEnv};

/// Environments stepped in lockstep while collecting.
const LANES: usize = 64;

/// One recorded episode: `observations[t]` is the observation `actions[t]` was taken
/// in and `rewards[t]` the native reward it earned (the observation after the last
/// step is not stored).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Episode {
    /// Observations before each action.
    pub observations: Vec<Obs>,
    /// The actions.
    pub actions: Vec<Action>,
    /// The rewards.
    pub rewards: Vec<f64>,
    /// The last step terminated the episode.
    pub terminated: bool,
    /// The last step was cut by the time limit.
    pub truncated: bool,
    /// Whether the task was solved, for tasks that define success.
    pub success: Option<bool>,
}

impl Episode {
    /// The undiscounted return.
    pub fn total_reward(&self) -> f64 {
        self.rewards.iter().sum()
    }

    /// The number of steps.
    pub fn len(&self) -> usize {
        self.actions.len()
    }

    /// Whether the episode has no step.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// The policy generator of an episode: its reset seed on ChaCha8 stream 1, so that an
/// episode does not depend on how episodes share the lanes.
fn episode_rng(episode_seed: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(episode_seed);
    rng.set_stream(1);
    rng
}

/// An episode being recorded in a lane.
struct Lane {
    index: usize,
    behaviour: Behaviour,
    rng: ChaCha8Rng,
    obs: Obs,
    episode: Episode,
}

/// Seeded, reproducible collection of `episodes` episodes of a tier with the lockstep
/// vector; `progress` is called with the number of finished episodes. Episode `k`
/// resets with the `k`-th number of a ChaCha8 stream seeded with `seed` and acts with
/// [`Tier::behaviour`]`(k, episodes)`; episodes are returned in order of `k`.
pub fn collect(
    id: &str,
    tier: Tier,
    episodes: usize,
    seed: u64,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Episode>, EnvError> {
    if tier == Tier::FullReplay {
        return Err(EnvError::BadArgument {
            what: format!("tier `{tier}` of `{id}`"),
            expected: "one of random, medium, expert, medium-expert, medium-replay (full-replay \
                       is a learner's training rollouts, which only the MuJoCo locomotion \
                       tasks have, from a behaviour set)"
                .into(),
            found: format!("`{tier}`"),
        });
    }
    let mut seeds = ChaCha8Rng::seed_from_u64(seed);
    let episode_seeds: Vec<u64> = (0..episodes).map(|_| seeds.next_u64()).collect();
    let mut vec = VecEnv::new(id, episodes.clamp(1, LANES))?;
    if tier != Tier::Random && !vec.env(0).scripted_behaviour() {
        return Err(EnvError::BadArgument {
            what: format!("tier `{tier}` of `{id}`"),
            expected: "the `random` tier (this environment has no scripted behaviour policy)"
                .into(),
            found: format!("`{tier}`"),
        });
    }
    let placeholder = vec.action_spec().sample(&mut ChaCha8Rng::seed_from_u64(0));
    let mut lanes: Vec<Option<Lane>> = Vec::with_capacity(vec.len());
    let mut next = 0;
    let start =
        |vec: &mut VecEnv, lane: usize, next: &mut usize| -> Result<Option<Lane>, EnvError> {
            if *next >= episodes {
                return Ok(None);
            }
            let index = *next;
            *next += 1;
            let obs = vec.reset_env(lane, Some(episode_seeds[index]))?;
            Ok(Some(Lane {
                index,
                behaviour: tier.behaviour(index, episodes),
                rng: episode_rng(episode_seeds[index]),
                obs,
                episode: Episode {
                    observations: Vec::new(),
                    actions: Vec::new(),
                    rewards: Vec::new(),
                    terminated: false,
                    truncated: false,
                    success: None,
                },
            }))
        };
    for lane in 0..vec.len() {
        let started = start(&mut vec, lane, &mut next)?;
        lanes.push(started);
    }
    let mut finished: Vec<Option<Episode>> = vec![None; episodes];
    let mut count = 0;
    while lanes.iter().any(Option::is_some) {
        let actions: Vec<Action> = lanes
            .iter_mut()
            .enumerate()
            .map(|(i, lane)| match lane {
                Some(lane) => lane.behaviour.act(vec.env(i), &mut lane.rng),
                None => placeholder.clone(),
            })
            .collect();
        let steps = vec.step(&actions)?;
        for (i, (step, action)) in steps.into_iter().zip(actions).enumerate() {
            let (Some(step), Some(lane)) = (step, lanes[i].as_mut()) else {
                continue;
            };
            let obs = std::mem::replace(&mut lane.obs, step.obs);
            lane.episode.observations.push(obs);
            lane.episode.actions.push(action);
            lane.episode.rewards.push(step.reward);
            if step.terminated || step.truncated {
                lane.episode.terminated = step.terminated;
                lane.episode.truncated = step.truncated;
                lane.episode.success = step.success;
                if let Some(done) = lanes[i].take() {
                    finished[done.index] = Some(done.episode);
                }
                count += 1;
                progress(count);
                lanes[i] = start(&mut vec, i, &mut next)?;
            }
        }
    }
    Ok(finished.into_iter().flatten().collect())
}
