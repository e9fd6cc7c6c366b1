//! D4RL-style tiers of the MuJoCo locomotion tasks, collected from a behaviour set
//! ([`super::set`]).
//!
//! | tier | episodes |
//! |------|----------|
//! | `medium` | the medium snapshot with action noise |
//! | `expert` | the expert snapshot with action noise |
//! | `medium-expert` | alternating: episode `k` is expert when `k` is odd, medium when even |
//! | `medium-replay` | the learner's training rollouts of iterations `1..=i`, in training order, `i` being the medium snapshot's iteration (D4RL's replay buffer up to its medium policy) |
//! | `full-replay` | every training rollout in the set, in training order |
//!
//! An ARS learner's buffer is far larger than the SAC buffers D4RL saved (each
//! iteration rolls out `2N` whole episodes), so a replay size below the buffer takes
//! whole iterations evenly spaced over it ([`spaced_iterations`]: every `s`-th
//! iteration for the largest stride `s` that holds the size), cut to the size like
//! every tier: the data spans the learning curve up to the snapshot, not just its start.
//!
//! (`random` is the uniform random policy, collected like the other environments'.)
//!
//! Size: `--episodes N` takes `N` episodes; `--transitions N` takes whole episodes, in
//! order, until they hold at least `N` transitions (the last episode is never cut, so
//! the dataset may hold up to one episode more than `N`). Replay tiers refuse a size
//! their rollouts do not reach, naming how much there is.
//!
//! Snapshot tiers: the linear policies are deterministic, so every action gets
//! Gaussian noise of standard deviation `--action-noise` (default
//! [`DEFAULT_ACTION_NOISE`] = 0.05, in action units) and is clipped to the action
//! bounds. Episode `k` resets with the `k`-th number of a ChaCha8 stream seeded with
//! the collection seed and draws its noise from ChaCha8 stream 1 of that reset seed
//! (as the scripted behaviours draw theirs), so the same seed gives the same dataset
//! and the first episodes do not depend on how many are collected. Episodes run in
//! parallel on the rayon pool, in batches appended in order (the data does not depend
//! on the number of threads).
//!
//! The dataset's provenance records the set, both snapshots' returns and iterations,
//! the noise and the policy of every episode
//! ([`crate::data::BehaviourSetProvenance`]).

use anyhow::{bail, Context};
use flowrl_envs::{Action, FlowEnv, Tier};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use super::policy::BehaviourPolicy;
use super::set::BehaviourSet;
use crate::data::{
    store, BehaviourSetProvenance, Dataset, DatasetBuilder, Ending, Metadata, Provenance,
    ReferenceReturns, Space,
};

/// Default standard deviation of the Gaussian noise added to the snapshots' actions:
/// at 0.1 the linear HalfCheetah policies flip over in some episodes (expert data at
/// 35 ± 17 normalised against 53 for the snapshot), at 0.05 they keep their gait
/// while every episode still differs (assets/behaviour/README.md).
pub const DEFAULT_ACTION_NOISE: f64 = 0.05;

/// How much to collect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// This many episodes.
    Episodes(usize),
    /// Whole episodes until at least this many transitions.
    Transitions(usize),
}

impl Size {
    /// Whether `episodes` episodes holding `transitions` transitions are enough.
    pub fn reached(&self, episodes: usize, transitions: usize) -> bool {
        match *self {
            Size::Episodes(n) => episodes >= n,
            Size::Transitions(n) => transitions >= n,
        }
    }

    /// The amount asked for (episodes or transitions).
    pub fn amount(&self) -> usize {
        match *self {
            Size::Episodes(n) | Size::Transitions(n) => n,
        }
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Size::Episodes(n) => write!(f, "{n} episodes"),
            Size::Transitions(n) => write!(f, "{n} transitions"),
        }
    }
}

/// The description of a set tier's behaviour recorded in the provenance.
fn description(tier: Tier, noise: f64) -> String {
    match tier {
        Tier::Medium => format!("medium ARS snapshot, Gaussian action noise {noise}"),
        Tier::Expert => format!("expert ARS snapshot, Gaussian action noise {noise}"),
        Tier::MediumExpert => format!(
            "medium and expert ARS snapshots, alternating episodes (odd: expert), Gaussian \
             action noise {noise}"
        ),
        Tier::MediumReplay => "ARS training rollouts up to the medium snapshot".into(),
        Tier::FullReplay => "every ARS training rollout".into(),
        Tier::Random => "uniform random".into(),
    }
}

