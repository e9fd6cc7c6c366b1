//! Acting: the next action for a batch of live episodes, step by step.
//!
//! An [`Actor`] keeps what its context mode needs and, each step, takes the
//! return-to-go and state of every live episode ([`Actor::observe`]) and returns the
//! action predictions; the caller chooses the actions (continuous: the `tanh` values
//! in `[-1, 1]`, scaled to the action bounds by the caller; discrete:
//! [`ActionPredictions::greedy`] or [`ActionPredictions::sample`]) and feeds them
//! back ([`Actor::record`], in the model's `[-1, 1]` scale). Finished episodes are
//! dropped with [`Actor::keep_rows`].
//!
//! Context modes:
//! * [`ContextMode::Window`]: the last `min(t, K)` steps are re-encoded every step,
//!   exactly as in training (positions restart at the window start, no left padding;
//!   the current step's action slot holds a zero action / index 0, which the state
//!   token cannot see because attention is causal).
//! * [`ContextMode::Episode`]: the whole episode is the context. The
//!   Decision-Flowformer carries it in its recurrent state at O(1) cost per step; the
//!   softmax Decision Transformer re-encodes the whole history every step (O(t²)); the
//!   MLP needs no context.
//!
//! Re-encoding runs on `Cpu` through a copy of the sequence model in host memory (plain
//! slices, buffers reused from step to step, `gemm` called directly); on other devices,
//! or with [`Encoder::Tensors`], through the dfdx forward pass of
//! [`Agent::predict_last`]. Both predict the same up to rounding.
//!
//! Timesteps count from 0 at the episode start and are clamped to `max_ep_len - 1`,
//! as the data layer does.

use std::collections::VecDeque;

use dfdx::prelude::*;
use rand::Rng;

use crate::agent::Agent;
use crate::device::ModelDevice;
use crate::host::{HostDecision, StepRecord};
use crate::model::decision::DecisionState;
use crate::params::to_f64;
use crate::spec::{
    check_finite, check_len, ActionSpace, AgentError, AgentKind, HostActions, HostWindow,
};

/// How much history the policy sees when acting (and, in experiment configs, when
/// training); named, and serialised by name, as in [`crate::named`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ContextMode {
    /// The last K (the config's `context`) steps, re-encoded every step.
    #[default]
    Window,
    /// The whole episode.
    Episode,
}

/// Action predictions for a batch of episodes, row-major `[batch, width]`: `tanh`
/// values in `[-1, 1]` (continuous) or logits (discrete).
#[derive(Clone, Debug, PartialEq)]
pub struct ActionPredictions<E> {
    /// Number of episodes.
    pub batch: usize,
    /// Values per episode: action dimensions or number of actions.
    pub width: usize,
    /// `[batch, width]` values.
    pub values: Vec<E>,
}

impl<E: num_traits::Float> ActionPredictions<E> {
    /// The predictions of episode `i`.
    ///
    /// # Panics
    /// If `i >= batch`.
    pub fn row(&self, i: usize) -> &[E] {
        &self.values[i * self.width..(i + 1) * self.width]
    }

    /// The index of the largest logit of every episode (the first one on ties).
    pub fn greedy(&self) -> Vec<usize> {
        (0..self.batch)
            .map(|i| {
                let row = self.row(i);
                (0..row.len()).fold(0, |best, j| if row[j] > row[best] { j } else { best })
            })
            .collect()
    }

    /// An index per episode drawn from `softmax(logits / temperature)` with `rng`
    /// (seed it, e.g. `ChaCha8Rng::seed_from_u64`, for reproducible rollouts).
    /// `temperature` must be finite and > 0 (use [`ActionPredictions::greedy`] for 0).
    pub fn sample<R: Rng>(&self, temperature: f64, rng: &mut R) -> Result<Vec<usize>, AgentError> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(AgentError::Config {
                field: "temperature",
                expected: "finite and > 0".into(),
                found: temperature.to_string(),
            });
        }
        (0..self.batch)
            .map(|i| {
                let logits: Vec<f64> = self
                    .row(i)
                    .iter()
                    .map(|&x| to_f64(x) / temperature)
                    .collect();
                if logits.iter().any(|x| x.is_nan()) {
                    return Err(AgentError::Acting(format!("episode {i}: NaN logits")));
                }
                let top = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = logits.iter().map(|&x| (x - top).exp()).collect();
                let mut u = rng.gen::<f64>() * weights.iter().sum::<f64>();
                for (j, w) in weights.iter().enumerate() {
                    if u < *w {
                        return Ok(j);
                    }
                    u -= w;
                }
                Ok(weights.iter().rposition(|&w| w > 0.0).unwrap_or(0))
            })
            .collect()
    }
}

