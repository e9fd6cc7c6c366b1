//! Helpers shared by the test modules: the error measures, float conversions, the
//! gradient of a tensor, a small parameter store with constant gradients, the typed
//! reference-fixture loader ([`fixture`]) and random agent inputs ([`inputs`]).

pub mod fixture;
pub mod inputs;
pub mod lockstep;

use dfdx::prelude::*;
use flowrl_agents::model::layers::{Tensor2, Tensor3};
use flowrl_agents::params::{Init, ParamGrads, ParamId, ParamStore};
use num_traits::Float;

// ---------------------------------------------------------------- error measures

/// Largest `|a - b|`, in f64 whatever the element types.
pub fn max_abs_diff<A: Float, B: Float>(a: &[A], b: &[B]) -> f64 {
    assert_eq!(a.len(), b.len(), "compared arrays differ in length");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64_of(x) - f64_of(y)).abs())
        .fold(0.0, f64::max)
}

/// Largest `|a - b| / (1 + |b|)`, element by element.
pub fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "compared arrays differ in length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f64::max)
}

/// Max absolute difference relative to `1 + max |b|`.
pub fn rel_err<E: Float>(a: &[E], b: &[E]) -> f64 {
    let scale = 1.0 + b.iter().map(|&v| f64_of(v).abs()).fold(0.0, f64::max);
    max_abs_diff(a, b) / scale
}

// ---------------------------------------------------------------- float conversions

/// `x` in f64.
pub fn f64_of<E: Float>(x: E) -> f64 {
    x.to_f64().expect("f32/f64 convert to f64")
}

/// Every value in f64.
pub fn to_f64<E: Float>(x: &[E]) -> Vec<f64> {
    x.iter().map(|&a| f64_of(a)).collect()
}

/// Every value in `E` (f32 or f64).
pub fn from_f64<E: Float>(x: &[f64]) -> Vec<E> {
    x.iter()
        .map(|&a| E::from(a).expect("f64 converts to f32/f64"))
        .collect()
}

// ---------------------------------------------------------------- gradients and stores

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

/// Gradients equal to the given constants: the loss is `sum_i sum(p_i * c_i)`.
pub fn constant_grads<E, D>(
    store: &ParamStore<E, D>,
    consts: &[(ParamId, Vec<E>)],
) -> ParamGrads<E, D>
where
    E: Dtype + Float,
    D: Device<E>,
{
    let dev = store.device().clone();
    let mut loss: Option<Tensor<Rank0, E, D, OwnedTape<E, D>>> = None;
    for (id, c) in consts {
        let p = store.value(*id).clone().leaky_traced();
        let c = dev.tensor_from_vec(c.clone(), (c.len(),));
        let term = (p * c).sum::<Rank0, _>();
        loss = Some(match loss {
            None => term,
            Some(l) => l + term,
        });
    }
    let mut gradients = loss.expect("at least one constant").backward();
    store.grads(&mut gradients)
}

/// Four parameters: `a.weight [3, 4]`, `a.bias [4]`, `ln.weight [4]`, `ln.bias [4]`.
pub fn small_store<E: Dtype + Float>(dev: &Cpu, seed: u64) -> ParamStore<E, Cpu>
where
    Cpu: Device<E>,
{
    let mut store = ParamStore::new(dev, seed);
    store
        .register("a.weight", &[3, 4], Init::Normal { std: 0.5 })
        .unwrap();
    store
        .register("a.bias", &[4], Init::Uniform { bound: 0.3 })
        .unwrap();
    store.register("ln.weight", &[4], Init::Ones).unwrap();
    store.register("ln.bias", &[4], Init::Zeros).unwrap();
    store
}

/// `f` on the token rows of `x (B, L, W)`, the result back in `(B, L, ·)` layout.
pub fn per_token<E, T>(
    x: Tensor3<E, Cpu, T>,
    f: impl FnOnce(Tensor2<E, Cpu, T>) -> Tensor2<E, Cpu, T>,
) -> Tensor3<E, Cpu, T>
where
    E: Dtype,
    T: Tape<E, Cpu>,
{
    let (b, l, w) = *x.shape();
    let y = f(x.reshape_like(&(b * l, w)));
    let o = y.shape().1;
    y.reshape_like(&(b, l, o))
}
