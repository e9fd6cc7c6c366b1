//! Agent losses and training: padding never counts, the losses equal a hand
//! computation from the predictions, every parameter gets a gradient, dropout acts in
//! train mode only, and the agents learn toy tasks under AdamW.

use dfdx::prelude::*;
use flowrl_agents::agent::{ActionSpace, Agent, AgentConfig, AgentKind};
use flowrl_agents::device::ModelDevice;
use flowrl_agents::optim::{AdamW, AdamWConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::common::f64_of;
use crate::common::inputs::{fill_step, random_inputs, small, HostInputs, CONTINUOUS, DISCRETE};

/// The loss of `x` (train or eval mode) and the gradient of every parameter, in
/// store order.
fn loss_and_grads<E>(agent: &Agent<E, Cpu>, x: &HostInputs, train: bool) -> (f64, Vec<Vec<E>>)
where
    E: Dtype + num_traits::Float,
    Cpu: ModelDevice<E>,
{
    let w = agent.window(&x.host()).unwrap();
    let loss = agent.loss(&w, train).unwrap();
    let value = f64_of(loss.as_vec()[0]);
    let mut gradients = loss.backward();
    let grads = agent.params().grads(&mut gradients);
    let grads = agent
        .params()
        .ids()
        .map(|id| grads.get(id).as_vec())
        .collect();
    (value, grads)
}

/// Every agent kind with the action spaces it supports.
const ALL_KINDS: [(AgentKind, ActionSpace); 5] = [
    (AgentKind::DecisionFlowformer, CONTINUOUS),
    (AgentKind::DecisionFlowformer, DISCRETE),
    (AgentKind::DecisionTransformer, CONTINUOUS),
    (AgentKind::MlpBc, CONTINUOUS),
    (AgentKind::MlpBc, DISCRETE),
];

/// The loss of a padded batch is the mean over its real steps: changing anything at
/// padded steps leaves the loss and every gradient unchanged, and the batch loss is
/// the step-weighted mean of the rows' losses computed alone without padding.
#[test]
fn padding_never_counts_in_the_loss() {
    let dev = Cpu::default();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (kind, action) in ALL_KINDS {
        let cfg = small(kind, action);
        let agent = Agent::<f64, Cpu>::new(&dev, cfg, 3).unwrap();
        let lengths = [6, 3, 1];
        let x = random_inputs(&mut rng, &cfg, 6, &lengths);
        let (loss, grads) = loss_and_grads(&agent, &x, false);

        let mut y = x.clone();
        for (r, &n) in lengths.iter().enumerate() {
            for t in n..6 {
                fill_step(&mut rng, &cfg, &mut y, r * 6 + t);
                y.timesteps[r * 6 + t] = rng.gen_range(0..cfg.max_ep_len);
            }
        }
        let (loss_y, grads_y) = loss_and_grads(&agent, &y, false);
        assert!(
            (loss - loss_y).abs() <= 1e-14,
            "{kind:?}: {loss} vs {loss_y}"
        );
        for (g, h) in grads.iter().zip(&grads_y) {
            for (a, b) in g.iter().zip(h) {
                assert!(
                    (a - b).abs() <= 1e-12 * (1.0 + a.abs()),
                    "{kind:?}: gradient {a} vs {b}"
                );
            }
        }

        let mut weighted = 0.0;
        for (r, &n) in lengths.iter().enumerate() {
            let row = |v: &[f32], width: usize| v[r * 6 * width..(r * 6 + n) * width].to_vec();
            let alone = HostInputs {
                batch: 1,
                len: n,
                states: row(&x.states, cfg.obs_dim),
                actions: if x.actions.is_empty() {
                    Vec::new()
                } else {
                    row(&x.actions, 2)
                },
                indices: x
                    .indices
                    .get(r * 6..r * 6 + n)
                    .map(<[usize]>::to_vec)
                    .unwrap_or_default(),
                returns: row(&x.returns, 1),
                timesteps: x.timesteps[r * 6..r * 6 + n].to_vec(),
                mask: vec![1.0; n],
            };
            weighted += n as f64 * loss_and_grads(&agent, &alone, false).0;
        }
        let mean = weighted / lengths.iter().sum::<usize>() as f64;
        assert!(
            (loss - mean).abs() <= 1e-12,
            "{kind:?}: batch {loss} vs per-row mean {mean}"
        );
    }
}

/// The losses are computed by hand from `predict`: mean squared error over every
/// value of the real steps, mean cross-entropy of the real steps' logits.
#[test]
fn losses_match_a_hand_computation_from_the_predictions() {
    let dev = Cpu::default();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for (kind, action) in ALL_KINDS {
        let cfg = small(kind, action);
        let agent = Agent::<f64, Cpu>::new(&dev, cfg, 2).unwrap();
        let lengths = [5, 2, 6];
        let x = random_inputs(&mut rng, &cfg, 6, &lengths);
        let preds = agent.predict(&agent.window(&x.host()).unwrap()).unwrap();
        assert_eq!(*preds.shape(), (3, 6, action.outputs()));
        let p = preds.as_vec();
        let width = action.outputs();
        let (mut total, mut count) = (0.0, 0.0);
        for (r, &n) in lengths.iter().enumerate() {
            for t in 0..n {
                let s = r * 6 + t;
                let row = &p[s * width..(s + 1) * width];
                match action {
                    ActionSpace::Continuous { dim } => {
                        let target = &x.actions[s * dim..(s + 1) * dim];
                        for (p, &a) in row.iter().zip(target) {
                            total += (p - a as f64).powi(2);
                            count += 1.0;
                        }
                    }
                    ActionSpace::Discrete { .. } => {
                        let top = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
                        let lse = top + row.iter().map(|v| (v - top).exp()).sum::<f64>().ln();
                        total += lse - row[x.indices[s]];
                        count += 1.0;
                    }
                }
            }
        }
        let (loss, _) = loss_and_grads(&agent, &x, false);
        let want = total / count;
        assert!(
            (loss - want).abs() <= 1e-12,
            "{kind:?} {action:?}: {loss} vs {want}"
        );
    }
}

/// Every parameter of every agent is reached by the loss (tables used as the left
/// operand of a gather included).
#[test]
fn every_parameter_gets_a_gradient() {
    let dev = Cpu::default();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (kind, action) in ALL_KINDS {
        let cfg = small(kind, action);
        let agent = Agent::<f64, Cpu>::new(&dev, cfg, 6).unwrap();
        let x = random_inputs(&mut rng, &cfg, 6, &[6, 4]);
        let (_, grads) = loss_and_grads(&agent, &x, false);
        for (id, g) in agent.params().ids().zip(&grads) {
            assert!(
                g.iter().any(|&v| v != 0.0),
                "{kind:?} {action:?}: `{}` has no gradient",
                agent.params().name(id)
            );
        }
    }
}

/// Dropout acts in train mode only: eval losses repeat, train losses differ from them.
#[test]
fn dropout_is_active_in_train_mode_only() {
    let dev = Cpu::default();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for (kind, action) in [
        (AgentKind::DecisionFlowformer, CONTINUOUS),
        (AgentKind::MlpBc, DISCRETE),
    ] {
        let cfg = AgentConfig {
            dropout: 0.3,
            ..small(kind, action)
        };
        let agent = Agent::<f32, Cpu>::new(&dev, cfg, 1).unwrap();
        let x = random_inputs(&mut rng, &cfg, 6, &[6, 6]);
        let eval = loss_and_grads(&agent, &x, false).0;
        assert_eq!(eval, loss_and_grads(&agent, &x, false).0, "{kind:?}");
        let train = loss_and_grads(&agent, &x, true).0;
        assert!(
            (train - eval).abs() > 1e-6,
            "{kind:?}: train {train} == eval {eval}"
        );
    }
}

/// A few AdamW steps on a fixed toy batch: the loss falls well below its start.
fn trains(
    cfg: AgentConfig,
    target: impl Fn(&[f32]) -> (Vec<f32>, usize),
    steps: usize,
) -> (f64, f64) {
    let dev = Cpu::default();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut agent = Agent::<f32, Cpu>::new(&dev, cfg, 5).unwrap();
    let mut x = random_inputs(&mut rng, &cfg, cfg.context, &[cfg.context; 16]);
    for s in 0..16 * cfg.context {
        let (a, i) = target(&x.states[s * cfg.obs_dim..(s + 1) * cfg.obs_dim]);
        match cfg.action {
            ActionSpace::Continuous { dim } => {
                x.actions[s * dim..(s + 1) * dim].copy_from_slice(&a)
            }
            ActionSpace::Discrete { .. } => x.indices[s] = i,
        }
    }
    let w = agent.window(&x.host()).unwrap();
    let mut opt = AdamW::new(
        agent.params(),
        AdamWConfig {
            lr: 1e-2,
            ..Default::default()
        },
    )
    .unwrap();
    let mut losses = Vec::new();
    for _ in 0..steps {
        let loss = agent.loss(&w, true).unwrap();
        losses.push(loss.as_vec()[0] as f64);
        let mut gradients = loss.backward();
        let grads = agent.params().grads(&mut gradients);
        opt.update(agent.params_mut(), &grads).unwrap();
    }
    let last = agent.loss(&w, false).unwrap().as_vec()[0] as f64;
    (losses[0], last)
}

/// Discrete Decision-Flowformer: the action is the index of the largest state value.
#[test]
fn discrete_decision_flowformer_learns_a_toy_task() {
    let cfg = AgentConfig {
        dropout: 0.1,
        ..small(AgentKind::DecisionFlowformer, DISCRETE)
    };
    let argmax = |s: &[f32]| {
        (
            Vec::new(),
            (0..3).fold(0, |b, j| if s[j] > s[b] { j } else { b }),
        )
    };
    let (first, last) = trains(cfg, argmax, 40);
    println!("discrete DF: cross-entropy {first} -> {last}");
    assert!(last < 0.5 * first, "cross-entropy {first} -> {last}");
}

/// MLP behaviour cloning, continuous (`a = tanh(s0), tanh(-s1)`) and discrete.
#[test]
fn mlp_bc_learns_toy_tasks() {
    let cfg = AgentConfig {
        width: 32,
        dropout: 0.1,
        ..small(AgentKind::MlpBc, CONTINUOUS)
    };
    let smooth = |s: &[f32]| (vec![s[0].tanh(), (-s[1]).tanh()], 0);
    let (first, last) = trains(cfg, smooth, 60);
    println!("MLP BC continuous: mse {first} -> {last}");
    assert!(last < 0.2 * first, "mse {first} -> {last}");

    let cfg = AgentConfig {
        width: 32,
        ..small(AgentKind::MlpBc, DISCRETE)
    };
    let argmax = |s: &[f32]| {
        (
            Vec::new(),
            (0..3).fold(0, |b, j| if s[j] > s[b] { j } else { b }),
        )
    };
    let (first, last) = trains(cfg, argmax, 60);
    println!("MLP BC discrete: cross-entropy {first} -> {last}");
    assert!(last < 0.5 * first, "cross-entropy {first} -> {last}");
}
