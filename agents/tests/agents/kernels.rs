//! The fused `Cpu` kernels against their compositions of stock dfdx ops (the `Cuda`
//! path): forward values and every gradient, in f64 and f32, on traced and untraced
//! inputs, including a strided (permuted) input.

use dfdx::prelude::*;
use flowrl_agents::device::ModelDevice;
use flowrl_agents::kernels::{self, composed, Affine, Tensor1, Tensor2};

use crate::common::{grad_of, rel_err};

/// Random test inputs of one element type on one device.
struct Inputs<E: Dtype> {
    x: Tensor2<E, Cpu>,
    r: Tensor2<E, Cpu>,
    weight: Tensor1<E, Cpu>,
    bias: Tensor1<E, Cpu>,
    /// Weights of the scalar loss `sum(out * probe)`.
    probe: Tensor2<E, Cpu>,
}

fn inputs<E>(n: usize, w: usize, seed: u64) -> Inputs<E>
where
    E: Dtype + num_traits::Float,
    Cpu: ModelDevice<E>,
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    let dev = Cpu::seed_from_u64(seed);
    let x: Tensor2<E, Cpu> = dev.sample_normal_like(&(n, w));
    // Shift and scale rows apart so the LayerNorm statistics vary.
    let shift: Tensor2<E, Cpu> = dev.sample_normal_like(&(n, w));
    let x = x + shift * E::from(3.0).unwrap_or_else(E::one);
    Inputs {
        r: dev.sample_normal_like(&(n, w)),
        weight: dev.sample_normal_like(&(w,)),
        bias: dev.sample_normal_like(&(w,)),
        probe: dev.sample_normal_like(&(n, w)),
        x,
    }
}

/// Which kernel a case runs.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    LayerNorm,
    DropoutAdd(f64),
    Dropout(f64),
}

/// Forward values and the gradients of `sum(out * probe)` with respect to x, r, weight
/// and bias (zeros where the kernel does not use them), for the fused or composed path.
/// The device is reseeded so that both paths draw the same dropout masks.
fn run<E>(inp: &Inputs<E>, kernel: Kernel, fused: bool) -> (Vec<E>, [Vec<E>; 4])
where
    E: Dtype + num_traits::Float,
    Cpu: ModelDevice<E>,
{
    let dev = Cpu::seed_from_u64(99);
    let take = |t: &Tensor2<E, Cpu>| dev.tensor_from_vec(t.as_vec(), *t.shape());
    let (x, r) = (take(&inp.x), take(&inp.r));
    let w = dev.tensor_from_vec(inp.weight.as_vec(), *inp.weight.shape());
    let b = dev.tensor_from_vec(inp.bias.as_vec(), *inp.bias.shape());
    let (xt, rt) = (x.leaky_trace(), r.leaky_trace());
    let out: Tensor2<E, Cpu, OwnedTape<E, Cpu>> = match (kernel, fused) {
        (Kernel::LayerNorm, true) => kernels::layer_norm(xt, w.clone(), b.clone(), 1e-5),
        (Kernel::LayerNorm, false) => composed::layer_norm(xt, w.clone(), b.clone(), 1e-5),
        (Kernel::DropoutAdd(p), true) => kernels::dropout_add(xt, rt, p),
        (Kernel::DropoutAdd(p), false) => composed::dropout_add(xt, rt, p),
        (Kernel::Dropout(p), true) => kernels::dropout(xt, p),
        (Kernel::Dropout(p), false) => xt.dropout(p),
    };
    let values = out.as_vec();
    let mut grads = (out * take(&inp.probe)).sum::<Rank0, _>().backward();
    let gx = grad_of(&mut grads, &x);
    let gr = grad_of(&mut grads, &r);
    let gw = grad_of(&mut grads, &w);
    let gb = grad_of(&mut grads, &b);
    (values, [gx, gr, gw, gb])
}

/// Fused and composed paths agree within `tol` on values and on all four gradients.
fn check<E>(kernel: Kernel, n: usize, w: usize, tol: f64)
where
    E: Dtype + num_traits::Float,
    Cpu: ModelDevice<E>,
    rand_distr::StandardNormal: rand_distr::Distribution<E>,
{
    let inp = inputs::<E>(n, w, 5);
    let (fv, fg) = run(&inp, kernel, true);
    let (cv, cg) = run(&inp, kernel, false);
    let e = rel_err(&fv, &cv);
    assert!(e <= tol, "{kernel:?} ({n}x{w}): forward error {e:e}");
    for (name, (f, c)) in ["x", "residual", "weight", "bias"]
        .iter()
        .zip(fg.iter().zip(&cg))
    {
        let e = rel_err(f, c);
        assert!(e <= tol, "{kernel:?} ({n}x{w}): d{name} error {e:e}");
    }
}

const KERNELS: [Kernel; 4] = [
    Kernel::LayerNorm,
    Kernel::DropoutAdd(0.0),
    Kernel::DropoutAdd(0.3),
    Kernel::Dropout(0.1),
];

#[test]
fn fused_kernels_match_composed_ops_in_f64() {
    // 700 rows of 48: several rayon tasks; 3 rows of 5: one task.
    for kernel in KERNELS {
        check::<f64>(kernel, 700, 48, 1e-12);
        check::<f64>(kernel, 3, 5, 1e-12);
    }
}

#[test]
fn fused_kernels_match_composed_ops_in_f32() {
    for kernel in KERNELS {
        check::<f32>(kernel, 700, 48, 1e-5);
        check::<f32>(kernel, 3, 5, 1e-5);
    }
}

