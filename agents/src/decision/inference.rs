//! Eval-mode prediction of each window row's next action only (acting in `window`
//! mode), through [`crate::backbone::Backbone::forward_readout`]: the backbone's last
//! block and the head run on the last real state token of each row only. On the CPU,
//! acting uses the model's host copy instead ([`DecisionModel::host`]).

use dfdx::prelude::*;

use super::{ActionEmbedding, DecisionModel};
use crate::agent::{AgentError, Window};
use crate::attention::recurrence::Real;
use crate::device::ModelDevice;
use crate::host_inference::{
    HostActionEmbedding, HostDecision, HostEmbedding, HostLinear, HostNorm,
};
use crate::layers::Tensor2;
use crate::params::ParamStore;

impl DecisionModel {
    /// The prediction at each row's last real step, `(B, outputs)`: what
    /// [`DecisionModel::predict_steps`] gives at those steps in eval mode, computing only
    /// what they depend on.
    /// The window is checked against the config by the caller.
    pub(crate) fn predict_last<E, D>(
        &self,
        store: &ParamStore<E, D>,
        w: &Window<E, D>,
    ) -> Result<Tensor2<E, D>, AgentError>
    where
        E: Dtype + num_traits::Float,
        D: ModelDevice<E>,
    {
        // Token 3t + 1 of a row is the state token of step t.
        let positions: Vec<usize> = w
            .lengths
            .iter()
            .map(|&n| 3 * n.saturating_sub(1) + 1)
            .collect();
        let h = self.backbone.forward_readout(
            store,
            self.tokens::<E, D, NoneTape>(store, w)?,
            &positions,
        )?;
        Ok(self.head(store, h))
    }
}

impl DecisionModel {
    /// A copy of the model in host memory for window acting on the CPU
    /// ([`crate::host_inference`]).
    pub(crate) fn host<E, D>(&self, store: &ParamStore<E, D>) -> HostDecision<E>
    where
        E: Real,
        D: ModelDevice<E>,
    {
        let embedding = HostEmbedding {
            timestep: store.values(self.embed_timestep),
            ret: HostLinear::new(store, &self.embed_return),
            state: HostLinear::new(store, &self.embed_state),
            action: match self.embed_action {
                ActionEmbedding::Linear(map) => {
                    HostActionEmbedding::Linear(HostLinear::new(store, &map))
                }
                ActionEmbedding::Table(table) => HostActionEmbedding::Table(store.values(table)),
            },
            norm: HostNorm::new(store, &self.embed_ln),
        };
        HostDecision::new(
            embedding,
            self.backbone.host(store),
            HostLinear::new(store, &self.predict_action),
            self.action,
        )
    }
}
