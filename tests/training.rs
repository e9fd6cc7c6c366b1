//! End-to-end tests of training: bit-for-bit reproducibility, exact resumption through
//! the command line, TensorBoard scalars read back from the event files, learning on a
//! collected dataset, checkpoint completeness and corruption errors, the evaluation
//! hook, and config errors reported by `flowrl train`.

use std::path::{Path, PathBuf};
use std::process::Command;

use flowrl::collect::collect_dataset;
use flowrl::config::{Config, Override};
use flowrl::data::{store, DatasetBuilder, Ending, Metadata, Provenance, Space};
use flowrl::logging::{read_scalars, tb_dir};
use flowrl::train::{self, run_dir, TrainOptions};
use flowrl_agents::params::ParamStore;
use flowrl_envs::Tier;

/// A tiny Decision-Flowformer run on `dataset`, with `--set`-style overrides.
fn config(dataset: &str, overrides: &[&str]) -> Config {
    let text = format!(
        r#"
seed = 7
[dataset]
{dataset}
[agent]
width = 16
layers = 2
heads = 2
context = 6
dropout = 0.1
[train]
steps = 24
batch = 8
lr = 1e-3
warmup_steps = 10
log_every = 5
checkpoint_every = 10
[eval]
episodes = 0
"#
    );
    let overrides: Vec<Override> = overrides.iter().map(|o| o.parse().unwrap()).collect();
    Config::from_toml_str(&text, "test config", &overrides).unwrap()
}

/// A small Pendulum-v1 dataset file (4 expert episodes of 200 steps) in `dir`.
fn pendulum_file(dir: &Path) -> PathBuf {
    let path = dir.join("pendulum.safetensors");
    let ds = collect_dataset("Pendulum-v1", Tier::MediumExpert, 4, 3, &mut |_| {}).unwrap();
    store::save(&ds, &path).unwrap();
    path
}

/// A discrete dataset with short episodes (lengths 3 to 8): observation `[t, e]`,
/// action `t % 3`, reward 1 per step.
fn discrete_file(dir: &Path) -> PathBuf {
    let path = dir.join("discrete.safetensors");
    let mut b = DatasetBuilder::new(2, 1, true);
    for (e, len) in [3usize, 8, 5, 4, 7, 6].into_iter().enumerate() {
        for t in 0..len {
            b.push_discrete(&[t as f32, e as f32], t % 3, 1.0);
        }
        b.end_episode(Ending::Terminated);
    }
    let ds = b
        .build(Metadata {
            env_id: "Synthetic-v0".into(),
            observation_space: Space::unbounded(2),
            action_space: Space::Discrete { n: 3 },
            provenance: Provenance {
                source: "test".into(),
                episodes: 6,
                ..Provenance::default()
            },
            reference_returns: None,
        })
        .unwrap();
    store::save(&ds, &path).unwrap();
    path
}

fn path_line(path: &Path) -> String {
    format!("path = {:?}", path.display().to_string())
}

fn run(cfg: Config, dir: &Path, stop_at: Option<u64>) -> train::TrainOutcome {
    train::start(cfg, dir, &TrainOptions { stop_at }, None).unwrap()
}

fn losses(dir: &Path) -> Vec<u32> {
    train::read_train_log(dir)
        .unwrap()
        .iter()
        .map(|r| r.loss.to_bits())
        .collect()
}

/// Every parameter's name and value bits at the checkpoint of `step` (the safetensors
/// header's metadata order is not fixed, so files are compared by content).
fn param_bits(dir: &Path, step: u64) -> Vec<(String, Vec<u32>)> {
    bits_of(train::load(dir, Some(step)).unwrap().agent.params())
}

/// Every parameter's name and value bits.
fn bits_of(params: &ParamStore<f32, dfdx::prelude::Cpu>) -> Vec<(String, Vec<u32>)> {
    params
        .ids()
        .map(|id| {
            let bits = params.values(id).into_iter().map(f32::to_bits).collect();
            (params.name(id).to_string(), bits)
        })
        .collect()
}

fn checkpoint_bytes(dir: &Path, step: u64, file: &str) -> Vec<u8> {
    std::fs::read(run_dir::checkpoint_dir(dir, step).join(file)).unwrap()
}

fn flowrl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flowrl"))
}

