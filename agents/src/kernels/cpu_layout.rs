//! Layout kernels on the CPU: attention heads back to token rows, and row gathers.
//! Plain copies, sequences in parallel; the backward passes add the gradient back
//! through the same index map.

use dfdx::prelude::*;
use num_traits::Float;
use rayon::prelude::*;

use super::{read, release, zeroed, CpuBackward, Tensor2, Tensor4};

/// Where `h` heads of `d` values sit in token rows: columns `off..off + h·d` of rows
/// `total` wide, `l` tokens per sequence.
#[derive(Clone, Copy)]
pub(crate) struct HeadColumns {
    pub l: usize,
    pub h: usize,
    pub d: usize,
    pub off: usize,
    pub total: usize,
}

impl HeadColumns {
    /// The heads side by side filling whole rows (`merge_heads`' layout).
    pub(crate) fn merged(l: usize, h: usize, d: usize) -> Self {
        Self {
            l,
            h,
            d,
            off: 0,
            total: h * d,
        }
    }

    /// Calls `f(offset in the token rows, offset in the head-major layout, head)` for
    /// the `d` values of every head of every token of one sequence.
    fn for_each_head_row(&self, mut f: impl FnMut(usize, usize, usize)) {
        let Self {
            l,
            h,
            d,
            off,
            total,
        } = *self;
        for i in 0..h {
            for t in 0..l {
                f(t * total + off + i * d, (i * l + t) * d, i);
            }
        }
    }
}

/// The heads' columns of token rows (plus `bias (h·d,)`, if given) in head-major layout
/// `(B, H, L, D)`, each head's rows contiguous; sequences in parallel.
pub(crate) fn rows_to_heads<E: Dtype + Float>(
    rows: &[E],
    cols: HeadColumns,
    bias: Option<&[E]>,
) -> Vec<E> {
    let HeadColumns { l, h, d, total, .. } = cols;
    let mut out = zeroed(rows.len() / total.max(1) * h * d);
    if l * total == 0 || d == 0 {
        return out;
    }
    out.par_chunks_mut(l * h * d)
        .zip(rows.par_chunks(l * total))
        .for_each(|(out, rows)| {
            cols.for_each_head_row(|src, dst, i| {
                let (src, dst) = (&rows[src..src + d], &mut out[dst..dst + d]);
                match bias {
                    Some(bias) => {
                        let bias = &bias[i * d..(i + 1) * d];
                        for ((v, &s), &c) in dst.iter_mut().zip(src).zip(bias) {
                            *v = s + c;
                        }
                    }
                    None => dst.copy_from_slice(src),
                }
            });
        });
    out
}

/// The inverse of [`rows_to_heads`] (without a bias): head-major `heads` written into
/// their columns of the token rows `rows`; sequences in parallel.
pub(crate) fn heads_to_rows<E: Dtype + Float>(heads: &[E], cols: HeadColumns, rows: &mut [E]) {
    let HeadColumns { l, h, d, total, .. } = cols;
    if l * total == 0 || d == 0 {
        return;
    }
    rows.par_chunks_mut(l * total)
        .zip(heads.par_chunks(l * h * d))
        .for_each(|(rows, heads)| {
            cols.for_each_head_row(|dst, src, _| {
                rows[dst..dst + d].copy_from_slice(&heads[src..src + d]);
            });
        });
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
    let cols = HeadColumns::merged(l, h, m);
    heads_to_rows(&os, cols, &mut out);
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
                cols.for_each_head_row(|src, dst, _| {
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
