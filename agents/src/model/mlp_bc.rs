//! Behaviour-cloning baseline: each state mapped to its action by a 3-layer MLP.
//!
//! `model.0: Linear(obs_dim -> width)`, ReLU, dropout, `model.3: Linear(width ->
//! width)`, ReLU, dropout, `model.6: Linear(width -> outputs)`, then `tanh` for
//! continuous actions (logits for discrete ones): the names are the indices of the
//! equivalent PyTorch `nn.Sequential`. No context: every step is predicted from its
//! own state; returns-to-go, timesteps and past actions are ignored.

use dfdx::prelude::*;

use crate::device::ModelDevice;

use crate::model::layers::{dropout, Linear, Tensor2};
use crate::params::ParamStore;
use crate::spec::{ActionSpace, AgentConfig, AgentError, Window};

/// The MLP's layers; the values live in the agent's [`ParamStore`].
#[derive(Clone, Debug, PartialEq)]
pub struct MlpBc {
    layers: [Linear; 3],
    action: ActionSpace,
    dropout: f64,
}

impl MlpBc {
    /// Registers `model.{0,3,6}.{weight,bias}` (`[out, in]`, PyTorch default uniform
    /// ±1/sqrt(in)).
    pub fn register<E, D>(
        store: &mut ParamStore<E, D>,
        cfg: &AgentConfig,
    ) -> Result<Self, AgentError>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
    {
        cfg.validate()?;
        let w = cfg.width;
        let sizes = [(cfg.obs_dim, w), (w, w), (w, cfg.action.outputs())];
        let mut layers = Vec::with_capacity(3);
        for (i, (inputs, outputs)) in [0, 3, 6].into_iter().zip(sizes) {
            layers.push(Linear::register_torch(
                store,
                &format!("model.{i}"),
                inputs,
                outputs,
            )?);
        }
        Ok(Self {
            layers: [layers[0], layers[1], layers[2]],
            action: cfg.action,
            dropout: cfg.dropout,
        })
    }

    /// Predictions for every step, `(B·L, outputs)` flat in step order.
    pub(crate) fn predict<E, D, T>(
        &self,
        store: &ParamStore<E, D>,
        w: &Window<E, D>,
        train: bool,
    ) -> Tensor2<E, D, T>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
        T: Tape<E, D>,
    {
        let [l0, l1, l2] = &self.layers;
        let h = l0.forward_relu(store, w.states.retaped::<T>());
        let h = l1.forward_relu(store, dropout(h, self.dropout, train));
        let y = l2.forward(store, dropout(h, self.dropout, train));
        match self.action {
            ActionSpace::Continuous { .. } => y.tanh(),
            ActionSpace::Discrete { .. } => y,
        }
    }
}