/// Collects `size` of `tier` (any tier but `random`) of `env_id` from `set`;
/// `progress` is called with the episodes done so far.
pub fn collect_from_set(
    env_id: &str,
    tier: Tier,
    size: Size,
    seed: u64,
    action_noise: f64,
    set: &BehaviourSet,
    progress: &mut dyn FnMut(usize),
) -> anyhow::Result<Dataset> {
    if size.amount() == 0 {
        bail!("the size must be at least 1, found 0 ({size})");
    }
    if !(action_noise.is_finite() && action_noise >= 0.0) {
        bail!("--action-noise: expected a finite value >= 0, found {action_noise}");
    }
    let env = flowrl_envs::make(env_id)?;
    let (obs_low, obs_high) = env.observation_bounds();
    let (low, high) = set.expert.action_bounds();
    let act_dim = set.expert.act_dim();
    let meta = |episodes: usize, policies: Vec<String>, noise: Option<f64>| Metadata {
        env_id: env_id.to_string(),
        observation_space: Space::Box {
            low: obs_low.clone(),
            high: obs_high.clone(),
        },
        action_space: Space::Box {
            low: vec![low; act_dim],
            high: vec![high; act_dim],
        },
        provenance: Provenance {
            source: "collect".into(),
            behaviour_policy: Some(description(tier, action_noise)),
            tier: Some(tier.name().into()),
            seed: Some(seed),
            episodes,
            origin: Some(set.dir.display().to_string()),
            behaviour_set: Some(BehaviourSetProvenance {
                folder: set.dir.display().to_string(),
                medium_snapshot: set.selection.medium.clone(),
                medium_return: set.medium.info().eval_return,
                medium_iteration: set.medium.info().iteration,
                expert_snapshot: set.selection.expert.clone(),
                expert_return: set.expert.info().eval_return,
                expert_iteration: set.expert.info().iteration,
                action_noise: noise,
                episode_policies: policies,
            }),
        },
        reference_returns: flowrl_envs::reference_returns(env_id).map(|r| ReferenceReturns {
            random: r.random,
            expert: r.expert,
        }),
    };
    let obs_dim = obs_low.len();
    let mut b = DatasetBuilder::new(obs_dim, act_dim, false);
    let mut policies = Vec::new();
    match tier {
        Tier::Random => bail!("the random tier needs no behaviour set"),
        Tier::MediumReplay | Tier::FullReplay => {
            let last = if tier == Tier::MediumReplay {
                set.medium.info().iteration
            } else {
                set.replay_iterations()
            };
            set.require_rollouts(tier.name(), last)?;
            let load = |i: u64| -> anyhow::Result<Dataset> {
                let path = set.rollouts_file(i)?;
                let ds = store::load(&path)?;
                if ds.meta().env_id != env_id || ds.obs_dim() != obs_dim {
                    bail!("{}: rollouts of another environment", path.display());
                }
                Ok(ds)
            };
            let counts = (1..=last)
                .map(|i| load(i).map(|ds| (ds.num_episodes(), ds.len())))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let Some(iterations) = spaced_iterations(&counts, size) else {
                let (episodes, transitions) = counts
                    .iter()
                    .fold((0, 0), |(e, t), &(de, dt)| (e + de, t + dt));
                bail!(
                    "{tier} of the behaviour set {} holds {episodes} episodes ({transitions} \
                     transitions, iterations 1 to {last}), fewer than the {size} asked for",
                    set.dir.display(),
                );
            };
            'files: for i in iterations {
                let ds = load(i)?;
                let actions = match ds.actions() {
                    crate::data::Actions::Continuous { dim, values } if *dim == act_dim => values,
                    _ => bail!(
                        "rollouts of iteration {i}: expected {act_dim} continuous action values"
                    ),
                };
                for e in 0..ds.num_episodes() {
                    if size.reached(policies.len(), b.len()) {
                        break 'files;
                    }
                    for t in ds.episode(e) {
                        b.push_continuous(
                            ds.observation(t),
                            &actions[t * act_dim..(t + 1) * act_dim],
                            ds.rewards()[t],
                        );
                    }
                    b.end_episode(if ds.episode_terminated(e) {
                        Ending::Terminated
                    } else {
                        Ending::Truncated
                    });
                    policies.push(format!("iter-{i:06}"));
                    progress(policies.len());
                }
            }
            let n = policies.len();
            return b
                .build(meta(n, policies, None))
                .map_err(|p| anyhow::anyhow!("{tier} of {env_id}: {p}"));
        }
        Tier::Medium | Tier::Expert | Tier::MediumExpert => {}
    }
    for policy in [&set.medium, &set.expert] {
        if policy.obs_dim() != obs_dim || policy.act_dim() != act_dim {
            bail!(
                "the snapshots of {} do not fit {env_id}: observations {} and actions {}, \
                 expected {obs_dim} and {act_dim}",
                set.dir.display(),
                policy.obs_dim(),
                policy.act_dim()
            );
        }
    }
    // Episodes run in parallel in batches, each on its own environment, and are
    // appended in order: the data does not depend on the number of threads.
    let batch = (4 * rayon::current_num_threads()).max(8);
    let mut envs = vec![env];
    let mut seeds = ChaCha8Rng::seed_from_u64(seed);
    let mut k = 0;
    while !size.reached(k, b.len()) {
        let n = match size {
            Size::Episodes(n) => (n - k).min(batch),
            Size::Transitions(_) => batch,
        };
        while envs.len() < n {
            envs.push(flowrl_envs::make(env_id)?);
        }
        let jobs: Vec<(usize, u64)> = (k..k + n).map(|i| (i, seeds.next_u64())).collect();
        let episodes = envs[..n]
            .par_iter_mut()
            .zip(&jobs)
            .map(|(env, &(i, episode_seed))| {
                let expert = match tier {
                    Tier::Expert => true,
                    Tier::MediumExpert => i % 2 == 1,
                    _ => false,
                };
                let policy = if expert { &set.expert } else { &set.medium };
                noisy_episode(env.as_mut(), policy, episode_seed, action_noise)
                    .with_context(|| format!("episode {i} of {tier} on {env_id}"))
                    .map(|e| (expert, e))
            })
            .collect::<Vec<_>>();
        for episode in episodes {
            if size.reached(k, b.len()) {
                break;
            }
            let (expert, e) = episode?;
            for t in 0..e.rewards.len() {
                b.push_continuous(
                    &e.observations[t * obs_dim..(t + 1) * obs_dim],
                    &e.actions[t * act_dim..(t + 1) * act_dim],
                    e.rewards[t],
                );
            }
            b.end_episode(if e.terminated {
                Ending::Terminated
            } else {
                Ending::Truncated
            });
            policies.push(if expert { "expert" } else { "medium" }.to_string());
            k += 1;
            progress(k);
        }
    }
    b.build(meta(k, policies, Some(action_noise)))
        .map_err(|p| anyhow::anyhow!("{tier} of {env_id}: {p}"))
}

