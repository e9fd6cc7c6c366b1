//! The life of a run folder and of user-named outputs: restarting a run that never
//! reached a checkpoint, failed starts that leave nothing behind, the dataset content
//! hash that guards resuming, TensorBoard after a crash and on a failing disk, stale
//! temporaries, early checks of the evaluation environment, byte-reproducible files,
//! and outputs that never overwrite inputs (or existing files without `--force`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flowrl::collect::collect_dataset;
use flowrl::config::{Config, Override};
use flowrl::data::{store, Dataset, DatasetBuilder, Ending, Metadata, Provenance, Space};
use flowrl::logging::{read_scalars, tb_dir};
use flowrl::train::{self, run_dir, RunStart, TrainOptions};
use flowrl_envs::Tier;

/// A tiny run of 12 steps on the dataset file `data`: logs every 5 steps, checkpoints
/// every 10, no evaluation unless overridden.
fn tiny(data: &Path, overrides: &[&str]) -> Config {
    let text = format!(
        "seed = 3\n[dataset]\npath = {:?}\n[agent]\nwidth = 16\nlayers = 1\nheads = 2\n\
         context = 4\n[train]\nsteps = 12\nbatch = 4\nlog_every = 5\ncheckpoint_every = 10\n\
         [eval]\nepisodes = 0\n",
        data.display().to_string()
    );
    let overrides: Vec<Override> = overrides.iter().map(|o| o.parse().unwrap()).collect();
    Config::from_toml_str(&text, "tiny", &overrides).unwrap()
}

/// Two random Pendulum-v1 episodes, saved as `name` in `dir`.
fn pendulum(dir: &Path, name: &str) -> (PathBuf, Dataset) {
    let path = dir.join(name);
    let ds = collect_dataset("Pendulum-v1", Tier::Random, 2, 11, &mut |_| {}).unwrap();
    store::save(&ds, &path).unwrap();
    (path, ds)
}

/// Runs the `flowrl` binary in `cwd`.
fn cli(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowrl"))
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap()
}

/// `flowrl collect` of 2 random Pendulum-v1 episodes into `out` (in `dir`), with the
/// `extra` flags.
fn collect(dir: &Path, out: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "collect",
        "--env",
        "Pendulum-v1",
        "--tier",
        "random",
        "--episodes",
        "2",
        "--out",
        out,
    ];
    args.extend(extra);
    cli(dir, &args)
}

