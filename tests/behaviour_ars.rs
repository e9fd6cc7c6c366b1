//! ARS behaviour policies (`flowrl::behaviour`): the update step against a hand
//! computation, snapshot round trips, bit-exact resumption after a stop, results
//! independent of the thread count, and a short real learning check on Hopper-v5
//! (needs `flowrl setup mujoco`; skipped with the reason otherwise, unless
//! `FLOWRL_REQUIRE_MUJOCO=1`).

use std::path::Path;
use std::process::Command;

use flowrl::behaviour::{
    ars_update, read_log, resume, run, start, ArsConfig, BehaviourPolicy, DirectionReturns,
    TrainOptions,
};
use flowrl::data::{store, Dataset};
use flowrl_envs::Action;

/// A tiny Pendulum run: 4 directions, 2 kept, short evaluations.
fn tiny(iterations: u64) -> ArsConfig {
    let mut c = ArsConfig::defaults("Pendulum-v1", 7);
    c.directions = 4;
    c.top = 2;
    c.horizon = 60;
    c.iterations = iterations;
    c.eval_every = 2;
    c.eval_episodes = 3;
    c.checkpoint_every = 2;
    c.milestone_step = 50.0;
    c
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The arrays and metadata of two datasets are equal (the file bytes are not compared:
/// the native format's metadata order is not fixed).
fn assert_same_dataset(a: &Dataset, b: &Dataset, what: &str) {
    assert_eq!(a.observations(), b.observations(), "{what}: observations");
    assert_eq!(a.actions(), b.actions(), "{what}: actions");
    assert_eq!(a.rewards(), b.rewards(), "{what}: rewards");
    assert_eq!(a.terminated(), b.terminated(), "{what}: terminated");
    assert_eq!(a.truncated(), b.truncated(), "{what}: truncated");
    assert_eq!(a.episode_offsets(), b.episode_offsets(), "{what}: offsets");
    assert_eq!(a.meta(), b.meta(), "{what}: metadata");
}

/// Every output of two finished runs of `iterations` iterations is the same.
fn assert_same_runs(a: &Path, b: &Path, iterations: u64) {
    assert_eq!(
        read(&a.join(run::LOG_FILE)),
        read(&b.join(run::LOG_FILE)),
        "log.csv"
    );
    for name in ["best", "final"] {
        assert_eq!(
            read(&run::snapshot_path(a, name)),
            read(&run::snapshot_path(b, name)),
            "snapshot {name}"
        );
    }
    for i in 1..=iterations {
        let (x, y) = (run::rollouts_path(a, i), run::rollouts_path(b, i));
        assert_same_dataset(
            &store::load(&x).unwrap(),
            &store::load(&y).unwrap(),
            &format!("rollouts of iteration {i}"),
        );
    }
    assert!(!run::rollouts_path(b, iterations + 1).exists());
}

#[test]
fn update_matches_the_hand_computed_step() {
    // M is 1x2; three directions, b = 2.
    let deltas = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
    let returns = [
        DirectionReturns {
            plus: 0.0,
            minus: 4.0,
        },
        DirectionReturns {
            plus: 4.0,
            minus: 0.0,
        },
        DirectionReturns {
            plus: 1.0,
            minus: 2.0,
        },
    ];
    // Kept: 0 and 1 (max 4 each, ties by index); returns {0, 4, 4, 0}: sigma_R = 2.
    // Step: 0.5 / (2 * 2) * ((0 - 4) [1, 0] + (4 - 0) [0, 1]) = [-0.5, 0.5].
    let mut m = [0.5, -1.0];
    let stats = ars_update(&mut m, &deltas, &returns, 2, 0.5).unwrap();
    assert_eq!(stats.selected, vec![0, 1]);
    assert_eq!(stats.reward_std, 2.0);
    assert_eq!(m, [0.0, -0.5]);

    // Direction 2 now ranks first (max 9), then 1 (max 4); returns {9, 1, 4, 0}:
    // mean 3.5, sigma_R = sqrt((30.25 + 6.25 + 0.25 + 12.25) / 4) = sqrt(12.25) = 3.5.
    // Step: 0.7 / (2 * 3.5) * ((9 - 1) [1, 1] + (4 - 0) [0, 1]) = 0.1 * [8, 12].
    let returns = [
        DirectionReturns {
            plus: 0.0,
            minus: 3.0,
        },
        DirectionReturns {
            plus: 4.0,
            minus: 0.0,
        },
        DirectionReturns {
            plus: 9.0,
            minus: 1.0,
        },
    ];
    let mut m = [0.0, 0.0];
    let stats = ars_update(&mut m, &deltas, &returns, 2, 0.7).unwrap();
    assert_eq!(stats.selected, vec![2, 1]);
    assert_eq!(stats.reward_std, 3.5);
    let want = [0.7 / 7.0 * 8.0, 0.7 / 7.0 * 12.0];
    for (got, want) in m.iter().zip(want) {
        assert!((got - want).abs() < 1e-15, "{m:?} vs {want}");
    }

    // Equal kept returns: sigma_R = 0 and M stays; bad sizes and returns are errors.
    let flat = [DirectionReturns {
        plus: 1.0,
        minus: 1.0,
    }; 3];
    let mut m = [0.25, 0.5];
    assert_eq!(
        ars_update(&mut m, &deltas, &flat, 3, 1.0)
            .unwrap()
            .reward_std,
        0.0
    );
    assert_eq!(m, [0.25, 0.5]);
    assert!(ars_update(&mut m, &deltas[..4], &returns, 2, 0.1).is_err());
    assert!(ars_update(&mut m, &deltas, &returns, 4, 0.1).is_err());
    let nan = [DirectionReturns {
        plus: f64::NAN,
        minus: 0.0,
    }; 3];
    assert!(ars_update(&mut m, &deltas, &nan, 1, 0.1).is_err());
}

#[test]
fn snapshots_round_trip_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    start(tiny(4), &out, &TrainOptions::default()).unwrap();
    let path = run::snapshot_path(&out, "final");
    let policy = BehaviourPolicy::load(&path).unwrap();
    assert_eq!(policy.info().env_id, "Pendulum-v1");
    assert_eq!((policy.info().iteration, policy.info().seed), (4, 7));
    assert_eq!(policy.info().episodes, 4 * 8);
    assert_eq!((policy.obs_dim(), policy.act_dim()), (3, 1));
    assert!(policy.weights().iter().any(|&w| w != 0.0), "M moved");
    let last = read_log(&out).unwrap().pop().unwrap();
    assert_eq!(Some(policy.info().eval_return), last.eval_return);
    assert_eq!(policy.info().env_steps, last.env_steps);

    // Milestones: each `return-<m>` policy evaluated in [m, m + 50), m increasing with
    // the iteration; `best` holds the highest return.
    let mut milestones = Vec::new();
    for entry in std::fs::read_dir(out.join(run::SNAPSHOTS_DIR)).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(m) = name
            .strip_prefix("return-")
            .and_then(|n| n.strip_suffix(".safetensors"))
        else {
            continue;
        };
        let m: f64 = match m.strip_prefix("minus") {
            Some(abs) => -abs.parse::<f64>().unwrap(),
            None => m.parse().unwrap(),
        };
        let p = BehaviourPolicy::load(&out.join(run::SNAPSHOTS_DIR).join(&name)).unwrap();
        let ret = p.info().eval_return;
        assert!(m <= ret && ret < m + 50.0, "{name}: return {ret}");
        milestones.push((p.info().iteration, m));
    }
    assert!(!milestones.is_empty(), "iteration 0 saves its milestone");
    milestones.sort_by_key(|&(i, _)| i);
    assert!(
        milestones.windows(2).all(|w| w[0].1 < w[1].1),
        "{milestones:?}"
    );
    let evals: Vec<f64> = read_log(&out)
        .unwrap()
        .iter()
        .filter_map(|r| r.eval_return)
        .collect();
    let best = BehaviourPolicy::load(&run::snapshot_path(&out, "best")).unwrap();
    assert_eq!(
        best.info().eval_return,
        evals.iter().copied().fold(f64::MIN, f64::max)
    );

    // Re-saving gives the same bytes; the reloaded policy acts the same.
    let bytes = read(&path);
    assert_eq!(policy.to_bytes(), bytes);
    let copy = dir.path().join("copy.safetensors");
    policy.save(&copy).unwrap();
    assert_eq!(read(&copy), bytes);
    let again = BehaviourPolicy::load(&copy).unwrap();
    assert_eq!(again, policy);
    for obs in [[1.0f32, 0.0, 0.0], [0.3, -0.9, 4.0], [-1.0, 0.1, -8.0]] {
        assert_eq!(again.act(&obs), policy.act(&obs));
        // act is clip(M (s - mu) / sigma) within the action bounds.
        let z: f64 = (0..3)
            .map(|j| {
                policy.weights()[j] * (f64::from(obs[j]) - policy.obs_mean()[j])
                    / policy.obs_std()[j]
            })
            .sum();
        let (lo, hi) = policy.action_bounds();
        assert_eq!((lo, hi), (-2.0, 2.0));
        assert_eq!(
            policy.act(&obs),
            Action::Continuous(vec![z.clamp(-2.0, 2.0) as f32])
        );
    }

    // Validation: a non-finite weight and a truncated file are refused, naming the problem.
    let mut bad = bytes.clone();
    let n = bad.len();
    bad[n - 8..].copy_from_slice(&f64::NAN.to_le_bytes());
    let err = format!("{:#}", BehaviourPolicy::from_bytes(&bad).unwrap_err());
    assert!(err.contains("weights") && err.contains("finite"), "{err}");
    std::fs::write(&copy, &bytes[..n - 3]).unwrap();
    let err = format!("{:#}", BehaviourPolicy::load(&copy).unwrap_err());
    assert!(err.contains("copy.safetensors"), "{err}");
}

