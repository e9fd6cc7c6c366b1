//! The Flowformer backbone: reference parameter names and GPT-2 initialisation, config
//! and input errors, causality and training, dropout, step-by-step state, and the
//! restricted last block of `forward_rows` with every gradient.

use dfdx::prelude::*;
use flowrl_agents::attention::{AttentionKind, FlowConfig};
use flowrl_agents::model::layers::Tensor3;
use flowrl_agents::model::{Backbone, BackboneConfig, BackboneError};
use flowrl_agents::params::{ParamError, ParamStore};

use crate::common::{max_abs_diff, rel_err};

fn config(width: usize, heads: usize, layers: usize, attention: AttentionKind) -> BackboneConfig {
    BackboneConfig {
        width,
        heads,
        layers,
        attention,
        dropout: 0.0,
        layer_norm_eps: 1e-5,
        flow: FlowConfig::rl(),
    }
}

fn random_tokens<E>(dev: &Cpu, shape: (usize, usize, usize), seed: u64) -> Tensor3<E, Cpu>
where
    E: Dtype + num_traits::Float,
    Cpu: Device<E>,
{
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = shape.0 * shape.1 * shape.2;
    let v = (0..n)
        .map(|_| E::from(rng.gen_range(-2.0..2.0)).unwrap())
        .collect();
    dev.tensor_from_vec(v, shape)
}

/// Weights large enough that attention is far from uniform (GPT-2's 0.02 is nearly uniform).
fn perturb_weights<E>(store: &mut ParamStore<E, Cpu>, seed: u64)
where
    E: Dtype + num_traits::Float,
    Cpu: Device<E>,
{
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let ids: Vec<_> = store.ids().collect();
    for id in ids {
        let v: Vec<E> = store
            .values(id)
            .iter()
            .map(|&x| x + E::from(rng.gen_range(-0.3..0.3)).unwrap())
            .collect();
        let name = store.name(id).to_string();
        store.set_values(&name, &v).unwrap();
    }
}