/// The stderr of a command that must fail.
fn failure(out: &Output) -> String {
    assert!(!out.status.success(), "should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The stderr of a command that must succeed.
fn success(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

fn train_to(cfg: Config, run: &Path, stop_at: Option<u64>) -> train::TrainOutcome {
    train::start(cfg, run, &TrainOptions { stop_at }, None).unwrap()
}

/// A Pendulum dataset in `dir` and the uninterrupted run `dir/whole` of [`tiny`] on it.
fn dataset_and_whole_run(dir: &Path) -> (PathBuf, PathBuf) {
    let (data, _) = pendulum(dir, "p.safetensors");
    let whole = dir.join("whole");
    assert_eq!(
        train_to(tiny(&data, &[]), &whole, None).started,
        RunStart::New
    );
    (data, whole)
}

fn params(run: &Path, step: u64) -> Vec<u8> {
    std::fs::read(run_dir::checkpoint_dir(run, step).join(run_dir::PARAMS_FILE)).unwrap()
}

/// Steps of the `train/loss` points in the run's event files.
fn loss_steps(run: &Path) -> Vec<u64> {
    let scalars = read_scalars(&tb_dir(run)).unwrap();
    scalars
        .into_iter()
        .filter(|s| s.tag == "train/loss")
        .map(|s| s.step)
        .collect()
}

/// A run killed after its config and some steps, before its first checkpoint.
fn killed_before_first_checkpoint(cfg: Config, run: &Path) {
    train_to(cfg, run, Some(7));
    std::fs::remove_dir_all(run_dir::checkpoints(run)).unwrap();
    std::fs::remove_file(run.join(run_dir::TRAIN_LOG)).unwrap();
}

#[test]
fn a_run_without_a_checkpoint_restarts_in_place_or_resumes_from_step_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, whole) = dataset_and_whole_run(tmp.path());

    // `train --config` into the folder restarts it (and says so).
    let a = tmp.path().join("a");
    killed_before_first_checkpoint(tiny(&data, &[]), &a);
    let stale = a.join(".flowrl-Q1w2e3.tmp");
    std::fs::write(&stale, b"partial").unwrap();
    let cfg_file = tmp.path().join("exp.toml");
    std::fs::write(&cfg_file, tiny(&data, &[]).to_toml_string().unwrap()).unwrap();
    let out = cli(
        tmp.path(),
        &["train", "--config", "exp.toml", "--run-dir", "a"],
    );
    let err = success(&out);
    assert!(
        err.contains("never reached a checkpoint") && err.contains("restarting it from step 0"),
        "{err}"
    );
    assert_eq!(params(&a, 12), params(&whole, 12));
    assert!(!stale.exists());
    assert_eq!(loss_steps(&a), [5, 10, 12]);

    // `train --resume` starts it from step 0 with its own config.
    let b = tmp.path().join("b");
    killed_before_first_checkpoint(tiny(&data, &[]), &b);
    let out = cli(tmp.path(), &["train", "--resume", "b"]);
    let err = success(&out);
    assert!(err.contains("starting it from step 0"), "{err}");
    assert_eq!(params(&b, 12), params(&whole, 12));
    let again = train::resume(&b, &TrainOptions::default(), None).unwrap();
    assert_eq!(again.started, RunStart::Resumed { step: 12 });

    // With a checkpoint, the folder is not restarted.
    let err = format!(
        "{:#}",
        train::start(tiny(&data, &[]), &b, &TrainOptions::default(), None).unwrap_err()
    );
    assert!(
        err.contains("already holds a run with a checkpoint") && err.contains("--resume"),
        "{err}"
    );
}

#[test]
fn failed_starts_leave_no_folder_and_stop_at_zero_is_refused_first() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let missing = tmp.path().join("missing.safetensors");
    let err = format!(
        "{:#}",
        train::start(tiny(&missing, &[]), &run, &TrainOptions::default(), None).unwrap_err()
    );
    assert!(err.contains("missing.safetensors"), "{err}");
    assert!(!run.exists(), "a failed start left {}", run.display());

    let (data, _) = pendulum(tmp.path(), "p.safetensors");
    let opts = TrainOptions { stop_at: Some(0) };
    let err = format!(
        "{:#}",
        train::start(tiny(&data, &[]), &run, &opts, None).unwrap_err()
    );
    assert!(
        err.contains("--stop-at") && err.contains("found 0"),
        "{err}"
    );
    assert!(!run.exists());
}

/// `ds` with one observation value changed: same counts, dimensions and rewards.
fn with_one_observation_changed(ds: &Dataset) -> Dataset {
    let mut b = DatasetBuilder::new(ds.obs_dim(), 1, false);
    let obs = ds.observations();
    let flowrl::data::Actions::Continuous { values, .. } = ds.actions() else {
        panic!("Pendulum actions are continuous");
    };
    let offsets = ds.episode_offsets();
    for e in 0..ds.num_episodes() {
        for i in offsets[e]..offsets[e + 1] {
            let mut o = obs[i * ds.obs_dim()..(i + 1) * ds.obs_dim()].to_vec();
            if i == 5 {
                o[0] += 0.25;
            }
            b.push_continuous(&o, &values[i..i + 1], ds.rewards()[i]);
        }
        b.end_episode(if ds.terminated()[offsets[e + 1] - 1] {
            Ending::Terminated
        } else {
            Ending::Truncated
        });
    }
    b.build(ds.meta().clone()).unwrap()
}

