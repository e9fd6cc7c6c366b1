//! The fused `Cpu` linear maps (one map with its bias and activation; several maps of
//! one input split into attention heads; the MLP sub-layer with its LayerNorm, dropout
//! and residual) against their compositions of stock dfdx ops: forward values and the
//! gradients of the input, the weights and the biases, in f64 and f32, for both weight
//! layouts, with and without a bias, and through a strided input. Also the attention
//! of three such maps as one op (`projected_causal_flow`), against the ops it fuses.

use dfdx::prelude::*;
use flowrl_agents::attention::{self, FlowConfig};
use flowrl_agents::device::ModelDevice;
use flowrl_agents::kernels::{self, composed, Activation, Affine, Mlp, Norm, Tensor1, Tensor2};

use crate::common::{grad_of, rel_err};

/// A map of `inputs -> outputs` with random parameters stored in `layout` order.
fn affine<E>(dev: &Cpu, (i, o): (usize, usize), out_in: bool, bias: bool) -> Affine<E, Cpu>
where
    E: Dtype + num_traits::Float,
    Cpu: ModelDevice<E>,
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    let shape = if out_in { (o, i) } else { (i, o) };
    Affine {
        weight: dev.sample_normal_like(&shape),
        out_in,
        bias: bias.then(|| dev.sample_normal_like(&(o,))),
    }
}

/// A LayerNorm of `width` with random parameters.
fn random_norm<E>(dev: &Cpu, width: usize) -> Norm<E, Cpu>
where
    E: Dtype + num_traits::Float,
    Cpu: ModelDevice<E>,
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    Norm {
        weight: dev.sample_normal_like(&(width,)),
        bias: dev.sample_normal_like(&(width,)),
        eps: 1e-5,
    }
}

/// The gradients of every map's weight and of its bias (empty without a bias).
fn map_grads<'a, E>(
    grads: &mut Gradients<E, Cpu>,
    maps: impl IntoIterator<Item = &'a Affine<E, Cpu>>,
) -> Vec<Vec<E>>
where
    E: Dtype,
    Cpu: Device<E>,
{
    let mut all = Vec::new();
    for map in maps {
        all.push(grad_of(grads, &map.weight));
        all.push(
            map.bias
                .as_ref()
                .map_or_else(Vec::new, |b| grad_of(grads, b)),
        );
    }
    all
}

/// Everything one case compares: forward values, then the gradients of the input and of
/// every map's weight and bias (empty without a bias).
type Outcome<E> = (Vec<E>, Vec<Vec<E>>);

/// `act(x W + b)` and its gradients under the loss `sum(out * probe)`, fused or composed.
/// With `strided`, the input is the transposed view of a `(I, N)` tensor.
fn run_linear<E>(
    out_in: bool,
    bias: bool,
    act: Activation,
    strided: bool,
    fused: bool,
) -> Outcome<E>
where
    E: Dtype + num_traits::Float,
    Cpu: ModelDevice<E>,
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    let dev = Cpu::seed_from_u64(11);
    let (n, i, o) = (37, 9, 14);
    let map = affine::<E>(&dev, (i, o), out_in, bias);
    let x: Tensor2<E, Cpu> = dev.sample_normal_like(&(n, i));
    let xt: Tensor2<E, Cpu> = dev.tensor_from_vec(x.as_vec(), (n, i));
    let xt_base = dev.tensor_from_vec(xt.permute::<_, Axes2<1, 0>>().as_vec(), (i, n));
    let traced: Tensor2<E, Cpu, OwnedTape<E, Cpu>> = if strided {
        xt_base.leaky_trace().permute::<_, Axes2<1, 0>>()
    } else {
        x.leaky_trace()
    };
    let y = if fused {
        kernels::linear(traced, map.clone(), act)
    } else {
        composed::linear(traced, map.clone(), act)
    };
    let values = y.as_vec();
    let probe: Tensor2<E, Cpu> = Cpu::seed_from_u64(12).sample_normal_like(&(n, o));
    let mut grads = (y * probe).sum::<Rank0, _>().backward();
    let gx = if strided {
        // The base is (I, N): read its gradient back in (N, I) order.
        let g = grad_of(&mut grads, &xt_base);
        (0..n * i).map(|at| g[(at % i) * n + at / i]).collect()
    } else {
        grad_of(&mut grads, &x)
    };
    let gw = grad_of(&mut grads, &map.weight);
    let gb = map
        .bias
        .as_ref()
        .map_or_else(Vec::new, |b| grad_of(&mut grads, b));
    (values, vec![gx, gw, gb])
}

