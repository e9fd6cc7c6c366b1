//! Hostile and absurd inputs: every file, config and flag a user or an attacker can
//! hand flowrl fails with an error naming the file, key or flag, what was expected
//! and what was found; never a panic, an allocation abort or a silent acceptance.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dfdx::prelude::Cpu;
use flowrl::config::Config;
use flowrl::data::dataset::{DatasetBuilder, Ending, Metadata, Provenance};
use flowrl::data::import::d4rl::{import_d4rl, D4rlOptions};
use flowrl::data::space::Space;
use flowrl::data::store;
use flowrl_agents::agent::{ActionSpace, Agent, AgentConfig, AgentKind, CONFIG_KEY};
use hdf5_pure::FileBuilder;

mod common;
use common::flowrl;

/// Observations of a D4RL file: f32 values with a shape, or f64 values.
enum Obs<'a> {
    F32(&'a [f32], &'a [u64]),
    F64(&'a [f64], &'a [u64]),
}

/// A D4RL file of `n` steps with the given observations and actions (`Some` integer
/// actions, else `[n, 1]` f32 zeros); one episode ending at the last step.
fn d4rl_file(dir: &Path, n: usize, obs: Obs<'_>, int_actions: Option<&[i64]>) -> PathBuf {
    let mut f = FileBuilder::new();
    match obs {
        Obs::F32(v, shape) => f
            .create_dataset("observations")
            .with_f32_data(v)
            .with_shape(shape),
        Obs::F64(v, shape) => f
            .create_dataset("observations")
            .with_f64_data(v)
            .with_shape(shape),
    };
    match int_actions {
        Some(a) => f.create_dataset("actions").with_i64_data(a),
        None => f
            .create_dataset("actions")
            .with_f32_data(&vec![0.0; n])
            .with_shape(&[n as u64, 1]),
    };
    f.create_dataset("rewards").with_f32_data(&vec![1.0; n]);
    let last: Vec<u8> = (0..n).map(|i| u8::from(i + 1 == n)).collect();
    f.create_dataset("terminals").with_u8_data(&last);
    f.create_dataset("timeouts").with_u8_data(&vec![0; n]);
    let path = dir.join("hostile.hdf5");
    std::fs::write(&path, f.finish().unwrap()).unwrap();
    path
}

fn import_error(path: &Path) -> String {
    let err = import_d4rl(path, &D4rlOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("hostile.hdf5"),
        "the file is not named: {text}"
    );
    text
}

#[test]
fn d4rl_observations_of_width_zero_are_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = d4rl_file(dir.path(), 4, Obs::F32(&[], &[4, 0]), None);
    let err = import_error(&path);
    assert!(err.contains("`observations`"), "{err}");
    assert!(err.contains("[4, 0]") && err.contains("size 0"), "{err}");
}

#[test]
fn d4rl_observations_of_three_dimensions_are_refused_not_flattened() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<f32> = (0..24).map(|i| i as f32).collect();
    let path = d4rl_file(dir.path(), 4, Obs::F32(&values, &[4, 3, 2]), None);
    let err = import_error(&path);
    assert!(err.contains("`observations`"), "{err}");
    assert!(err.contains("[4, 3, 2]") && err.contains("[4, 6]"), "{err}");
}

#[test]
fn d4rl_integer_actions_of_a_trillion_are_not_a_trillion_way_space() {
    let dir = tempfile::tempdir().unwrap();
    let obs = [0.0f32; 8];
    let path = d4rl_file(
        dir.path(),
        4,
        Obs::F32(&obs, &[4, 2]),
        Some(&[0, 1, 1_000_000_000_000, 2]),
    );
    let err = import_error(&path);
    assert!(err.contains("`actions`"), "{err}");
    assert!(err.contains("1000000000000 at step 2"), "{err}");
    assert!(err.contains("below 1048576"), "{err}");
}

#[test]
fn d4rl_finite_values_beyond_f32_are_out_of_range_not_non_finite() {
    let dir = tempfile::tempdir().unwrap();
    let obs = [0.0, 1.0, 1e300, 2.0];
    let path = d4rl_file(dir.path(), 4, Obs::F64(&obs, &[4, 1]), None);
    let err = import_error(&path);
    assert!(
        err.contains("`observations`") && err.contains("1e300"),
        "{err}"
    );
    assert!(err.contains("outside the f32 range"), "{err}");
    assert!(!err.contains("non-finite"), "{err}");
}