#[test]
fn resume_refuses_a_dataset_with_other_content_naming_both_hashes_and_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, ds) = pendulum(tmp.path(), "p.safetensors");
    let run = tmp.path().join("run");
    train_to(tiny(&data, &[]), &run, Some(10));
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir::checkpoint_dir(&run, 10).join(run_dir::STATE_FILE))
            .unwrap(),
    )
    .unwrap();
    let recorded = state["dataset"]["content_hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(recorded, train::checkpoint::content_hash(&ds));

    let other = with_one_observation_changed(&ds);
    store::save(&other, &data).unwrap();
    let now = train::checkpoint::content_hash(&other);
    assert_ne!(now, recorded);
    let err = format!(
        "{:#}",
        train::resume(&run, &TrainOptions::default(), None).unwrap_err()
    );
    assert!(
        err.contains(&now) && err.contains(&recorded) && err.contains("p.safetensors"),
        "{err}"
    );
    // The original content resumes, whatever its file bytes.
    store::save(&ds, &data).unwrap();
    train::resume(&run, &TrainOptions::default(), None).unwrap();

    // A checkpoint written before the hash was recorded still resumes (on the older
    // fingerprint: counts, dimensions, reward sum).
    let file = run_dir::checkpoint_dir(&run, 12).join(run_dir::STATE_FILE);
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    state["dataset"]
        .as_object_mut()
        .unwrap()
        .remove("content_hash");
    std::fs::write(&file, state.to_string()).unwrap();
    let done = train::resume(&run, &TrainOptions::default(), None).unwrap();
    assert_eq!(done.started, RunStart::Resumed { step: 12 });
}

#[test]
fn after_a_crash_resume_logs_each_step_once_and_removes_stale_temporaries() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, whole) = dataset_and_whole_run(tmp.path());

    // Died after logging step 11 but before checkpointing it: the checkpoint of step
    // 11 is lost, the pointer still names step 10.
    let run = tmp.path().join("run");
    train_to(tiny(&data, &["train.log_every=1"]), &run, Some(11));
    std::fs::remove_dir_all(run_dir::checkpoint_dir(&run, 11)).unwrap();
    std::fs::write(run_dir::checkpoints(&run).join("latest"), "step-10\n").unwrap();
    // An interrupted write of `latest`, and an unfinished checkpoint folder.
    let stale = [
        run_dir::checkpoints(&run).join(".flowrl-AbC123.tmp"),
        run.join(".flowrl-x.tmp"),
    ];
    for f in &stale {
        std::fs::write(f, b"partial").unwrap();
    }
    let unfinished = run_dir::checkpoints(&run).join(".step-11.tmp");
    std::fs::create_dir(&unfinished).unwrap();
    let mine = run.join("notes.tmp");
    std::fs::write(&mine, b"not flowrl's").unwrap();

    let done = train::resume(&run, &TrainOptions::default(), None).unwrap();
    assert_eq!(done.started, RunStart::Resumed { step: 10 });
    assert!(stale.iter().all(|f| !f.exists()) && !unfinished.exists());
    assert!(mine.exists());
    let steps = loss_steps(&run);
    let mut once = steps.clone();
    once.dedup();
    assert_eq!(steps, once, "steps logged twice: {steps:?}");
    assert_eq!(steps, (1..=12).collect::<Vec<u64>>());
    assert_eq!(params(&run, 12), params(&whole, 12));
    // A running TensorBoard is told to discard what it holds from step 11 on: an
    // Event {step: 11, session_log {status: START}}.
    let session_start = [0x10, 11, 0x32, 0x02, 0x08, 0x01];
    let told = std::fs::read_dir(tb_dir(&run)).unwrap().any(|f| {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        bytes.windows(6).any(|w| w == session_start)
    });
    assert!(
        told,
        "no session start at step 11 in {}",
        tb_dir(&run).display()
    );
}

#[test]
fn a_failing_tensorboard_log_is_a_warning_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = pendulum(tmp.path(), "p.safetensors");
    std::fs::write(
        tmp.path().join("exp.toml"),
        tiny(&data, &[]).to_toml_string().unwrap(),
    )
    .unwrap();
    std::fs::create_dir(tmp.path().join("run")).unwrap();
    // The log folder cannot be created: a file has its name.
    std::fs::write(tmp.path().join("run").join("tb"), b"").unwrap();
    let out = cli(
        tmp.path(),
        &["train", "--config", "exp.toml", "--run-dir", "run"],
    );
    let err = success(&out);
    assert!(
        err.contains("warning: TensorBoard logging stopped") && !err.contains("panicked"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("finished at step 12/12"));
}

