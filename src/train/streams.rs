//! The random streams of a training run and how their positions are captured.
//!
//! A run has three seeded streams, all derived from the config seed:
//! - parameter initialisation (the agent's `ChaCha8Rng`, used once at start),
//! - window sampling (the sampler's `ChaCha8Rng`),
//! - dropout masks (dfdx's `Cpu` device generator: one `u64` per dropout call).
//!
//! Neither the sampler nor dfdx's `Cpu` exports its generator state, so a checkpoint
//! records each stream's position as a count of draws: batches drawn from the sampler
//! and `u64`s drawn from the device. Resuming rebuilds each stream from its seed and
//! replays that many draws, which puts it in exactly the same state.

use anyhow::{bail, Context};
use dfdx::prelude::*;
use dfdx::tensor::RandomU64;
use flowrl_agents::agent::{ActionSpace, Agent, AgentConfig, HostActions, HostWindow};

/// Seeds of the run's streams, derived from the config seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seeds {
    /// Parameter initialisation.
    pub init: u64,
    /// Window sampling.
    pub sampler: u64,
    /// The device generator behind dropout.
    pub dropout: u64,
}

impl Seeds {
    /// The streams of a run with config seed `seed` (distinct, well-mixed seeds).
    pub fn from_config_seed(seed: u64) -> Self {
        Self {
            init: seed,
            sampler: splitmix64(seed ^ 0x5a4d_504c_4552_0001),
            dropout: splitmix64(seed ^ 0x4452_4f50_4f55_0002),
        }
    }
}

/// SplitMix64's output function: a bijective mix of a 64-bit value.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Upper bound on the device draws one training step may take (dropout calls).
const MAX_DRAWS_PER_STEP: u64 = 1 << 16;

/// Seed of the probe device in [`draws_per_step`] (any fixed value).
const PROBE_SEED: u64 = 0x0f10_77e1;

/// How many `u64`s one training loss of an agent with `cfg` draws from its device
/// (one per dropout call; the count depends on the architecture, not on the batch).
/// Measured on a throwaway agent and a probe device, so the run's device is untouched.
pub fn draws_per_step(cfg: &AgentConfig) -> anyhow::Result<u64> {
    let probe = Cpu::seed_from_u64(PROBE_SEED);
    let agent = Agent::<f32, Cpu>::new(&probe, *cfg, 0).context("building the probe agent")?;
    let states = vec![0.0f32; cfg.obs_dim];
    let continuous = vec![0.0f32; cfg.action.outputs()];
    let index = [0usize];
    let actions = match cfg.action {
        ActionSpace::Continuous { .. } => HostActions::Continuous(&continuous),
        ActionSpace::Discrete { .. } => HostActions::Discrete(&index),
    };
    let window = agent
        .window(&HostWindow {
            batch: 1,
            len: 1,
            states: &states,
            actions,
            returns_to_go: &[0.0],
            timesteps: &[0],
            mask: &[1.0],
        })
        .context("building the probe window")?;
    agent
        .loss(&window, true)
        .context("running the probe loss")?;
    let next = probe.random_u64();
    let reference = Cpu::seed_from_u64(PROBE_SEED);
    for draws in 0..=MAX_DRAWS_PER_STEP {
        if reference.random_u64() == next {
            return Ok(draws);
        }
    }
    bail!("a training step draws more than {MAX_DRAWS_PER_STEP} values from the device")
}

/// Advances the device generator by `draws` values (replaying a stream position).
pub fn skip_device_draws(dev: &Cpu, draws: u64) {
    for _ in 0..draws {
        dev.random_u64();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowrl_agents::agent::AgentKind;

    #[test]
    fn seeds_differ_per_stream_and_per_config_seed() {
        let a = Seeds::from_config_seed(0);
        let b = Seeds::from_config_seed(1);
        assert_ne!(a.sampler, a.dropout);
        assert_ne!(a.sampler, b.sampler);
        assert_ne!(a.dropout, b.dropout);
        assert_eq!(a, Seeds::from_config_seed(0));
    }

    #[test]
    fn dropout_draws_are_counted_and_zero_without_dropout() {
        let mut cfg = AgentConfig::new(
            AgentKind::DecisionFlowformer,
            3,
            ActionSpace::Continuous { dim: 1 },
        );
        cfg.width = 8;
        cfg.layers = 2;
        cfg.max_ep_len = 4;
        let with = draws_per_step(&cfg).unwrap();
        assert!(
            with >= 2,
            "two blocks with dropout draw at least twice, found {with}"
        );
        cfg.layers = 3;
        assert!(draws_per_step(&cfg).unwrap() > with);
        cfg.dropout = 0.0;
        assert_eq!(draws_per_step(&cfg).unwrap(), 0);
    }
}
