//! The agent interface: one type for the Decision-Flowformer, its softmax twin and
//! the MLP behaviour-cloning baseline.
//!
//! An [`Agent`] owns its [`ParamStore`] and is rebuilt from its [`AgentConfig`] (a
//! checkpoint stores the config in the safetensors metadata). It takes a [`Window`]
//! batch and returns per-step action predictions ([`Agent::predict`]) or the training
//! loss ([`Agent::loss`]): masked mean-squared error on `tanh` outputs for continuous
//! actions, masked cross-entropy on logits for discrete ones. Padded steps never
//! count in a loss. Acting over episodes is in [`crate::acting`].

use std::collections::HashMap;

use dfdx::prelude::*;

use crate::device::ModelDevice;
use crate::model::decision::{DecisionModel, DecisionState};
use crate::model::layers::{Tensor2, Tensor3};
use crate::model::mlp_bc::MlpBc;
use crate::params::{decode, ParamStore};

use crate::spec::Targets;
pub use crate::spec::{
    ActionSpace, AgentConfig, AgentError, AgentKind, HostActions, HostWindow, Window, MAX_FEATURES,
    MAX_LAYERS, MAX_STEPS, MAX_WIDTH,
};

/// Safetensors metadata key under which [`Agent::to_safetensors`] stores the config (JSON).
pub const CONFIG_KEY: &str = "flowrl.agent_config";

/// Which steps of a window a forward pass predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Steps {
    /// Every step, in flat order `b * L + t`.
    All,
    /// The real steps, in flat order (the loss's positions).
    Valid,
    /// Each row's last real step.
    Last,
}

/// The model behind an [`Agent`].
#[derive(Clone, Debug, PartialEq)]
enum Model {
    Decision(Box<DecisionModel>),
    Mlp(MlpBc),
}

/// A policy network with its parameters: Decision-Flowformer, Decision Transformer
/// (softmax) or MLP behaviour cloning, by [`AgentConfig::kind`].
pub struct Agent<E: Dtype, D: Storage<E>> {
    cfg: AgentConfig,
    store: ParamStore<E, D>,
    model: Model,
}