#[test]
fn same_seed_gives_the_same_loss_curve_bit_for_bit_and_another_seed_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = path_line(&pendulum_file(tmp.path()));
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    run(config(&data, &[]), &a, None);
    run(config(&data, &[]), &b, None);
    run(config(&data, &["seed=8"]), &c, None);
    let (la, lb, lc) = (losses(&a), losses(&b), losses(&c));
    assert_eq!(la.len(), 24);
    assert_eq!(
        la, lb,
        "same config and seed must give the same losses bit for bit"
    );
    assert_ne!(la, lc, "another seed must give another loss curve");
    assert!(param_bits(&a, 24) == param_bits(&b, 24));
}

#[test]
fn interrupted_then_resumed_run_ends_bit_identical_to_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = pendulum_file(tmp.path());
    let whole = tmp.path().join("whole");
    let done = run(config(&path_line(&data), &[]), &whole, None);
    assert!(done.finished());

    // The same run through the command line, stopped at step 13 and resumed.
    let cfg_file = tmp.path().join("run.toml");
    std::fs::write(
        &cfg_file,
        config(&path_line(&data), &[]).to_toml_string().unwrap(),
    )
    .unwrap();
    let parts = tmp.path().join("parts");
    let out = flowrl()
        .args(["train", "--config"])
        .arg(&cfg_file)
        .arg("--run-dir")
        .arg(&parts)
        .args(["--stop-at", "13"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped at step 13/24"));
    assert_eq!(run_dir::checkpoint_steps(&parts).unwrap(), vec![10, 13]);
    assert_eq!(run_dir::latest_step(&parts).unwrap(), 13);
    let out = flowrl()
        .args(["train", "--resume"])
        .arg(&parts)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("finished at step 24/24"));

    assert!(
        param_bits(&whole, 24) == param_bits(&parts, 24),
        "parameters differ between the resumed and the uninterrupted run"
    );
    assert!(
        checkpoint_bytes(&whole, 24, run_dir::OPTIMIZER_FILE)
            == checkpoint_bytes(&parts, 24, run_dir::OPTIMIZER_FILE),
        "optimiser state differs between the resumed and the uninterrupted run"
    );
    assert_eq!(losses(&whole), losses(&parts));
    // The resumed run logged the steps after the interruption to TensorBoard too.
    let steps: Vec<u64> = read_scalars(&tb_dir(&parts))
        .unwrap()
        .into_iter()
        .filter(|s| s.tag == "train/loss")
        .map(|s| s.step)
        .collect();
    assert_eq!(steps, vec![5, 10, 13, 15, 20, 24]);
}

#[test]
fn tensorboard_scalars_read_back_with_the_warm_up_slope() {
    let tmp = tempfile::tempdir().unwrap();
    let data = path_line(&pendulum_file(tmp.path()));
    let dir = tmp.path().join("run");
    run(config(&data, &["train.steps=20"]), &dir, None);
    let scalars = read_scalars(&tb_dir(&dir)).unwrap();
    let series = |tag: &str| -> Vec<(u64, f32)> {
        scalars
            .iter()
            .filter(|s| s.tag == tag)
            .map(|s| (s.step, s.value))
            .collect()
    };
    // Learning rate: lr * step / warm-up until step 10, then lr.
    assert_eq!(
        series("train/lr"),
        vec![(5, 5e-4), (10, 1e-3), (15, 1e-3), (20, 1e-3)]
    );
    // Loss: the mean of the per-step losses of each logging interval.
    let log = train::read_train_log(&dir).unwrap();
    let loss = series("train/loss");
    assert_eq!(
        loss.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![5, 10, 15, 20]
    );
    for (i, (_, value)) in loss.iter().enumerate() {
        let mean = log[i * 5..(i + 1) * 5]
            .iter()
            .map(|r| f64::from(r.loss))
            .sum::<f64>()
            / 5.0;
        assert_eq!(*value, mean as f32);
    }
    let norms = series("train/grad_norm");
    assert_eq!(norms.len(), 4);
    assert!(norms.iter().all(|(_, v)| v.is_finite() && *v > 0.0));
    let rates = series("train/steps_per_s");
    assert_eq!(rates.len(), 4);
    assert!(rates.iter().all(|(_, v)| v.is_finite() && *v > 0.0));
}

