//! Valid inputs the fuzzer starts from, made at run time with flowrl's own writers
//! (the native dataset writer, the agent's checkpoint encoder, the config writer) and,
//! for the HDF5 layouts, as arrays written with `hdf5-pure`'s file builder (which
//! the fuzzer also mutates as arrays), plus the h5py-written test fixtures.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use dfdx::prelude::Cpu;
use flowrl_agents::agent::{ActionSpace, Agent, AgentConfig, AgentKind};
use hdf5_pure::{DatasetBuilder as H5Builder, FileBuilder};

use crate::config::Config;
use crate::data::dataset::{DatasetBuilder, Ending, Metadata, Provenance};
use crate::data::space::Space;
use crate::data::store;

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

/// Values of one HDF5 array.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 64-bit floats.
    F64(Vec<f64>),
    /// 64-bit signed integers.
    I64(Vec<i64>),
    /// Bytes (flags).
    U8(Vec<u8>),
}

impl Values {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
            Values::I64(v) => v.len(),
            Values::U8(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One array of an HDF5 file: its path (`name` or `group/name`), values and shape
/// (whose product is the number of values).
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// Path in the file.
    pub path: String,
    /// Row-major values.
    pub values: Values,
    /// Shape.
    pub shape: Vec<u64>,
}

impl Array {
    fn new(path: &str, values: Values, shape: &[usize]) -> Self {
        Self {
            path: path.into(),
            values,
            shape: shape.iter().map(|&d| d as u64).collect(),
        }
    }
}

/// Writes arrays to HDF5 bytes with `hdf5-pure`, one group per path prefix.
pub fn write_h5(arrays: &[Array]) -> anyhow::Result<Vec<u8>> {
    fn fill(ds: &mut H5Builder, a: &Array) {
        match &a.values {
            Values::F32(v) => ds.with_f32_data(v),
            Values::F64(v) => ds.with_f64_data(v),
            Values::I64(v) => ds.with_i64_data(v),
            Values::U8(v) => ds.with_u8_data(v),
        }
        .with_shape(&a.shape);
    }
    let mut f = FileBuilder::new();
    let mut groups: BTreeMap<&str, Vec<(&str, &Array)>> = BTreeMap::new();
    for a in arrays {
        match a.path.split_once('/') {
            Some((group, leaf)) => groups.entry(group).or_default().push((leaf, a)),
            None => fill(f.create_dataset(&a.path), a),
        }
    }
    for (group, members) in groups {
        let mut g = f.create_group(group);
        for (leaf, a) in members {
            fill(g.create_dataset(leaf), a);
        }
        f.add_group(g.finish());
    }
    f.finish().context("cannot write an HDF5 seed")
}

/// The arrays of a D4RL file of 12 steps: observations `[12, 3]` f32, actions
/// `[12, 2]` f32 or `[12]` i64, rewards, terminals and timeouts as u8 flags.
pub fn d4rl(discrete: bool) -> Vec<Array> {
    let n = 12;
    let flags = |at: &[usize]| -> Vec<u8> { (0..n).map(|i| u8::from(at.contains(&i))).collect() };
    let obs: Vec<f32> = (0..n * 3).map(|i| i as f32 * 0.1).collect();
    let actions = if discrete {
        Array::new(
            "actions",
            Values::I64((0..n as i64).map(|i| i % 3).collect()),
            &[n],
        )
    } else {
        let values = (0..n * 2).map(|i| (i as f32 * 0.05).sin()).collect();
        Array::new("actions", Values::F32(values), &[n, 2])
    };
    vec![
        Array::new("observations", Values::F32(obs), &[n, 3]),
        actions,
        Array::new(
            "rewards",
            Values::F32((0..n).map(|i| i as f32).collect()),
            &[n],
        ),
        Array::new("terminals", Values::U8(flags(&[3, 9])), &[n]),
        Array::new("timeouts", Values::U8(flags(&[6, 9])), &[n]),
    ]
}

/// `metadata.json` of the Minari seed: Box(3) observations, Box[-2, 2] actions.
pub fn minari_metadata() -> anyhow::Result<Vec<u8>> {
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
    Ok(serde_json::to_vec_pretty(&meta)?)
}

/// The arrays of the Minari seed's `main_data.hdf5`: two episodes of 5 and 6 steps
/// (observations have one more row), the first terminated, the second truncated.
pub fn minari() -> Vec<Array> {
    let mut arrays = Vec::new();
    for (e, t) in [5usize, 6].into_iter().enumerate() {
        let at = |name: &str| format!("episode_{e}/{name}");
        let obs = (0..(t + 1) * 3).map(|i| (i as f32 * 0.3).cos()).collect();
        let actions = (0..t).map(|i| (i as f32 * 0.7).sin()).collect();
        let last: Vec<u8> = (0..t).map(|i| u8::from(i + 1 == t)).collect();
        let none = vec![0u8; t];
        let (terms, truncs) = if e == 0 { (last, none) } else { (none, last) };
        arrays.extend([
            Array::new(&at("observations"), Values::F32(obs), &[t + 1, 3]),
            Array::new(&at("actions"), Values::F32(actions), &[t, 1]),
            Array::new(
                &at("rewards"),
                Values::F64((0..t).map(|i| -(i as f64)).collect()),
                &[t],
            ),
            Array::new(&at("terminations"), Values::U8(terms), &[t]),
            Array::new(&at("truncations"), Values::U8(truncs), &[t]),
        ]);
    }
    arrays
}

/// Files written by h5py in the earliest HDF5 format (no checksums, so byte edits
/// of size fields reach the reader): D4RL files and a Minari Pendulum dataset, the
/// fixtures of `tests/data` (see its `make_fixtures.py`).
pub const H5PY_D4RL: [&[u8]; 2] = [
    include_bytes!("../../tests/data/d4rl_basic.hdf5"),
    include_bytes!("../../tests/data/d4rl_discrete.hdf5"),
];

/// The h5py-written Minari fixture: `metadata.json` and `main_data.hdf5`.
pub const H5PY_MINARI: (&[u8], &[u8]) = (
    include_bytes!("../../tests/data/minari_pendulum/data/metadata.json"),
    include_bytes!("../../tests/data/minari_pendulum/data/main_data.hdf5"),
);

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
