//! MuJoCo locomotion end to end through the `flowrl` binary: a D4RL-layout Hopper
//! file made here imports, trains a tiny agent and evaluates on `Hopper-v5` with
//! D4RL's normalised score; `random` collection works, the other tiers without a
//! behaviour set and a missing MuJoCo install fail with the fix named. Needs `flowrl setup mujoco`; without it
//! the tests skip with the reason, unless `FLOWRL_REQUIRE_MUJOCO=1`.

use std::path::Path;
use std::process::Command;

use flowrl_envs::{collect, Action, Tier};
use hdf5_pure::{EnumTypeBuilder, FileBuilder};

fn flowrl(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flowrl"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(cwd)
        .output()
        .expect("the flowrl binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes a D4RL-layout file (`observations`, `actions`, `rewards`, h5py-boolean
/// `terminals` and `timeouts`) of random Hopper-v5 episodes.
fn write_d4rl_hopper(path: &Path, episodes: usize) {
    let recorded = collect("Hopper-v5", Tier::Random, episodes, 5, &mut |_| {}).expect("collect");
    let (mut obs, mut act, mut rew, mut term, mut timeout) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for episode in &recorded {
        for t in 0..episode.len() {
            obs.extend_from_slice(&episode.observations[t]);
            match &episode.actions[t] {
                Action::Continuous(a) => act.extend_from_slice(a),
                Action::Discrete(_) => unreachable!("Hopper is continuous"),
            }
            rew.push(episode.rewards[t] as f32);
            let last = t + 1 == episode.len();
            term.push(u8::from(last && episode.terminated));
            timeout.push(u8::from(last && !episode.terminated));
        }
    }
    let n = rew.len();
    let boolean = || {
        EnumTypeBuilder::u8_based()
            .u8_value("FALSE", 0)
            .u8_value("TRUE", 1)
            .build()
            .expect("h5py boolean type")
    };
    let mut file = FileBuilder::new();
    file.create_dataset("observations")
        .with_f32_data(&obs)
        .with_shape(&[n as u64, 11]);
    file.create_dataset("actions")
        .with_f32_data(&act)
        .with_shape(&[n as u64, 3]);
    file.create_dataset("rewards").with_f32_data(&rew);
    file.create_dataset("terminals")
        .with_enum_u8_data(boolean(), &term);
    file.create_dataset("timeouts")
        .with_enum_u8_data(boolean(), &timeout);
    file.write(path).expect("write the HDF5 file");
}

#[test]
fn d4rl_hopper_imports_trains_and_evaluates_with_d4rl_scores() {
    if !flowrl_envs::mujoco::ready_or_skip("the MuJoCo end-to-end tests") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    write_d4rl_hopper(&cwd.join("hopper-random-v2.hdf5"), 12);
    let (ok, out, err) = flowrl(
        &[
            "dataset",
            "import",
            "--from",
            "d4rl",
            "hopper-random-v2.hdf5",
            "--env",
            "Hopper-v5",
            "--out",
            "hopper.safetensors",
        ],
        cwd,
        &[],
    );
    assert!(ok, "import failed:\n{out}\n{err}");
    std::fs::write(
        cwd.join("hopper.toml"),
        r#"seed = 1

[dataset]
path = "hopper.safetensors"

[agent]
kind = "decision-flowformer"
width = 16
layers = 1
heads = 1
context = 5

[train]
steps = 8
batch = 4
warmup_steps = 2
log_every = 4
checkpoint_every = 0
reward_scale = 1000.0

[eval]
every = 0
episodes = 2
targets = [3600.0]
"#,
    )
    .unwrap();
    let args = ["train", "--config", "hopper.toml", "--run-dir", "run"];
    let (ok, out, err) = flowrl(&args, cwd, &[]);
    assert!(ok, "train failed:\n{out}\n{err}");
    let (ok, out, err) = flowrl(
        &[
            "eval",
            "--run",
            "run",
            "--env",
            "Hopper-v5",
            "--targets",
            "3600",
            "--episodes",
            "3",
            "--json",
            "hopper-eval.json",
        ],
        cwd,
        &[],
    );
    assert!(ok, "eval failed:\n{out}\n{err}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cwd.join("hopper-eval.json")).unwrap())
            .unwrap();
    assert_eq!(report["env_id"], "Hopper-v5", "{report}");
    assert_eq!(report["references"]["random"], -20.272305, "{report}");
    assert_eq!(report["references"]["expert"], 3234.3, "{report}");
    let target = &report["targets"][0];
    let returns: Vec<f64> = target["returns"]
        .as_array()
        .unwrap_or_else(|| panic!("per-episode returns in {target}"))
        .iter()
        .map(|r| r.as_f64().expect("return"))
        .collect();
    assert_eq!(returns.len(), 3);
    // D4RL's Hopper references: random -20.272305, expert 3234.3.
    let mean = returns.iter().sum::<f64>() / 3.0;
    let normalised = 100.0 * (mean + 20.272305) / (3234.3 + 20.272305);
    let reported = target["normalised"]["mean"]
        .as_f64()
        .unwrap_or_else(|| panic!("normalised mean in {target}"));
    assert!(
        (reported - normalised).abs() < 1e-9,
        "normalised {reported}, expected {normalised} from D4RL's references"
    );
}

#[test]
fn collect_on_hopper_gives_random_and_names_the_missing_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let empty = cwd.join("no-mujoco");
    std::fs::create_dir(&empty).unwrap();
    let collect_args = |tier: &'static str, out: &'static str| {
        [
            "collect",
            "--env",
            "Hopper-v5",
            "--tier",
            tier,
            "--episodes",
            "3",
            "--seed",
            "1",
            "--out",
            out,
        ]
    };
    let (ok, _, err) = flowrl(
        &collect_args("random", "a.safetensors"),
        cwd,
        &[("FLOWRL_MUJOCO_DIR", empty.to_str().unwrap())],
    );
    assert!(
        !ok && err.contains("flowrl setup mujoco") && err.contains("no-mujoco"),
        "{err}"
    );
    assert!(!cwd.join("a.safetensors").exists());
    if !flowrl_envs::mujoco::ready_or_skip("the MuJoCo end-to-end tests") {
        return;
    }
    let (ok, out, err) = flowrl(&collect_args("random", "a.safetensors"), cwd, &[]);
    assert!(ok, "collect failed:\n{out}\n{err}");
    let (ok, out, err) = flowrl(&["dataset", "info", "a.safetensors"], cwd, &[]);
    assert!(ok && out.contains("Hopper-v5"), "{out}\n{err}");
    // The other tiers come from the repository's behaviour set (tests/behaviour_sets.rs);
    // another folder without one names how to make one.
    let (ok, _, err) = flowrl(&collect_args("medium", "b.safetensors"), cwd, &[]);
    assert!(ok, "{err}");
    let mut args = collect_args("medium", "c.safetensors").to_vec();
    args.extend(["--behaviour", "elsewhere"]);
    let (ok, _, err) = flowrl(&args, cwd, &[]);
    assert!(
        !ok && err.contains("flowrl behaviour select") && err.contains("random"),
        "{err}"
    );
}

#[test]
fn halfcheetah_writes_no_mujoco_log_and_no_expected_warning() {
    if !flowrl_envs::mujoco::ready_or_skip("the MuJoCo end-to-end tests") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = flowrl(
        &[
            "collect",
            "--env",
            "HalfCheetah-v5",
            "--tier",
            "random",
            "--episodes",
            "1",
            "--seed",
            "0",
            "--out",
            "c.safetensors",
        ],
        dir.path(),
        &[],
    );
    assert!(ok, "collect failed:\n{out}\n{err}");
    // MuJoCo's default warning handler appends to MUJOCO_LOG.TXT in the working
    // folder; half_cheetah.xml's deprecated attribute would trigger it.
    assert!(!dir.path().join("MUJOCO_LOG.TXT").exists());
    assert!(!err.contains("settotalmass"), "{err}");
}

#[test]
fn setup_verifies_every_file_and_says_what_to_install_without_pip() {
    let dir = tempfile::tempdir().unwrap();
    let no_path = dir.path().join("empty-path");
    std::fs::create_dir(&no_path).unwrap();
    let target = dir.path().join("mujoco");
    let (ok, _, err) = flowrl(
        &["setup", "mujoco"],
        dir.path(),
        &[
            ("PATH", no_path.to_str().unwrap()),
            ("FLOWRL_MUJOCO_DIR", target.to_str().unwrap()),
        ],
    );
    assert!(
        !ok && err.contains("pip") && err.contains("FLOWRL_MUJOCO_DIR"),
        "{err}"
    );
    if !flowrl_envs::mujoco::ready_or_skip("the MuJoCo end-to-end tests") {
        return;
    }
    // A verified install is left alone, without pip.
    let install = flowrl_envs::mujoco::Install::configured().unwrap();
    let (ok, out, err) = flowrl(
        &["setup", "mujoco"],
        dir.path(),
        &[
            ("PATH", no_path.to_str().unwrap()),
            ("FLOWRL_MUJOCO_DIR", install.root().to_str().unwrap()),
        ],
    );
    assert!(ok && out.contains("already set up"), "{out}\n{err}");
    // A copy with one changed model file no longer verifies, and the error names it.
    let copy = flowrl_envs::mujoco::Install::at(dir.path().join("copy"));
    for (from, to) in install.files().iter().zip(copy.files()) {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap();
    }
    flowrl::setup::verify(&copy).expect("an exact copy verifies");
    let model = copy.model("hopper.xml");
    let mut text = std::fs::read_to_string(&model).unwrap();
    text.push(' ');
    std::fs::write(&model, text).unwrap();
    let error = flowrl::setup::verify(&copy).unwrap_err().to_string();
    assert!(
        error.contains("hopper.xml") && error.contains("expected sha256"),
        "{error}"
    );
}
