//! Valid inputs the fuzzer starts from, made at run time with flowrl's own writers
//! (the native dataset writer, the agent's checkpoint encoder, the config writer) and,
//! for the HDF5 layouts, with `hdf5-pure`'s file builder.

use std::collections::HashMap;

use anyhow::Context;
use dfdx::prelude::Cpu;
use flowrl_agents::agent::{ActionSpace, Agent, AgentConfig, AgentKind};
use hdf5_pure::FileBuilder;

use crate::config::Config;
use crate::data::dataset::{DatasetBuilder, Ending, Metadata, Provenance};
use crate::data::space::Space;
use crate::data::store;

/// Steps of the small D4RL seed file, and its observation and action widths: the
/// size fields the HDF5 mutations look for.
pub const D4RL_SIZES: [u64; 3] = [12, 3, 2];

/// Episode lengths of the Minari seed (observations have one more row), with its
/// observation width: the size fields the HDF5 mutations look for.
pub const MINARI_SIZES: [u64; 5] = [5, 6, 3, 4, 1];

/// A small native dataset of 2 episodes (observations of 3, continuous actions of 2
/// in a Box[-2, 2], or discrete actions of 3 choices), as file bytes.
pub fn dataset(discrete: bool) -> anyhow::Result<Vec<u8>> {
    let act_dim = if discrete { 1 } else { 2 };
    let mut b = DatasetBuilder::new(3, act_dim, discrete);
    for step in 0..7 {
        let x = step as f32;
        let obs = [x, -x, 0.5 * x];
        if discrete {
            b.push_discrete(&obs, step % 3, x);
        } else {
            b.push_continuous(&obs, &[0.25 * x - 1.0, 1.0], x);
        }
        if step == 3 {
            b.end_episode(Ending::Terminated);
        }
    }
    b.end_episode(Ending::Truncated);
    let action_space = if discrete {
        Space::Discrete { n: 3 }
    } else {
        Space::Box {
            low: vec![-2.0; 2],
            high: vec![2.0; 2],
        }
    };
    let meta = Metadata {
        env_id: "Fuzz-v0".into(),
        observation_space: Space::unbounded(3),
        action_space,
        provenance: Provenance {
            source: "fuzz".into(),
            episodes: 2,
            ..Provenance::default()
        },
        reference_returns: None,
    };
    let ds = b.build(meta).map_err(|p| anyhow::anyhow!("{p}"))?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("seed.safetensors");
    store::save(&ds, &path)?;
    Ok(std::fs::read(&path)?)
}

/// Checkpoint parameters (with the agent config in the metadata) of tiny agents of
/// each kind, continuous and discrete.
pub fn checkpoints() -> anyhow::Result<Vec<Vec<u8>>> {
    let dev = Cpu::default();
    let mut out = Vec::new();
    for (kind, action) in [
        (
            AgentKind::DecisionFlowformer,
            ActionSpace::Continuous { dim: 2 },
        ),
        (
            AgentKind::DecisionTransformer,
            ActionSpace::Discrete { n: 3 },
        ),
        (AgentKind::MlpBc, ActionSpace::Continuous { dim: 1 }),
    ] {
        let cfg = AgentConfig {
            width: 8,
            layers: 1,
            heads: 2,
            context: 4,
            max_ep_len: 16,
            ..AgentConfig::new(kind, 3, action)
        };
        let agent = Agent::<f32, Cpu>::new(&dev, cfg, 7)?;
        let extra = HashMap::from([("flowrl.step".to_string(), "1".to_string())]);
        out.push(agent.to_safetensors(&extra)?);
    }
    Ok(out)
}

