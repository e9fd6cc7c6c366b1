//! Layout kernels on the CPU: attention heads back to token rows, and row gathers.
//! Plain copies, sequences in parallel; the backward passes add the gradient back
//! through the same index map.

use dfdx::prelude::*;
use num_traits::Float;
use rayon::prelude::*;

use super::{read, release, zeroed, CpuBackward, Tensor2, Tensor4};

/// Calls `f(offset in the token-major layout, offset in the head-major layout)` for the
/// `d` values of every head `i` of every token `t` of one sequence of `l` tokens with
/// `h` heads.
fn for_each_head_row(l: usize, h: usize, d: usize, mut f: impl FnMut(usize, usize)) {
    let w = h * d;
    for i in 0..h {
        for t in 0..l {
            f(t * w + i * d, (i * l + t) * d);
        }
    }
}

/// `o (B, H, L, M) -> (B·L, H·M)`; the backward pass when `trace`.
pub(crate) fn merge_heads<E: Dtype + Float>(
    o: Tensor4<E, Cpu>,
    trace: bool,
) -> (Tensor2<E, Cpu>, Option<CpuBackward<E>>) {
    let (b, h, l, m) = *o.shape();
    let w = h * m;
    let os = read(&o);
    let mut out = zeroed(os.len());
    let seq = l * w;
    if seq > 0 {
        out.par_chunks_mut(seq)
            .zip(os.par_chunks(seq))
            .for_each(|(out, os)| {
                for_each_head_row(l, h, m, |dst, src| {
                    out[dst..dst + m].copy_from_slice(&os[src..src + m]);
                });
            });
    }
    drop(os);
    let out = o.device().tensor_from_vec(out, (b * l, w));
    if !trace {
        return (out, None);
    }
    let (o_ghost, out_ghost) = (o.ghost(), out.ghost());
    drop(o);
    let backward = move |grads: &mut Gradients<E, Cpu>| -> Result<(), CpuError> {
        grads.try_alloc_for(&o_ghost)?;
        grads.try_alloc_for(&out_ghost)?;
        let g: Vec<E> = release(grads.get_or_alloc_mut(&out_ghost)?);
        if seq == 0 {
            return Ok(());
        }
        let go: &mut Vec<E> = grads.get_or_alloc_mut(&o_ghost)?;
        go.par_chunks_mut(seq)
            .zip(g.par_chunks(seq))
            .for_each(|(go, g)| {
                for_each_head_row(l, h, m, |src, dst| {
                    for (s, &v) in go[dst..dst + m].iter_mut().zip(&g[src..]) {
                        *s += v;
                    }
                });
            });
        Ok(())
    };
    (out, Some(Box::new(backward)))
}

/// Rows `rows` of `x (N, W)`, in that order; the backward pass when `trace`.
pub(crate) fn gather_rows<E: Dtype + Float>(
    x: Tensor2<E, Cpu>,
    rows: &[usize],
    trace: bool,
) -> (Tensor2<E, Cpu>, Option<CpuBackward<E>>) {
    let w = x.shape().1;
    let xs = read(&x);
    let mut out = zeroed(rows.len() * w);
    if w > 0 {
        out.par_chunks_mut(w)
            .zip(rows.par_iter())
            .for_each(|(o, &r)| o.copy_from_slice(&xs[r * w..(r + 1) * w]));
    }
    drop(xs);
    let out = x.device().tensor_from_vec(out, (rows.len(), w));
    if !trace {
        return (out, None);
    }
    let (x_ghost, out_ghost) = (x.ghost(), out.ghost());
    drop(x);
    let rows = rows.to_vec();
    let backward = move |grads: &mut Gradients<E, Cpu>| -> Result<(), CpuError> {
        grads.try_alloc_for(&x_ghost)?;
        grads.try_alloc_for(&out_ghost)?;
        let g: Vec<E> = release(grads.get_or_alloc_mut(&out_ghost)?);
        let gx = grads.get_or_alloc_mut(&x_ghost)?;
        if w > 0 {
            // Rows may repeat: accumulate in order, one row at a time.
            for (g, &r) in g.chunks_exact(w).zip(&rows) {
                for (s, &v) in gx[r * w..(r + 1) * w].iter_mut().zip(g) {
                    *s += v;
                }
            }
        }
        Ok(())
    };
    (out, Some(Box::new(backward)))
}
