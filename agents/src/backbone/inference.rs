//! [`Backbone::host`]: the backbone copied into host memory for the CPU acting path
//! ([`crate::host_inference`]).

use super::Backbone;
use crate::attention::recurrence::Real;
use crate::device::ModelDevice;
use crate::host_inference::{HostBackbone, HostBlock, HostLinear, HostNorm};
use crate::params::ParamStore;

impl Backbone {
    /// A copy of the backbone in host memory ([`crate::host_inference`]).
    pub(crate) fn host<E, D>(&self, store: &ParamStore<E, D>) -> HostBackbone<E>
    where
        E: Real,
        D: ModelDevice<E>,
    {
        let linear = |layer| HostLinear::new(store, layer);
        let blocks = self
            .blocks
            .iter()
            .map(|b| {
                HostBlock::new((
                    HostNorm::new(store, &b.ln_1),
                    [linear(&b.query), linear(&b.key), linear(&b.value)],
                    linear(&b.out),
                    HostNorm::new(store, &b.ln_2),
                    linear(&b.c_fc),
                    linear(&b.c_proj),
                ))
            })
            .collect();
        HostBackbone::new(
            blocks,
            HostNorm::new(store, &self.ln_f),
            (self.cfg.width, self.cfg.heads),
            self.cfg.attention,
            &self.cfg.flow,
        )
    }
}