#[test]
fn backbone_registers_reference_names_with_gpt2_init() {
    let dev = Cpu::default();
    let mut store = ParamStore::<f64, Cpu>::new(&dev, 11);
    let (w, layers) = (64, 2);
    Backbone::register(
        &mut store,
        "transformer",
        config(w, 4, layers, AttentionKind::CausalFlow),
    )
    .unwrap();
    let mut want = Vec::new();
    for i in 0..layers {
        let h = format!("transformer.h.{i}");
        want.push((format!("{h}.ln_1.weight"), vec![w]));
        want.push((format!("{h}.ln_1.bias"), vec![w]));
        for proj in ["query", "key", "value", "out"] {
            want.push((format!("{h}.attn.att.{proj}_projection.weight"), vec![w, w]));
            want.push((format!("{h}.attn.att.{proj}_projection.bias"), vec![w]));
        }
        want.push((format!("{h}.ln_2.weight"), vec![w]));
        want.push((format!("{h}.ln_2.bias"), vec![w]));
        want.push((format!("{h}.mlp.c_fc.weight"), vec![w, 4 * w]));
        want.push((format!("{h}.mlp.c_fc.bias"), vec![4 * w]));
        want.push((format!("{h}.mlp.c_proj.weight"), vec![4 * w, w]));
        want.push((format!("{h}.mlp.c_proj.bias"), vec![w]));
    }
    want.push(("transformer.ln_f.weight".into(), vec![w]));
    want.push(("transformer.ln_f.bias".into(), vec![w]));
    let got: Vec<_> = store
        .ids()
        .map(|id| (store.name(id).to_string(), store.shape(id).to_vec()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(store.num_elements(), layers * (12 * w * w + 13 * w) + 2 * w);

    let mut weights = Vec::new();
    for id in store.ids() {
        let (name, v) = (store.name(id), store.values(id));
        if name.contains("ln_") && name.ends_with("weight") {
            assert!(v.iter().all(|&x| x == 1.0), "{name}");
        } else if name.ends_with("bias") {
            assert!(v.iter().all(|&x| x == 0.0), "{name}");
        } else {
            weights.extend(v);
        }
    }
    let n = weights.len() as f64;
    let mean = weights.iter().sum::<f64>() / n;
    let std = (weights.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
    assert!(mean.abs() < 4.0 * 0.02 / n.sqrt(), "mean {mean}");
    assert!((std / 0.02 - 1.0).abs() < 0.02, "std {std}");
}

#[test]
fn bad_configs_and_inputs_are_rejected() {
    let dev = Cpu::default();
    let base = config(16, 2, 2, AttentionKind::CausalFlow);
    let cases: Vec<(BackboneConfig, &str)> = vec![
        (BackboneConfig { width: 0, ..base }, "width"),
        (BackboneConfig { heads: 0, ..base }, "heads"),
        (BackboneConfig { heads: 3, ..base }, "heads"),
        (BackboneConfig { layers: 0, ..base }, "layers"),
        (
            BackboneConfig {
                dropout: 1.0,
                ..base
            },
            "dropout",
        ),
        (
            BackboneConfig {
                dropout: -0.1,
                ..base
            },
            "dropout",
        ),
        (
            BackboneConfig {
                layer_norm_eps: 0.0,
                ..base
            },
            "layer_norm_eps",
        ),
        (
            BackboneConfig {
                flow: FlowConfig {
                    chunk: 0,
                    ..FlowConfig::rl()
                },
                ..base
            },
            "flow.chunk",
        ),
        (
            BackboneConfig {
                flow: FlowConfig {
                    clamp: f64::NAN,
                    ..FlowConfig::rl()
                },
                ..base
            },
            "flow.clamp",
        ),
    ];
    for (cfg, field) in cases {
        let mut store = ParamStore::<f32, Cpu>::new(&dev, 0);
        match Backbone::register(&mut store, "t", cfg) {
            Err(BackboneError::Config { field: f, .. }) => assert_eq!(f, field),
            other => panic!(
                "{field}: expected a config error, got {:?}",
                other.map(|_| ())
            ),
        }
        assert!(store.is_empty(), "nothing registered for a bad config");
    }
    let err = BackboneConfig { heads: 3, ..base }.validate().unwrap_err();
    assert!(err.to_string().contains("divisor of width 16"), "{err}");

    let mut store = ParamStore::<f32, Cpu>::new(&dev, 0);
    let backbone = Backbone::register(&mut store, "t", base).unwrap();
    let x = random_tokens::<f32>(&dev, (2, 5, 8), 0);
    assert!(matches!(
        backbone.forward(&store, x, false),
        Err(BackboneError::Input { .. })
    ));
    let mut state = backbone.recurrent_state(&dev, 2).unwrap();
    let x: Tensor<(usize, usize), f32, Cpu> = dev.zeros_like(&(3, 16));
    assert!(matches!(
        backbone.step_tokens(&store, &mut state, x),
        Err(BackboneError::Input { .. })
    ));
    // Registering twice under one prefix is a parameter error naming the tensor.
    let err = Backbone::register(&mut store, "t", base).unwrap_err();
    assert_eq!(
        err,
        BackboneError::Params(ParamError::Duplicate {
            name: "t.h.0.ln_1.weight".into()
        })
    );
    // The config is serde-friendly.
    let json = serde_json::to_string(&base).unwrap();
    assert_eq!(serde_json::from_str::<BackboneConfig>(&json).unwrap(), base);
}

fn assert_causal(kind: AttentionKind) {
    let dev = Cpu::default();
    let mut store = ParamStore::<f64, Cpu>::new(&dev, 5);
    let backbone = Backbone::register(&mut store, "transformer", config(24, 3, 2, kind)).unwrap();
    perturb_weights(&mut store, 6);
    let (b, l, w) = (2, 13, 24);
    let x = random_tokens::<f64>(&dev, (b, l, w), 1);
    let mut changed = x.as_vec();
    let t = 6;
    for c in 0..w {
        changed[(t * w) + c] += 0.1 * c as f64; // batch row 0, position t (not a uniform shift, which LayerNorm removes)
    }
    let y = backbone.forward(&store, x.clone(), false).unwrap().as_vec();
    let y2 = backbone
        .forward(&store, dev.tensor_from_vec(changed, (b, l, w)), false)
        .unwrap()
        .as_vec();
    for p in 0..l {
        let row = |v: &[f64]| v[p * w..(p + 1) * w].to_vec();
        let diff = max_abs_diff(&row(&y2), &row(&y));
        if p < t {
            assert!(
                diff <= 1e-13,
                "{kind:?}: position {p} sees the future ({diff:e})"
            );
        } else {
            assert!(diff > 1e-6, "{kind:?}: position {p} ignores position {t}");
        }
    }
    // The other batch row is untouched.
    assert!(max_abs_diff(&y2[l * w..], &y[l * w..]) <= 1e-13);
    assert!(y.iter().all(|v| v.is_finite()));

    // Training: every backbone parameter receives a non-zero gradient.
    let out = backbone.forward(&store, x.leaky_traced(), true).unwrap();
    let mut gradients = out.square().mean::<Rank0, _>().backward();
    let grads = store.grads(&mut gradients);
    for id in store.ids() {
        assert!(
            grads.get(id).as_vec().iter().any(|&g| g != 0.0),
            "{kind:?}: {}",
            store.name(id)
        );
    }
}

#[test]
fn softmax_and_flow_backbones_are_causal_and_train() {
    assert_causal(AttentionKind::CausalSoftmax);
    assert_causal(AttentionKind::CausalFlow);
}

#[test]
fn dropout_is_active_in_train_mode_only() {
    let dev = Cpu::seed_from_u64(3);
    let mut store = ParamStore::<f32, Cpu>::new(&dev, 0);
    let cfg = BackboneConfig {
        dropout: 0.2,
        ..config(16, 2, 2, AttentionKind::CausalFlow)
    };
    let backbone = Backbone::register(&mut store, "transformer", cfg).unwrap();
    perturb_weights(&mut store, 1);
    let x = random_tokens::<f32>(&dev, (2, 9, 16), 2);
    let eval = backbone.forward(&store, x.clone(), false).unwrap().as_vec();
    assert_eq!(
        backbone.forward(&store, x.clone(), false).unwrap().as_vec(),
        eval
    );
    let train = backbone.forward(&store, x.clone(), true).unwrap().as_vec();
    let train2 = backbone.forward(&store, x.clone(), true).unwrap().as_vec();
    assert!(max_abs_diff(&train, &eval) > 1e-3);
    assert!(max_abs_diff(&train2, &train) > 1e-3);
    // With every linear map zero the blocks are the identity, so only the input
    // (embedding) dropout can change the output.
    let ids: Vec<_> = store.ids().collect();
    for id in ids {
        let name = store.name(id).to_string();
        if !name.contains("ln_") {
            let zeros = vec![0.0; store.values(id).len()];
            store.set_values(&name, &zeros).unwrap();
        }
    }
    let eval = backbone.forward(&store, x.clone(), false).unwrap().as_vec();
    let train = backbone.forward(&store, x.clone(), true).unwrap().as_vec();
    assert!(max_abs_diff(&train, &eval) > 1e-3);
    // Same device seed, same masks.
    let dev_a = Cpu::seed_from_u64(9);
    let dev_b = Cpu::seed_from_u64(9);
    let run = |dev: &Cpu| {
        let mut s = ParamStore::<f32, Cpu>::new(dev, 0);
        let bb = Backbone::register(&mut s, "transformer", cfg).unwrap();
        bb.forward(&s, random_tokens::<f32>(dev, (2, 9, 16), 2), true)
            .unwrap()
            .as_vec()
    };
    assert_eq!(run(&dev_a), run(&dev_b));
}

#[test]
fn step_by_step_equals_the_full_forward() {
    let dev = Cpu::default();
    let mut store = ParamStore::<f32, Cpu>::new(&dev, 21);
    let cfg = config(32, 4, 3, AttentionKind::CausalFlow);
    let backbone = Backbone::register(&mut store, "transformer", cfg).unwrap();
    perturb_weights(&mut store, 22);
    let (b, l, w) = (2, 300, 32);
    let x = random_tokens::<f32>(&dev, (b, l, w), 23);
    let full = backbone.forward(&store, x.clone(), false).unwrap().as_vec();
    let xs = x.as_vec();
    let mut state = backbone.recurrent_state(&dev, b).unwrap();
    let mut worst = 0.0f64;
    for t in 0..l {
        let token: Vec<f32> = (0..b)
            .flat_map(|r| xs[(r * l + t) * w..(r * l + t + 1) * w].to_vec())
            .collect();
        let out = backbone
            .step_tokens(&store, &mut state, dev.tensor_from_vec(token, (b, w)))
            .unwrap()
            .as_vec();
        assert_eq!(state.position(), t + 1);
        for r in 0..b {
            let want = &full[(r * l + t) * w..(r * l + t + 1) * w];
            let got = &out[r * w..(r + 1) * w];
            worst = worst.max(max_abs_diff(got, want));
        }
    }
    assert!(
        worst <= 1e-5,
        "step-by-step differs from forward by {worst:e}"
    );

    let mut store = ParamStore::<f32, Cpu>::new(&dev, 0);
    let softmax = Backbone::register(
        &mut store,
        "t",
        config(32, 4, 1, AttentionKind::CausalSoftmax),
    )
    .unwrap();
    let err = softmax.recurrent_state::<f32, Cpu>(&dev, 2).unwrap_err();
    assert_eq!(
        err,
        BackboneError::NoRecurrentState(AttentionKind::CausalSoftmax)
    );
    assert!(err.to_string().contains("causal flow"));
}

// ---------------------------------------------------------------- backbone: kept rows

/// Output rows, loss `sum(out * probe)`, every parameter's gradient (in store order)
/// and the input's gradient, through [`Backbone::forward_rows`] (`restricted`) or
/// through [`Backbone::forward`] followed by a gather of the same rows.
type RowsRun = (Vec<f64>, f64, Vec<Vec<f64>>, Vec<f64>);

fn run_rows(
    backbone: &Backbone,
    store: &ParamStore<f64, Cpu>,
    x: &Tensor3<f64, Cpu>,
    rows: &[usize],
    restricted: bool,
) -> RowsRun {
    let dev = store.device().clone();
    let (b, l, w) = *x.shape();
    let xt = x.leaky_trace();
    let out = if restricted {
        backbone.forward_rows(store, xt, rows, false).unwrap()
    } else {
        let idx = dev.tensor_from_vec(rows.to_vec(), (rows.len(),));
        backbone
            .forward(store, xt, false)
            .unwrap()
            .reshape_like(&(b * l, w))
            .gather(idx)
    };
    let values = out.as_vec();
    let probe: Vec<f64> = (0..values.len())
        .map(|i| ((i * 7 % 11) as f64 - 5.0) / 5.0)
        .collect();
    let loss = (out * dev.tensor_from_vec(probe, (rows.len(), w))).sum::<Rank0, _>();
    let loss_value = loss.as_vec()[0];
    let mut gradients = loss.backward();
    let gx = gradients.get(x).as_vec();
    let grads = store.grads(&mut gradients);
    let params = store.ids().map(|id| grads.get(id).as_vec()).collect();
    (values, loss_value, params, gx)
}

/// The restricted last block of `forward_rows` computes exactly the gathered rows of
/// the full forward pass: values, loss and the gradient of every parameter and of the
/// input agree (f64) for flow and softmax attention, one and several heads and layers,
/// rows in any order with repeats; bad rows are rejected.
#[test]
fn forward_rows_equals_the_gathered_full_forward_with_every_gradient() {
    let dev = Cpu::default();
    let cases = [
        (AttentionKind::CausalFlow, 1, 1),
        (AttentionKind::CausalFlow, 4, 3),
        (AttentionKind::CausalSoftmax, 2, 2),
    ];
    for (kind, heads, layers) in cases {
        let mut store = ParamStore::<f64, Cpu>::new(&dev, 31);
        let cfg = config(16, heads, layers, kind);
        let backbone = Backbone::register(&mut store, "transformer", cfg).unwrap();
        perturb_weights(&mut store, 32);
        let x = random_tokens::<f64>(&dev, (3, 7, 16), 33);
        let rows = [1, 4, 20, 8, 4, 13, 0];
        let full = run_rows(&backbone, &store, &x, &rows, false);
        let kept = run_rows(&backbone, &store, &x, &rows, true);
        let at = format!("{kind:?}, {heads} heads, {layers} layers");
        assert!(rel_err(&kept.0, &full.0) <= 1e-13, "{at}: values");
        assert!(
            (kept.1 - full.1).abs() <= 1e-12 * (1.0 + full.1.abs()),
            "{at}: loss"
        );
        assert!(rel_err(&kept.3, &full.3) <= 1e-12, "{at}: input gradient");
        assert!(
            full.3.iter().any(|&g| g != 0.0),
            "{at}: input gradient is zero"
        );
        for (id, (k, f)) in store.ids().zip(kept.2.iter().zip(&full.2)) {
            let e = rel_err(k, f);
            assert!(
                e <= 1e-12,
                "{at}: gradient of {} off by {e:e}",
                store.name(id)
            );
            assert!(
                f.iter().any(|&g| g != 0.0),
                "{at}: {} has no gradient",
                store.name(id)
            );
        }
        let bad = |rows: &[usize]| backbone.forward_rows(&store, x.clone(), rows, false);
        assert!(matches!(bad(&[]), Err(BackboneError::Rows { .. })));
        let err = bad(&[0, 21]).unwrap_err();
        assert!(matches!(err, BackboneError::Rows { .. }));
        assert!(err.to_string().contains("row 21"), "{err}");
    }
}