#[test]
fn dropout_masks_equal_dfdx_dropout_bit_for_bit() {
    let inp = inputs::<f64>(64, 32, 1);
    for p in [0.1, 0.5] {
        let (fv, fg) = run(&inp, Kernel::Dropout(p), true);
        let (cv, cg) = run(&inp, Kernel::Dropout(p), false);
        assert_eq!(fv, cv, "p {p}: values");
        assert_eq!(fg[0], cg[0], "p {p}: gradient");
        let dropped = fv.iter().filter(|&&v| v == 0.0).count() as f64 / fv.len() as f64;
        assert!((dropped - p).abs() < 0.05, "p {p}: dropped {dropped}");
    }
}

#[test]
fn untraced_inputs_give_the_traced_values() {
    let inp = inputs::<f64>(10, 7, 2);
    let traced = run(&inp, Kernel::LayerNorm, true).0;
    let plain = kernels::layer_norm(inp.x.clone(), inp.weight.clone(), inp.bias.clone(), 1e-5);
    assert_eq!(plain.as_vec(), traced);
}

#[test]
fn strided_inputs_are_read_in_logical_order_and_get_their_gradients() {
    let dev = Cpu::seed_from_u64(3);
    let base: Tensor2<f64, Cpu> = dev.sample_normal_like(&(6, 4));
    let w: Tensor1<f64, Cpu> = dev.sample_normal_like(&(6,));
    let b: Tensor1<f64, Cpu> = dev.sample_normal_like(&(6,));
    let probe: Tensor2<f64, Cpu> = dev.sample_normal_like(&(4, 6));
    let mut results = Vec::new();
    for fused in [true, false] {
        let xt = base.leaky_trace().permute::<_, Axes2<1, 0>>();
        let out = if fused {
            kernels::layer_norm(xt, w.clone(), b.clone(), 1e-5)
        } else {
            composed::layer_norm(xt, w.clone(), b.clone(), 1e-5)
        };
        let values = out.as_vec();
        let grads = (out * probe.clone()).sum::<Rank0, _>().backward();
        results.push((values, grads.get(&base).as_vec()));
    }
    assert!(rel_err(&results[0].0, &results[1].0) <= 1e-12);
    assert!(rel_err(&results[0].1, &results[1].1) <= 1e-12);
    assert!(results[0].1.iter().any(|&g| g != 0.0));
}

/// Forward values and the input's gradient of `sum(out * probe)` for the layout
/// kernels, fused or composed.
fn run_layout(fused: bool, kernel: &str, heads: usize) -> (Vec<f64>, Vec<f64>) {
    let dev = Cpu::seed_from_u64(7);
    let (b, l, w) = (3, 5, 12);
    let x: Tensor2<f64, Cpu> = dev.sample_normal_like(&(b * l, w));
    let xt = x.leaky_trace();
    let (out, n): (Tensor2<f64, Cpu, OwnedTape<f64, Cpu>>, usize) = match (kernel, fused) {
        ("merge", fused) => {
            let o = xt.reshape_like(&(b, heads, l, w / heads));
            let m = if fused {
                kernels::merge_heads(o)
            } else {
                composed::merge_heads(o)
            };
            (m, b * l)
        }
        (_, fused) => {
            let rows = [4, 0, 14, 4, 9];
            let g = if fused {
                kernels::gather_rows(xt, &rows)
            } else {
                composed::gather_rows(xt, &rows)
            };
            (g, rows.len())
        }
    };
    let values = out.as_vec();
    let probe: Tensor2<f64, Cpu> = Cpu::seed_from_u64(8).sample_normal_like(&(n, w));
    let mut grads = (out * probe).sum::<Rank0, _>().backward();
    (values, grad_of(&mut grads, &x))
}

#[test]
fn layout_kernels_match_composed_ops() {
    for (kernel, heads) in [("merge", 1), ("merge", 4), ("gather", 1)] {
        let fused = run_layout(true, kernel, heads);
        let composed = run_layout(false, kernel, heads);
        // Pure copies and sums of the same values: equal up to summation order.
        assert!(
            rel_err(&fused.0, &composed.0) <= 1e-15,
            "{kernel} {heads}: values"
        );
        assert!(
            rel_err(&fused.1, &composed.1) <= 1e-14,
            "{kernel} {heads}: input gradient"
        );
        assert!(
            fused.1.iter().any(|&g| g != 0.0),
            "{kernel} {heads}: no gradient"
        );
    }
    // The head split of linear_heads puts head i's features i*D..(i+1)*D of token t at
    // [b, i, t, :]: through the identity map (zero bias), the input's values move there.
    let dev = Cpu::default();
    let y = dev.tensor_from_vec((0..12).map(f64::from).collect::<Vec<_>>(), (2, 6));
    let eye: Vec<f64> = (0..36)
        .map(|k| if k % 7 == 0 { 1.0 } else { 0.0 })
        .collect();
    let identity = Affine {
        weight: dev.tensor_from_vec(eye, (6, 6)),
        out_in: false,
        bias: Some(dev.zeros_like(&(6,))),
    };
    for fused in [true, false] {
        let outs = if fused {
            kernels::linear_heads(y.clone(), vec![identity.clone()], (1, 2, 3))
        } else {
            composed::linear_heads(y.clone(), vec![identity.clone()], (1, 2, 3))
        };
        assert_eq!(
            outs[0].as_vec(),
            [0., 1., 6., 7., 2., 3., 8., 9., 4., 5., 10., 11.],
            "fused {fused}"
        );
    }
}