/// Three maps of one input split into `heads` heads, and their gradients under
/// `sum(out_j * probe_j)`, fused or composed. The maps differ in layout, width and bias.
fn run_heads<E>(heads: usize, fused: bool) -> Outcome<E>
where
    E: Dtype + num_traits::Float,
    Cpu: ModelDevice<E>,
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    let dev = Cpu::seed_from_u64(21);
    let (b, l, i) = (3, 7, 10);
    let maps = vec![
        affine::<E>(&dev, (i, 4 * heads), true, true),
        affine::<E>(&dev, (i, 2 * heads), false, true),
        affine::<E>(&dev, (i, 3 * heads), true, false),
    ];
    let x: Tensor2<E, Cpu> = dev.sample_normal_like(&(b * l, i));
    let outs = if fused {
        kernels::linear_heads(x.leaky_trace(), maps.clone(), (b, l, heads))
    } else {
        composed::linear_heads(x.leaky_trace(), maps.clone(), (b, l, heads))
    };
    assert_eq!(outs.len(), 3, "one output per map");
    let mut values = Vec::new();
    let mut loss: Option<Tensor<Rank0, E, Cpu, OwnedTape<E, Cpu>>> = None;
    for (j, out) in outs.into_iter().enumerate() {
        let shape = *out.shape();
        assert_eq!(shape.0, b, "batch");
        assert_eq!(shape.1, heads, "heads");
        assert_eq!(shape.2, l, "length");
        values.extend(out.as_vec());
        let probe: Tensor<_, E, Cpu> = Cpu::seed_from_u64(30 + j as u64).sample_normal_like(&shape);
        let term = (out * probe).sum::<Rank0, _>();
        loss = Some(match loss {
            None => term,
            Some(acc) => acc + term,
        });
    }
    let mut grads = loss.expect("three outputs").backward();
    let mut all = vec![grad_of(&mut grads, &x)];
    all.extend(map_grads(&mut grads, &maps));
    (values, all)
}

/// Fused and composed outcomes agree within `tol`.
fn assert_close<E: num_traits::Float>(
    case: &str,
    fused: &Outcome<E>,
    composed: &Outcome<E>,
    tol: f64,
) {
    let e = rel_err(&fused.0, &composed.0);
    assert!(e <= tol, "{case}: forward error {e:e}");
    assert_eq!(fused.1.len(), composed.1.len(), "{case}: gradient count");
    for (k, (f, c)) in fused.1.iter().zip(&composed.1).enumerate() {
        let e = rel_err(f, c);
        assert!(e <= tol, "{case}: gradient {k} error {e:e}");
    }
}

fn check_linear<E>(tol: f64)
where
    E: Dtype + num_traits::Float,
    Cpu: ModelDevice<E>,
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    for out_in in [true, false] {
        for bias in [true, false] {
            for act in [Activation::Identity, Activation::Relu] {
                for strided in [false, true] {
                    let case = format!("out_in {out_in}, bias {bias}, {act:?}, strided {strided}");
                    let fused = run_linear::<E>(out_in, bias, act, strided, true);
                    let composed = run_linear::<E>(out_in, bias, act, strided, false);
                    assert_close(&case, &fused, &composed, tol);
                }
            }
        }
    }
}

#[test]
fn fused_linear_matches_composed_ops_in_f64() {
    check_linear::<f64>(1e-12);
}

#[test]
fn fused_linear_matches_composed_ops_in_f32() {
    check_linear::<f32>(1e-5);
}

/// [`run_heads`] fused and composed agree within `tol`.
fn check_heads<E>(label: &str, heads: usize, tol: f64)
where
    E: Dtype + num_traits::Float,
    Cpu: ModelDevice<E>,
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    let fused = run_heads::<E>(heads, true);
    let composed = run_heads::<E>(heads, false);
    assert_close(&format!("{label}, {heads} heads"), &fused, &composed, tol);
}

#[test]
fn fused_linear_heads_match_composed_ops() {
    for heads in [1, 2] {
        check_heads::<f64>("f64", heads, 1e-12);
        check_heads::<f32>("f32", heads, 1e-5);
    }
}

#[test]
fn untraced_linear_maps_give_the_traced_values() {
    let dev = Cpu::seed_from_u64(3);
    let map = affine::<f32>(&dev, (6, 8), true, true);
    let other = affine::<f32>(&dev, (6, 4), false, false);
    let x: Tensor2<f32, Cpu> = dev.sample_normal_like(&(10, 6));
    let traced = kernels::linear(x.leaky_trace(), map.clone(), Activation::Relu).as_vec();
    let plain = kernels::linear(x.clone(), map.clone(), Activation::Relu).as_vec();
    assert_eq!(traced, plain);
    let maps = vec![map, other];
    let traced: Vec<Vec<f32>> = kernels::linear_heads(x.leaky_trace(), maps.clone(), (2, 5, 2))
        .iter()
        .map(|t| t.as_vec())
        .collect();
    let plain: Vec<Vec<f32>> = kernels::linear_heads(x, maps, (2, 5, 2))
        .iter()
        .map(|t| t.as_vec())
        .collect();
    assert_eq!(traced, plain);
}