#[test]
fn loss_decreases_on_a_collected_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let cfg = config(
        "env = \"Pendulum-v1\"\ntier = \"expert\"\nepisodes = 4\nseed = 5",
        &[
            "train.steps=150",
            "train.batch=16",
            "train.checkpoint_every=0",
        ],
    );
    let out = run(cfg, &dir, None);
    assert!(out.finished());
    assert!(
        dir.join(run_dir::COLLECTED_DATASET).is_file(),
        "the collected dataset is kept with the run"
    );
    let log = train::read_train_log(&dir).unwrap();
    let mean =
        |r: &[train::StepRecord]| r.iter().map(|r| f64::from(r.loss)).sum::<f64>() / r.len() as f64;
    let (first, last) = (mean(&log[..10]), mean(&log[log.len() - 20..]));
    assert!(
        last < 0.5 * first,
        "loss should fall: first steps {first}, last steps {last}"
    );
    assert_eq!(run_dir::checkpoint_steps(&dir).unwrap(), vec![150]);
}

#[test]
fn checkpoints_are_complete_and_damage_is_reported_with_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = path_line(&pendulum_file(tmp.path()));
    let dir = tmp.path().join("run");
    run(
        config(&data, &["train.steps=12", "train.checkpoint_every=5"]),
        &dir,
        None,
    );
    assert_eq!(run_dir::checkpoint_steps(&dir).unwrap(), vec![5, 10, 12]);
    for step in [5, 10, 12] {
        let mut files: Vec<String> = std::fs::read_dir(run_dir::checkpoint_dir(&dir, step))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let mut want = run_dir::CHECKPOINT_FILES.map(String::from).to_vec();
        want.sort();
        assert_eq!(files, want, "checkpoint {step}");
    }
    let loaded = train::load(&dir, None).unwrap();
    assert_eq!(loaded.step, 12);
    assert_eq!(loaded.context(), 6);
    assert_eq!(loaded.reward_scale(), 1000.0);
    assert_eq!(loaded.preprocessing.env_id, "Pendulum-v1");
    assert_eq!(loaded.preprocessing.max_episode_length, 200);
    assert_eq!(loaded.preprocessing.normalisation.obs_mean.len(), 3);
    assert_eq!(train::load(&dir, Some(5)).unwrap().state.step, 5);
    let err = format!("{:#}", train::load(&dir, Some(7)).err().unwrap());
    assert!(err.contains("no checkpoint at step 7"), "{err}");

    let step10 = run_dir::checkpoint_dir(&dir, 10);
    let params = step10.join(run_dir::PARAMS_FILE);
    let bytes = std::fs::read(&params).unwrap();
    std::fs::write(&params, &bytes[..bytes.len() / 2]).unwrap();
    let err = format!("{:#}", train::load(&dir, Some(10)).err().unwrap());
    assert!(
        err.contains(&params.display().to_string()) && err.contains("corrupt"),
        "{err}"
    );

    let state = step10.join(run_dir::STATE_FILE);
    std::fs::write(&state, "{\"format\": 1, \"step\":").unwrap();
    let err = format!("{:#}", train::load(&dir, Some(10)).err().unwrap());
    assert!(err.contains(&state.display().to_string()), "{err}");

    let norm = run_dir::checkpoint_dir(&dir, 5).join(run_dir::NORMALISATION_FILE);
    std::fs::remove_file(&norm).unwrap();
    let err = format!("{:#}", train::load(&dir, Some(5)).err().unwrap());
    assert!(
        err.contains("incomplete") && err.contains(run_dir::NORMALISATION_FILE),
        "{err}"
    );

    let latest = run_dir::checkpoints(&dir).join(run_dir::LATEST_FILE);
    std::fs::write(&latest, "step-12").unwrap();
    let opt = run_dir::checkpoint_dir(&dir, 12).join(run_dir::OPTIMIZER_FILE);
    std::fs::write(&opt, b"not safetensors").unwrap();
    let err = format!(
        "{:#}",
        train::resume(&dir, &TrainOptions::default(), None)
            .err()
            .unwrap()
    );
    assert!(err.contains(&opt.display().to_string()), "{err}");
}