#[test]
fn d4rl_arrays_larger_than_memory_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<f32> = (0..64).map(|i| i as f32).collect();
    let path = d4rl_file(dir.path(), 32, Obs::F32(&values, &[32, 2]), None);
    let (ok, _, err) = flowrl(
        &[
            "dataset",
            "import",
            "--from",
            "d4rl",
            path.to_str().unwrap(),
            "--out",
            "out.safetensors",
        ],
        dir.path(),
        &[("FLOWRL_MEMORY_LIMIT", "100")],
    );
    assert!(!ok, "{err}");
    assert!(err.contains("`observations` of shape [32, 2]"), "{err}");
    assert!(err.contains("FLOWRL_MEMORY_LIMIT"), "{err}");
}

#[test]
fn minari_import_of_a_garbage_file_says_it_is_not_hdf5() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.bin");
    std::fs::write(&garbage, b"\x00\x01garbage, not a dataset").unwrap();
    let (ok, _, err) = flowrl(
        &[
            "dataset",
            "import",
            "--from",
            "minari",
            "garbage.bin",
            "--out",
            "o.safetensors",
        ],
        dir.path(),
        &[],
    );
    assert!(!ok);
    assert!(
        err.contains("garbage.bin") && err.contains("not a HDF5 file"),
        "{err}"
    );
    assert!(!err.contains("metadata.json"), "{err}");
}

/// A valid native dataset with unbounded actions of 1 dimension, as file bytes.
fn native_dataset(action: f32) -> Vec<u8> {
    let mut b = DatasetBuilder::new(2, 1, false);
    for i in 0..4 {
        b.push_continuous(&[i as f32, 0.0], &[if i == 2 { action } else { 0.5 }], 1.0);
    }
    b.end_episode(Ending::Terminated);
    let meta = Metadata {
        env_id: "Pendulum-v1".into(),
        observation_space: Space::unbounded(2),
        action_space: Space::unbounded(1),
        provenance: Provenance {
            source: "test".into(),
            episodes: 1,
            ..Provenance::default()
        },
        reference_returns: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.safetensors");
    store::save(&b.build(meta).unwrap(), &path).unwrap();
    std::fs::read(path).unwrap()
}

/// Safetensors bytes with one `__metadata__` entry replaced.
fn with_metadata(bytes: &[u8], key: &str, value: &str) -> Vec<u8> {
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    header["__metadata__"][key] = value.into();
    let mut json = serde_json::to_vec(&header).unwrap();
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + len..]);
    out
}

#[test]
fn native_actions_outside_the_box_are_refused_with_the_bound_and_worst_value() {
    let boxed = r#"{"type":"Box","shape":[1],"low":[-2.0],"high":[2.0]}"#;
    let bytes = with_metadata(&native_dataset(1e30), "action_space", boxed);
    let err = store::from_bytes(&bytes).unwrap_err().to_string();
    assert!(err.contains("`actions`"), "{err}");
    assert!(err.contains("high[0] = 2"), "{err}");
    assert!(err.contains("1e30 at step 2"), "{err}");
    // Within the bounds, the same file is fine.
    store::from_bytes(&with_metadata(&native_dataset(1.5), "action_space", boxed)).unwrap();
}

fn tiny_checkpoint() -> Vec<u8> {
    let cfg = AgentConfig {
        width: 8,
        layers: 1,
        context: 4,
        max_ep_len: 16,
        ..AgentConfig::new(
            AgentKind::DecisionFlowformer,
            3,
            ActionSpace::Continuous { dim: 1 },
        )
    };
    let agent = Agent::<f32, Cpu>::new(&Cpu::default(), cfg, 0).unwrap();
    agent.to_safetensors(&HashMap::new()).unwrap()
}