/// The MLP sub-layer `x + dropout(relu(ln(x) W1 + b1) W2 + b2, p)` on `n` rows of width
/// 6 (hidden 10), the maps in `layouts` (`out_in` of the first and second map), and
/// its gradients under `sum(out * probe)`, fused or composed. The device is seeded
/// alike for both paths, so they draw the same dropout mask.
fn run_mlp<E>(n: usize, layouts: (bool, bool), bias: bool, p: f64, fused: bool) -> Outcome<E>
where
    E: Dtype + num_traits::Float,
    Cpu: ModelDevice<E>,
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    let dev = Cpu::seed_from_u64(41);
    let (w, hidden) = (6, 10);
    let norm_weight: Tensor1<E, Cpu> = dev.sample_normal_like(&(w,));
    let norm_bias: Tensor1<E, Cpu> = dev.sample_normal_like(&(w,));
    let mlp = Mlp {
        norm: Norm {
            weight: norm_weight.clone(),
            bias: norm_bias.clone(),
            eps: 1e-5,
        },
        fc: affine::<E>(&dev, (w, hidden), layouts.0, bias),
        proj: affine::<E>(&dev, (hidden, w), layouts.1, bias),
    };
    let x: Tensor2<E, Cpu> = dev.sample_normal_like(&(n, w));
    let y = if fused {
        kernels::mlp_residual(x.leaky_trace(), mlp.clone(), p)
    } else {
        composed::mlp_residual(x.leaky_trace(), mlp.clone(), p)
    };
    let values = y.as_vec();
    let probe: Tensor2<E, Cpu> = Cpu::seed_from_u64(42).sample_normal_like(&(n, w));
    let mut grads = (y * probe).sum::<Rank0, _>().backward();
    let mut all = vec![
        grad_of(&mut grads, &x),
        grad_of(&mut grads, &norm_weight),
        grad_of(&mut grads, &norm_bias),
    ];
    all.extend(map_grads(&mut grads, [&mlp.fc, &mlp.proj]));
    (values, all)
}

/// [`run_mlp`] fused and composed agree within `tol` for every layout pair, with and
/// without biases and dropout, on one row and on more rows than a parallel block holds.
fn check_mlp<E>(label: &str, tol: f64)
where
    E: Dtype + num_traits::Float,
    Cpu: ModelDevice<E>,
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    for n in [1, 3000] {
        for layouts in [(false, false), (true, true), (false, true)] {
            for bias in [true, false] {
                for p in [0.0, 0.3] {
                    let case = format!("{label}, {n} rows, {layouts:?}, bias {bias}, p {p}");
                    let fused = run_mlp::<E>(n, layouts, bias, p, true);
                    let composed = run_mlp::<E>(n, layouts, bias, p, false);
                    assert_close(&case, &fused, &composed, tol);
                }
            }
        }
    }
}

#[test]
fn fused_mlp_matches_composed_ops() {
    check_mlp::<f64>("f64", 1e-12);
    check_mlp::<f32>("f32", 1e-5);
}

#[test]
fn fused_mlp_drops_values_and_untraced_gives_the_traced_values() {
    let with = run_mlp::<f64>(50, (false, false), true, 0.5, true);
    let without = run_mlp::<f64>(50, (false, false), true, 0.0, true);
    assert_ne!(with.0, without.0, "dropout changed nothing");
    let dev = Cpu::seed_from_u64(5);
    let mlp = Mlp {
        norm: random_norm(&dev, 4),
        fc: affine::<f32>(&dev, (4, 8), false, true),
        proj: affine::<f32>(&dev, (8, 4), false, true),
    };
    let x: Tensor2<f32, Cpu> = dev.sample_normal_like(&(7, 4));
    let traced = kernels::mlp_residual(x.leaky_trace(), mlp.clone(), 0.0).as_vec();
    let plain = kernels::mlp_residual(x, mlp, 0.0).as_vec();
    assert_eq!(traced, plain);
}

