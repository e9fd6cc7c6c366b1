//! Return-conditioned rollouts: `N` episodes of one environment in lockstep, one
//! batched policy forward per step for the episodes still running.
//!
//! Each episode starts with the target return divided by the reward scale (as the
//! returns-to-go of training) and, in the dense-reward setting, the target is reduced
//! by every reward / scale; in the delayed setting it stays constant (training saw the
//! whole return at every step). States are normalised with the training statistics.
//! Finished episodes leave the batch ([`Actor::keep_rows`]). Continuous predictions
//! (`tanh` values in `[-1, 1]`) are mapped linearly to the action bounds and clipped
//! to them; discrete ones are chosen greedily or sampled at a temperature.

use anyhow::{bail, Context};
use dfdx::prelude::Cpu;
use flowrl_agents::acting::{ActionPredictions, Actor, ContextMode};
use flowrl_agents::agent::{Agent, AgentKind, HostActions};
use flowrl_envs::{Action, ActionSpec, VecEnv};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::stats::Normalisation;

/// How discrete actions are chosen from the logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ActionChoice {
    /// The largest logit (the default).
    Greedy,
    /// A draw from `softmax(logits / temperature)`, seeded from the evaluation seed.
    Temperature(f64),
}

/// What a set of rollouts runs.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutSettings {
    /// Environment id.
    pub env_id: String,
    /// Episodes per target return (run in lockstep).
    pub episodes: usize,
    /// Context mode of the policy.
    pub context: ContextMode,
    /// Evaluation seed: episode seeds and action sampling derive from it.
    pub seed: u64,
    /// Discrete action choice (ignored for continuous actions).
    pub choice: ActionChoice,
    /// Delayed-reward setting: the target is not reduced by the rewards.
    pub delayed_reward: bool,
    /// Keep every episode's actions in its [`EpisodeOutcome`] (for inspection and tests).
    pub record_actions: bool,
}

impl RolloutSettings {
    /// Greedy, dense-reward rollouts without recorded actions.
    pub fn new(env_id: &str, episodes: usize, context: ContextMode, seed: u64) -> Self {
        Self {
            env_id: env_id.to_string(),
            episodes,
            context,
            seed,
            choice: ActionChoice::Greedy,
            delayed_reward: false,
            record_actions: false,
        }
    }
}

/// A trained policy with what it needs to see the environment as in training.
#[derive(Clone, Copy)]
pub struct Policy<'a> {
    /// The model.
    pub agent: &'a Agent<f32, Cpu>,
    /// Observation normalisation and reward scale of the training data.
    pub norm: &'a Normalisation,
    /// Per-dimension `(low, high)` that continuous model outputs in `[-1, 1]` map onto
    /// (the training data's action scaling); `None` uses the environment's bounds.
    pub action_bounds: Option<(&'a [f32], &'a [f32])>,
}

/// One finished episode.
#[derive(Clone, Debug, PartialEq)]
pub struct EpisodeOutcome {
    /// Sum of the native rewards.
    pub ret: f64,
    /// Steps taken.
    pub length: usize,
    /// Whether the task was solved, for tasks that define success.
    pub success: Option<bool>,
    /// The actions sent to the environment (empty unless
    /// [`RolloutSettings::record_actions`]).
    pub actions: Vec<Action>,
}

/// The seeds of `n` evaluation episodes: a ChaCha8 stream seeded with `seed` (offset
/// so that a training or collection seed of the same value gives other episodes).
pub fn episode_seeds(seed: u64, n: usize) -> Vec<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_e7a1_0000_0000);
    (0..n).map(|_| rng.gen()).collect()
}

/// Maps model outputs `y` (clamped to `[-1, 1]`) onto `[low_j, high_j]` per dimension
/// (`low + (y + 1) (high - low) / 2`) and clips the result to the environment's bounds
/// `[env_low, env_high]`. Returns the environment action and the action taken in the
/// model's scale (what training would have seen for it).
pub fn continuous_action(
    y: &[f32],
    (low, high): (&[f32], &[f32]),
    env_low: f32,
    env_high: f32,
) -> (Vec<f32>, Vec<f32>) {
    let mut env = Vec::with_capacity(y.len());
    let mut model = Vec::with_capacity(y.len());
    for (j, v) in y.iter().enumerate() {
        let (lo, hi) = (low[j], high[j]);
        let a = (lo + (v.clamp(-1.0, 1.0) + 1.0) * 0.5 * (hi - lo)).clamp(env_low, env_high);
        env.push(a);
        model.push((2.0 * (a - lo) / (hi - lo) - 1.0).clamp(-1.0, 1.0));
    }
    (env, model)
}

