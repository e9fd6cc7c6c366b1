//! AdamW against a hand-computed reference, its config and state errors, bit-exact
//! resumption from saved state, and clipping by the global gradient norm.

use std::collections::HashMap;

use dfdx::prelude::*;
use flowrl_agents::optim::{clip_grad_norm, grad_norm, AdamW, AdamWConfig, OptimError};
use flowrl_agents::params::{Init, ParamError, ParamStore};

use crate::common::{constant_grads, small_store};

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
