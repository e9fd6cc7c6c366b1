//! Acting on the CPU: the host-memory re-encoding path ([`Encoder::Auto`] on `Cpu`)
//! predicts what the dfdx tensor forward pass ([`Encoder::Tensors`]) predicts, for
//! both sequence models and action spaces, in f32 and f64, while windows fill up,
//! slide, and episodes are dropped from the batch.

use dfdx::prelude::*;
use flowrl_agents::acting::{Actor, ContextMode, Encoder};
use flowrl_agents::agent::{ActionSpace, Agent, AgentKind, HostActions};
use flowrl_agents::device::ModelDevice;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::common::inputs::{agent_config, CONTINUOUS, DISCRETE};
use crate::common::max_abs_diff;

/// Plays `steps` steps of random episodes of `batch` rows with a host-path actor and a
/// tensor-path actor in lockstep (rows dropped at the steps of `drops`) and returns the
/// largest difference of their predictions.
fn host_vs_tensors<E>(
    agent: &Agent<E, Cpu>,
    mode: ContextMode,
    batch: usize,
    steps: usize,
    drops: &[(usize, Vec<usize>)],
) -> f64
where
    E: Dtype + num_traits::Float + Send + Sync + Into<f64>,
    Cpu: ModelDevice<E>,
{
    let cfg = *agent.config();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut host = Actor::with_encoder(agent, mode, batch, Encoder::Auto).unwrap();
    let mut tensors = Actor::with_encoder(agent, mode, batch, Encoder::Tensors).unwrap();
    let (mut worst, mut range) = (0.0f64, (f64::INFINITY, f64::NEG_INFINITY));
    for t in 0..steps {
        if let Some((_, keep)) = drops.iter().find(|(s, _)| *s == t) {
            host.keep_rows(keep).unwrap();
            tensors.keep_rows(keep).unwrap();
        }
        let n = host.batch();
        let returns: Vec<f32> = (0..n).map(|_| rng.gen_range(0.0..3.0)).collect();
        let states: Vec<f32> = (0..n * cfg.obs_dim)
            .map(|_| rng.gen_range(-2.0..2.0))
            .collect();
        let p = host.observe(&returns, &states).unwrap();
        let q = tensors.observe(&returns, &states).unwrap();
        assert_eq!((p.batch, p.width), (q.batch, q.width));
        for &x in &p.values {
            let x: f64 = x.into();
            range = (range.0.min(x), range.1.max(x));
        }
        worst = worst.max(max_abs_diff(&p.values, &q.values));
        match cfg.action {
            ActionSpace::Continuous { .. } => {
                let acts: Vec<f32> = p
                    .values
                    .iter()
                    .map(|&v| (v.into() as f32 + rng.gen_range(-0.3..0.3)).clamp(-1.0, 1.0))
                    .collect();
                host.record(HostActions::Continuous(&acts)).unwrap();
                tensors.record(HostActions::Continuous(&acts)).unwrap();
            }
            ActionSpace::Discrete { n } => {
                let acts: Vec<usize> = (0..p.batch).map(|_| rng.gen_range(0..n)).collect();
                host.record(HostActions::Discrete(&acts)).unwrap();
                tensors.record(HostActions::Discrete(&acts)).unwrap();
            }
        }
    }
    assert!(
        range.1 - range.0 > 0.1,
        "predictions barely vary ({range:?}): the comparison would prove little"
    );
    worst
}

/// Both sequence models, both action spaces, short windows at the episode start and
/// sliding ones later, rows dropped mid-way, and a batch of one episode: (width, heads,
/// K) 16/2/6 uses the Flow-Attention state for long windows, 32/1/6 the pairwise sums
/// throughout.
fn check_all<E>(tolerance: f64)
where
    E: Dtype + num_traits::Float + Send + Sync + Into<f64>,
    Cpu: ModelDevice<E>,
{
    let dev = Cpu::default();
    let drops = [(4, vec![0, 2, 3]), (11, vec![2, 0])];
    for kind in [
        AgentKind::DecisionFlowformer,
        AgentKind::DecisionTransformer,
    ] {
        for action in [CONTINUOUS, DISCRETE] {
            for shape in [(16, 2, 6), (32, 1, 6)] {
                let agent =
                    Agent::<E, Cpu>::new(&dev, agent_config(kind, action, shape), 3).unwrap();
                let err = host_vs_tensors(&agent, ContextMode::Window, 4, 20, &drops);
                assert!(
                    err <= tolerance,
                    "{kind:?} {action:?} {shape:?}: host path differs by {err:e}"
                );
                // One episode alone: its attention is shared between two threads.
                let err = host_vs_tensors(&agent, ContextMode::Window, 1, 12, &[]);
                assert!(
                    err <= tolerance,
                    "{kind:?} {action:?} {shape:?}, batch 1: host path differs by {err:e}"
                );
            }
        }
    }
}

#[test]
fn host_window_acting_equals_the_tensor_forward_f32() {
    check_all::<f32>(1e-5);
}

#[test]
fn host_window_acting_equals_the_tensor_forward_f64() {
    check_all::<f64>(1e-12);
}

/// The softmax model's `episode` mode re-encodes the whole history on the host path
/// too (no window limit; beyond 64 tokens the scores are computed in blocks).
#[test]
fn host_episode_reencoding_of_the_softmax_model_equals_the_tensor_forward() {
    let dev = Cpu::default();
    let cfg = agent_config(AgentKind::DecisionTransformer, CONTINUOUS, (16, 2, 4));
    let agent = Agent::<f64, Cpu>::new(&dev, cfg, 1).unwrap();
    let err = host_vs_tensors(&agent, ContextMode::Episode, 3, 30, &[(6, vec![1, 2])]);
    assert!(err <= 1e-12, "episode re-encoding differs by {err:e}");
}
