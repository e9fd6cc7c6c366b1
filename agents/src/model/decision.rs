//! Decision-Flowformer and its softmax twin (the original Decision Transformer).
//!
//! Tokens per timestep `t`: return-to-go `R_t`, state `s_t`, action `a_t`, each with
//! its own embedding (`embed_return`, `embed_state`, `embed_action`: linear maps, or
//! a table for discrete actions), plus a learned timestep embedding
//! (`embed_timestep`) added to all three, then a LayerNorm (`embed_ln`). The
//! interleaved sequence `R_1, s_1, a_1, R_2, ...` goes through the [`Backbone`]
//! (which applies the embedding dropout itself), and the action of step `t` is
//! predicted from the output of token `s_t` (`predict_action.0`, then `tanh` for
//! continuous actions; logits for discrete ones). Parameter names follow the
//! reference; its `predict_state`, `predict_return` and unused `transformer.wte` are
//! left out (they do not enter the loss).
//!
//! [`DecisionModel::recurrent_state`] and [`DecisionModel::observe`] /
//! [`DecisionModel::feed_actions`] run the Flow-Attention model token by token for
//! whole-episode contexts (see [`recurrent`]).

pub mod recurrent;

use dfdx::prelude::*;

use crate::device::ModelDevice;
use crate::model::layers::{LayerNorm, Linear, Tensor2, Tensor3};
use crate::model::Backbone;
use crate::params::{Init, ParamId, ParamStore};
use crate::spec::{ActionInputs, ActionSpace, AgentConfig, AgentError, Window};

pub use recurrent::DecisionState;

/// The `R`, `s`, `a` tokens of `N` steps, `(3, N, width)`.
type TokenStack<E, D, T> = Tensor<(Const<3>, usize, usize), E, D, T>;

/// The action token's embedding.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum ActionEmbedding {
    /// Continuous actions: `Linear(dim -> width)`.
    Linear(Linear),
    /// Discrete actions: a table `[n, width]`.
    Table(ParamId),
}

/// Decision-Transformer layers; the values live in the agent's [`ParamStore`].
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionModel {
    pub(crate) backbone: Backbone,
    pub(crate) embed_timestep: ParamId,
    pub(crate) embed_return: Linear,
    pub(crate) embed_state: Linear,
    pub(crate) embed_action: ActionEmbedding,
    pub(crate) embed_ln: LayerNorm,
    pub(crate) predict_action: Linear,
    pub(crate) action: ActionSpace,
    pub(crate) width: usize,
}

impl DecisionModel {
    /// Registers the parameters of a sequence-model config in `store`: the backbone
    /// under `transformer` (GPT-2 init), then `embed_timestep.weight` `[max_ep_len,
    /// width]` and a discrete `embed_action.weight` `[n, width]` (N(0, 1), as
    /// `nn.Embedding`), the linear embeddings and `predict_action.0` (PyTorch default
    /// uniform), `embed_ln` (1 / 0).
    pub fn register<E, D>(
        store: &mut ParamStore<E, D>,
        cfg: &AgentConfig,
    ) -> Result<Self, AgentError>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
    {
        cfg.validate()?;
        let backbone_cfg = cfg.backbone().ok_or(AgentError::Config {
            field: "kind",
            expected: "a Decision Transformer kind".into(),
            found: format!("{:?}", cfg.kind),
        })?;
        let w = cfg.width;
        let backbone = Backbone::register(store, "transformer", backbone_cfg)?;
        let embed_timestep = store.register(
            "embed_timestep.weight",
            &[cfg.max_ep_len, w],
            Init::Normal { std: 1.0 },
        )?;
        let embed_return = Linear::register_torch(store, "embed_return", 1, w)?;
        let embed_state = Linear::register_torch(store, "embed_state", cfg.obs_dim, w)?;
        let embed_action = match cfg.action {
            ActionSpace::Continuous { dim } => {
                ActionEmbedding::Linear(Linear::register_torch(store, "embed_action", dim, w)?)
            }
            ActionSpace::Discrete { n } => ActionEmbedding::Table(store.register(
                "embed_action.weight",
                &[n, w],
                Init::Normal { std: 1.0 },
            )?),
        };
        let embed_ln = LayerNorm::register(store, "embed_ln", w, cfg.layer_norm_eps)?;
        let predict_action =
            Linear::register_torch(store, "predict_action.0", w, cfg.action.outputs())?;
        Ok(Self {
            backbone,
            embed_timestep,
            embed_return,
            embed_state,
            embed_action,
            embed_ln,
            predict_action,
            action: cfg.action,
            width: w,
        })
    }

    /// The backbone.
    pub fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    /// `(N,)` timesteps -> `(N, width)` rows of the timestep table (with tape `T`).
    fn time<E, D, T>(
        &self,
        store: &ParamStore<E, D>,
        t: Tensor<(usize,), usize, D>,
    ) -> Tensor2<E, D, T>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
        T: Tape<E, D>,
    {
        store.matrix(self.embed_timestep).retaped::<T>().gather(t)
    }