/// Checks, before any rollout, that `env_id` exists and that `policy` fits it
/// (observation size, action space, action bounds, reward scale).
pub fn check_env(policy: &Policy<'_>, env_id: &str) -> anyhow::Result<()> {
    let vec = VecEnv::new(env_id, 1)?;
    check_fit(policy, env_id, &vec)
}

/// Checks that the agent fits the environment: observation size and action space.
fn check_fit(policy: &Policy<'_>, env_id: &str, vec: &VecEnv) -> anyhow::Result<()> {
    let cfg = policy.agent.config();
    let obs_dim = vec.env(0).obs_dim();
    if cfg.obs_dim != obs_dim || policy.norm.obs_mean.len() != obs_dim {
        bail!(
            "environment `{env_id}` has observations of {obs_dim} values, but the agent expects {} (normalisation: {})",
            cfg.obs_dim,
            policy.norm.obs_mean.len()
        );
    }
    let fits = match (vec.action_spec(), cfg.action) {
        (
            ActionSpec::Continuous { dim, .. },
            flowrl_agents::agent::ActionSpace::Continuous { dim: d },
        ) => dim == d,
        (ActionSpec::Discrete { n }, flowrl_agents::agent::ActionSpace::Discrete { n: m }) => {
            n == m
        }
        _ => false,
    };
    if !fits {
        bail!(
            "environment `{env_id}` has action space {:?}, but the agent was trained for {:?}",
            vec.action_spec(),
            cfg.action
        );
    }
    if let (Some((low, high)), ActionSpec::Continuous { dim, .. }) =
        (policy.action_bounds, vec.action_spec())
    {
        let ordered = low
            .iter()
            .zip(high)
            .all(|(l, h)| l.is_finite() && h.is_finite() && l < h);
        if low.len() != dim || high.len() != dim || !ordered {
            bail!(
                "action scaling must give finite bounds low < high for each of the {dim} action dimensions of `{env_id}`, found low {low:?}, high {high:?}"
            );
        }
    }
    if !(policy.norm.reward_scale.is_finite() && policy.norm.reward_scale > 0.0) {
        bail!(
            "reward scale must be finite and > 0, found {}",
            policy.norm.reward_scale
        );
    }
    Ok(())
}

/// A short description of how `context` runs for this agent, e.g. that the softmax
/// Decision Transformer re-encodes the whole history in `episode` mode.
pub fn context_note(kind: AgentKind, context: ContextMode, k: usize) -> String {
    match (context, kind) {
        (ContextMode::Window, AgentKind::MlpBc) => "window: the MLP sees the current state only".into(),
        (ContextMode::Window, _) => format!("window K={k}: the last {k} steps re-encoded every step"),
        (ContextMode::Episode, AgentKind::DecisionFlowformer) => {
            "episode: recurrent Flow-Attention state, O(1) per step".into()
        }
        (ContextMode::Episode, AgentKind::DecisionTransformer) => {
            "episode: softmax attention has no O(1) state, so the whole history is re-encoded every step (O(t^2))".into()
        }
        (ContextMode::Episode, AgentKind::MlpBc) => "episode: the MLP sees the current state only".into(),
    }
}

/// Runs `settings.episodes` episodes conditioned on `target` (an unscaled return) in
/// lockstep, episode `i` from seed [`episode_seeds`]`(settings.seed, n)[i]`;
/// `progress` is called with the number of finished episodes after each step that
/// finished some. The same settings give the same outcomes.
pub fn run_target(
    policy: &Policy<'_>,
    settings: &RolloutSettings,
    target: f64,
    progress: &mut dyn FnMut(usize),
) -> anyhow::Result<Vec<EpisodeOutcome>> {
    if settings.episodes == 0 {
        bail!("episodes per target must be at least 1, found 0");
    }
    let seeds = episode_seeds(settings.seed, settings.episodes);
    run_seeded(policy, settings, target, &seeds, progress)
}

