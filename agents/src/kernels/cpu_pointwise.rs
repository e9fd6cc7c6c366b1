//! Fused pointwise kernels on the CPU: bias plus activation, dropout plus residual.
//! Each saves at most a one-bit mask per value for its backward pass.

use dfdx::prelude::*;
use num_traits::Float;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Bernoulli, Distribution};
use rayon::prelude::*;

use super::{cast, read, release, rows_per_task, Activation, CpuBackward, Tensor1, Tensor2};

/// `act(y + bias)`; the backward pass when `trace`.
pub(super) fn bias_act<E: Dtype + Float>(
    y: Tensor2<E, Cpu>,
    bias: Tensor1<E, Cpu>,
    act: Activation,
    trace: bool,
) -> (Tensor2<E, Cpu>, Option<CpuBackward<E>>) {
    let (n, o) = *y.shape();
    let mut out = read(&y);
    let bs = read(&bias);
    let rows = rows_per_task(o);
    if o > 0 {
        out.par_chunks_mut(rows * o).for_each(|chunk| {
            for row in chunk.chunks_exact_mut(o) {
                for (v, &b) in row.iter_mut().zip(&bs) {
                    let z = *v + b;
                    *v = match act {
                        Activation::Identity => z,
                        Activation::Relu => z.max(E::zero()),
                    };
                }
            }
        });
    }
    let positive: Option<BitMask> = (trace && act == Activation::Relu)
        .then(|| BitMask::from_iter(out.iter().map(|&v| v > E::zero())));
    let out = y.device().tensor_from_vec(out, (n, o));
    if !trace {
        return (out, None);
    }
    let (y_ghost, b_ghost, out_ghost) = (y.ghost(), bias.ghost(), out.ghost());
    drop(y);
    let backward = move |grads: &mut Gradients<E, Cpu>| -> Result<(), CpuError> {
        grads.try_alloc_for(&y_ghost)?;
        grads.try_alloc_for(&b_ghost)?;
        grads.try_alloc_for(&out_ghost)?;
        let mut g: Vec<E> = release(grads.get_or_alloc_mut(&out_ghost)?);
        if let Some(positive) = &positive {
            for (i, g) in g.iter_mut().enumerate() {
                if !positive.get(i) {
                    *g = E::zero();
                }
            }
        }
        let partial: Vec<Vec<E>> = if o == 0 {
            Vec::new()
        } else {
            g.par_chunks(rows * o)
                .map(|chunk| {
                    let mut db = vec![E::zero(); o];
                    for row in chunk.chunks_exact(o) {
                        for (s, &v) in db.iter_mut().zip(row) {
                            *s += v;
                        }
                    }
                    db
                })
                .collect()
        };
        let gb = grads.get_or_alloc_mut(&b_ghost)?;
        for db in &partial {
            for (s, &v) in gb.iter_mut().zip(db) {
                *s += v;
            }
        }
        add_into(grads.get_or_alloc_mut(&y_ghost)?, &g);
        Ok(())
    };
    (out, Some(Box::new(backward)))
}

/// `dropout(x, p) + residual` (no residual: `dropout(x, p)`); `p == 0` with a residual
/// is a plain sum. The mask is dfdx's: a seed from the device's stream, then one
/// Bernoulli(p) draw of `StdRng` per value in order (`true` drops).
pub(super) fn dropout_add<S: Shape, E: Dtype + Float>(
    x: Tensor<S, E, Cpu>,
    residual: Option<Tensor<S, E, Cpu>>,
    p: f64,
    trace: bool,
) -> (Tensor<S, E, Cpu>, Option<CpuBackward<E>>) {
    let shape = *x.shape();
    let dev = x.device().clone();
    let mut out = read(&x);
    let drops = p > 0.0 || residual.is_none();
    let mut kept: Option<BitMask> = None;
    if drops {
        let mut rng = StdRng::seed_from_u64(dev.random_u64());
        // Bernoulli::new fails only outside [0, 1], which the configs exclude.
        let dist = Bernoulli::new(p).unwrap_or_else(|e| panic!("dropout probability {p}: {e}"));
        let keep_scale: E = cast(1.0 - p);
        let mask = BitMask::from_iter(out.iter_mut().map(|v| {
            let drop = dist.sample(&mut rng);
            *v = if drop { E::zero() } else { *v / keep_scale };
            !drop
        }));
        kept = trace.then_some(mask);
    }
    if let Some(r) = &residual {
        add_into(&mut out, &read(r));
    }
    let out = dev.tensor_from_vec(out, shape);
    if !trace {
        return (out, None);
    }
    let (x_ghost, out_ghost) = (x.ghost(), out.ghost());
    let r_ghost = residual.as_ref().map(|r| r.ghost());
    drop((x, residual));
    let grad_scale: E = cast((1.0 - p).recip());
    let backward = move |grads: &mut Gradients<E, Cpu>| -> Result<(), CpuError> {
        grads.try_alloc_for(&x_ghost)?;
        grads.try_alloc_for(&out_ghost)?;
        if let Some(r) = &r_ghost {
            grads.try_alloc_for(r)?;
        }
        let g: Vec<E> = release(grads.get_or_alloc_mut(&out_ghost)?);
        if let Some(r) = &r_ghost {
            add_into(grads.get_or_alloc_mut(r)?, &g);
        }
        let gx = grads.get_or_alloc_mut(&x_ghost)?;
        match &kept {
            Some(kept) => {
                for (i, (s, &v)) in gx.iter_mut().zip(&g).enumerate() {
                    *s += (if kept.get(i) { grad_scale } else { E::zero() }) * v;
                }
            }
            None => add_into(gx, &g),
        }
        Ok(())
    };
    (out, Some(Box::new(backward)))
}

/// `acc += x`, elementwise.
fn add_into<E: Dtype + Float>(acc: &mut [E], x: &[E]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += v;
    }
}

/// One bit per value.
struct BitMask {
    words: Vec<u64>,
}

impl BitMask {
    fn from_iter(bits: impl Iterator<Item = bool>) -> Self {
        let mut words = Vec::new();
        for (i, bit) in bits.enumerate() {
            if i % 64 == 0 {
                words.push(0u64);
            }
            if bit {
                if let Some(w) = words.last_mut() {
                    *w |= 1 << (i % 64);
                }
            }
        }
        Self { words }
    }

    fn get(&self, i: usize) -> bool {
        self.words[i / 64] >> (i % 64) & 1 == 1
    }
}
