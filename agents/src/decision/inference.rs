//! Eval-mode prediction of each window row's next action only (acting in `window`
//! mode), through [`crate::backbone::Backbone::forward_readout`]: the backbone's last
//! block and the head run on the last real state token of each row only.

use dfdx::prelude::*;

use super::DecisionModel;
use crate::agent::{AgentError, Window};
use crate::attention::AttentionDevice;
use crate::layers::Tensor2;
use crate::params::ParamStore;

impl DecisionModel {
    /// The prediction at each row's last real step, `(B, outputs)`: the rows `w.last`
    /// of [`DecisionModel::predict`] in eval mode, computing only what they depend on.
    /// The window is checked against the config by the caller.
    pub(crate) fn predict_last<E, D>(
        &self,
        store: &ParamStore<E, D>,
        w: &Window<E, D>,
    ) -> Result<Tensor2<E, D>, AgentError>
    where
        E: Dtype + num_traits::Float,
        D: AttentionDevice<E>,
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