/// Re-encoding: each episode's last `limit` steps (all of them for `None`).
#[derive(Clone, Debug)]
struct Histories {
    limit: Option<usize>,
    rows: Vec<VecDeque<StepRecord>>,
}

/// How an actor re-encodes histories (`window` mode, and `episode` mode of the softmax
/// Decision Transformer and the MLP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Encoder {
    /// The fastest path available: on `Cpu`, the sequence models run on a copy of
    /// their parameters in host memory, on plain slices with buffers reused from step
    /// to step; elsewhere, and for the MLP, as [`Encoder::Tensors`].
    #[default]
    Auto,
    /// dfdx tensors on the agent's device ([`Agent::predict_last`]'s forward pass).
    Tensors,
}

/// How the actor computes predictions.
#[derive(Clone, Debug)]
enum Engine<E: Dtype, D: Storage<E>> {
    /// Re-encoding through dfdx tensors.
    Reencode(Histories),
    /// Re-encoding a sequence model's host copy (`Cpu`).
    Host(Histories, Box<HostDecision<E>>),
    /// The Decision-Flowformer's recurrent state.
    Recurrent(DecisionState<E, D>),
}

/// Acts for a batch of episodes run in lockstep; see the module documentation.
pub struct Actor<'a, E: Dtype, D: Storage<E>> {
    agent: &'a Agent<E, D>,
    mode: ContextMode,
    engine: Engine<E, D>,
    /// Steps taken by each live episode (its next timestep, before clamping).
    steps: Vec<usize>,
    awaiting_actions: bool,
}