#[test]
fn resumed_run_matches_an_uninterrupted_one_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (straight, split) = (dir.path().join("straight"), dir.path().join("split"));
    let whole = start(tiny(6), &straight, &TrainOptions::default()).unwrap();
    assert!(whole.finished());

    let stopped = start(tiny(6), &split, &TrainOptions { stop_at: Some(2) }).unwrap();
    assert_eq!((stopped.iteration, stopped.finished()), (2, false));
    assert!(!run::snapshot_path(&split, "final").exists());
    // Simulate a kill during iteration 4: iteration 3 ran (rollouts, log) after the
    // checkpoint of iteration 2, which is the one left on disk.
    let ckpt = split.join("checkpoint.safetensors");
    let at_two = read(&ckpt);
    resume(&split, None, &TrainOptions { stop_at: Some(3) }).unwrap();
    assert!(run::rollouts_path(&split, 3).exists());
    std::fs::write(&ckpt, at_two).unwrap();

    let resumed = resume(&split, None, &TrainOptions::default()).unwrap();
    assert!(resumed.finished());
    assert_eq!(bits(&resumed.weights), bits(&whole.weights));
    assert_eq!(resumed.env_steps, whole.env_steps);
    assert_eq!(
        resumed.best_return.map(f64::to_bits),
        whole.best_return.map(f64::to_bits)
    );
    assert_same_runs(&straight, &split, 6);
    assert_eq!(read_log(&split).unwrap().len(), 7);

    // Extending a finished run continues it; shrinking below what is done is refused.
    let err = resume(&split, Some(5), &TrainOptions::default()).unwrap_err();
    assert!(err.to_string().contains("--iterations"), "{err}");
    let longer = resume(&split, Some(7), &TrainOptions::default()).unwrap();
    assert_eq!(longer.iteration, 7);
    // A new run refuses a folder that holds one.
    let err = start(tiny(6), &straight, &TrainOptions::default()).unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut outcomes = Vec::new();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let out = dir.path().join(format!("threads{threads}"));
        outcomes.push(pool.install(|| start(tiny(4), &out, &TrainOptions::default()).unwrap()));
    }
    assert_eq!(bits(&outcomes[0].weights), bits(&outcomes[1].weights));
    let (one, two) = (dir.path().join("threads1"), dir.path().join("threads2"));
    assert_same_runs(&one, &two, 4);

    // The stored rollouts are the learner's: 2N episodes per iteration whose mean
    // return is the logged rollout return.
    let log = read_log(&one).unwrap();
    for row in &log[1..] {
        let ds = store::load(&run::rollouts_path(&one, row.iteration)).unwrap();
        assert_eq!(ds.num_episodes(), 8);
        assert_eq!(ds.meta().env_id, "Pendulum-v1");
        let mean = ds.episode_returns().iter().sum::<f64>() / 8.0;
        let logged = row.rollout_return.unwrap();
        assert!(
            (mean - logged).abs() < 1e-3 * logged.abs(),
            "{mean} vs {logged}"
        );
    }
    assert_eq!(log.last().unwrap().episodes, 32);
    assert!(one.join(run::CURVE_FILE).is_file());
    let scalars = flowrl::logging::read_scalars(&flowrl::logging::tb_dir(&one)).unwrap();
    for tag in [
        "behaviour/eval_return",
        "behaviour/rollout_return",
        "behaviour/env_steps",
    ] {
        assert!(
            scalars.iter().any(|s| s.tag == tag),
            "no `{tag}` in TensorBoard"
        );
    }
}