impl<E, D> Agent<E, D>
where
    E: Dtype + num_traits::Float,
    D: ModelDevice<E>,
{
    /// Validates `cfg` and builds the agent on `dev` with parameters initialised from
    /// `seed` (GPT-2 init in the transformer; PyTorch defaults for embeddings and heads).
    pub fn new(dev: &D, cfg: AgentConfig, seed: u64) -> Result<Self, AgentError> {
        cfg.validate()?;
        let mut store = ParamStore::new(dev, seed);
        let model = Self::register(&mut store, &cfg)?;
        Ok(Self { cfg, store, model })
    }

    fn register(store: &mut ParamStore<E, D>, cfg: &AgentConfig) -> Result<Model, AgentError> {
        Ok(match cfg.kind {
            AgentKind::MlpBc => Model::Mlp(MlpBc::register(store, cfg)?),
            AgentKind::DecisionFlowformer | AgentKind::DecisionTransformer => {
                Model::Decision(Box::new(DecisionModel::register(store, cfg)?))
            }
        })
    }

    /// The parameters `cfg` implies, names and shapes only, listed after validating
    /// `cfg` and without allocating any value (see [`ParamStore::planner`]): what
    /// [`Agent::new`] would build, for sizing it or checking a file against it first.
    pub fn plan(dev: &D, cfg: &AgentConfig) -> Result<ParamStore<E, D>, AgentError> {
        cfg.validate()?;
        let mut store = ParamStore::planner(dev);
        Self::register(&mut store, cfg)?;
        Ok(store)
    }

    /// The configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    /// The parameters.
    pub fn params(&self) -> &ParamStore<E, D> {
        &self.store
    }

    /// The parameters, for the optimiser and for loading.
    pub fn params_mut(&mut self) -> &mut ParamStore<E, D> {
        &mut self.store
    }

    /// The device.
    pub fn device(&self) -> &D {
        self.store.device()
    }

    /// The sequence model (`None` for the MLP).
    pub fn decision(&self) -> Option<&DecisionModel> {
        match &self.model {
            Model::Decision(m) => Some(m),
            Model::Mlp(_) => None,
        }
    }

    /// Builds a [`Window`] for this agent from host slices (see [`Window::from_host`]).
    pub fn window<H>(&self, w: &HostWindow<'_, H>) -> Result<Window<E, D>, AgentError>
    where
        H: num_traits::Float + std::fmt::Display,
    {
        Window::from_host(self.store.device(), &self.cfg, w)
    }

    /// Predictions at `steps` of the window, flat `(steps, outputs)`, with tape `T`.
    fn forward<T>(
        &self,
        w: &Window<E, D>,
        steps: Steps,
        train: bool,
    ) -> Result<Tensor2<E, D, T>, AgentError>
    where
        T: Tape<E, D> + Merge<T>,
    {
        w.check(&self.cfg)?;
        match &self.model {
            Model::Decision(m) => {
                let at = match steps {
                    Steps::All => (0..w.batch * w.len).collect(),
                    Steps::Valid => w.valid_indices(),
                    Steps::Last => w.last_indices(),
                };
                m.predict_steps(&self.store, w, &at, train)
            }
            Model::Mlp(m) => {
                let p = m.predict(&self.store, w, train);
                Ok(match steps {
                    Steps::All => p,
                    Steps::Valid => p.gather(w.valid.clone()),
                    Steps::Last => p.gather(w.last.clone()),
                })
            }
        }
    }

    /// Action predictions for every step in eval mode, `(B, L, outputs)`: `tanh`
    /// values in `[-1, 1]` (continuous; the caller scales them to the action bounds)
    /// or logits (discrete). Values at padded steps are computed but meaningless.
    pub fn predict(&self, w: &Window<E, D>) -> Result<Tensor3<E, D>, AgentError> {
        let p: Tensor2<E, D> = self.forward(w, Steps::All, false)?;
        Ok(p.reshape_like(&(w.batch, w.len, self.cfg.action.outputs())))
    }

    /// The prediction at each row's last real step, `(B, outputs)`: the next action
    /// when the window ends at the current step (eval mode).
    pub fn predict_last(&self, w: &Window<E, D>) -> Result<Tensor2<E, D>, AgentError> {
        self.forward(w, Steps::Last, false)
    }

    /// The sequence model's output for every token, `(B, 3L, width)` after the final
    /// LayerNorm (eval mode); `None` for the MLP.
    pub fn hidden_states(&self, w: &Window<E, D>) -> Result<Option<Tensor3<E, D>>, AgentError> {
        w.check(&self.cfg)?;
        match &self.model {
            Model::Decision(m) => Ok(Some(m.hidden_states(&self.store, w, false)?)),
            Model::Mlp(_) => Ok(None),
        }
    }

    /// The training loss over the real steps of `w`, traced for `backward()`:
    /// mean-squared error over every action value of every real step (continuous) or
    /// mean cross-entropy over the real steps (discrete). Dropout is active when
    /// `train` is true. After `loss.backward()`, [`ParamStore::grads`] collects the
    /// parameters' gradients.
    pub fn loss(
        &self,
        w: &Window<E, D>,
        train: bool,
    ) -> Result<Tensor<Rank0, E, D, OwnedTape<E, D>>, AgentError> {
        let p: Tensor2<E, D, OwnedTape<E, D>> = self.forward(w, Steps::Valid, train)?;
        Ok(match &w.targets {
            Targets::Continuous(t) => (p - t.clone()).square().mean::<Rank0, _>(),
            Targets::Discrete(t) => -p
                .log_softmax::<Axis<1>>()
                .select(t.clone())
                .mean::<Rank0, _>(),
        })
    }

    /// An empty recurrent state for `batch` episodes (Decision-Flowformer only): see
    /// [`DecisionModel::observe`]. The softmax model and the MLP have none
    /// ([`AgentError::NoRecurrentState`], [`AgentError::Acting`]).
    pub fn recurrent_state(&self, batch: usize) -> Result<DecisionState<E, D>, AgentError> {
        match &self.model {
            Model::Decision(m) => m.recurrent_state(self.store.device(), batch),
            Model::Mlp(_) => Err(AgentError::Acting(
                "the MLP has no recurrent state: it predicts from the current state alone".into(),
            )),
        }
    }

    /// Safetensors bytes of every parameter, with the config as JSON under
    /// [`CONFIG_KEY`] and the `extra` metadata entries.
    pub fn to_safetensors(&self, extra: &HashMap<String, String>) -> Result<Vec<u8>, AgentError> {
        let mut metadata = extra.clone();
        let json =
            serde_json::to_string(&self.cfg).map_err(|e| AgentError::Checkpoint(e.to_string()))?;
        metadata.insert(CONFIG_KEY.to_string(), json);
        Ok(self.store.to_safetensors(&metadata)?)
    }

    /// Rebuilds an agent on `dev` from [`Agent::to_safetensors`] bytes; returns it
    /// with the metadata map (config entry included).
    ///
    /// The bytes are untrusted: the config is validated (bounds included, see
    /// [`AgentConfig::validate`]) and every tensor is checked against the shapes the
    /// config implies (names, shapes, dtype, no extras) and for finite values before
    /// any model is built, so the model allocated is never larger than the data read.
    pub fn from_safetensors(
        dev: &D,
        bytes: &[u8],
    ) -> Result<(Self, HashMap<String, String>), AgentError> {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| AgentError::Checkpoint(format!("not safetensors data: {e}")))?;
        let json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(CONFIG_KEY))
            .ok_or_else(|| {
                AgentError::Checkpoint(format!("metadata has no `{CONFIG_KEY}` entry"))
            })?;
        let cfg: AgentConfig = serde_json::from_str(json).map_err(|e| {
            AgentError::Checkpoint(format!("`{CONFIG_KEY}` is not a valid agent config: {e}"))
        })?;
        let plan = Self::plan(dev, &cfg)?;
        let expected: Vec<(&str, &[usize])> = plan.shapes().collect();
        let (values, metadata) = decode::<E>(bytes, &expected)?;
        let mut agent = Self::new(dev, cfg, 0)?;
        agent.store.set_decoded(values);
        Ok((agent, metadata))
    }
}
