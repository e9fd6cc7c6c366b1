//! MuJoCo locomotion against Gymnasium 1.4 on MuJoCo 3.17.0: every recorded episode
//! in `tests/fixtures/mujoco/` (and in `$FLOWRL_MUJOCO_FIXTURES`) replays bit for bit
//! from `reset(seed)` on. Needs `flowrl setup mujoco`; without it the tests skip with
//! the reason, unless `FLOWRL_REQUIRE_MUJOCO=1`, under which they fail.

mod common;

use std::path::PathBuf;

use flowrl_envs::mujoco::{Locomotion, LocomotionSpec, MUJOCO_IDS};
use flowrl_envs::{make, Action, EnvError, FlowEnv, TimeLimit, VecEnv};
use serde_json::Value;

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array of numbers, found {v}"))
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// Asserts two vectors are equal bit for bit.
fn assert_bits(what: &str, found: &[f64], expected: &[f64]) {
    let same = found.len() == expected.len()
        && found
            .iter()
            .zip(expected)
            .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "{what}: found {found:?}, expected {expected:?}");
}

/// The f32 observation is the f64 observation rounded.
fn assert_rounded(what: &str, obs: &[f32], obs_f64: &[f64]) {
    let rounded: Vec<f32> = obs_f64.iter().map(|&x| x as f32).collect();
    assert!(
        obs.iter()
            .zip(&rounded)
            .all(|(a, b)| a.to_bits() == b.to_bits())
            && obs.len() == rounded.len(),
        "{what}: f32 observation {obs:?} is not the f64 one rounded {rounded:?}"
    );
}

/// Asserts an info map equals the recorded one: same keys, values bit for bit.
fn assert_info(what: &str, found: &[(&str, f64)], recorded: &Value) {
    let recorded = recorded.as_object().expect("info object");
    let mut found_keys: Vec<&str> = found.iter().map(|(k, _)| *k).collect();
    let mut recorded_keys: Vec<&str> = recorded.keys().map(String::as_str).collect();
    found_keys.sort_unstable();
    recorded_keys.sort_unstable();
    assert_eq!(found_keys, recorded_keys, "{what}: info keys");
    for (key, value) in found {
        let expected = recorded[*key].as_f64().expect("info number");
        assert_eq!(
            value.to_bits(),
            expected.to_bits(),
            "{what}: info {key} is {value}, expected {expected}"
        );
    }
}

/// Replays one fixture file; returns the number of steps checked.
fn replay(path: &PathBuf) -> usize {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let fixture: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        fixture["format"], "gymnasium-mujoco-parity-fixture/1",
        "{name}"
    );
    let id = fixture["env_id"].as_str().expect("env_id");
    let mut spec =
        LocomotionSpec::from_id(id).unwrap_or_else(|| panic!("{name}: unknown env {id}"));
    if let Some(flag) = fixture["env_kwargs"]["terminate_when_unhealthy"].as_bool() {
        spec.terminate_when_unhealthy = flag;
    }
    let max_steps = fixture["max_episode_steps"].as_u64().expect("max steps") as usize;
    let mut env = TimeLimit::new(
        Locomotion::new(spec).unwrap_or_else(|e| panic!("{name}: {e}")),
        max_steps,
    );
    let seed = fixture["reset_seed"].as_u64().expect("reset_seed");
    let obs = env.reset_native(Some(seed));
    let inner = env.inner();
    assert_bits(
        &format!("{name} reset obs"),
        &inner.observation_f64(),
        &floats(&fixture["initial_obs"]),
    );
    assert_rounded(&format!("{name} reset"), &obs, &inner.observation_f64());
    assert_bits(
        &format!("{name} reset qpos"),
        inner.qpos(),
        &floats(&fixture["initial_qpos"]),
    );
    assert_bits(
        &format!("{name} reset qvel"),
        inner.qvel(),
        &floats(&fixture["initial_qvel"]),
    );
    assert_info(
        &format!("{name} reset"),
        &inner.reset_info(),
        &fixture["reset_info"],
    );
    let actions = fixture["actions"].as_array().expect("actions");
    let steps = fixture["steps"].as_array().expect("steps");
    assert_eq!(
        steps.len() as u64,
        fixture["num_steps"].as_u64().expect("num_steps"),
        "{name}"
    );
    for (action, recorded) in actions.iter().zip(steps) {
        let t = recorded["t"].as_u64().expect("t");
        let what = format!("{name} step {t}");
        let a = Action::Continuous(floats(action).into_iter().map(|x| x as f32).collect());
        let step = env.try_step(&a).unwrap_or_else(|e| panic!("{what}: {e}"));
        let inner = env.inner();
        assert_bits(
            &format!("{what} obs"),
            &inner.observation_f64(),
            &floats(&recorded["obs"]),
        );
        assert_rounded(&what, &step.obs, &inner.observation_f64());
        assert_eq!(
            step.reward.to_bits(),
            recorded["reward"].as_f64().expect("reward").to_bits(),
            "{what}: reward {} expected {}",
            step.reward,
            recorded["reward"]
        );
        assert_eq!(
            step.terminated,
            recorded["terminated"] == true,
            "{what} terminated"
        );
        assert_eq!(
            step.truncated,
            recorded["truncated"] == true,
            "{what} truncated"
        );
        assert_bits(
            &format!("{what} qpos"),
            inner.qpos(),
            &floats(&recorded["qpos"]),
        );
        assert_bits(
            &format!("{what} qvel"),
            inner.qvel(),
            &floats(&recorded["qvel"]),
        );
        assert_info(&what, &env.info(), &recorded["info"]);
    }
    steps.len()
}

