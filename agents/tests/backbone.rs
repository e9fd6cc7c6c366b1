//! Tests of the parameter store, AdamW and clipping, the layers, and the Flowformer
//! backbone (including exact parity with the reference PyTorch fixture).

use std::collections::HashMap;

use dfdx::prelude::*;
use flowrl_agents::attention::{AttentionKind, FlowConfig};
use flowrl_agents::device::ModelDevice;
use flowrl_agents::model::layers::{dropout, LayerNorm, Linear, Tensor2, Tensor3, WeightLayout};
use flowrl_agents::model::{Backbone, BackboneConfig, BackboneError};
use flowrl_agents::optim::{clip_grad_norm, grad_norm, AdamW, AdamWConfig, OptimError};
use flowrl_agents::params::{Init, ParamError, ParamGrads, ParamId, ParamStore};

/// Gradients equal to the given constants: the loss is `sum_i sum(p_i * c_i)`.
fn constant_grads<E, D>(store: &ParamStore<E, D>, consts: &[(ParamId, Vec<E>)]) -> ParamGrads<E, D>
where
    E: Dtype + num_traits::Float,
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

fn small_store<E: Dtype + num_traits::Float>(dev: &Cpu, seed: u64) -> ParamStore<E, Cpu>
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

// ---------------------------------------------------------------- parameter store

