//! Whole-episode acting with causal Flow-Attention: the model fed token by token.
//!
//! Per step `t`: [`DecisionModel::observe`] feeds `R_t` and `s_t` and returns the
//! action prediction read from the `s_t` output; after the caller has chosen (and
//! clipped) the action, [`DecisionModel::feed_actions`] records `a_t`. The outputs equal
//! those of [`crate::agent::Agent::hidden_states`] over the whole history at a cost per step
//! that does not grow with `t` (eval mode: no dropout).
//!
//! The action token enters the model with the next observation: `observe` feeds
//! `a_{t-1}`, `R_t` and `s_t` in one pass ([`crate::model::Backbone::step_tokens`]), so
//! every block runs its layer norms and projections once per step on all three tokens,
//! and the last block computes its output for `s_t` only (the outputs of `a_{t-1}` and
//! `R_t` are never read).

use dfdx::prelude::*;

use super::DecisionModel;
use crate::device::ModelDevice;
use crate::model::layers::Tensor2;
use crate::model::{BackboneError, BackboneState};
use crate::params::ParamStore;
use crate::spec::{
    check_finite, check_len, to_device, ActionInputs, ActionSpace, AgentError, HostActions,
};

/// What the state expects next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// `R_t` and `s_t` ([`DecisionModel::observe`]).
    Observation,
    /// `a_t` ([`DecisionModel::feed_actions`]).
    Action,
}

/// The last recorded actions, not yet fed to the model (host values, one per row).
#[derive(Clone, Debug, PartialEq)]
enum PendingActions {
    /// `[B, dim]` continuous actions in `[-1, 1]`.
    Continuous(Vec<f32>),
    /// `[B]` action indices.
    Discrete(Vec<usize>),
}

impl PendingActions {
    fn host(&self) -> HostActions<'_> {
        match self {
            Self::Continuous(a) => HostActions::Continuous(a),
            Self::Discrete(a) => HostActions::Discrete(a),
        }
    }

    /// Keeps the rows `rows` (already checked against the batch size).
    fn keep_rows(&mut self, rows: &[usize], batch: usize) {
        match self {
            Self::Continuous(a) => {
                let dim = a.len().checked_div(batch).unwrap_or(0);
                *a = rows
                    .iter()
                    .flat_map(|&r| a[r * dim..(r + 1) * dim].iter().copied())
                    .collect();
            }
            Self::Discrete(a) => *a = rows.iter().map(|&r| a[r]).collect(),
        }
    }
}

/// The recurrent state of a batch of episodes for a Decision-Flowformer: one
/// Flow-Attention state per block, the timesteps of the last observation, and the
/// last recorded actions (fed with the next observation).
#[derive(Clone, Debug)]
pub struct DecisionState<E: Dtype, D: Storage<E>> {
    backbone: BackboneState<E, D>,
    next: Next,
    timesteps: Vec<usize>,
    pending: Option<PendingActions>,
    steps: usize,
}

impl<E: Dtype + num_traits::Float, D: ModelDevice<E>> DecisionState<E, D> {
    /// Number of episodes (rows).
    pub fn batch(&self) -> usize {
        self.backbone.batch()
    }

    /// Number of complete steps (`R`, `s`, `a`) recorded so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Keeps the episodes `rows` (indices into the current batch, in the order given)
    /// and drops the others, e.g. the finished ones.
    pub fn keep_rows(&mut self, rows: &[usize]) -> Result<(), AgentError> {
        let batch = self.batch();
        if let Some(&r) = rows.iter().find(|&&r| r >= batch) {
            return Err(AgentError::Acting(format!(
                "keep_rows: row {r} is not below the batch size {batch}"
            )));
        }
        self.backbone.keep_rows(rows);
        if self.timesteps.len() == batch {
            self.timesteps = rows.iter().map(|&r| self.timesteps[r]).collect();
        }
        if let Some(pending) = &mut self.pending {
            pending.keep_rows(rows, batch);
        }
        Ok(())
    }
}

impl DecisionModel {
    /// An empty recurrent state for `batch` episodes. Only causal Flow-Attention has
    /// one: for the softmax model this is [`AgentError::NoRecurrentState`], and
    /// whole-episode context means re-encoding the whole history every step.
    pub fn recurrent_state<E, D>(
        &self,
        dev: &D,
        batch: usize,
    ) -> Result<DecisionState<E, D>, AgentError>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
    {
        let backbone = self
            .backbone
            .recurrent_state(dev, batch)
            .map_err(|e| match e {
                BackboneError::NoRecurrentState(kind) => AgentError::NoRecurrentState(kind),
                e => e.into(),
            })?;
        Ok(DecisionState {
            backbone,
            next: Next::Observation,
            timesteps: Vec::new(),
            pending: None,
            steps: 0,
        })
    }

