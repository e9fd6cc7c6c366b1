//! The query, key and value maps and causal Flow-Attention on the CPU as one op: the
//! maps' product is split straight into the heads' host buffers, the feature map
//! applied there, and the attention runs on them. Queries, keys and values never
//! become dfdx tensors, so neither they nor their gradients are allocated, zeroed,
//! copied back to the host and added up as tensors would be; the backward pass gathers
//! the heads' gradients into one token-row gradient of the three maps.

use dfdx::prelude::*;
use rayon::prelude::*;

use super::chunked::{Dims, HeadGrads};
use super::cpu_flow::{consts, HostHeads};
use super::recurrence::Real;
use super::{FlowConfig, Tensor4};
use crate::kernels::cpu_linear::StackedMaps;
use crate::kernels::{read, release, Affine, CpuBackward, Tensor2};

/// `causal_flow(split(x W_q + b_q), split(x W_k + b_k), split(x W_v + b_v))` for `x
/// (B·L, I)` and `(b, l, h)` -> `(B, H, L, M)` (shapes already checked); the backward
/// pass when `trace`.
pub(crate) fn projected_causal_flow<F: Real>(
    x: Tensor2<F, Cpu>,
    maps: [Affine<F, Cpu>; 3],
    (b, l, h): (usize, usize, usize),
    cfg: &FlowConfig,
    sigmoid: fn(&mut [F]),
    trace: bool,
) -> (Tensor4<F, Cpu>, Option<CpuBackward<F>>) {
    let n = x.shape().0;
    let (d, m) = (maps[0].outputs() / h, maps[2].outputs() / h);
    let stacked = StackedMaps::new(&maps);
    let xs = read(&x);
    let y = stacked.products(&xs, n);
    let [mut qf, mut kf, v] = [0, 1, 2].map(|j| stacked.split(&y, j, (l, h)));
    drop(y);
    if l > 0 {
        qf.par_chunks_mut(l * d)
            .chain(kf.par_chunks_mut(l * d))
            .for_each(sigmoid);
    }
    let inputs = HostHeads {
        qf,
        kf,
        v,
        dims: Dims::new(l, d, m),
        c: consts(cfg, sigmoid),
    };
    let mut out = vec![F::zero(); b * h * l * m];
    let saved = inputs.forward(&mut out, trace);
    let out = x.device().tensor_from_vec(out, (b, h, l, m));
    let Some(saved) = saved else {
        return (out, None);
    };
    let (x_ghost, out_ghost) = (x.ghost(), out.ghost());
    drop((x, maps));
    let backward = move |grads: &mut Gradients<F, Cpu>| -> Result<(), CpuError> {
        grads.try_alloc_for(&out_ghost)?;
        let dout: Vec<F> = release(grads.get_or_alloc_mut(&out_ghost)?);
        let [mut gq, mut gk, mut gv] = [d, d, m].map(|w| vec![F::zero(); n * h * w]);
        let head_grads = HeadGrads {
            q: &mut gq,
            k: &mut gk,
            v: &mut gv,
        };
        inputs.backward(&saved, &dout, head_grads);
        drop((inputs, saved, dout));
        let mut g = stacked.new_gradient(n);
        for (j, go) in [gq, gk, gv].into_iter().enumerate() {
            stacked.gather(&mut g, j, &go, (l, h));
        }
        stacked.add_input_gradient(grads.get_or_alloc_mut(&x_ghost)?, &g);
        stacked.add_parameter_gradients(grads, &xs, &g)
    };
    (out, Some(Box::new(backward)))
}