/// `f` on the token rows of `x (B, L, W)`, the result back in `(B, L, ·)` layout.
fn per_token<E, T>(
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

#[test]
fn store_lookup_count_and_errors() {
    let dev = Cpu::default();
    let mut store = small_store::<f32>(&dev, 1);
    assert_eq!(store.len(), 4);
    assert_eq!(store.num_elements(), 12 + 4 + 4 + 4);
    let id = store.id("a.bias").unwrap();
    assert_eq!(store.name(id), "a.bias");
    assert_eq!(store.shape(id), &[4]);
    assert_eq!(store.values(store.id("ln.weight").unwrap()), vec![1.0; 4]);
    assert_eq!(store.values(store.id("ln.bias").unwrap()), vec![0.0; 4]);
    assert_eq!(
        store.id("a.wieght"),
        Err(ParamError::Unknown {
            name: "a.wieght".into(),
            count: 4
        })
    );
    assert_eq!(
        store.register("a.bias", &[4], Init::Zeros),
        Err(ParamError::Duplicate {
            name: "a.bias".into()
        })
    );
    assert!(matches!(
        store.register("bad", &[2], Init::Normal { std: f64::NAN }),
        Err(ParamError::InvalidInit { .. })
    ));
    assert!(matches!(
        store.register("bad", &[2], Init::Uniform { bound: 0.0 }),
        Err(ParamError::InvalidInit { .. })
    ));
    let err = store.set_values("a.bias", &[1.0, 2.0]).unwrap_err();
    assert_eq!(
        err,
        ParamError::ValueCount {
            name: "a.bias".into(),
            shape: vec![4],
            expected: 4,
            found: 2
        }
    );
    store.set_values("a.bias", &[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert_eq!(store.values(id), vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn seeded_init_is_reproducible_with_the_right_statistics() {
    let dev = Cpu::default();
    let n = 200_000;
    let build = |seed| {
        let mut s = ParamStore::<f64, Cpu>::new(&dev, seed);
        let a = s
            .register("normal", &[n], Init::Normal { std: 0.02 })
            .unwrap();
        let b = s
            .register("uniform", &[n], Init::pytorch_linear(16))
            .unwrap();
        (s.values(a), s.values(b))
    };
    let (normal, uniform) = build(7);
    assert_eq!(
        build(7),
        (normal.clone(), uniform.clone()),
        "same seed, same values"
    );
    assert_ne!(build(8).0, normal, "another seed, other values");

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let var = |v: &[f64]| {
        let m = mean(v);
        v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64
    };
    let se = 0.02 / (n as f64).sqrt();
    assert!(
        mean(&normal).abs() < 4.0 * se,
        "normal mean {}",
        mean(&normal)
    );
    assert!(
        (var(&normal).sqrt() / 0.02 - 1.0).abs() < 0.01,
        "normal std {}",
        var(&normal).sqrt()
    );
    let bound = 0.25;
    assert!(uniform.iter().all(|&x| (-bound..bound).contains(&x)));
    assert!(
        uniform.iter().any(|&x| x > 0.99 * bound) && uniform.iter().any(|&x| x < -0.99 * bound)
    );
    assert!((var(&uniform) / (bound * bound / 3.0) - 1.0).abs() < 0.01);

    // Device- and precision-independent: the f32 store holds the f64 values rounded.
    let mut s32 = ParamStore::<f32, Cpu>::new(&dev, 7);
    let a32 = s32
        .register("normal", &[n], Init::Normal { std: 0.02 })
        .unwrap();
    assert!(s32
        .values(a32)
        .iter()
        .zip(&normal)
        .all(|(x, y)| *x == *y as f32));
}

fn safetensors_round_trip<E>()
where
    E: Dtype + num_traits::Float + Bits,
    Cpu: Device<E>,
{
    let dev = Cpu::default();
    let store = small_store::<E>(&dev, 3);
    let meta = HashMap::from([("model".to_string(), "tiny".to_string())]);
    let bytes = store.to_safetensors(&meta).unwrap();
    let mut other = small_store::<E>(&dev, 4);
    let ids: Vec<_> = store.ids().collect();
    assert!(ids.iter().any(|&id| store.values(id) != other.values(id)));
    let read = other.load_safetensors(&bytes).unwrap();
    assert_eq!(read, meta);
    for id in ids {
        assert_eq!(store.name(id), other.name(id));
        assert_eq!(store.shape(id), other.shape(id));
        let (a, b) = (store.values(id), other.values(id));
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
    // The bytes are plain safetensors with the logical shapes.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("a.weight").unwrap().shape(), &[3, 4]);
}

trait Bits {
    fn to_bits(&self) -> u64;
}
impl Bits for f32 {
    fn to_bits(&self) -> u64 {
        f32::to_bits(*self) as u64
    }
}
impl Bits for f64 {
    fn to_bits(&self) -> u64 {
        f64::to_bits(*self)
    }
}

#[test]
fn safetensors_round_trip_is_bit_exact_f32_and_f64() {
    safetensors_round_trip::<f32>();
    safetensors_round_trip::<f64>();
}

#[test]
fn safetensors_load_errors_name_the_tensor() {
    let dev = Cpu::default();
    let store = small_store::<f32>(&dev, 3);
    let empty = HashMap::new();

    // Missing tensor.
    let mut fewer = ParamStore::<f32, Cpu>::new(&dev, 0);
    fewer.register("a.weight", &[3, 4], Init::Zeros).unwrap();
    let bytes = fewer.to_safetensors(&empty).unwrap();
    let mut target = small_store::<f32>(&dev, 5);
    let before: Vec<_> = target.ids().map(|id| target.values(id)).collect();
    let err = target.load_safetensors(&bytes).unwrap_err();
    assert_eq!(
        err,
        ParamError::Missing {
            name: "a.bias".into(),
            shape: vec![4]
        }
    );
    assert!(err.to_string().contains("a.bias"));
    let after: Vec<_> = target.ids().map(|id| target.values(id)).collect();
    assert_eq!(before, after, "a failed load leaves the store unchanged");

    // Extra tensors.
    let mut more = small_store::<f32>(&dev, 3);
    more.register("extra.one", &[1], Init::Zeros).unwrap();
    more.register("extra.two", &[1], Init::Zeros).unwrap();
    let err = target
        .load_safetensors(&more.to_safetensors(&empty).unwrap())
        .unwrap_err();
    assert_eq!(
        err,
        ParamError::Unexpected {
            names: vec!["extra.one".into(), "extra.two".into()]
        }
    );

    // Shape mismatch.
    let mut reshaped = ParamStore::<f32, Cpu>::new(&dev, 0);
    reshaped.register("a.weight", &[4, 3], Init::Zeros).unwrap();
    reshaped.register("a.bias", &[4], Init::Zeros).unwrap();
    reshaped.register("ln.weight", &[4], Init::Zeros).unwrap();
    reshaped.register("ln.bias", &[4], Init::Zeros).unwrap();
    let err = target
        .load_safetensors(&reshaped.to_safetensors(&empty).unwrap())
        .unwrap_err();
    assert_eq!(
        err,
        ParamError::Shape {
            name: "a.weight".into(),
            expected: vec![3, 4],
            found: vec![4, 3]
        }
    );
    assert!(err.to_string().contains("[3, 4]") && err.to_string().contains("[4, 3]"));

    // Dtype mismatch.
    let wide = small_store::<f64>(&dev, 3);
    let err = target
        .load_safetensors(&wide.to_safetensors(&empty).unwrap())
        .unwrap_err();
    assert_eq!(
        err,
        ParamError::Dtype {
            name: "a.weight".into(),
            expected: "F32".into(),
            found: "F64".into()
        }
    );

    // Not safetensors at all.
    assert!(matches!(
        target.load_safetensors(b"not a file"),
        Err(ParamError::Format(_))
    ));
    // And the store still loads good bytes.
    target
        .load_safetensors(&store.to_safetensors(&empty).unwrap())
        .unwrap();
}

#[test]
fn unused_parameters_get_zero_gradients() {
    let dev = Cpu::default();
    let store = small_store::<f64>(&dev, 1);
    let a = store.id("a.bias").unwrap();
    let grads = constant_grads(&store, &[(a, vec![1.0, -2.0, 3.0, 0.5])]);
    assert_eq!(grads.len(), store.len());
    assert_eq!(grads.get(a).as_vec(), vec![1.0, -2.0, 3.0, 0.5]);
    for id in store.ids().filter(|&id| id != a) {
        assert!(
            grads.get(id).as_vec().iter().all(|&g| g == 0.0),
            "{}",
            store.name(id)
        );
    }
}

// ---------------------------------------------------------------- AdamW and clipping

/// Textbook AdamW (Loshchilov & Hutter, with PyTorch's decoupled decay `p *= 1 - lr wd`):
/// `m̂ = m / (1 - b1^t)`, `v̂ = v / (1 - b2^t)`, `p -= lr m̂ / (sqrt(v̂) + eps)`.
struct ReferenceAdamW {
    p: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

impl ReferenceAdamW {
    fn step(&mut self, g: &[f64], lr: f64, cfg: &AdamWConfig) {
        self.t += 1;
        let [b1, b2] = cfg.betas;
        let (bc1, bc2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
        for (((p, m), v), &g) in self.p.iter_mut().zip(&mut self.m).zip(&mut self.v).zip(g) {
            *p *= 1.0 - lr * cfg.weight_decay;
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            let (m_hat, v_hat) = (*m / bc1, *v / bc2);
            *p -= lr * m_hat / (v_hat.sqrt() + cfg.eps);
        }
    }
}

#[test]
fn adamw_matches_a_hand_computed_reference() {
    let dev = Cpu::default();
    // beta1 = 0.3 takes PyTorch's other lerp branch (weight 1 - beta1 >= 0.5).
    for betas in [[0.9, 0.99], [0.3, 0.9]] {
        let mut store = ParamStore::<f64, Cpu>::new(&dev, 0);
        let w = store.register("w", &[2, 2], Init::Zeros).unwrap();
        let unused = store.register("unused", &[2], Init::Zeros).unwrap();
        store.set_values("w", &[0.5, -1.5, 2.0, 0.0]).unwrap();
        store.set_values("unused", &[1.0, -3.0]).unwrap();
        let cfg = AdamWConfig {
            lr: 0.1,
            betas,
            eps: 1e-8,
            weight_decay: 0.05,
        };
        let mut opt = AdamW::new(&store, cfg).unwrap();
        let mut ref_w = ReferenceAdamW {
            p: store.values(w),
            m: vec![0.0; 4],
            v: vec![0.0; 4],
            t: 0,
        };
        let mut ref_u = ReferenceAdamW {
            p: store.values(unused),
            m: vec![0.0; 2],
            v: vec![0.0; 2],
            t: 0,
        };
        let steps: [(f64, [f64; 4]); 4] = [
            (0.1, [1.0, -2.0, 0.5, 0.0]),
            (0.05, [-0.3, 0.7, 0.5, 1e-3]),
            (0.2, [2.0, 2.0, -1.0, 0.25]),
            (0.0, [1.0, 1.0, 1.0, 1.0]),
        ];
        for (lr, g) in steps {
            opt.set_lr(lr);
            let grads = constant_grads(&store, &[(w, g.to_vec())]);
            opt.update(&mut store, &grads).unwrap();
            ref_w.step(&g, lr, &cfg);
            ref_u.step(&[0.0, 0.0], lr, &cfg);
            let got = store.values(w).into_iter().chain(store.values(unused));
            for (got, want) in got.zip(ref_w.p.iter().chain(&ref_u.p)) {
                assert!(
                    (got - want).abs() <= 1e-14 * (1.0 + want.abs()),
                    "{got} vs {want}"
                );
            }
        }
        assert_eq!(opt.step_count(), 4);
    }
    // First step by hand: m̂ = g, v̂ = g², so p = p (1 - lr wd) - lr g / (|g| + eps).
    let mut s = ParamStore::<f64, Cpu>::new(&dev, 0);
    let x = s.register("x", &[1], Init::Ones).unwrap();
    let mut o = AdamW::new(
        &s,
        AdamWConfig {
            lr: 0.5,
            betas: [0.9, 0.999],
            eps: 0.0,
            weight_decay: 0.1,
        },
    )
    .unwrap();
    let g = constant_grads(&s, &[(x, vec![-4.0])]);
    o.update(&mut s, &g).unwrap();
    assert!((s.values(x)[0] - (1.0 * 0.95 + 0.5)).abs() < 1e-15);
    // Weight decay of zero and zero gradients leave the parameter alone.
    let mut o = AdamW::new(
        &s,
        AdamWConfig {
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let before = s.values(x);
    let g = constant_grads(&s, &[(x, vec![0.0])]);
    o.update(&mut s, &g).unwrap();
    assert_eq!(s.values(x), before);
}

#[test]
fn adamw_rejects_bad_config_and_foreign_gradients() {
    let dev = Cpu::default();
    let mut store = small_store::<f32>(&dev, 0);
    let bad = AdamWConfig {
        betas: [0.9, 1.0],
        ..Default::default()
    };
    assert!(matches!(
        AdamW::new(&store, bad),
        Err(OptimError::Config {
            field: "betas[1]",
            ..
        })
    ));
    let mut opt = AdamW::new(&store, AdamWConfig::default()).unwrap();
    opt.set_lr(f64::NAN);
    let a = store.id("a.bias").unwrap();
    let grads = constant_grads(&store, &[(a, vec![1.0; 4])]);
    assert!(matches!(
        opt.update(&mut store, &grads),
        Err(OptimError::Config { field: "lr", .. })
    ));
    opt.set_lr(1e-3);
    let other = ParamStore::<f32, Cpu>::new(&dev, 0);
    let mut other = other;
    let o = other.register("o", &[1], Init::Zeros).unwrap();
    let foreign = constant_grads(&other, &[(o, vec![1.0])]);
    assert_eq!(
        opt.update(&mut store, &foreign),
        Err(OptimError::Count {
            what: "gradients",
            expected: 4,
            found: 1
        })
    );
}

#[test]
fn adamw_state_round_trip_resumes_bit_for_bit() {
    let dev = Cpu::default();
    let cfg = AdamWConfig {
        lr: 1e-2,
        weight_decay: 1e-4,
        ..Default::default()
    };
    let grads_at = |store: &ParamStore<f32, Cpu>, step: usize| {
        let consts: Vec<_> = store
            .ids()
            .map(|id| {
                let n = store.shape(id).iter().product::<usize>();
                let g = (0..n)
                    .map(|i| ((i * 7 + step * 3) % 11) as f32 * 0.1 - 0.5)
                    .collect();
                (id, g)
            })
            .collect();
        constant_grads(store, &consts)
    };
    let mut store = small_store::<f32>(&dev, 9);
    let mut opt = AdamW::new(&store, cfg).unwrap();
    for step in 0..3 {
        let g = grads_at(&store, step);
        opt.update(&mut store, &g).unwrap();
    }
    let params = store.to_safetensors(&HashMap::new()).unwrap();
    let state = opt.state_to_safetensors(&store).unwrap();

    let mut resumed = small_store::<f32>(&dev, 1);
    resumed.load_safetensors(&params).unwrap();
    let mut resumed_opt = AdamW::new(&resumed, cfg).unwrap();
    resumed_opt
        .load_state_safetensors(&resumed, &state)
        .unwrap();
    assert_eq!(resumed_opt.step_count(), 3);
    for step in 3..6 {
        let g = grads_at(&store, step);
        opt.update(&mut store, &g).unwrap();
        let g = grads_at(&resumed, step);
        resumed_opt.update(&mut resumed, &g).unwrap();
    }
    for id in store.ids() {
        let (a, b) = (store.values(id), resumed.values(id));
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{}",
            store.name(id)
        );
    }
    // State for a different model is refused, naming the tensor.
    let mut other = ParamStore::<f32, Cpu>::new(&dev, 0);
    other.register("a.weight", &[3, 4], Init::Zeros).unwrap();
    let mut other_opt = AdamW::new(&other, cfg).unwrap();
    let err = other_opt
        .load_state_safetensors(&other, &state)
        .unwrap_err();
    assert!(
        matches!(err, OptimError::State(ParamError::Unexpected { .. })),
        "{err}"
    );
}

#[test]
fn clipping_by_global_norm_follows_pytorch() {
    let dev = Cpu::default();
    let store = small_store::<f64>(&dev, 0);
    let a = store.id("a.bias").unwrap();
    let b = store.id("ln.bias").unwrap();
    let (ga, gb) = (vec![3.0, 0.0, 0.0, 0.0], vec![0.0, 4.0, 0.0, 12.0]);
    let mut grads = constant_grads(&store, &[(a, ga.clone()), (b, gb.clone())]);
    assert!((grad_norm(&grads) - 13.0).abs() < 1e-12);
    let norm = clip_grad_norm(&mut grads, 1.0).unwrap();
    assert!((norm - 13.0).abs() < 1e-12);
    let coef = 1.0 / (13.0 + 1e-6);
    for (id, g) in [(a, &ga), (b, &gb)] {
        for (x, y) in grads.get(id).as_vec().iter().zip(g.iter()) {
            assert!((x - y * coef).abs() < 1e-15);
        }
    }
    assert!((grad_norm(&grads) - 13.0 * coef).abs() < 1e-12);
    // Below the threshold nothing changes.
    let mut grads = constant_grads(&store, &[(a, ga.clone())]);
    assert_eq!(clip_grad_norm(&mut grads, 5.0).unwrap(), 3.0);
    assert_eq!(grads.get(a).as_vec(), ga);
    // Non-finite norms and bad thresholds are errors, not silent NaNs.
    let mut grads = constant_grads(&store, &[(a, vec![f64::NAN, 0.0, 0.0, 0.0])]);
    assert!(matches!(
        clip_grad_norm(&mut grads, 1.0),
        Err(OptimError::NonFiniteGradNorm { .. })
    ));
    assert_eq!(
        clip_grad_norm(&mut grads, 0.0),
        Err(OptimError::MaxNorm(0.0))
    );
}

// ---------------------------------------------------------------- layers

#[test]
fn linear_layouts_and_layer_norm_compute_by_hand() {
    let dev = Cpu::default();
    let mut store = ParamStore::<f64, Cpu>::new(&dev, 0);
    let torch = Linear::register(
        &mut store,
        "t",
        3,
        2,
        WeightLayout::OutIn,
        Init::Zeros,
        Some(Init::Zeros),
    )
    .unwrap();
    let conv = Linear::register(
        &mut store,
        "c",
        3,
        2,
        WeightLayout::InOut,
        Init::Zeros,
        Some(Init::Zeros),
    )
    .unwrap();
    let ln = LayerNorm::register(&mut store, "ln", 3, 1e-5).unwrap();
    assert_eq!(store.shape(store.id("t.weight").unwrap()), &[2, 3]);
    assert_eq!(store.shape(store.id("c.weight").unwrap()), &[3, 2]);
    // W [out, in] = [[1,2,3],[4,5,6]]; the Conv1D weight is its transpose.
    store
        .set_values("t.weight", &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        .unwrap();
    store
        .set_values("c.weight", &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0])
        .unwrap();
    store.set_values("t.bias", &[0.5, -1.0]).unwrap();
    store.set_values("c.bias", &[0.5, -1.0]).unwrap();
    store.set_values("ln.weight", &[1.0, 2.0, 0.5]).unwrap();
    store.set_values("ln.bias", &[0.0, 1.0, -1.0]).unwrap();
    let x = dev.tensor_from_vec(vec![1.0, 0.0, -1.0, 2.0, 1.0, 0.5], (1, 2, 3));
    let want = vec![
        1.0 - 3.0 + 0.5,
        4.0 - 6.0 - 1.0,
        2.0 + 2.0 + 1.5 + 0.5,
        8.0 + 5.0 + 3.0 - 1.0,
    ];
    assert_eq!(
        per_token(x.clone(), |x| torch.forward(&store, x)).as_vec(),
        want
    );
    assert_eq!(
        per_token(x.clone(), |x| conv.forward(&store, x)).as_vec(),
        want
    );
    let y = per_token(x.clone(), |x| ln.forward(&store, x)).as_vec();
    let rows = x.as_vec();
    for r in 0..2 {
        let row = &rows[3 * r..3 * r + 3];
        let mean = row.iter().sum::<f64>() / 3.0;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 3.0;
        for c in 0..3 {
            let (w, b) = ([1.0, 2.0, 0.5][c], [0.0, 1.0, -1.0][c]);
            let want = (row[c] - mean) / (var + 1e-5).sqrt() * w + b;
            assert!((y[3 * r + c] - want).abs() < 1e-14);
        }
    }
}

#[test]
fn dropout_drops_in_train_mode_only_and_reproducibly() {
    let n = 20_000;
    let run = |seed, train| {
        let dev = Cpu::seed_from_u64(seed);
        let x: Tensor<(usize,), f32, Cpu> = dev.ones_like(&(n,));
        dropout(x, 0.25, train).as_vec()
    };
    let eval = run(0, false);
    assert!(eval.iter().all(|&v| v == 1.0), "eval mode is the identity");
    let train = run(0, true);
    let dropped = train.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
    assert!((dropped - 0.25).abs() < 0.02, "dropped fraction {dropped}");
    assert!(train
        .iter()
        .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    assert_eq!(run(0, true), train, "same device seed, same mask");
    assert_ne!(run(1, true), train);
    let dev = Cpu::default();
    let x: Tensor<(usize,), f32, Cpu> = dev.ones_like(&(10,));
    assert_eq!(dropout(x, 0.0, true).as_vec(), vec![1.0; 10]);
}

// ---------------------------------------------------------------- backbone: fixture parity

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/decision_flowformer/dt_flowformer_tiny_model.json"
);

struct Fixture {
    json: serde_json::Value,
}

impl Fixture {
    fn load() -> Self {
        let text = std::fs::read_to_string(FIXTURE).expect("fixture readable");
        Self {
            json: serde_json::from_str(&text).expect("fixture is JSON"),
        }
    }

    fn floats(v: &serde_json::Value) -> Vec<f64> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|x| x.as_f64().expect("number"))
            .collect()
    }

    fn get(&self, path: &[&str]) -> &serde_json::Value {
        path.iter().fold(&self.json, |v, k| &v[*k])
    }

    fn values(&self, path: &[&str]) -> Vec<f64> {
        Self::floats(self.get(path))
    }

    fn usize(&self, key: &str) -> usize {
        self.json["config"][key].as_u64().expect("integer") as usize
    }

    /// `(name, shape, values)` of every parameter, in the fixture's order.
    fn params(&self) -> Vec<(String, Vec<usize>, Vec<f64>)> {
        self.json["params"]
            .as_array()
            .expect("params")
            .iter()
            .map(|p| {
                let shape = p["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize);
                (
                    p["name"].as_str().unwrap().to_string(),
                    shape.collect(),
                    Self::floats(&p["values"]),
                )
            })
            .collect()
    }

    fn grads(&self) -> Vec<(String, Vec<f64>)> {
        self.json["training_check"]["grads_f64"]
            .as_array()
            .expect("grads")
            .iter()
            .map(|g| {
                (
                    g["name"].as_str().unwrap().to_string(),
                    Self::floats(&g["values"]),
                )
            })
            .collect()
    }
}

/// The fixture's Decision Transformer around the backbone: the embeddings and heads are
/// built here in the test, exactly as STRUCTURE.md describes them.
struct TinyDt {
    backbone: Backbone,
    embed_timestep: ParamId,
    embed_return: Linear,
    embed_state: Linear,
    embed_action: Linear,
    embed_ln: LayerNorm,
    predict_action: Linear,
}

/// Outputs of [`TinyDt::run`] on the fixture batch.
struct TinyDtOutputs<E: Dtype, D: Storage<E>> {
    hidden: Vec<E>,
    action_preds: Vec<E>,
    loss: E,
    grads: ParamGrads<E, D>,
}

impl TinyDt {
    fn register<E>(fx: &Fixture, store: &mut ParamStore<E, Cpu>) -> Self
    where
        E: Dtype + num_traits::Float,
        Cpu: ModelDevice<E>,
    {
        let w = fx.usize("hidden_size");
        let cfg = BackboneConfig {
            width: w,
            heads: fx.usize("n_head"),
            layers: fx.usize("n_layer"),
            attention: AttentionKind::CausalFlow,
            dropout: 0.0,
            layer_norm_eps: fx.get(&["config", "layer_norm_epsilon"]).as_f64().unwrap(),
            flow: FlowConfig {
                clamp: fx.get(&["config", "flow_clamp"]).as_f64().unwrap(),
                eps: fx.get(&["config", "flow_eps"]).as_f64().unwrap(),
                ..FlowConfig::rl()
            },
        };
        let (sd, ad) = (fx.usize("state_dim"), fx.usize("act_dim"));
        let torch = |store: &mut ParamStore<E, Cpu>, name: &str, i, o| {
            let init = Init::pytorch_linear(i);
            Linear::register(store, name, i, o, WeightLayout::OutIn, init, Some(init)).unwrap()
        };
        store
            .register("transformer.wte.weight", &[1, w], Init::Zeros)
            .unwrap();
        let backbone = Backbone::register(store, "transformer", cfg).unwrap();
        let embed_timestep = store
            .register(
                "embed_timestep.weight",
                &[fx.usize("max_ep_len"), w],
                Init::Normal { std: 1.0 },
            )
            .unwrap();
        let embed_return = torch(store, "embed_return", 1, w);
        let embed_state = torch(store, "embed_state", sd, w);
        let embed_action = torch(store, "embed_action", ad, w);
        let embed_ln = LayerNorm::register(store, "embed_ln", w, cfg.layer_norm_eps).unwrap();
        torch(store, "predict_state", w, sd);
        let predict_action = torch(store, "predict_action.0", w, ad);
        torch(store, "predict_return", w, 1);
        Self {
            backbone,
            embed_timestep,
            embed_return,
            embed_state,
            embed_action,
            embed_ln,
            predict_action,
        }
    }

    /// Embeds the fixture batch, runs the backbone, predicts actions from the state
    /// tokens, and back-propagates the mean-squared error to every parameter.
    fn run<E>(&self, fx: &Fixture, store: &ParamStore<E, Cpu>) -> TinyDtOutputs<E, Cpu>
    where
        E: Dtype + num_traits::Float,
        Cpu: ModelDevice<E>,
    {
        let dev = store.device().clone();
        let (b, k, w) = (fx.usize("batch"), fx.usize("K"), fx.usize("hidden_size"));
        let (sd, ad) = (fx.usize("state_dim"), fx.usize("act_dim"));
        let cast = |v: Vec<f64>| {
            v.into_iter()
                .map(|x| E::from(x).unwrap())
                .collect::<Vec<E>>()
        };
        let input =
            |key: &str, d: usize| dev.tensor_from_vec(cast(fx.values(&["inputs", key])), (b, k, d));
        let timesteps: Vec<usize> = fx
            .values(&["inputs", "timesteps"])
            .iter()
            .map(|&t| t as usize)
            .collect();
        let timesteps = dev.tensor_from_vec(timesteps, (b, k));

        let time = store
            .matrix(self.embed_timestep)
            .leaky_traced()
            .gather(timesteps);
        let r = per_token(input("returns_to_go", 1).leaky_traced(), |x| {
            self.embed_return.forward(store, x)
        }) + time.with_empty_tape();
        let s = per_token(input("states", sd).leaky_traced(), |x| {
            self.embed_state.forward(store, x)
        }) + time.with_empty_tape();
        let a = per_token(input("actions", ad).leaky_traced(), |x| {
            self.embed_action.forward(store, x)
        }) + time;
        let tokens: Tensor<(Const<3>, usize, usize, usize), E, Cpu, _> = [r, s, a].stack();
        let tokens = tokens
            .permute::<_, Axes4<1, 2, 0, 3>>()
            .reshape_like(&(b, 3 * k, w));
        let tokens: Tensor3<E, Cpu, _> = per_token(tokens, |x| self.embed_ln.forward(store, x));

        let hidden = self.backbone.forward(store, tokens, false).unwrap();
        let hidden_values = hidden.as_vec();
        let state_tokens = hidden
            .reshape_like(&(b, k, 3, w))
            .slice((.., .., 1..2, ..))
            .reshape_like(&(b * k, w));
        let preds = self.predict_action.forward(store, state_tokens).tanh();
        let action_preds = preds.as_vec();
        let target = dev.tensor_from_vec(
            cast(fx.values(&["training_check", "action_target"])),
            (b * k, ad),
        );
        let loss = (preds - target).square().mean::<Rank0, _>();
        let loss_value = loss.as_vec()[0];
        let mut gradients = loss.backward();
        TinyDtOutputs {
            hidden: hidden_values,
            action_preds,
            loss: loss_value,
            grads: store.grads(&mut gradients),
        }
    }
}

fn load_fixture_params<E>(fx: &Fixture, store: &mut ParamStore<E, Cpu>)
where
    E: Dtype + num_traits::Float,
    Cpu: Device<E>,
{
    let params = fx.params();
    assert_eq!(
        params.len(),
        store.len(),
        "the store holds every fixture parameter"
    );
    for (name, shape, values) in params {
        let id = store.id(&name).unwrap();
        assert_eq!(store.shape(id), shape.as_slice(), "{name}");
        let values: Vec<E> = values.into_iter().map(|x| E::from(x).unwrap()).collect();
        store.set_values(&name, &values).unwrap();
    }
}

fn max_abs_diff<E: num_traits::Float>(got: &[E], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| (g.to_f64().unwrap() - w).abs())
        .fold(0.0, f64::max)
}

/// Measured on this machine: last_hidden_state within 2e-15, gradients within 2e-16
/// relative; the bounds leave three orders of magnitude for other summation orders.
#[test]
fn fixture_parity_forward_and_backward_f64() {
    let fx = Fixture::load();
    let dev = Cpu::default();
    let mut store = ParamStore::<f64, Cpu>::new(&dev, 0);
    let dt = TinyDt::register(&fx, &mut store);
    load_fixture_params(&fx, &mut store);
    let out = dt.run(&fx, &store);

    let hidden_err = max_abs_diff(
        &out.hidden,
        &fx.values(&["outputs_f64", "last_hidden_state"]),
    );
    assert!(
        hidden_err <= 1e-12,
        "last_hidden_state max error {hidden_err:e}"
    );
    let pred_err = max_abs_diff(
        &out.action_preds,
        &fx.values(&["outputs_f64", "action_preds"]),
    );
    assert!(pred_err <= 1e-12, "action_preds max error {pred_err:e}");
    let loss_ref = fx.get(&["training_check", "loss_f64"]).as_f64().unwrap();
    assert!(
        (out.loss - loss_ref).abs() <= 1e-12,
        "loss {} vs {loss_ref}",
        out.loss
    );

    let mut worst = (0.0, String::new());
    for (name, want) in fx.grads() {
        let got = out.grads.get(store.id(&name).unwrap()).as_vec();
        assert_eq!(got.len(), want.len(), "{name}");
        for (g, r) in got.iter().zip(&want) {
            let rel = (g - r).abs() / (1.0 + r.abs());
            if rel > worst.0 {
                worst = (rel, name.clone());
            }
        }
    }
    assert!(
        worst.0 <= 1e-12,
        "worst gradient error {:e} in {}",
        worst.0,
        worst.1
    );
    // Parameters the loss does not reach have exactly zero gradient.
    for unused in [
        "transformer.wte.weight",
        "predict_state.weight",
        "predict_return.bias",
    ] {
        assert!(out
            .grads
            .get(store.id(unused).unwrap())
            .as_vec()
            .iter()
            .all(|&g| g == 0.0));
    }
}

/// Measured: last_hidden_state within 1e-6 of the PyTorch float32 run.
#[test]
fn fixture_parity_forward_f32() {
    let fx = Fixture::load();
    let dev = Cpu::default();
    let mut store = ParamStore::<f32, Cpu>::new(&dev, 0);
    let dt = TinyDt::register(&fx, &mut store);
    load_fixture_params(&fx, &mut store);
    let out = dt.run(&fx, &store);
    let hidden_err = max_abs_diff(
        &out.hidden,
        &fx.values(&["outputs_f32", "last_hidden_state"]),
    );
    assert!(
        hidden_err <= 1e-5,
        "last_hidden_state max error {hidden_err:e}"
    );
    let pred_err = max_abs_diff(
        &out.action_preds,
        &fx.values(&["outputs_f32", "action_preds"]),
    );
    assert!(pred_err <= 1e-5, "action_preds max error {pred_err:e}");
    let loss_ref = fx.get(&["training_check", "loss_f32"]).as_f64().unwrap();
    assert!((out.loss as f64 - loss_ref).abs() <= 1e-5);
}

// ---------------------------------------------------------------- backbone: behaviour

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
        backbone.step(&store, &mut state, x),
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
    assert!(max_abs_diff(&train, &eval.iter().map(|&v| v as f64).collect::<Vec<_>>()) > 1e-3);
    assert!(
        max_abs_diff(
            &train2,
            &train.iter().map(|&v| v as f64).collect::<Vec<_>>()
        ) > 1e-3
    );
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
    assert!(max_abs_diff(&train, &eval.iter().map(|&v| v as f64).collect::<Vec<_>>()) > 1e-3);
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
            .step(&store, &mut state, dev.tensor_from_vec(token, (b, w)))
            .unwrap()
            .as_vec();
        assert_eq!(state.position(), t + 1);
        for r in 0..b {
            let want = &full[(r * l + t) * w..(r * l + t + 1) * w];
            let got = &out[r * w..(r + 1) * w];
            worst = worst.max(max_abs_diff(
                got,
                &want.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            ));
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
        let scale = |v: &[f64]| 1.0 + v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let close = |a: &[f64], b: &[f64]| {
            let e = a
                .iter()
                .zip(b)
                .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
            e / scale(b)
        };
        assert!(close(&kept.0, &full.0) <= 1e-13, "{at}: values");
        assert!(
            (kept.1 - full.1).abs() <= 1e-12 * (1.0 + full.1.abs()),
            "{at}: loss"
        );
        assert!(close(&kept.3, &full.3) <= 1e-12, "{at}: input gradient");
        assert!(
            full.3.iter().any(|&g| g != 0.0),
            "{at}: input gradient is zero"
        );
        for (id, (k, f)) in store.ids().zip(kept.2.iter().zip(&full.2)) {
            let e = close(k, f);
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