#[test]
fn fixtures_replay_bit_for_bit() {
    if !flowrl_envs::mujoco::ready_or_skip("the MuJoCo tests") {
        return;
    }
    let files = common::fixture_files("mujoco", "FLOWRL_MUJOCO_FIXTURES");
    assert!(
        files.len() >= 11,
        "expected the 11 shipped fixtures, found {files:?}"
    );
    let mut ids = std::collections::BTreeSet::new();
    for path in &files {
        let steps = replay(path);
        assert!(steps > 0, "{}: no step replayed", path.display());
        let text = std::fs::read_to_string(path).expect("readable");
        let fixture: Value = serde_json::from_str(&text).expect("json");
        ids.insert(fixture["env_id"].as_str().expect("id").to_string());
    }
    assert_eq!(
        ids.len(),
        MUJOCO_IDS.len(),
        "every locomotion id has a fixture: {ids:?}"
    );
}

#[test]
fn registry_makes_time_limited_locomotion() {
    if !flowrl_envs::mujoco::ready_or_skip("the MuJoCo tests") {
        return;
    }
    for id in MUJOCO_IDS {
        let mut env = make(id).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(env.id(), id);
        assert_eq!(env.max_episode_steps(), Some(1000), "{id}");
        assert!(!env.scripted_behaviour(), "{id}");
        let obs = env.reset_native(Some(3));
        assert_eq!(obs.len(), env.obs_dim(), "{id}");
        assert_eq!(
            env.reset_native(Some(3)),
            obs,
            "{id}: same seed, same start"
        );
        assert_ne!(env.reset_native(None), obs, "{id}: the stream continues");
        // A zero action never ends HalfCheetah; the time limit does, at 1000.
        if id.starts_with("HalfCheetah") {
            let zero = Action::Continuous(vec![0.0; 6]);
            let mut steps = 0;
            loop {
                steps += 1;
                let step = env.step_native(&zero);
                assert!(!step.terminated, "{id}: HalfCheetah never terminates");
                if step.truncated {
                    break;
                }
            }
            assert_eq!(steps, 1000, "{id}: truncated at the time limit");
        }
    }
}

#[test]
fn non_finite_and_misshaped_actions_are_errors() {
    if !flowrl_envs::mujoco::ready_or_skip("the MuJoCo tests") {
        return;
    }
    let mut env = make("Hopper-v5").expect("Hopper-v5");
    env.reset_native(Some(0));
    for bad in [
        vec![f32::NAN, 0.0, 0.0],
        vec![f32::INFINITY, 0.0, 0.0],
        vec![0.0, f32::NEG_INFINITY, 0.0],
        vec![0.0, 0.0],
    ] {
        match env.try_step(&Action::Continuous(bad.clone())) {
            Err(EnvError::BadAction { env, expected, .. }) => {
                assert_eq!(env, "Hopper-v5");
                assert!(expected.contains("3 finite values"), "{expected}");
            }
            other => panic!("{bad:?}: expected a BadAction error, found {other:?}"),
        }
    }
    // Out-of-range finite actions are accepted and clamped by MuJoCo, as in Gymnasium.
    assert!(env
        .try_step(&Action::Continuous(vec![5.0, -5.0, 0.0]))
        .is_ok());
}

#[test]
fn lockstep_vector_matches_single_environments() {
    if !flowrl_envs::mujoco::ready_or_skip("the MuJoCo tests") {
        return;
    }
    let n = 8;
    let mut vec = VecEnv::new("Walker2d-v5", n).expect("vector");
    let seeds: Vec<u64> = (0..n as u64).collect();
    let first = vec.reset(&seeds).expect("reset");
    let mut singles: Vec<_> = (0..n).map(|_| make("Walker2d-v5").expect("env")).collect();
    for (i, env) in singles.iter_mut().enumerate() {
        assert_eq!(env.reset_native(Some(seeds[i])), first[i]);
    }
    let mut done = vec![false; n];
    for t in 0..200 {
        let actions: Vec<Action> = (0..n)
            .map(|i| Action::Continuous(vec![((i + t) as f32 * 0.37).sin(); 6]))
            .collect();
        let steps = vec.step(&actions).expect("step");
        for (i, step) in steps.into_iter().enumerate() {
            if done[i] {
                assert!(step.is_none(), "env {i} stepped after it ended");
                continue;
            }
            let single = singles[i].step_native(&actions[i]);
            assert_eq!(step.as_ref(), Some(&single), "env {i} step {t}");
            done[i] = single.done();
        }
    }
    assert!(done.iter().any(|&d| d), "some walker fell within 200 steps");
}