/// The iterations a replay tier reads for `size`, given the `(episodes, transitions)`
/// of each iteration `1..=n`: every `s`-th iteration (`s, 2s, 3s, ...`) for the largest
/// stride `s` whose iterations hold the size, so a dataset smaller than the buffer still
/// spans the whole learning curve, in training order (stride 1: the whole buffer).
/// `None` when even the whole buffer is too small.
pub fn spaced_iterations(counts: &[(usize, usize)], size: Size) -> Option<Vec<u64>> {
    let n = counts.len();
    (1..=n).rev().find_map(|stride| {
        let chosen: Vec<usize> = (stride..=n).step_by(stride).collect();
        let (episodes, transitions) = chosen.iter().fold((0, 0), |(e, t), &i| {
            (e + counts[i - 1].0, t + counts[i - 1].1)
        });
        size.reached(episodes, transitions)
            .then(|| chosen.into_iter().map(|i| i as u64).collect())
    })
}

/// One recorded episode: observations and actions row-major.
struct Recorded {
    observations: Vec<f32>,
    actions: Vec<f32>,
    rewards: Vec<f32>,
    terminated: bool,
}

/// One episode of `policy` from `episode_seed` with Gaussian action noise of standard
/// deviation `noise` (drawn from ChaCha8 stream 1 of the reset seed), clipped to the
/// action bounds.
fn noisy_episode(
    env: &mut dyn FlowEnv,
    policy: &BehaviourPolicy,
    episode_seed: u64,
    noise: f64,
) -> anyhow::Result<Recorded> {
    let (low, high) = policy.action_bounds();
    let mut rng = ChaCha8Rng::seed_from_u64(episode_seed);
    rng.set_stream(1);
    let mut out = Recorded {
        observations: Vec::new(),
        actions: Vec::new(),
        rewards: Vec::new(),
        terminated: false,
    };
    let mut obs = env.reset_native(Some(episode_seed));
    loop {
        let Action::Continuous(mut action) = policy.act(&obs) else {
            unreachable!("linear policies act continuously")
        };
        if noise > 0.0 {
            for a in &mut action {
                let z: f64 = StandardNormal.sample(&mut rng);
                *a = (f64::from(*a) + noise * z).clamp(f64::from(low), f64::from(high)) as f32;
            }
        }
        out.observations.extend_from_slice(&obs);
        out.actions.extend_from_slice(&action);
        let step = env
            .try_step(&Action::Continuous(action))
            .with_context(|| format!("step {}", out.rewards.len()))?;
        out.rewards.push(step.reward as f32);
        if step.done() {
            out.terminated = step.terminated;
            return Ok(out);
        }
        obs = step.obs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_sizes_take_evenly_spaced_iterations() {
        // Four iterations of 2 episodes; transitions 10, 20, 30, 40.
        let counts = [(2, 10), (2, 20), (2, 30), (2, 40)];
        let take = |size| spaced_iterations(&counts, size);
        assert_eq!(take(Size::Episodes(2)), Some(vec![4]));
        assert_eq!(take(Size::Episodes(3)), Some(vec![2, 4]));
        assert_eq!(take(Size::Episodes(5)), Some(vec![1, 2, 3, 4]));
        assert_eq!(take(Size::Episodes(9)), None);
        assert_eq!(take(Size::Transitions(40)), Some(vec![4]));
        // Stride 3 gives iteration 3 (30), stride 2 gives 2 and 4 (60).
        assert_eq!(take(Size::Transitions(41)), Some(vec![2, 4]));
        assert_eq!(take(Size::Transitions(61)), Some(vec![1, 2, 3, 4]));
        assert_eq!(take(Size::Transitions(100)), Some(vec![1, 2, 3, 4]));
        assert_eq!(take(Size::Transitions(101)), None);
    }
}