fn checkpoint_error(bytes: &[u8]) -> String {
    match Agent::<f32, Cpu>::from_safetensors(&Cpu::default(), bytes) {
        Ok(_) => panic!("a hostile checkpoint was loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn checkpoint_sizes_are_validated_before_the_model_is_built() {
    let bytes = tiny_checkpoint();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(header["__metadata__"][CONFIG_KEY].as_str().unwrap()).unwrap();
    for (field, value, message) in [
        (
            "width",
            1u64 << 34,
            "`width` must be in [1, 65536], found 17179869184",
        ),
        (
            "max_ep_len",
            10_000_000_000_000,
            "`max_ep_len` must be in [1, 16777216], found 10000000000000",
        ),
        ("context", 1 << 40, "`context` must be in [1, 16777216]"),
        ("layers", 1 << 20, "`layers` must be in [1, 1024]"),
        ("obs_dim", 1 << 30, "`obs_dim` must be in [1, 1048576]"),
    ] {
        let mut hostile = cfg.clone();
        hostile[field] = value.into();
        let err = checkpoint_error(&with_metadata(&bytes, CONFIG_KEY, &hostile.to_string()));
        assert!(err.contains(message), "{field}: {err}");
    }
    // A config within bounds but disagreeing with the tensors fails on the tensor.
    let mut wider = cfg.clone();
    wider["width"] = 16.into();
    let err = checkpoint_error(&with_metadata(&bytes, CONFIG_KEY, &wider.to_string()));
    assert!(
        err.contains("expected shape") && err.contains("16"),
        "{err}"
    );
}

#[test]
fn checkpoint_with_nan_weights_is_refused_naming_the_tensor() {
    let (mut agent, _) =
        Agent::<f32, Cpu>::from_safetensors(&Cpu::default(), &tiny_checkpoint()).unwrap();
    let name = "embed_state.weight";
    let mut values = agent.params().values(agent.params().id(name).unwrap());
    values[5] = f32::NAN;
    agent.params_mut().set_values(name, &values).unwrap();
    let bytes = agent.to_safetensors(&HashMap::new()).unwrap();
    let err = checkpoint_error(&bytes);
    assert!(
        err.contains("`embed_state.weight`") && err.contains("NaN"),
        "{err}"
    );
    assert!(err.contains("flat index 5"), "{err}");
}

fn config_error(text: &str) -> String {
    Config::from_toml_str(text, "hostile.toml", &[])
        .unwrap_err()
        .to_string()
}

#[test]
fn config_sizes_are_bounded_before_anything_is_built() {
    let base = "[dataset]\nenv = \"Pendulum-v1\"\ntier = \"medium\"\n";
    for (section, key, value) in [
        ("agent", "context", "1000000000000"),
        ("agent", "width", "17179869184"),
        ("agent", "layers", "1000000"),
        ("agent", "max_episode_length", "10000000000000"),
        ("train", "batch", "1000000000000"),
        ("eval", "episodes", "1000000000000"),
    ] {
        let err = config_error(&format!("{base}[{section}]\n{key} = {value}\n"));
        assert!(
            err.contains(&format!("`{section}.{key}`")) && err.contains(value),
            "{key}: {err}"
        );
        assert!(err.contains("expected an integer in ["), "{key}: {err}");
    }
}

#[test]
fn config_seeds_take_the_whole_u64_range() {
    let base = "[dataset]\nenv = \"Pendulum-v1\"\ntier = \"medium\"\n";
    let text = format!("seed = \"18446744073709551615\"\n{base}[eval]\nseed = 9\n");
    let cfg = Config::from_toml_str(&text, "big.toml", &[]).unwrap();
    assert_eq!(cfg.seed, u64::MAX);
    let again = Config::from_toml_str(&cfg.to_toml_string().unwrap(), "again.toml", &[]).unwrap();
    assert_eq!(again, cfg);
    let over = "seed=18446744073709551615".parse().unwrap();
    let cfg = Config::from_toml_str(base, "base.toml", &[over]).unwrap();
    assert_eq!(cfg.seed, u64::MAX);
    // Unquoted, TOML itself cannot hold it: the error says how to write it.
    let err = config_error(&format!("seed = 18446744073709551615\n{base}"));
    assert!(err.contains("seed = \"18446744073709551615\""), "{err}");
    let err = config_error(&format!("seed = -1\n{base}"));
    assert!(err.contains("`seed`") && err.contains("-1"), "{err}");
}

#[test]
fn a_missing_config_names_the_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = flowrl(&["train", "--config", "missing.toml"], dir.path(), &[]);
    assert!(!ok);
    assert!(err.contains("missing.toml"), "{err}");
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
}

/// Trains a tiny run (2 steps on 2 collected episodes) in `dir/run`.
fn tiny_run(dir: &Path) -> PathBuf {
    let config = "[dataset]\nenv = \"Pendulum-v1\"\ntier = \"medium\"\nepisodes = 2\n\
                  [agent]\nwidth = 8\nlayers = 1\ncontext = 4\n\
                  [train]\nsteps = 2\nbatch = 2\nwarmup_steps = 1\nlog_every = 1\n\
                  [eval]\nepisodes = 0\n";
    std::fs::write(dir.join("tiny.toml"), config).unwrap();
    let (ok, out, err) = flowrl(
        &["train", "--config", "tiny.toml", "--run-dir", "run"],
        dir,
        &[],
    );
    assert!(ok, "{out}{err}");
    dir.join("run")
}

#[test]
fn training_that_does_not_fit_in_memory_is_refused_naming_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[dataset]\nenv = \"Pendulum-v1\"\ntier = \"medium\"\nepisodes = 2\n\
                  [agent]\nwidth = 4096\nlayers = 8\n";
    std::fs::write(dir.path().join("big.toml"), config).unwrap();
    let (ok, _, err) = flowrl(
        &["train", "--config", "big.toml", "--run-dir", "run"],
        dir.path(),
        &[("FLOWRL_MEMORY_LIMIT", "1000000000")],
    );
    assert!(!ok);
    for needle in [
        "agent.width = 4096",
        "agent.layers = 8",
        "train.batch = 64",
        "953.7 MiB is available (FLOWRL_MEMORY_LIMIT)",
        "parameters with their gradients and AdamW moments",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn eval_episodes_and_nan_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_run(dir.path());
    let eval = |episodes: &str, env: &[(&str, &str)]| {
        flowrl(
            &["eval", "--run", "run", "--episodes", episodes],
            dir.path(),
            env,
        )
    };
    let (ok, _, err) = eval("1000000000000", &[]);
    assert!(!ok);
    assert!(
        err.contains("--episodes: expected an integer in [1, 1000000], found 1000000000000"),
        "{err}"
    );
    let (ok, _, err) = eval("1000", &[("FLOWRL_MEMORY_LIMIT", "1000")]);
    assert!(!ok);
    assert!(err.contains("--episodes 1000 x 1 target(s)"), "{err}");
    assert!(err.contains("FLOWRL_MEMORY_LIMIT"), "{err}");
    let (ok, out, err) = eval("1", &[]);
    assert!(ok, "{out}{err}");

    // NaN weights: was a plausible score with exit 0.
    let params = run.join("checkpoints/step-2/params.safetensors");
    let bytes = std::fs::read(&params).unwrap();
    let (mut agent, metadata) =
        Agent::<f32, Cpu>::from_safetensors(&Cpu::default(), &bytes).unwrap();
    let name = "predict_action.0.weight";
    let mut values = agent.params().values(agent.params().id(name).unwrap());
    values[0] = f32::NAN;
    agent.params_mut().set_values(name, &values).unwrap();
    std::fs::write(&params, agent.to_safetensors(&metadata).unwrap()).unwrap();
    let (ok, out, err) = eval("1", &[]);
    assert!(!ok, "{out}");
    assert!(err.contains("params.safetensors"), "{err}");
    assert!(
        err.contains("`predict_action.0.weight`") && err.contains("NaN"),
        "{err}"
    );
}

#[test]
fn collect_sizes_are_bounded_before_collecting() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value, most) in [
        ("--episodes", "1000000000000", "1000000"),
        ("--transitions", "1000000000000", "1000000000"),
        ("--episodes", "0", "1000000"),
    ] {
        let (ok, _, err) = flowrl(
            &[
                "collect",
                "--env",
                "Pendulum-v1",
                "--tier",
                "random",
                flag,
                value,
                "--out",
                "d.safetensors",
            ],
            dir.path(),
            &[],
        );
        assert!(!ok);
        assert!(
            err.contains(&format!(
                "{flag}: expected an integer in [1, {most}], found {value}"
            )),
            "{err}"
        );
        assert!(!dir.path().join("d.safetensors").exists());
    }
}
