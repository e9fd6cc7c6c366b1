//! Dataset collection with behaviour policies: episodes from `flowrl_envs::collect`
//! (seeded, lockstep environment vector) turned into a native [`Dataset`].

use flowrl_envs::{Action, ActionSpec, EnvError, Episode, Tier};

use crate::data::{
    Dataset, DatasetBuilder, Ending, Metadata, Problem, Provenance, ReferenceReturns, Space,
};

/// Why a collection failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// Zero episodes were asked for.
    #[error("--episodes must be at least 1, found 0")]
    NoEpisodes,
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

/// A description of the behaviour policy of a tier, recorded in the provenance.
pub fn behaviour_policy(tier: Tier) -> &'static str {
    match tier {
        Tier::Random => "uniform random",
        Tier::Medium => "degraded scripted expert",
        Tier::Expert => "scripted expert",
        Tier::MediumExpert => "degraded and scripted expert, alternating episodes",
        Tier::MediumReplay => "degraded expert with random actions decaying from 1 to 0",
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
    if episodes == 0 {
        return Err(CollectError::NoEpisodes);
    }
    let env = flowrl_envs::make(env_id)?;
    let (low, high) = env.observation_bounds();
    let spec = env.action_spec();
    let recorded = flowrl_envs::collect(env_id, tier, episodes, seed, progress)?;
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