impl<'a, E, D> Actor<'a, E, D>
where
    E: Dtype + num_traits::Float + Send + Sync,
    D: ModelDevice<E> + Send + Sync,
{
    /// An actor for `batch` new episodes of `agent` in `mode` ([`Encoder::Auto`]).
    pub fn new(
        agent: &'a Agent<E, D>,
        mode: ContextMode,
        batch: usize,
    ) -> Result<Self, AgentError> {
        Self::with_encoder(agent, mode, batch, Encoder::Auto)
    }

    /// An actor for `batch` new episodes of `agent` in `mode` that re-encodes
    /// histories with `encoder` (the recurrent `episode` mode of the
    /// Decision-Flowformer does not re-encode and ignores it).
    pub fn with_encoder(
        agent: &'a Agent<E, D>,
        mode: ContextMode,
        batch: usize,
        encoder: Encoder,
    ) -> Result<Self, AgentError> {
        let cfg = agent.config();
        let histories = |limit| Histories {
            limit,
            rows: vec![VecDeque::new(); batch],
        };
        let limit = match (mode, cfg.kind) {
            (ContextMode::Episode, AgentKind::DecisionFlowformer) => None,
            (ContextMode::Episode, AgentKind::DecisionTransformer) => Some(None),
            (ContextMode::Episode, AgentKind::MlpBc) => Some(Some(1)),
            (ContextMode::Window, _) => Some(Some(cfg.context)),
        };
        let engine = match (limit, agent.decision()) {
            (None, _) => Engine::Recurrent(agent.recurrent_state(batch)?),
            (Some(limit), Some(model)) if D::HOST_ACTING && encoder == Encoder::Auto => {
                Engine::Host(histories(limit), Box::new(model.host(agent.params())))
            }
            (Some(limit), _) => Engine::Reencode(histories(limit)),
        };
        Ok(Self {
            agent,
            mode,
            engine,
            steps: vec![0; batch],
            awaiting_actions: false,
        })
    }

    /// The context mode.
    pub fn mode(&self) -> ContextMode {
        self.mode
    }

    /// Number of live episodes.
    pub fn batch(&self) -> usize {
        self.steps.len()
    }

    /// Takes `R_t` (`returns [B]`, divided by the reward scale) and `s_t` (`states
    /// [B, obs_dim]`, normalised) of every live episode and returns the predictions
    /// for `a_t`.
    pub fn observe(
        &mut self,
        returns: &[f32],
        states: &[f32],
    ) -> Result<ActionPredictions<E>, AgentError> {
        if self.awaiting_actions {
            return Err(AgentError::Acting(
                "observe: the previous step's actions have not been recorded".into(),
            ));
        }
        let cfg = *self.agent.config();
        let (b, obs) = (self.batch(), cfg.obs_dim);
        check_len("returns_to_go", returns.len(), b, format!("[{b}]"))?;
        check_finite("returns_to_go", returns)?;
        check_len("states", states.len(), b * obs, format!("[{b}, {obs}]"))?;
        check_finite("states", states)?;
        let last_time = cfg.max_ep_len.saturating_sub(1);
        let timesteps: Vec<usize> = self.steps.iter().map(|&t| t.min(last_time)).collect();
        let (agent, engine, steps) = (self.agent, &mut self.engine, &self.steps);
        // One step's forward pass runs on a rayon worker thread: the parallel matrix
        // products and kernels inside then split their work within the pool instead of
        // handing every op over from this thread and blocking until it returns.
        let values = rayon::scope(|_| -> Result<Vec<E>, AgentError> {
            Ok(match engine {
                Engine::Recurrent(state) => {
                    let model = agent.decision().ok_or_else(|| {
                        AgentError::Acting("recurrent state without a sequence model".into())
                    })?;
                    model
                        .observe(agent.params(), state, returns, states, &timesteps)?
                        .as_vec()
                }
                Engine::Host(h, model) => {
                    h.push(cfg.action, returns, states, (steps, &timesteps));
                    model.predict_last(&h.rows)
                }
                Engine::Reencode(h) => {
                    h.push(cfg.action, returns, states, (steps, &timesteps));
                    let width = match cfg.action {
                        ActionSpace::Continuous { dim } => dim,
                        ActionSpace::Discrete { .. } => 1,
                    };
                    let host = h.window(cfg.action, obs, width);
                    let w = agent.window(&host.host(cfg.action))?;
                    agent.predict_last(&w)?.as_vec()
                }
            })
        })?;
        self.awaiting_actions = true;
        Ok(ActionPredictions {
            batch: b,
            width: cfg.action.outputs(),
            values,
        })
    }

    /// Records the actions taken (continuous `[B, dim]` in the model's `[-1, 1]`
    /// scale, or indices `[B]`) and ends the step.
    pub fn record(&mut self, actions: HostActions<'_>) -> Result<(), AgentError> {
        if !self.awaiting_actions {
            return Err(AgentError::Acting(
                "record: observe must come first in every step".into(),
            ));
        }
        let b = self.batch();
        match &mut self.engine {
            Engine::Recurrent(state) => {
                let model = self.agent.decision().ok_or_else(|| {
                    AgentError::Acting("recurrent state without a sequence model".into())
                })?;
                model.feed_actions(state, actions)?;
            }
            Engine::Reencode(h) | Engine::Host(h, _) => {
                let space = self.agent.config().action;
                crate::model::decision::recurrent::check_actions(space, actions, b)?;
                for (i, row) in h.rows.iter_mut().enumerate() {
                    if let Some(step) = row.back_mut() {
                        match (space, actions) {
                            (ActionSpace::Continuous { dim }, HostActions::Continuous(a)) => {
                                step.action = a[i * dim..(i + 1) * dim].to_vec();
                            }
                            (_, HostActions::Discrete(a)) => step.index = a[i],
                            _ => {}
                        }
                    }
                }
            }
        }
        self.steps.iter_mut().for_each(|t| *t += 1);
        self.awaiting_actions = false;
        Ok(())
    }

    /// Keeps the episodes `rows` (indices into the current batch, in the order given)
    /// and drops the others, e.g. the finished ones.
    pub fn keep_rows(&mut self, rows: &[usize]) -> Result<(), AgentError> {
        let b = self.batch();
        if let Some(&r) = rows.iter().find(|&&r| r >= b) {
            return Err(AgentError::Acting(format!(
                "keep_rows: row {r} is not below the batch size {b}"
            )));
        }
        match &mut self.engine {
            Engine::Recurrent(state) => state.keep_rows(rows)?,
            Engine::Reencode(h) => h.keep_rows(rows),
            Engine::Host(h, model) => {
                h.keep_rows(rows);
                model.keep_rows(rows);
            }
        }
        self.steps = rows.iter().map(|&r| self.steps[r]).collect();
        Ok(())
    }
}

