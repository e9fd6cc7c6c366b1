//! Acting on the CPU: the host-memory re-encoding path ([`Encoder::Auto`] on `Cpu`)
//! predicts what the dfdx tensor forward pass ([`Encoder::Tensors`]) predicts, for
//! both sequence models and action spaces, in f32 and f64, while windows fill up,
//! slide, and episodes are dropped from the batch.

use dfdx::prelude::*;
use flowrl_agents::acting::{Actor, ContextMode, Encoder};
use flowrl_agents::agent::{Agent, AgentKind};
use flowrl_agents::device::ModelDevice;

use crate::common::inputs::{agent_config, CONTINUOUS, DISCRETE};
use crate::common::lockstep::{lockstep, Discrete};

/// The largest difference of the predictions of a host-path actor and a tensor-path
/// actor of `agent` in `mode` over `steps` steps of random episodes of `batch` rows
/// (rows dropped at the steps of `drops`).
fn host_vs_tensors<E>(
    agent: &Agent<E, Cpu>,
    mode: ContextMode,
    batch: usize,
    steps: usize,
    drops: &[(usize, Vec<usize>)],
) -> f64
where
    E: Dtype + num_traits::Float + Send + Sync,
    Cpu: ModelDevice<E>,
{
    let cfg = *agent.config();
    let host = Actor::with_encoder(agent, mode, batch, Encoder::Auto).unwrap();
    let tensors = Actor::with_encoder(agent, mode, batch, Encoder::Tensors).unwrap();
    let io = (cfg.obs_dim, cfg.action);
    lockstep(host, tensors, io, 5, steps, drops, Discrete::Uniform)
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

/// Many episodes in lockstep run in groups, each group through every block on one
/// thread (40 windows of 59 tokens make 9 groups of about 256 tokens, 20 after the
/// drop 4): the groups' predictions are the tensor forward's too.
#[test]
fn host_window_acting_of_many_episodes_in_groups_equals_the_tensor_forward() {
    let dev = Cpu::default();
    let keep: Vec<usize> = (0..40).rev().step_by(2).collect();
    for kind in [
        AgentKind::DecisionFlowformer,
        AgentKind::DecisionTransformer,
    ] {
        let agent =
            Agent::<f64, Cpu>::new(&dev, agent_config(kind, CONTINUOUS, (16, 2, 20)), 4).unwrap();
        let err = host_vs_tensors(&agent, ContextMode::Window, 40, 26, &[(22, keep.clone())]);
        assert!(err <= 1e-12, "{kind:?}: host path differs by {err:e}");
    }
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