#[test]
fn evaluation_hook_runs_on_schedule_and_is_logged_as_eval_scalars() {
    let tmp = tempfile::tempdir().unwrap();
    let data = path_line(&pendulum_file(tmp.path()));
    let dir = tmp.path().join("run");
    let cfg = config(
        &data,
        &["train.steps=12", "eval.every=5", "eval.episodes=1"],
    );
    let mut calls = Vec::new();
    let mut hook = |_: &Path,
                    step: u64,
                    agent: &flowrl_agents::agent::Agent<f32, dfdx::prelude::Cpu>,
                    prep: &train::Preprocessing| {
        calls.push((step, agent.config().context, prep.env_id.clone()));
        Ok(vec![("score".to_string(), step as f64 * 2.0)])
    };
    train::start(cfg, &dir, &TrainOptions::default(), Some(&mut hook)).unwrap();
    assert_eq!(
        calls,
        vec![
            (5, 6, "Pendulum-v1".into()),
            (10, 6, "Pendulum-v1".into()),
            (12, 6, "Pendulum-v1".into())
        ]
    );
    let eval: Vec<(u64, f32)> = read_scalars(&tb_dir(&dir))
        .unwrap()
        .into_iter()
        .filter(|s| s.tag == "eval/score")
        .map(|s| (s.step, s.value))
        .collect();
    assert_eq!(eval, vec![(5, 10.0), (10, 20.0), (12, 24.0)]);
}

#[test]
fn cli_reports_bad_configs_bad_overrides_and_bad_run_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let stderr = |args: &[&str]| {
        let out = flowrl().arg("train").args(args).output().unwrap();
        assert!(!out.status.success(), "flowrl train {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "seed = 1\n[train]\nstep = 10\n").unwrap();
    let bad = bad.to_str().unwrap();
    let err = stderr(&["--config", bad]);
    assert!(
        err.contains("train.step") && err.contains("bad.toml"),
        "{err}"
    );

    let good = tmp.path().join("good.toml");
    std::fs::write(&good, "[dataset]\npath = \"nowhere.safetensors\"\n").unwrap();
    let good = good.to_str().unwrap();
    let err = stderr(&["--config", good, "--set", "train.lr=-1"]);
    assert!(err.contains("train.lr") && err.contains("> 0"), "{err}");
    let err = stderr(&["--config", good, "--set", "agent.width"]);
    assert!(err.contains("--set agent.width"), "{err}");
    let err = stderr(&["--config", good, "--set", "agent.kind=gpt"]);
    assert!(
        err.contains("agent.kind") && err.contains("decision-flowformer"),
        "{err}"
    );
    let run = tmp.path().join("run");
    let err = stderr(&["--config", good, "--run-dir", run.to_str().unwrap()]);
    assert!(err.contains("nowhere.safetensors"), "{err}");
    assert!(!run.exists(), "a failed start must not leave its folder");

    let missing = tmp.path().join("missing");
    let err = stderr(&["--resume", missing.to_str().unwrap()]);
    assert!(
        err.contains("not a run folder") && err.contains("missing"),
        "{err}"
    );
    std::fs::create_dir_all(run_dir::checkpoints(&run)).unwrap();
    std::fs::write(
        run.join("config.toml"),
        "[dataset]\npath = \"nowhere.safetensors\"\n",
    )
    .unwrap();
    // No checkpoint yet: --resume starts from step 0 (and needs the dataset).
    let err = stderr(&["--resume", run.to_str().unwrap()]);
    assert!(
        err.contains("nowhere.safetensors") && err.contains("cannot resume"),
        "{err}"
    );
    std::fs::create_dir_all(run_dir::checkpoints(&run)).unwrap();
    std::fs::write(run_dir::checkpoints(&run).join("latest"), "step-3\n").unwrap();
    let err = stderr(&["--config", good, "--run-dir", run.to_str().unwrap()]);
    assert!(
        err.contains("already holds a run with a checkpoint") && err.contains("--resume"),
        "{err}"
    );
}

#[test]
fn episode_context_trains_on_whole_episodes_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = path_line(&discrete_file(tmp.path()));
    let cfg = || config(&data, &["agent.context_mode=episode", "train.steps=12"]);
    let (whole, parts) = (tmp.path().join("whole"), tmp.path().join("parts"));
    run(cfg(), &whole, None);
    assert!(!run(cfg(), &parts, Some(7)).finished());
    let resumed = train::resume(&parts, &TrainOptions::default(), None).unwrap();
    assert_eq!(resumed.step, 12);
    assert_eq!(losses(&whole), losses(&parts));
    assert!(param_bits(&whole, 12) == param_bits(&parts, 12));
    assert!(
        checkpoint_bytes(&whole, 12, run_dir::OPTIMIZER_FILE)
            == checkpoint_bytes(&parts, 12, run_dir::OPTIMIZER_FILE)
    );
    let loaded = train::load(&whole, None).unwrap();
    assert_eq!(
        loaded.context(),
        8,
        "episode mode: K is the longest episode"
    );
    assert_eq!(loaded.preprocessing.max_episode_length, 8);
    assert_eq!(
        loaded.preprocessing.actions,
        train::ActionScaling::Discrete { n: 3 }
    );
    // Resuming a finished run does nothing and reports it finished.
    let again = train::resume(&whole, &TrainOptions::default(), None).unwrap();
    assert!(again.finished());
    assert_eq!(losses(&whole).len(), 12);
}