/// As [`run_target`], with one episode per environment seed in `seeds` (ignoring
/// `settings.episodes`), e.g. to replay one episode of a lockstep batch alone.
pub fn run_seeded(
    policy: &Policy<'_>,
    settings: &RolloutSettings,
    target: f64,
    seeds: &[u64],
    progress: &mut dyn FnMut(usize),
) -> anyhow::Result<Vec<EpisodeOutcome>> {
    let n = seeds.len();
    if n == 0 {
        bail!("episodes per target must be at least 1, found 0");
    }
    if !target.is_finite() {
        bail!("target return must be finite, found {target}");
    }
    let mut vec = VecEnv::new(&settings.env_id, n)?;
    check_fit(policy, &settings.env_id, &vec)?;
    let spec = vec.action_spec();
    let (env_low, env_high) = match spec {
        ActionSpec::Continuous { dim, low, high } => (vec![low; dim], vec![high; dim]),
        ActionSpec::Discrete { .. } => (Vec::new(), Vec::new()),
    };
    let bounds = policy
        .action_bounds
        .unwrap_or((env_low.as_slice(), env_high.as_slice()));
    let cfg = *policy.agent.config();
    let obs_dim = cfg.obs_dim;
    let scale = f64::from(policy.norm.reward_scale);
    let mut sampler = match settings.choice {
        ActionChoice::Greedy => None,
        ActionChoice::Temperature(t) => {
            if !(t.is_finite() && t > 0.0) {
                bail!("temperature must be finite and > 0, found {t}");
            }
            Some((t, ChaCha8Rng::seed_from_u64(settings.seed.wrapping_add(1))))
        }
    };

    let first = vec.reset(seeds)?;
    let mut obs: Vec<Vec<f32>> = first;
    let mut remaining: Vec<f64> = vec![target / scale; n];
    let mut outcomes: Vec<EpisodeOutcome> = (0..n)
        .map(|_| EpisodeOutcome {
            ret: 0.0,
            length: 0,
            success: None,
            actions: Vec::new(),
        })
        .collect();
    // Row r of the actor's batch is environment live[r].
    let mut live: Vec<usize> = (0..n).collect();
    let mut actor = Actor::new(policy.agent, settings.context, n)
        .with_context(|| format!("{:?} context for a {:?} agent", settings.context, cfg.kind))?;
    let mut returns = Vec::with_capacity(n);
    let mut states = vec![0.0f32; n * obs_dim];
    let mut actions: Vec<Action> = vec![placeholder(spec); n];
    let mut model_actions: Vec<f32> = Vec::new();
    let mut finished = 0;

    while !live.is_empty() {
        let b = live.len();
        returns.clear();
        returns.extend(live.iter().map(|&e| remaining[e] as f32));
        for (r, &e) in live.iter().enumerate() {
            policy
                .norm
                .normalise_into(&obs[e], &mut states[r * obs_dim..(r + 1) * obs_dim]);
        }
        let pred = actor.observe(&returns, &states[..b * obs_dim])?;
        check_predictions(&pred)?;
        match spec {
            ActionSpec::Continuous { low, high, .. } => {
                model_actions.clear();
                for (r, &e) in live.iter().enumerate() {
                    let (env_a, model_a) = continuous_action(pred.row(r), bounds, low, high);
                    model_actions.extend_from_slice(&model_a);
                    actions[e] = Action::Continuous(env_a);
                }
                actor.record(HostActions::Continuous(&model_actions))?;
            }
            ActionSpec::Discrete { .. } => {
                let indices = match &mut sampler {
                    None => pred.greedy(),
                    Some((t, rng)) => pred.sample(*t, rng)?,
                };
                for (r, &e) in live.iter().enumerate() {
                    actions[e] = Action::Discrete(indices[r]);
                }
                actor.record(HostActions::Discrete(&indices))?;
            }
        }
        let steps = vec.step(&actions)?;
        let mut keep = Vec::with_capacity(b);
        let mut still = Vec::with_capacity(b);
        for (r, &e) in live.iter().enumerate() {
            let step = steps[e]
                .as_ref()
                .context("the environment vector skipped a running episode")?;
            let out = &mut outcomes[e];
            out.ret += step.reward;
            out.length += 1;
            if settings.record_actions {
                out.actions.push(actions[e].clone());
            }
            if !settings.delayed_reward {
                remaining[e] -= step.reward / scale;
            }
            if step.done() {
                out.success = step.success;
                finished += 1;
            } else {
                keep.push(r);
                still.push(e);
                obs[e].clone_from(&step.obs);
            }
        }
        if still.len() < b {
            if !keep.is_empty() {
                actor.keep_rows(&keep)?;
            }
            progress(finished);
        }
        live = still;
    }
    Ok(outcomes)
}

/// Any valid action of the space: the placeholder sent to finished environments
/// (the vector ignores it).
fn placeholder(spec: ActionSpec) -> Action {
    match spec {
        ActionSpec::Discrete { .. } => Action::Discrete(0),
        ActionSpec::Continuous { dim, low, .. } => Action::Continuous(vec![low; dim]),
    }
}

/// Rejects NaN predictions (a diverged model) with a clear error.
fn check_predictions(pred: &ActionPredictions<f32>) -> anyhow::Result<()> {
    if let Some(i) = pred.values.iter().position(|v| v.is_nan()) {
        bail!(
            "the policy predicted NaN for episode row {} (the model's parameters or inputs are not finite)",
            i / pred.width.max(1)
        );
    }
    Ok(())
}