    /// Feeds `R_t` (`returns [B]`, scaled) and `s_t` (`states [B, obs_dim]`,
    /// normalised) at `timesteps [B]` (below `max_ep_len`; the caller clamps) and
    /// returns the action prediction of every episode, `(B, outputs)`: tanh values in
    /// `[-1, 1]` or logits.
    pub fn observe<E, D>(
        &self,
        store: &ParamStore<E, D>,
        state: &mut DecisionState<E, D>,
        returns: &[f32],
        states: &[f32],
        timesteps: &[usize],
    ) -> Result<Tensor2<E, D>, AgentError>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
    {
        if state.next != Next::Observation {
            return Err(AgentError::Acting(
                "observe: the previous step's actions have not been fed".into(),
            ));
        }
        let b = state.batch();
        let obs = self.embed_state.inputs();
        check_len("returns_to_go", returns.len(), b, format!("[{b}]"))?;
        check_finite("returns_to_go", returns)?;
        check_len("states", states.len(), b * obs, format!("[{b}, {obs}]"))?;
        check_finite("states", states)?;
        check_len("timesteps", timesteps.len(), b, format!("[{b}]"))?;
        let table = store.shape(self.embed_timestep)[0];
        if let Some(&t) = timesteps.iter().find(|&&t| t >= table) {
            return Err(AgentError::Window {
                field: "timesteps",
                expected: format!("values below max_ep_len {table}"),
                found: t.to_string(),
            });
        }
        let dev = store.device();
        let r = self
            .embed_return
            .forward(store, dev.tensor_from_vec(to_device(returns), (b, 1)));
        let s = self
            .embed_state
            .forward(store, dev.tensor_from_vec(to_device(states), (b, obs)));
        // Token-major rows: [a_{t-1};] R_t; s_t, each with its step's timestep embedding.
        let (tokens, times) = match state.pending.take() {
            Some(pending) => {
                let inputs = host_actions(dev, self.action, pending.host(), b)?;
                let a = self.action_tokens::<E, D, NoneTape>(store, &inputs)?;
                let mut times = std::mem::take(&mut state.timesteps);
                times.extend_from_slice(timesteps);
                times.extend_from_slice(timesteps);
                (
                    ((a, r).concat_along(Axis::<0>), s).concat_along(Axis::<0>),
                    times,
                )
            }
            None => {
                let mut times = timesteps.to_vec();
                times.extend_from_slice(timesteps);
                ((r, s).concat_along(Axis::<0>), times)
            }
        };
        let n = times.len();
        let time: Tensor2<E, D> = self.time(store, dev.tensor_from_vec(times, (n,)));
        let x = self.embed_ln.forward(store, tokens + time);
        let h = self.backbone.step_tokens(store, &mut state.backbone, x)?;
        state.timesteps = timesteps.to_vec();
        state.next = Next::Action;
        Ok(self.head(store, h))
    }

    /// Records `a_t` for every episode (continuous `[B, dim]` in `[-1, 1]`, or indices
    /// `[B]`), at the timesteps given to the last [`DecisionModel::observe`]; the next
    /// `observe` feeds it to the model together with `R_{t+1}` and `s_{t+1}`.
    pub fn feed_actions<E, D>(
        &self,
        state: &mut DecisionState<E, D>,
        actions: HostActions<'_>,
    ) -> Result<(), AgentError>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
    {
        if state.next != Next::Action {
            return Err(AgentError::Acting(
                "feed_actions: observe must come first in every step".into(),
            ));
        }
        let b = state.batch();
        check_actions(self.action, actions, b)?;
        state.pending = Some(match actions {
            HostActions::Continuous(a) => PendingActions::Continuous(a.to_vec()),
            HostActions::Discrete(a) => PendingActions::Discrete(a.to_vec()),
        });
        state.next = Next::Observation;
        state.steps += 1;
        Ok(())
    }
}

/// Checks one action per row of `b`: the kind of `space`, finite values in range.
pub(crate) fn check_actions(
    space: ActionSpace,
    actions: HostActions<'_>,
    b: usize,
) -> Result<(), AgentError> {
    match (space, actions) {
        (ActionSpace::Continuous { dim }, HostActions::Continuous(a)) => {
            check_len("actions", a.len(), b * dim, format!("[{b}, {dim}]"))?;
            check_finite("actions", a)
        }
        (ActionSpace::Discrete { n }, HostActions::Discrete(a)) => {
            check_len("actions", a.len(), b, format!("[{b}]"))?;
            match a.iter().find(|&&i| i >= n) {
                Some(&i) => Err(AgentError::Window {
                    field: "actions",
                    expected: format!("action indices below {n}"),
                    found: i.to_string(),
                }),
                None => Ok(()),
            }
        }
        (space, _) => Err(AgentError::Window {
            field: "actions",
            expected: format!("{space:?} actions"),
            found: "actions of the other kind".into(),
        }),
    }
}

/// Validates one action per row ([`check_actions`]) and copies it to the device.
pub(crate) fn host_actions<E, D>(
    dev: &D,
    space: ActionSpace,
    actions: HostActions<'_>,
    b: usize,
) -> Result<ActionInputs<E, D>, AgentError>
where
    E: Dtype + num_traits::Float,
    D: ModelDevice<E>,
{
    check_actions(space, actions, b)?;
    Ok(match (space, actions) {
        (ActionSpace::Continuous { dim }, HostActions::Continuous(a)) => {
            ActionInputs::Continuous(dev.tensor_from_vec(to_device(a), (b, dim)))
        }
        (_, HostActions::Continuous(a)) => {
            ActionInputs::Continuous(dev.tensor_from_vec(to_device(a), (b, a.len() / b.max(1))))
        }
        (_, HostActions::Discrete(a)) => {
            ActionInputs::Discrete(dev.tensor_from_vec(a.to_vec(), (b,)))
        }
    })
}
