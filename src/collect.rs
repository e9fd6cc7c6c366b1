//! Dataset collection with behaviour policies: episodes from `flowrl_envs::collect`
//! (seeded, lockstep environment vector) turned into a native [`Dataset`].

use std::path::PathBuf;

use flowrl_envs::{Action, ActionSpec, EnvError, Episode, Tier};

use crate::behaviour::set::BehaviourSet;
pub use crate::behaviour::tiers::Size;
use crate::behaviour::tiers::{collect_from_set, DEFAULT_ACTION_NOISE};

use crate::data::{
    Dataset, DatasetBuilder, Ending, Metadata, Problem, Provenance, ReferenceReturns, Space,
};

/// Why a collection failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// Zero episodes were asked for.
    #[error("--episodes must be at least 1, found 0")]
    NoEpisodes,
    /// Zero transitions were asked for.
    #[error("--transitions must be at least 1, found 0")]
    NoTransitions,
    /// A size in transitions for a tier whose episodes depend on the episode count.
    #[error(
        "--transitions with tier `{tier}` of `{env}`: the scripted medium-replay sweep \
         depends on the number of episodes; give --episodes instead"
    )]
    TransitionsNeedEpisodes {
        /// The environment id.
        env: String,
        /// The tier.
        tier: Tier,
    },
    /// Collecting from a behaviour set failed (missing set, bad snapshot, too few
    /// stored rollouts, ...).
    #[error("{0:#}")]
    Behaviour(anyhow::Error),
    /// The environments crate refused (unknown id, bad id parameter, ...).
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The collected episodes do not form a valid dataset.
    #[error("collected episodes of `{env}`: {problem}")]
    Data {
        /// The environment id.
        env: String,
        /// What is wrong.
        problem: Problem,
    },
}

/// The file name under which a collected dataset is cached: env, tier, episode count
/// and collection seed, e.g. `Pendulum-v1-medium-1000ep-seed0.safetensors`.
pub fn dataset_file_name(env_id: &str, tier: &str, episodes: usize, seed: u64) -> String {
    format!("{env_id}-{tier}-{episodes}ep-seed{seed}.safetensors")
}

/// [`collect_dataset`] with `bar` (sized by the caller) following the finished
/// episodes; the bar is cleared when collection ends.
pub fn collect_with_bar(
    env_id: &str,
    tier: Tier,
    episodes: usize,
    seed: u64,
    bar: &indicatif::ProgressBar,
) -> Result<Dataset, CollectError> {
    let ds = collect_dataset(env_id, tier, episodes, seed, &mut |done| {
        bar.set_position(done as u64)
    });
    bar.finish_and_clear();
    ds
}

/// What [`collect_sized`] takes beyond the environment, tier, size and seed.
#[derive(Clone, Debug, Default)]
pub struct CollectOptions {
    /// The behaviour set of a MuJoCo locomotion task (default: the repository's
    /// `assets/behaviour/<env-id>/`, see [`crate::behaviour::set`]).
    pub behaviour: Option<PathBuf>,
    /// Gaussian action noise of the snapshot tiers (default
    /// [`crate::behaviour::tiers::DEFAULT_ACTION_NOISE`]).
    pub action_noise: Option<f64>,
}

/// A description of the behaviour policy of a tier, recorded in the provenance.
pub fn behaviour_policy(tier: Tier) -> &'static str {
    match tier {
        Tier::Random => "uniform random",
        Tier::Medium => "degraded scripted expert",
        Tier::Expert => "scripted expert",
        Tier::MediumExpert => "degraded and scripted expert, alternating episodes",
        Tier::MediumReplay => "degraded expert with random actions decaying from 1 to 0",
        Tier::FullReplay => "a learner's training rollouts",
    }
}

/// Collects `episodes` episodes of `env_id` with the tier's behaviour and builds the
/// dataset; `progress` is called with the number of finished episodes.
pub fn collect_dataset(
    env_id: &str,
    tier: Tier,
    episodes: usize,
    seed: u64,
    progress: &mut dyn FnMut(usize),
) -> Result<Dataset, CollectError> {
    collect_sized(
        env_id,
        tier,
        Size::Episodes(episodes),
        seed,
        &CollectOptions::default(),
        progress,
    )
}