/// Flat host buffers of a right-padded window batch.
struct HostBuffers {
    batch: usize,
    len: usize,
    states: Vec<f32>,
    actions: Vec<f32>,
    indices: Vec<usize>,
    returns: Vec<f32>,
    timesteps: Vec<usize>,
    mask: Vec<f32>,
}

impl HostBuffers {
    fn host(&self, space: ActionSpace) -> HostWindow<'_> {
        HostWindow {
            batch: self.batch,
            len: self.len,
            states: &self.states,
            actions: match space {
                ActionSpace::Continuous { .. } => HostActions::Continuous(&self.actions),
                ActionSpace::Discrete { .. } => HostActions::Discrete(&self.indices),
            },
            returns_to_go: &self.returns,
            timesteps: &self.timesteps,
            mask: &self.mask,
        }
    }
}

impl Histories {
    /// Keeps the histories of the episodes `rows`, in the order given.
    fn keep_rows(&mut self, rows: &[usize]) {
        self.rows = rows.iter().map(|&r| self.rows[r].clone()).collect();
    }

    /// Appends every episode's new step, its index in the episode and its clamped
    /// timestep given (the action slot holds a zero action or index 0 until
    /// [`Actor::record`]), dropping the oldest beyond the limit.
    fn push(
        &mut self,
        space: ActionSpace,
        returns: &[f32],
        states: &[f32],
        (steps, timesteps): (&[usize], &[usize]),
    ) {
        let obs = states.len() / returns.len().max(1);
        let zero = match space {
            ActionSpace::Continuous { dim } => vec![0.0; dim],
            ActionSpace::Discrete { .. } => Vec::new(),
        };
        for (i, row) in self.rows.iter_mut().enumerate() {
            if self.limit.is_some_and(|k| row.len() >= k) {
                row.pop_front();
            }
            row.push_back(StepRecord {
                step: steps[i],
                ret: returns[i],
                state: states[i * obs..(i + 1) * obs].to_vec(),
                action: zero.clone(),
                index: 0,
                timestep: timesteps[i],
            });
        }
    }

    /// The histories as one window, rows padded on the right to the longest.
    fn window(&self, space: ActionSpace, obs: usize, act: usize) -> HostBuffers {
        let b = self.rows.len();
        let l = self.rows.iter().map(VecDeque::len).max().unwrap_or(0);
        let continuous = matches!(space, ActionSpace::Continuous { .. });
        let mut buf = HostBuffers {
            batch: b,
            len: l,
            states: vec![0.0; b * l * obs],
            actions: if continuous {
                vec![0.0; b * l * act]
            } else {
                Vec::new()
            },
            indices: if continuous {
                Vec::new()
            } else {
                vec![0; b * l]
            },
            returns: vec![0.0; b * l],
            timesteps: vec![0; b * l],
            mask: vec![0.0; b * l],
        };
        for (i, row) in self.rows.iter().enumerate() {
            for (t, step) in row.iter().enumerate() {
                let s = i * l + t;
                buf.states[s * obs..(s + 1) * obs].copy_from_slice(&step.state);
                if continuous {
                    buf.actions[s * act..(s + 1) * act].copy_from_slice(&step.action);
                } else {
                    buf.indices[s] = step.index;
                }
                buf.returns[s] = step.ret;
                buf.timesteps[s] = step.timestep;
                buf.mask[s] = 1.0;
            }
        }
        buf
    }
}