/// A discrete dataset of 3 episodes recorded as `env_id` (observations of 2 values).
fn discrete(dir: &Path, env_id: &str) -> PathBuf {
    let path = dir.join("discrete.safetensors");
    let mut b = DatasetBuilder::new(2, 1, true);
    for len in [6usize, 7, 8] {
        for t in 0..len {
            b.push_discrete(&[t as f32, 1.0], t % 2, 1.0);
        }
        b.end_episode(Ending::Terminated);
    }
    let ds = b
        .build(Metadata {
            env_id: env_id.into(),
            observation_space: Space::unbounded(2),
            action_space: Space::Discrete { n: 2 },
            provenance: Provenance {
                source: "test".into(),
                episodes: 3,
                ..Provenance::default()
            },
            reference_returns: None,
        })
        .unwrap();
    store::save(&ds, &path).unwrap();
    path
}

#[test]
fn an_evaluation_that_cannot_run_fails_before_the_first_step() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "CartPole-v1",
            &["eval.env=\"Nope-v0\""][..],
            "eval.env",
            "Nope-v0",
        ),
        (
            "CartPole-v1",
            &[][..],
            "the dataset's env_id",
            "observations of 4 values, but the agent expects 2",
        ),
        ("Made-Up-v3", &[][..], "the dataset's env_id", "Made-Up-v3"),
        (
            "CartPole-v1",
            &["eval.targets=[1e300]"][..],
            "eval.targets",
            "target return 1e300",
        ),
    ];
    for (i, (env_id, sets, source, found)) in cases.into_iter().enumerate() {
        let data = discrete(tmp.path(), env_id);
        let mut sets = sets.to_vec();
        sets.push("eval.episodes=1");
        let cfg = tiny(&data, &sets);
        let mut hook = flowrl::eval::run::training_hook(&cfg);
        let run = tmp.path().join(format!("run{i}"));
        let err = train::start(cfg, &run, &TrainOptions::default(), Some(&mut hook)).unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("before training") && err.contains(source) && err.contains(found),
            "{err}"
        );
        assert!(!run.join(run_dir::TRAIN_LOG).exists() && !run_dir::checkpoints(&run).exists());
    }
}

#[test]
fn the_same_seed_gives_the_same_dataset_and_checkpoint_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let collected: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            let name = format!("d{i}.safetensors");
            success(&collect(tmp.path(), &name, &["--seed", "4"]));
            std::fs::read(tmp.path().join(name)).unwrap()
        })
        .collect();
    assert!(collected.windows(2).all(|w| w[0] == w[1]));

    let (data, _) = pendulum(tmp.path(), "p.safetensors");
    let runs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("r{i}"))).collect();
    for run in &runs {
        train_to(tiny(&data, &["train.steps=2"]), run, None);
    }
    for file in run_dir::CHECKPOINT_FILES {
        let bytes: Vec<Vec<u8>> = runs
            .iter()
            .map(|r| std::fs::read(run_dir::checkpoint_dir(r, 2).join(file)).unwrap())
            .collect();
        assert!(bytes.windows(2).all(|w| w[0] == w[1]), "{file} differs");
    }
}