/// Collects `size` (episodes, or whole episodes until at least that many transitions)
/// of `env_id` with the tier's behaviour and builds the dataset; `progress` is called
/// with the number of finished episodes. Environments with scripted behaviour use
/// [`flowrl_envs::collect`]; the others (the MuJoCo locomotion tasks) take every tier
/// but `random` from a behaviour set ([`crate::behaviour::tiers`]). Episode `k` is the
/// same whatever the size, so a size in transitions gives a prefix of a larger
/// collection with the same seed.
pub fn collect_sized(
    env_id: &str,
    tier: Tier,
    size: Size,
    seed: u64,
    opts: &CollectOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<Dataset, CollectError> {
    match size {
        Size::Episodes(0) => return Err(CollectError::NoEpisodes),
        Size::Transitions(0) => return Err(CollectError::NoTransitions),
        _ => {}
    }
    let env = flowrl_envs::make(env_id)?;
    if tier != Tier::Random && !env.scripted_behaviour() {
        let dir = opts
            .behaviour
            .clone()
            .unwrap_or_else(|| crate::behaviour::set::default_dir(env_id));
        let noise = opts.action_noise.unwrap_or(DEFAULT_ACTION_NOISE);
        return BehaviourSet::open(&dir, env_id)
            .and_then(|set| collect_from_set(env_id, tier, size, seed, noise, &set, progress))
            .map_err(CollectError::Behaviour);
    }
    let (low, high) = env.observation_bounds();
    let spec = env.action_spec();
    let recorded = match size {
        Size::Episodes(n) => flowrl_envs::collect(env_id, tier, n, seed, progress)?,
        Size::Transitions(n) => {
            if tier == Tier::MediumReplay {
                return Err(CollectError::TransitionsNeedEpisodes {
                    env: env_id.to_string(),
                    tier,
                });
            }
            episodes_for_transitions(env_id, tier, n, seed, progress)?
        }
    };
    let episodes = recorded.len();
    let meta = Metadata {
        env_id: env_id.to_string(),
        observation_space: Space::Box { low, high },
        action_space: match spec {
            ActionSpec::Discrete { n } => Space::Discrete { n },
            ActionSpec::Continuous { dim, low, high } => Space::Box {
                low: vec![low; dim],
                high: vec![high; dim],
            },
        },
        provenance: Provenance {
            source: "collect".into(),
            behaviour_policy: Some(behaviour_policy(tier).into()),
            tier: Some(tier.name().into()),
            seed: Some(seed),
            episodes,
            origin: None,
            behaviour_set: None,
        },
        reference_returns: flowrl_envs::reference_returns(env_id).map(|r| ReferenceReturns {
            random: r.random,
            expert: r.expert,
        }),
    };
    episodes_to_dataset(&recorded, meta).map_err(|problem| CollectError::Data {
        env: env_id.to_string(),
        problem,
    })
}

/// The fewest first episodes of a tier whose behaviour does not depend on the episode
/// count that hold at least `transitions` transitions: collections of growing size
/// (episode `k` is the same in each), cut to that prefix.
fn episodes_for_transitions(
    env_id: &str,
    tier: Tier,
    transitions: usize,
    seed: u64,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Episode>, EnvError> {
    let mut count = 16;
    loop {
        let mut episodes = flowrl_envs::collect(env_id, tier, count, seed, progress)?;
        let mut total = 0;
        if let Some(k) = episodes.iter().position(|e| {
            total += e.len();
            total >= transitions
        }) {
            episodes.truncate(k + 1);
            return Ok(episodes);
        }
        let mean = (total / count).max(1);
        count = (2 * count).max(transitions.div_ceil(mean) + count / 8 + 1);
    }
}

/// Builds a dataset from recorded episodes. An episode flagged both terminated and
/// truncated counts as terminated (as in the D4RL import).
pub fn episodes_to_dataset(episodes: &[Episode], meta: Metadata) -> Result<Dataset, Problem> {
    let obs_dim = match &meta.observation_space {
        Space::Box { low, .. } => low.len(),
        Space::Discrete { .. } => 1,
    };
    let (act_dim, discrete) = match &meta.action_space {
        Space::Box { low, .. } => (low.len(), false),
        Space::Discrete { .. } => (1, true),
    };
    let mut b = DatasetBuilder::new(obs_dim, act_dim, discrete);
    for (e, ep) in episodes.iter().enumerate() {
        if ep.observations.len() != ep.actions.len() || ep.rewards.len() != ep.actions.len() {
            return Err(Problem::BadEpisode {
                episode: e,
                detail: format!(
                    "{} observations, {} actions and {} rewards (expected equal counts)",
                    ep.observations.len(),
                    ep.actions.len(),
                    ep.rewards.len()
                ),
            });
        }
        for ((obs, action), &reward) in ep.observations.iter().zip(&ep.actions).zip(&ep.rewards) {
            match action {
                Action::Discrete(a) => b.push_discrete(obs, *a, reward as f32),
                Action::Continuous(a) => b.push_continuous(obs, a, reward as f32),
            }
        }
        b.end_episode(if ep.terminated {
            Ending::Terminated
        } else {
            Ending::Truncated
        });
    }
    b.build(meta)
}
