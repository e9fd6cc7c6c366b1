//! The MLP sub-layer on the CPU as one op: LayerNorm, the wide map with ReLU, the map
//! back, dropout and the residual sum. The wide hidden layer stays a host buffer of the
//! op (kept for the backward pass, which also needs it for the second map's weight
//! gradient): it never becomes a dfdx tensor, so neither it nor its gradient is
//! allocated, zeroed and copied as a tensor would be. The LayerNorm's output is
//! recomputed in the backward pass from the kept input and row statistics.

use dfdx::prelude::*;
use num_traits::Float;
use rayon::prelude::*;

use super::cpu_linear::{add_bias_act, add_column_sums, add_weight_gradient, weight_view};
use super::cpu_norm::{backward_rows, forward_rows};
use super::cpu_pointwise::BitMask;
use super::{add_into, read, release, zeroed, Activation, CpuBackward, Mlp, Tensor2};
use crate::attention::gemm::{matmul_parallel_new, View};

/// `x + dropout(relu(layer_norm(x) W1 + b1) W2 + b2, p)` for `x (N, W)` (no dropout
/// when `p == 0`); the backward pass when `trace`. The dropout mask is the one
/// [`super::dropout_add`] draws.
pub(crate) fn mlp_residual<E: Dtype + Float>(
    x: Tensor2<E, Cpu>,
    mlp: Mlp<E, Cpu>,
    p: f64,
    trace: bool,
) -> (Tensor2<E, Cpu>, Option<CpuBackward<E>>) {
    let (n, w) = *x.shape();
    let hidden = mlp.fc.outputs();
    let dev = x.device().clone();
    let xs = read(&x);
    let (gs, bs) = (read(&mlp.norm.weight), read(&mlp.norm.bias));
    let eps = mlp.norm.eps;
    let (w1, w2) = (read(&mlp.fc.weight), read(&mlp.proj.weight));
    let (fc_in, proj_in) = (mlp.fc.out_in, mlp.proj.out_in);
    let mut a = zeroed(n * w);
    let stats = forward_rows(&xs, (&gs, &bs), eps, &mut a);
    let mut h = matmul_parallel_new(View::rows(&a, n, w), weight_view(&w1, (w, hidden), fc_in));
    let b1 = mlp.fc.bias.as_ref().map(read);
    add_bias_act(&mut h, b1.as_deref(), hidden, Activation::Relu);
    let mut y = matmul_parallel_new(
        View::rows(&h, n, hidden),
        weight_view(&w2, (hidden, w), proj_in),
    );
    drop(a);
    let b2 = mlp.proj.bias.as_ref().map(read);
    add_bias_act(&mut y, b2.as_deref(), w, Activation::Identity);
    let kept = (p > 0.0).then(|| BitMask::dropout_keep(dev.random_u64(), p, n * w));
    if let Some(mask) = &kept {
        mask.drop_values(&mut y, p);
    }
    add_into(&mut y, &xs);
    let out = dev.tensor_from_vec(y, (n, w));
    if !trace {
        return (out, None);
    }
    let x_ghost = x.ghost();
    let out_ghost = out.ghost();
    let (gs_ghost, bs_ghost) = (mlp.norm.weight.ghost(), mlp.norm.bias.ghost());
    let (w1_ghost, w2_ghost) = (mlp.fc.weight.ghost(), mlp.proj.weight.ghost());
    let b1_ghost = mlp.fc.bias.as_ref().map(|b| b.ghost());
    let b2_ghost = mlp.proj.bias.as_ref().map(|b| b.ghost());
    drop((x, mlp));
    let backward = move |grads: &mut Gradients<E, Cpu>| -> Result<(), CpuError> {
        for ghost in [&x_ghost, &out_ghost, &w1_ghost, &w2_ghost] {
            grads.try_alloc_for(ghost)?;
        }
        let vectors = [
            Some(&gs_ghost),
            Some(&bs_ghost),
            b1_ghost.as_ref(),
            b2_ghost.as_ref(),
        ];
        for ghost in vectors.into_iter().flatten() {
            grads.try_alloc_for(ghost)?;
        }
        let mut g: Vec<E> = release(grads.get_or_alloc_mut(&out_ghost)?);
        // The residual's share, then the sub-layer's output gradient.
        add_into(grads.get_or_alloc_mut(&x_ghost)?, &g);
        if let Some(mask) = &kept {
            mask.drop_gradient(&mut g, p);
        }
        let gv = View::rows(&g, n, w);
        if let Some(b2_ghost) = &b2_ghost {
            add_column_sums(grads.get_or_alloc_mut(b2_ghost)?, &g, w);
        }
        let hv = View::rows(&h, n, hidden);
        add_weight_gradient(grads.get_or_alloc_mut(&w2_ghost)?, hv, gv, proj_in);
        // Through the second map and the ReLU.
        let mut gh = matmul_parallel_new(gv, weight_view(&w2, (hidden, w), proj_in).t());
        gh.par_chunks_mut(1 << 14)
            .zip(h.par_chunks(1 << 14))
            .for_each(|(gh, h)| {
                for (d, &v) in gh.iter_mut().zip(h) {
                    if v <= E::zero() {
                        *d = E::zero();
                    }
                }
            });
        drop(g);
        if let Some(b1_ghost) = &b1_ghost {
            add_column_sums(grads.get_or_alloc_mut(b1_ghost)?, &gh, hidden);
        }
        // The LayerNorm's output again (the same values: kept, it would be one more
        // activation per block alive until the backward pass).
        let mut a = zeroed(n * w);
        forward_rows(&xs, (&gs, &bs), eps, &mut a);
        let ghv = View::rows(&gh, n, hidden);
        add_weight_gradient(
            grads.get_or_alloc_mut(&w1_ghost)?,
            View::rows(&a, n, w),
            ghv,
            fc_in,
        );
        // Through the first map, then the LayerNorm into the input's gradient.
        let ga = matmul_parallel_new(ghv, weight_view(&w1, (w, hidden), fc_in).t());
        drop(gh);
        let (dg, db) = backward_rows((&xs, &gs), &stats, &ga, grads.get_or_alloc_mut(&x_ghost)?);
        add_into(grads.get_or_alloc_mut(&gs_ghost)?, &dg);
        add_into(grads.get_or_alloc_mut(&bs_ghost)?, &db);
        Ok(())
    };
    (out, Some(Box::new(backward)))
}