#[test]
fn outputs_never_overwrite_inputs_and_existing_files_need_force() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let collect_to =
        |out: &str, force: bool| collect(t, out, if force { &["--force"] } else { &[] });
    success(&collect_to("d.safetensors", false));
    let before = std::fs::read(t.join("d.safetensors")).unwrap();
    let err = failure(&collect_to("d.safetensors", false));
    assert!(
        err.contains("--out d.safetensors already exists") && err.contains("--force"),
        "{err}"
    );
    success(&collect_to("d.safetensors", true));
    assert_eq!(std::fs::read(t.join("d.safetensors")).unwrap(), before);
    // Checked before collecting: a folder, or a path under a file.
    std::fs::create_dir(t.join("folder")).unwrap();
    let err = failure(&collect_to("folder", true));
    assert!(
        err.contains("--out folder") && err.contains("found a folder"),
        "{err}"
    );
    let err = failure(&collect_to("d.safetensors/x.safetensors", false));
    assert!(err.contains("d.safetensors is not a folder"), "{err}");

    // dataset import onto its own source, also through a symlink.
    let source = t.join("src.hdf5");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/d4rl_basic.hdf5"),
        &source,
    )
    .unwrap();
    let original = std::fs::read(&source).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&source, t.join("link.hdf5")).unwrap();
    for out in ["src.hdf5", "link.hdf5"] {
        let err = failure(&cli(
            t,
            &[
                "dataset",
                "import",
                "--from",
                "d4rl",
                "src.hdf5",
                "--env",
                "Hopper-v4",
                "--out",
                out,
                "--force",
            ],
        ));
        assert!(err.contains("is the input src.hdf5"), "{err}");
    }
    assert_eq!(std::fs::read(&source).unwrap(), original);

    // eval --json onto the run's config, then onto an existing report.
    let cfg_file = t.join("exp.toml");
    std::fs::write(
        &cfg_file,
        tiny(&t.join("d.safetensors"), &["train.steps=2"])
            .to_toml_string()
            .unwrap(),
    )
    .unwrap();
    success(&cli(
        t,
        &["train", "--config", "exp.toml", "--run-dir", "run"],
    ));
    let config_before = std::fs::read(t.join("run/config.toml")).unwrap();
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--run", "run", "--episodes", "1"];
        args.extend(extra);
        cli(t, &args)
    };
    let err = failure(&eval(&["--json", "run/config.toml", "--force"]));
    assert!(err.contains("--json run/config.toml is the input"), "{err}");
    assert_eq!(
        std::fs::read(t.join("run/config.toml")).unwrap(),
        config_before
    );
    success(&eval(&["--json", "report.json"]));
    let err = failure(&eval(&["--json", "report.json"]));
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    success(&eval(&["--json", "report.json", "--force"]));
}

#[test]
fn eval_names_the_flag_or_file_behind_a_bad_agent_input() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (data, _) = pendulum(t, "p.safetensors");
    let run = t.join("run");
    train_to(tiny(&data, &["train.steps=2"]), &run, None);
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--run", "run", "--episodes", "1"];
        args.extend(extra);
        cli(t, &args)
    };
    let err = failure(&eval(&["--temperature", "0.5"]));
    assert!(
        err.contains("--temperature 0.5") && err.contains("continuous"),
        "{err}"
    );
    let err = failure(&eval(&["--targets", "1e300"]));
    assert!(
        err.contains("--targets") && err.contains("1e300") && err.contains("normalisation.json"),
        "{err}"
    );
    let norm = run_dir::checkpoint_dir(&run, 2).join(run_dir::NORMALISATION_FILE);
    let mut pre: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&norm).unwrap()).unwrap();
    pre["normalisation"]["obs_std"][1] = 0.0.into();
    std::fs::write(&norm, pre.to_string()).unwrap();
    let err = failure(&eval(&[]));
    assert!(
        err.contains("normalisation.json")
            && err.contains("normalisation.obs_std[1]")
            && err.contains("> 0")
            && err.contains("found 0"),
        "{err}"
    );
}

#[test]
fn resume_without_a_latest_pointer_continues_from_the_newest_complete_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, whole) = dataset_and_whole_run(tmp.path());
    let run = tmp.path().join("run");
    train_to(tiny(&data, &[]), &run, Some(11));
    // Killed after moving step-11 into place, before naming it in `latest`.
    std::fs::remove_file(run_dir::checkpoints(&run).join("latest")).unwrap();
    let done = train::resume(&run, &TrainOptions::default(), None).unwrap();
    assert_eq!(done.started, RunStart::Resumed { step: 11 });
    assert_eq!(params(&run, 12), params(&whole, 12));
}