#[test]
fn every_agent_kind_trains_reproducibly_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = path_line(&pendulum_file(tmp.path()));
    for kind in ["decision-flowformer", "decision-transformer", "mlp-bc"] {
        let set = format!("agent.kind={kind}");
        let cfg = || config(&data, &[&set, "train.steps=8"]);
        let (whole, parts) = (
            tmp.path().join(format!("{kind}-whole")),
            tmp.path().join(format!("{kind}-parts")),
        );
        run(cfg(), &whole, None);
        run(cfg(), &parts, Some(3));
        train::resume(&parts, &TrainOptions::default(), None).unwrap();
        assert_eq!(losses(&whole), losses(&parts), "{kind}");
        assert!(param_bits(&whole, 8) == param_bits(&parts, 8), "{kind}");
    }
}

#[test]
fn failing_evaluation_stops_training_with_a_resumable_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = path_line(&pendulum_file(tmp.path()));
    let dir = tmp.path().join("run");
    let cfg = config(
        &data,
        &["train.steps=12", "eval.every=7", "eval.episodes=1"],
    );
    let mut hook = |_: &Path,
                    step: u64,
                    _: &flowrl_agents::agent::Agent<f32, dfdx::prelude::Cpu>,
                    _: &train::Preprocessing| {
        anyhow::ensure!(step < 7, "no such environment");
        Ok(Vec::new())
    };
    let err = train::start(cfg, &dir, &TrainOptions::default(), Some(&mut hook)).unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("evaluation at step 7") && err.contains("no such environment"),
        "{err}"
    );
    assert_eq!(run_dir::latest_step(&dir).unwrap(), 7);
    let done = train::resume(&dir, &TrainOptions::default(), None).unwrap();
    assert!(done.finished());
    assert_eq!(losses(&dir).len(), 12);
}