/// How [`run_projected`] computes the attention of three maps of normalised rows.
#[derive(Clone, Copy, Debug)]
enum Projection {
    /// `attention::projected_causal_flow`: one op on `Cpu`.
    Fused,
    /// The fused `Cpu` ops one after the other: `layer_norm`, `linear_heads`,
    /// `causal_flow`, then `merge_heads`.
    Separate,
    /// The compositions of stock dfdx ops.
    Composed,
}

/// Causal Flow-Attention of the query, key and value maps (mixed layouts, the value map
/// without a bias) of the normalised rows of `b` sequences of `l` rows in `heads` heads, and its gradients under
/// `sum(out * probe)`. Lengths above the single-chunk limit run the chunked kernels.
fn run_projected<E>(l: usize, heads: usize, how: Projection) -> Outcome<E>
where
    E: Dtype + num_traits::Float,
    Cpu: ModelDevice<E>,
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    let dev = Cpu::seed_from_u64(51);
    let (b, i, d, m) = (2, 8, 3, 4);
    let maps = [
        affine::<E>(&dev, (i, d * heads), true, true),
        affine::<E>(&dev, (i, d * heads), false, true),
        affine::<E>(&dev, (i, m * heads), true, false),
    ];
    let norm = random_norm::<E>(&dev, i);
    let x: Tensor2<E, Cpu> = dev.sample_normal_like(&(b * l, i));
    let cfg = FlowConfig::rl();
    let shape = (b, l, heads);
    let x_in = x.leaky_trace();
    let out = match how {
        Projection::Fused => {
            attention::projected_causal_flow(x_in, norm.clone(), maps.clone(), shape, &cfg)
        }
        Projection::Separate => {
            let Norm { weight, bias, eps } = norm.clone();
            let a = kernels::layer_norm(x_in, weight, bias, eps);
            let [q, k, v]: [_; 3] = kernels::linear_heads(a, maps.to_vec(), shape)
                .try_into()
                .expect("three maps");
            kernels::merge_heads(attention::causal_flow(q, k, v, &cfg))
        }
        Projection::Composed => {
            let Norm { weight, bias, eps } = norm.clone();
            let a = composed::layer_norm(x_in, weight, bias, eps);
            let [q, k, v]: [_; 3] = composed::linear_heads(a, maps.to_vec(), shape)
                .try_into()
                .expect("three maps");
            composed::merge_heads(attention::composed::causal_flow(q, k, v, &cfg))
        }
    };
    assert_eq!(*out.shape(), (b * l, heads * m), "{how:?}: output shape");
    let values = out.as_vec();
    let probe: Tensor<_, E, Cpu> = Cpu::seed_from_u64(52).sample_normal_like(out.shape());
    let mut grads = (out * probe).sum::<Rank0, _>().backward();
    let mut all = vec![
        grad_of(&mut grads, &x),
        grad_of(&mut grads, &norm.weight),
        grad_of(&mut grads, &norm.bias),
    ];
    all.extend(map_grads(&mut grads, &maps));
    (values, all)
}

/// The one-op attention of three maps gives the bits of the fused ops one after the
/// other, and the composed ops' values within `tol`.
fn check_projected<E>(label: &str, tol: f64)
where
    E: Dtype + num_traits::Float + std::fmt::Debug,
    Cpu: ModelDevice<E>,
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    for l in [1, 9, 70] {
        for heads in [1, 2] {
            let case = format!("{label}, L {l}, {heads} heads");
            let fused = run_projected::<E>(l, heads, Projection::Fused);
            let separate = run_projected::<E>(l, heads, Projection::Separate);
            assert_eq!(fused, separate, "{case}: fused and separate ops differ");
            let composed = run_projected::<E>(l, heads, Projection::Composed);
            assert_close(&case, &fused, &composed, tol);
        }
    }
}

#[test]
fn projected_flow_matches_separate_and_composed_ops() {
    check_projected::<f64>("f64", 1e-10);
    check_projected::<f32>("f32", 1e-4);
}

#[test]
fn untraced_projected_flow_gives_the_traced_values() {
    let dev = Cpu::seed_from_u64(6);
    let maps = [true, false, true].map(|out_in| affine::<f32>(&dev, (5, 6), out_in, true));
    let norm = random_norm::<f32>(&dev, 5);
    let x: Tensor2<f32, Cpu> = dev.sample_normal_like(&(8, 5));
    let cfg = FlowConfig::rl();
    let traced = attention::projected_causal_flow(
        x.leaky_trace(),
        norm.clone(),
        maps.clone(),
        (2, 4, 2),
        &cfg,
    );
    let plain = attention::projected_causal_flow(x, norm, maps, (2, 4, 2), &cfg);
    assert_eq!(traced.as_vec(), plain.as_vec());
}