/// A D4RL file of 12 steps (observations `[12, 3]` f32, actions `[12, 2]` f32 or
/// `[12]` i64, rewards, terminals and timeouts as u8 flags).
pub fn d4rl(discrete: bool) -> anyhow::Result<Vec<u8>> {
    let n = D4RL_SIZES[0] as usize;
    let mut f = FileBuilder::new();
    let obs: Vec<f32> = (0..n * 3).map(|i| i as f32 * 0.1).collect();
    f.create_dataset("observations")
        .with_f32_data(&obs)
        .with_shape(&[n as u64, 3]);
    if discrete {
        let actions: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
        f.create_dataset("actions").with_i64_data(&actions);
    } else {
        let actions: Vec<f32> = (0..n * 2).map(|i| (i as f32 * 0.05).sin()).collect();
        f.create_dataset("actions")
            .with_f32_data(&actions)
            .with_shape(&[n as u64, 2]);
    }
    let rewards: Vec<f32> = (0..n).map(|i| i as f32).collect();
    f.create_dataset("rewards").with_f32_data(&rewards);
    let flags = |at: &[usize]| -> Vec<u8> { (0..n).map(|i| u8::from(at.contains(&i))).collect() };
    f.create_dataset("terminals").with_u8_data(&flags(&[3, 9]));
    f.create_dataset("timeouts").with_u8_data(&flags(&[6, 9]));
    f.finish().context("cannot write the D4RL seed")
}

/// A Minari dataset: `metadata.json` text and `main_data.hdf5` bytes with two
/// episodes (of [`MINARI_SIZES`] steps) of Box(3) observations and Box[-2, 2] actions.
pub fn minari() -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let meta = serde_json::json!({
        "dataset_id": "fuzz/pendulum-v0",
        "total_episodes": 2,
        "env_spec": "{\"id\": \"Pendulum-v1\", \"max_episode_steps\": 200}",
        "observation_space": "{\"type\": \"Box\", \"dtype\": \"float32\", \"shape\": [3], \
            \"low\": [-1.0, -1.0, -8.0], \"high\": [1.0, 1.0, 8.0]}",
        "action_space": "{\"type\": \"Box\", \"dtype\": \"float32\", \"shape\": [1], \
            \"low\": [-2.0], \"high\": [2.0]}",
        "ref_min_score": -1200.5,
        "ref_max_score": -150.25,
    });
    let mut f = FileBuilder::new();
    for (e, &t) in MINARI_SIZES[..2].iter().enumerate() {
        let t = t as usize;
        let mut g = f.create_group(&format!("episode_{e}"));
        let obs: Vec<f32> = (0..(t + 1) * 3).map(|i| (i as f32 * 0.3).cos()).collect();
        g.create_dataset("observations")
            .with_f32_data(&obs)
            .with_shape(&[t as u64 + 1, 3]);
        let actions: Vec<f32> = (0..t).map(|i| (i as f32 * 0.7).sin()).collect();
        g.create_dataset("actions")
            .with_f32_data(&actions)
            .with_shape(&[t as u64, 1]);
        let rewards: Vec<f64> = (0..t).map(|i| -(i as f64)).collect();
        g.create_dataset("rewards").with_f64_data(&rewards);
        let last: Vec<u8> = (0..t).map(|i| u8::from(i + 1 == t)).collect();
        let none = vec![0u8; t];
        let (terms, truncs) = if e == 0 { (last, none) } else { (none, last) };
        g.create_dataset("terminations").with_u8_data(&terms);
        g.create_dataset("truncations").with_u8_data(&truncs);
        f.add_group(g.finish());
    }
    let h5 = f.finish().context("cannot write the Minari seed")?;
    Ok((serde_json::to_vec_pretty(&meta)?, h5))
}

/// Experiment configs as TOML: the defaults with a dataset file, and with a
/// collected dataset, evaluation targets and every section written out.
pub fn configs() -> anyhow::Result<Vec<Vec<u8>>> {
    let mut file = Config::default();
    file.dataset.path = Some("data/pendulum.safetensors".into());
    let mut collect = Config::default();
    collect.dataset.env = Some("Pendulum-v1".into());
    collect.dataset.tier = Some("medium".into());
    collect.dataset.episodes = Some(50);
    collect.dataset.seed = Some(3);
    collect.eval.targets = vec![-150.0, -300.0];
    collect.eval.env = Some("Pendulum-v1".into());
    [file, collect]
        .iter()
        .map(|c| Ok(c.to_toml_string()?.into_bytes()))
        .collect()
}