#[test]
fn cli_train_prints_each_evaluation_and_writes_its_json_report() {
    let tmp = tempfile::tempdir().unwrap();
    let data = pendulum_file(tmp.path());
    let cfg = config(
        &path_line(&data),
        &[
            "train.steps=12",
            "eval.every=8",
            "eval.episodes=2",
            "eval.seed=5",
        ],
    );
    let file = tmp.path().join("exp.toml");
    std::fs::write(&file, cfg.to_toml_string().unwrap()).unwrap();
    let dir = tmp.path().join("run");
    let out = flowrl()
        .args(["train", "--config", file.to_str().unwrap(), "--run-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The table of `flowrl eval` after step 8 and after the last step, each with its file.
    for step in [8, 12] {
        let json = dir.join(format!("eval/step-{step}-window-seed-5.json"));
        assert!(
            stdout.contains(&format!("checkpoint step {step}"))
                && stdout.contains(&format!("wrote {}", json.display())),
            "{stdout}"
        );
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(report["checkpoint_step"], step);
        assert_eq!(report["seed"], 5);
        assert_eq!(report["targets"][0]["episodes"], 2);
    }
    assert_eq!(stdout.matches("return (mean ± std)").count(), 2, "{stdout}");
    assert_eq!(std::fs::read_dir(dir.join("eval")).unwrap().count(), 2);
}

#[test]
fn init_from_copies_parameters_stretches_the_timestep_table_and_rejects_mismatches() {
    let tmp = tempfile::tempdir().unwrap();
    let data = path_line(&pendulum_file(tmp.path()));
    let source = tmp.path().join("source");
    run(
        config(&data, &["train.steps=10", "agent.max_episode_length=50"]),
        &source,
        None,
    );
    let trained = param_bits(&source, 10);

    // A checkpoint folder or a run folder; the timestep table 50 -> 200 rows, stretched.
    let warm = tmp.path().join("warm");
    let from = run_dir::checkpoint_dir(&source, 10);
    let cfg = config(
        &data,
        &[
            "train.steps=1",
            "agent.max_episode_length=200",
            &format!("train.init_from={:?}", from.display().to_string()),
        ],
    );
    let seen = std::sync::Mutex::new(Vec::new());
    let mut hook = |_: &Path,
                    _: u64,
                    agent: &flowrl_agents::agent::Agent<f32, dfdx::prelude::Cpu>,
                    _: &train::Preprocessing| {
        seen.lock().unwrap().extend(bits_of(agent.params()));
        Ok(Vec::new())
    };
    // The hook sees the parameters after one update at a learning rate of 1e-12, which
    // moves no parameter measurably.
    let cfg = Config {
        train: flowrl::config::TrainConfig {
            lr: 1e-12,
            weight_decay: 0.0,
            ..cfg.train
        },
        eval: flowrl::config::EvalConfig {
            episodes: 1,
            every: 0,
            ..cfg.eval
        },
        ..cfg
    };
    train::start(cfg, &warm, &TrainOptions::default(), Some(&mut hook)).unwrap();
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), trained.len());
    for ((name, old), (new_name, new)) in trained.iter().zip(&seen) {
        assert_eq!(name, new_name);
        if name == "embed_timestep.weight" {
            let width = 16;
            assert_eq!((old.len(), new.len()), (50 * width, 200 * width));
            for t in [0usize, 1, 2, 100, 199] {
                let r = train::warm_start::stretched_row(t, 50, 200);
                assert_eq!(
                    &new[t * width..(t + 1) * width],
                    &old[r * width..(r + 1) * width]
                );
            }
            assert_eq!(train::warm_start::stretched_row(199, 50, 200), 49);
        } else {
            // One step at lr 1e-12 moves no f32 parameter of this size measurably.
            let moved = old
                .iter()
                .zip(new)
                .filter(|(a, b)| (f32::from_bits(**a) - f32::from_bits(**b)).abs() > 1e-6)
                .count();
            assert_eq!(moved, 0, "{name}");
        }
    }

    // Mismatches name the parameter, both shapes, or the kind.
    let err = |overrides: &[&str]| {
        let mut o = vec!["train.steps=1".to_string()];
        o.push(format!(
            "train.init_from={:?}",
            source.display().to_string()
        ));
        o.extend(overrides.iter().map(|s| s.to_string()));
        let o: Vec<&str> = o.iter().map(String::as_str).collect();
        let dir = tempfile::tempdir().unwrap();
        let e = train::start(
            config(&data, &o),
            dir.path(),
            &TrainOptions::default(),
            None,
        )
        .unwrap_err();
        format!("{e:#}")
    };
    let e = err(&["agent.width=32"]);
    assert!(
        e.contains("train.init_from") && e.contains("[16]") && e.contains("[32]"),
        "{e}"
    );
    let e = err(&["agent.layers=1"]);
    assert!(
        e.contains("does not have") || e.contains("has no parameter"),
        "{e}"
    );
    let e = err(&["agent.kind=\"decision-transformer\""]);
    assert!(
        e.contains("DecisionFlowformer") && e.contains("DecisionTransformer"),
        "{e}"
    );
    let e = err(&["train.init_from=\"nowhere\""]);
    assert!(e.contains("nowhere") && e.contains("no such folder"), "{e}");
    // A checkpoint's files outside `<run>/checkpoints/` name no run.
    let copied = tmp.path().join("best/step-10");
    std::fs::create_dir_all(&copied).unwrap();
    for file in std::fs::read_dir(&from).unwrap() {
        let file = file.unwrap().path();
        std::fs::copy(&file, copied.join(file.file_name().unwrap())).unwrap();
    }
    let e = err(&[&format!(
        "train.init_from={:?}",
        copied.display().to_string()
    )]);
    assert!(e.contains("is not a checkpoint folder"), "{e}");

    // A failed warm start leaves nothing that stops a corrected start in its folder.
    let retry = tmp.path().join("retry");
    let bad = config(&data, &["train.steps=1", "train.init_from=\"nowhere\""]);
    train::start(bad, &retry, &TrainOptions::default(), None).unwrap_err();
    let good = config(&data, &["train.steps=1"]);
    train::start(good, &retry, &TrainOptions::default(), None).unwrap();
}
