//! Helpers shared by the kernel tests.

use dfdx::prelude::*;

/// Max absolute difference relative to `1 + max |b|`.
pub fn rel_err<E: num_traits::Float>(a: &[E], b: &[E]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let scale = 1.0
        + b.iter()
            .map(|v| v.to_f64().unwrap_or(f64::NAN).abs())
            .fold(0.0, f64::max);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x.to_f64().unwrap_or(f64::NAN) - y.to_f64().unwrap_or(f64::NAN)).abs())
        .fold(0.0, f64::max)
        / scale
}

/// The gradient of `t` (zeros when the loss does not reach it).
pub fn grad_of<S: Shape, E>(grads: &mut Gradients<E, Cpu>, t: &Tensor<S, E, Cpu>) -> Vec<E>
where
    E: Dtype,
    Cpu: Device<E>,
{
    grads
        .try_alloc_for(t)
        .unwrap_or_else(|e| panic!("allocating a gradient: {e}"));
    grads.get(t).as_vec()
}
