//! A block's LayerNorm, query, key and value maps and causal Flow-Attention on the CPU
//! as one op: the maps' product is split straight into the heads' host buffers, the
//! feature map applied there, and the attention runs on them. The normalised rows,
//! queries, keys and values never become dfdx tensors, so neither they nor their
//! gradients are allocated, zeroed, copied back to the host and added up as tensors
//! would be; the backward pass gathers the heads' gradients into one token-row
//! gradient of the three maps. The heads' outputs leave the op side by side in token
//! rows (as `merge_heads` lays them out). Kept for the backward pass: the input rows
//! and their statistics (the normalised rows are recomputed), and what the attention
//! keeps.

use dfdx::prelude::*;

use super::chunked::{Dims, HeadGrads};
use super::cpu_flow::{consts, scratch, HostHeads};
use super::recurrence::Real;
use super::FlowConfig;
use crate::kernels::cpu_layout::{heads_to_rows, rows_to_heads, HeadColumns};
use crate::kernels::cpu_linear::StackedMaps;
use crate::kernels::cpu_norm::{backward_rows, forward_rows};
use crate::kernels::{add_into, read, release, zeroed, Affine, CpuBackward, Norm, Tensor2};

/// `merge(causal_flow(split(a W_q + b_q), split(a W_k + b_k), split(a W_v + b_v)))` for
/// `a = layer_norm(x)`, `x (B·L, W)` and `(b, l, h)` -> `(B·L, H·M)` (shapes already
/// checked); the backward pass when `trace`.
pub(crate) fn projected_causal_flow<F: Real>(
    x: Tensor2<F, Cpu>,
    norm: Norm<F, Cpu>,
    maps: [Affine<F, Cpu>; 3],
    (b, l, h): (usize, usize, usize),
    cfg: &FlowConfig,
    sigmoid: fn(&mut [F]),
    trace: bool,
) -> (Tensor2<F, Cpu>, Option<CpuBackward<F>>) {
    let (n, w) = *x.shape();
    let (d, m) = (maps[0].outputs() / h, maps[2].outputs() / h);
    let stacked = StackedMaps::new(&maps);
    let (gs, bs, eps) = (read(&norm.weight), read(&norm.bias), norm.eps);
    let xs = read(&x);
    let mut a = zeroed(n * w);
    let stats = forward_rows(&xs, (&gs, &bs), eps, &mut a);
    let y = stacked.products(&a, n);
    drop(a);
    let [q, k, v] = [0, 1, 2].map(|j| stacked.split(&y, j, (l, h)));
    drop(y);
    let inputs = HostHeads::new(q, k, v, Dims::new(l, d, m), consts(cfg, sigmoid));
    let mut heads_out = scratch(b * h * l * m);
    let saved = inputs.forward(&mut heads_out, trace);
    // The heads side by side in token rows (one head's layout is already that).
    let merged = HeadColumns::merged(l, h, m);
    let out = if h == 1 {
        heads_out
    } else {
        let mut rows = scratch(heads_out.len());
        heads_to_rows(&heads_out, merged, &mut rows);
        rows
    };
    let out = x.device().tensor_from_vec(out, (b * l, h * m));
    let Some(saved) = saved else {
        return (out, None);
    };
    let (x_ghost, out_ghost) = (x.ghost(), out.ghost());
    let (gs_ghost, bs_ghost) = (norm.weight.ghost(), norm.bias.ghost());
    drop((x, norm, maps));
    let backward = move |grads: &mut Gradients<F, Cpu>| -> Result<(), CpuError> {
        let mut dout: Vec<F> = release(grads.get_or_alloc_mut(&out_ghost)?);
        if h > 1 {
            dout = rows_to_heads(&dout, merged, None);
        }
        let [mut gq, mut gk, mut gv] = [d, d, m].map(|w| scratch(n * h * w));
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
        // The normalised rows again (the same values), for the maps' weight gradients.
        let mut a = zeroed(n * w);
        forward_rows(&xs, (&gs, &bs), eps, &mut a);
        stacked.add_parameter_gradients(grads, &a, &g)?;
        drop(a);
        // Through the maps and the LayerNorm into the input's gradient.
        let mut ga = zeroed(n * w);
        stacked.add_input_gradient(&mut ga, &g);
        drop(g);
        let (dg, db) = backward_rows((&xs, &gs), &stats, &ga, grads.get_or_alloc_mut(&x_ghost)?);
        add_into(grads.get_or_alloc_mut(&gs_ghost)?, &dg);
        add_into(grads.get_or_alloc_mut(&bs_ghost)?, &db);
        Ok(())
    };
    (out, Some(Box::new(backward)))
}