    /// Embedded action tokens `(N, width)`, before the timestep embedding.
    fn action_tokens<E, D, T>(
        &self,
        store: &ParamStore<E, D>,
        a: &ActionInputs<E, D>,
    ) -> Result<Tensor2<E, D, T>, AgentError>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
        T: Tape<E, D>,
    {
        match (&self.embed_action, a) {
            (ActionEmbedding::Linear(lin), ActionInputs::Continuous(x))
                if x.shape().1 == lin.inputs() =>
            {
                Ok(lin.forward(store, x.retaped::<T>()))
            }
            (ActionEmbedding::Table(table), ActionInputs::Discrete(i)) => {
                Ok(store.matrix(*table).retaped::<T>().gather(i.clone()))
            }
            _ => Err(AgentError::Window {
                field: "actions",
                expected: format!("{:?} actions", self.action),
                found: "actions of another action space".into(),
            }),
        }
    }

    /// The three tokens of every step, `(3, N, width)` stacked in token order and
    /// before `embed_ln`: `R + time`, `s + time`, `a + time`.
    fn token_stack<E, D, T>(
        &self,
        store: &ParamStore<E, D>,
        returns: &Tensor2<E, D>,
        states: &Tensor2<E, D>,
        actions: &ActionInputs<E, D>,
        timesteps: Tensor<(usize,), usize, D>,
    ) -> Result<TokenStack<E, D, T>, AgentError>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
        T: Tape<E, D> + Merge<T>,
    {
        let time: Tensor2<E, D, T> = self.time(store, timesteps);
        let r = self.embed_return.forward(store, returns.retaped::<T>()) + time.with_empty_tape();
        let s = self.embed_state.forward(store, states.retaped::<T>()) + time.with_empty_tape();
        let a = self.action_tokens::<E, D, T>(store, actions)? + time;
        Ok([r, s, a].stack())
    }

    /// The embedded, normalised token sequence `(B, 3L, width)` of a window.
    fn tokens<E, D, T>(
        &self,
        store: &ParamStore<E, D>,
        w: &Window<E, D>,
    ) -> Result<Tensor3<E, D, T>, AgentError>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
        T: Tape<E, D> + Merge<T>,
    {
        let (b, l, wd) = (w.batch, w.len, self.width);
        let stack: TokenStack<E, D, T> = self.token_stack(
            store,
            &w.returns,
            &w.states,
            &w.actions,
            w.timesteps.clone(),
        )?;
        let tokens = stack
            .reshape_like(&(Const::<3>, b, l, wd))
            .permute::<_, Axes4<1, 2, 0, 3>>()
            .reshape_like(&(b * l * 3, wd));
        Ok(self
            .embed_ln
            .forward(store, tokens)
            .reshape_like(&(b, 3 * l, wd)))
    }

    /// The backbone's output for every token, `(B, 3L, width)` after `ln_f` (the
    /// reference's `last_hidden_state`). Dropout is active only when `train` is true.
    /// Windows are checked against the config by the [`crate::agent::Agent`] methods.
    pub(crate) fn hidden_states<E, D, T>(
        &self,
        store: &ParamStore<E, D>,
        w: &Window<E, D>,
        train: bool,
    ) -> Result<Tensor3<E, D, T>, AgentError>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
        T: Tape<E, D> + Merge<T>,
    {
        Ok(self
            .backbone
            .forward(store, self.tokens(store, w)?, train)?)
    }

    /// The head on state-token outputs `(N, width)`: tanh values or logits `(N, outputs)`.
    fn head<E, D, T>(&self, store: &ParamStore<E, D>, h: Tensor2<E, D, T>) -> Tensor2<E, D, T>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
        T: Tape<E, D>,
    {
        let y = self.predict_action.forward(store, h);
        match self.action {
            ActionSpace::Continuous { .. } => y.tanh(),
            ActionSpace::Discrete { .. } => y,
        }
    }

    /// Action predictions at the flat steps `steps` (`b * L + t`, any order), `(steps,
    /// outputs)`, read from their state tokens (token `3 (b L + t) + 1`): the backbone's
    /// last block runs its output projection and MLP on those tokens only
    /// ([`Backbone::forward_rows`]).
    pub(crate) fn predict_steps<E, D, T>(
        &self,
        store: &ParamStore<E, D>,
        w: &Window<E, D>,
        steps: &[usize],
        train: bool,
    ) -> Result<Tensor2<E, D, T>, AgentError>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
        T: Tape<E, D> + Merge<T>,
    {
        let rows: Vec<usize> = steps.iter().map(|&s| 3 * s + 1).collect();
        let h = self
            .backbone
            .forward_rows(store, self.tokens(store, w)?, &rows, train)?;
        Ok(self.head(store, h))
    }
}
