//! [`DecisionModel::host`]: the model copied into host memory for acting on the CPU
//! ([`crate::host`]).

use crate::attention::recurrence::Real;
use crate::device::ModelDevice;
use crate::host::{HostActionEmbedding, HostDecision, HostEmbedding, HostLinear, HostNorm};
use crate::model::decision::{ActionEmbedding, DecisionModel};
use crate::params::ParamStore;

impl DecisionModel {
    /// A copy of the model in host memory for window acting on the CPU
    /// ([`crate::host`]).
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