#[test]
fn bad_flags_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let flowrl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_flowrl"))
            .args(["behaviour", "train"])
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = flowrl(&["--env", "Pendulum-v1", "--out", "a", "--top", "9"]);
    assert!(err.contains("--top") && err.contains("found 9"), "{err}");
    let err = flowrl(&["--env", "CartPole-v1", "--out", "b"]);
    assert!(
        err.contains("--env CartPole-v1") && err.contains("discrete"),
        "{err}"
    );
    let err = flowrl(&["--resume", "nowhere"]);
    assert!(err.contains("nowhere"), "{err}");
}

#[test]
fn hopper_learns_in_a_few_iterations() {
    if !flowrl_envs::mujoco::ready_or_skip("the Hopper-v5 learning check") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hopper");
    let mut c = ArsConfig::defaults("Hopper-v5", 0);
    c.iterations = 20;
    c.eval_every = 5;
    c.eval_episodes = 4;
    assert_eq!(c.reward_shift, 1.0);
    let outcome = start(c, &out, &TrainOptions::default()).unwrap();
    let log = read_log(&out).unwrap();
    let evals: Vec<f64> = log.iter().filter_map(|r| r.eval_return).collect();
    let (first, best) = (evals[0], outcome.best_return.unwrap());
    assert!(
        best > first + 50.0 && *evals.last().unwrap() > first,
        "evaluated returns {evals:?} do not improve on iteration 0"
    );
    let best_policy = BehaviourPolicy::load(&run::snapshot_path(&out, "best")).unwrap();
    assert_eq!(best_policy.info().eval_return, best);
    assert!(run::snapshot_path(&out, "return-0").exists());

    // The shift changes the training returns (episodes end at different steps), not the
    // environment's reward in the log and the stored rollouts: iteration 1 rolls out the
    // same policies either way.
    let unshifted = dir.path().join("unshifted");
    let mut c = ArsConfig::defaults("Hopper-v5", 0);
    c.iterations = 1;
    c.eval_episodes = 4;
    c.reward_shift = 0.0;
    start(c, &unshifted, &TrainOptions::default()).unwrap();
    let other = read_log(&unshifted).unwrap();
    assert_eq!(other[0].eval_return, log[0].eval_return);
    assert_eq!(other[1].rollout_return, log[1].rollout_return);
    assert_ne!(other[1].reward_std, log[1].reward_std);
    assert_same_dataset(
        &store::load(&run::rollouts_path(&out, 1)).unwrap(),
        &store::load(&run::rollouts_path(&unshifted, 1)).unwrap(),
        "Hopper rollouts of iteration 1",
    );
}
