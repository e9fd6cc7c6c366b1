//! Classic control against Gymnasium 1.4: replay of the recorded parity fixtures
//! (bit-exact), and seeded resets (numpy's generator) equal to Gymnasium's, bit for bit.

mod common;

use std::path::{Path, PathBuf};

use flowrl_envs::classic::{
    Acrobot, CartPole, ClassicControl, MountainCarContinuous, Pendulum, StateDtype,
};
use flowrl_envs::numpy_rng::Pcg64State;
use flowrl_envs::{make, Action, FlowEnv, TimeLimit, CLASSIC_IDS};
use serde_json::Value;

/// A time-limited classic-control environment whose state can be set.
trait Replayable: FlowEnv + ClassicControl {}
impl<T: FlowEnv + ClassicControl> Replayable for T {}

fn replayable(id: &str, max_steps: usize) -> Box<dyn Replayable> {
    match id {
        "CartPole-v1" => Box::new(TimeLimit::new(CartPole::new(), max_steps)),
        "Pendulum-v1" => Box::new(TimeLimit::new(Pendulum::new(), max_steps)),
        "MountainCarContinuous-v0" => {
            Box::new(TimeLimit::new(MountainCarContinuous::new(), max_steps))
        }
        "Acrobot-v1" => Box::new(TimeLimit::new(Acrobot::new(), max_steps)),
        other => panic!("fixture for unknown environment {other}"),
    }
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array of numbers")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn action(v: &Value) -> Action {
    match v {
        Value::Array(_) => Action::Continuous(floats(v).into_iter().map(|x| x as f32).collect()),
        _ => Action::Discrete(v.as_u64().expect("discrete action") as usize),
    }
}

fn dtype(v: &Value) -> StateDtype {
    v.as_str()
        .expect("dtype string")
        .parse()
        .expect("known dtype")
}

/// Largest absolute difference between two vectors of equal length.
fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "vector lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn widen(obs: &[f32]) -> Vec<f64> {
    obs.iter().map(|&x| f64::from(x)).collect()
}

/// What one replay found: the largest differences, and whether every value was bit-exact.
struct Replay {
    free_running: f64,
    one_step: f64,
    exact: bool,
    /// Where the free-running replay first differed, if anywhere.
    first_difference: Option<String>,
}

fn replay(path: &Path) -> Replay {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let fixture: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(fixture["format"], "gymnasium-parity-fixture/1", "{name}");
    let id = fixture["env_id"].as_str().expect("env_id");
    let max_steps = fixture["max_episode_steps"]
        .as_u64()
        .expect("max_episode_steps") as usize;
    let steps = fixture["steps"].as_array().expect("steps");
    assert_eq!(
        steps.len() as u64,
        fixture["num_steps"].as_u64().expect("num_steps"),
        "{name}"
    );
    let mut env = replayable(id, max_steps);
    let mut single = replayable(id, max_steps);
    env.reset_native(Some(0));
    single.reset_native(Some(0));
    env.set_state(
        &floats(&fixture["initial_state"]),
        dtype(&fixture["initial_state_dtype"]),
    )
    .expect("valid initial state");
    let initial_obs = widen(&env.observation());
    let mut free_running = max_diff(&initial_obs, &floats(&fixture["initial_obs"]));
    let mut exact = free_running == 0.0;
    let mut first_difference = (!exact).then(|| format!("initial obs {initial_obs:?}"));
    let mut one_step: f64 = 0.0;
    let (mut prev_state, mut prev_dtype) = (
        fixture["initial_state"].clone(),
        fixture["initial_state_dtype"].clone(),
    );
    for (i, recorded) in steps.iter().enumerate() {
        let t = i + 1;
        let a = action(&recorded["action"]);
        let step = env
            .try_step(&a)
            .unwrap_or_else(|e| panic!("{name} step {t}: {e}"));
        assert_eq!(
            step.terminated,
            recorded["terminated"].as_bool().expect("flag"),
            "{name} step {t} terminated"
        );
        // The recording runs inside one episode, so the time limit counts every step.
        assert_eq!(
            step.truncated,
            recorded["truncated"].as_bool().expect("flag"),
            "{name} step {t} truncated"
        );
        let reward = recorded["reward"].as_f64().expect("reward");
        let diffs = [
            max_diff(&widen(&step.obs), &floats(&recorded["obs"])),
            (step.reward - reward).abs(),
            max_diff(&env.state(), &floats(&recorded["state"])),
        ];
        if exact && diffs.iter().any(|&d| d != 0.0) {
            exact = false;
            first_difference = Some(format!(
                "step {t}: obs {:?} reward {} state {:?} (differences {diffs:?})",
                step.obs,
                step.reward,
                env.state()
            ));
        }
        free_running = diffs.iter().copied().fold(free_running, f64::max);

        // One step at a time from the recorded previous state.
        single
            .set_state(&floats(&prev_state), dtype(&prev_dtype))
            .expect("valid state");
        let s = single.step_native(&a);
        assert_eq!(
            s.terminated, step.terminated,
            "{name} step {t} one-step terminated"
        );
        one_step = one_step
            .max(max_diff(&widen(&s.obs), &floats(&recorded["obs"])))
            .max((s.reward - reward).abs())
            .max(max_diff(&single.state(), &floats(&recorded["state"])));
        prev_state = recorded["state"].clone();
        prev_dtype = recorded["state_dtype"].clone();
    }
    Replay {
        free_running,
        one_step,
        exact,
        first_difference,
    }
}

#[test]
fn fixtures_replay_exactly() {
    let files = common::fixture_files("envs", "FLOWRL_ENV_FIXTURES");
    assert!(!files.is_empty(), "no parity fixture found");
    let repo = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/envs"
    ));
    for path in &files {
        let result = replay(path);
        let name = path.display();
        eprintln!(
            "{name}: free-running max diff {:e}, one-step max diff {:e}, first difference {:?}",
            result.free_running, result.one_step, result.first_difference
        );
        assert!(
            result.free_running <= 1e-4,
            "{name}: free-running replay drifts by {}",
            result.free_running
        );
        assert!(
            result.one_step <= 1e-12,
            "{name}: one step differs by {}",
            result.one_step
        );
        if path.starts_with(repo) {
            assert!(result.exact, "{name}: replay is not bit-exact");
        }
    }
}

fn load(path: &Path) -> Value {
    let name = path.display();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Asserts bit-equal values, naming the first difference.
fn assert_bits(found: &[f64], expected: &[f64], what: &str) {
    assert_eq!(
        found.len(),
        expected.len(),
        "{what}: {found:?} vs {expected:?}"
    );
    for (i, (f, e)) in found.iter().zip(expected).enumerate() {
        assert!(
            f.to_bits() == e.to_bits(),
            "{what}: value {i} is {f:?}, Gymnasium gives {e:?} (all: {found:?})"
        );
    }
}

#[test]
fn seeded_resets_match_the_recorded_episodes() {
    let files = common::fixture_files("envs", "FLOWRL_ENV_FIXTURES");
    assert!(!files.is_empty(), "no parity fixture found");
    for path in &files {
        let name = path.display().to_string();
        let fixture = load(path);
        let id = fixture["env_id"].as_str().expect("env_id");
        let seed = fixture["reset_seed"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: reset_seed"));
        // Through the registry, as users get it, and as the bare environment.
        let mut env = make(id).expect("known id");
        let obs = env.reset_native(Some(seed));
        assert_bits(
            &widen(&obs),
            &floats(&fixture["initial_obs"]),
            &format!("{name}: make({id}).reset_native(Some({seed})) obs"),
        );
        let mut bare = replayable(id, 10);
        assert_eq!(bare.reset_native(Some(seed)), obs, "{name}: obs");
        assert_bits(
            &bare.state(),
            &floats(&fixture["initial_state"]),
            &format!("{name}: state after reset_native(Some({seed}))"),
        );
    }
}

fn rng_fixture_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/numpy_rng"
    ));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed_") && n.ends_with(".json"))
        })
        .collect();
    files.sort();
    files
}

/// A fresh environment reset with `seed`: its state, observation and generator state.
fn reset_with(id: &str, seed: u64) -> (Vec<f64>, Vec<f32>, Pcg64State) {
    fn run<E: FlowEnv + ClassicControl>(
        mut env: E,
        seed: u64,
        rng: fn(&E) -> Pcg64State,
    ) -> (Vec<f64>, Vec<f32>, Pcg64State) {
        let obs = env.reset_native(Some(seed));
        (env.state(), obs, rng(&env))
    }
    match id {
        "CartPole-v1" => run(CartPole::new(), seed, |e| e.np_random().state()),
        "Pendulum-v1" => run(Pendulum::new(), seed, |e| e.np_random().state()),
        "MountainCarContinuous-v0" => run(MountainCarContinuous::new(), seed, |e| {
            e.np_random().state()
        }),
        "Acrobot-v1" => run(Acrobot::new(), seed, |e| e.np_random().state()),
        other => panic!("unknown environment {other}"),
    }
}

fn pcg_state(v: &Value, what: &str) -> Pcg64State {
    let big = |key: &str| -> u128 {
        v[key]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{what}: {key}"))
    };
    Pcg64State {
        state: big("state"),
        inc: big("inc"),
        has_uint32: v["has_uint32"].as_u64().expect("has_uint32") != 0,
        uinteger: v["uinteger"].as_u64().expect("uinteger") as u32,
    }
}

#[test]
fn resets_match_numpy_rng_fixtures() {
    let files = rng_fixture_files();
    assert!(!files.is_empty(), "no numpy_rng seed fixture found");
    let mut checked = 0;
    for path in &files {
        let name = path.display().to_string();
        let fixture = load(path);
        let seed = fixture["seed"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: seed"));
        let resets = fixture["classic_control_reset"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}: classic_control_reset"));
        for id in CLASSIC_IDS {
            let entry = resets
                .get(id)
                .unwrap_or_else(|| panic!("{name}: no reset for {id}"));
            let what = format!("{name}: {id} reset_native(Some({seed}))");
            let (state, obs, rng) = reset_with(id, seed);
            assert_bits(
                &state,
                &floats(&entry["env_state"]),
                &format!("{what} state"),
            );
            assert_bits(
                &widen(&obs),
                &floats(&entry["env_obs"]),
                &format!("{what} obs"),
            );
            assert_eq!(
                rng,
                pcg_state(&entry["state_after"], &what),
                "{what}: generator state after the reset"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, files.len() * CLASSIC_IDS.len());
}

#[test]
fn fresh_environments_are_seeded_with_zero() {
    for id in CLASSIC_IDS {
        let mut fresh = make(id).expect("known id");
        let mut seeded = make(id).expect("known id");
        seeded.reset_native(Some(0));
        // A fresh environment has already drawn one reset from seed 0's stream.
        assert_eq!(
            fresh.reset_native(None),
            seeded.reset_native(None),
            "{id}: a fresh environment continues seed 0's stream"
        );
    }
}

#[test]
fn seeding_repeats_and_continues() {
    for id in CLASSIC_IDS {
        let mut env = make(id).expect("known id");
        let first = env.reset_native(Some(7));
        let second = env.reset_native(None);
        assert_eq!(
            env.reset_native(Some(7)),
            first,
            "{id}: same seed, same start"
        );
        assert_eq!(
            env.reset_native(None),
            second,
            "{id}: the stream continues after the seed"
        );
        if id != "MountainCarContinuous-v0" {
            assert_ne!(first, second, "{id}: reset(None) draws a new state");
        }
    }
}

#[test]
fn time_limits_truncate_like_gymnasium() {
    for (id, limit) in [
        ("CartPole-v1", 500),
        ("Pendulum-v1", 200),
        ("MountainCarContinuous-v0", 999),
        ("Acrobot-v1", 500),
    ] {
        let mut env = make(id).expect("known id");
        assert_eq!(env.max_episode_steps(), Some(limit), "{id}");
        env.reset_native(Some(1));
        let idle = match env.action_spec() {
            flowrl_envs::ActionSpec::Discrete { .. } => Action::Discrete(1),
            flowrl_envs::ActionSpec::Continuous { .. } => Action::Continuous(vec![0.0]),
        };
        let mut steps = 0;
        loop {
            let step = env.try_step(&idle).expect("valid action");
            steps += 1;
            if step.terminated {
                break;
            }
            if step.truncated {
                assert_eq!(steps, limit, "{id}: truncated before the limit");
                break;
            }
            assert!(steps < limit, "{id}: not truncated at the limit");
        }
    }
}

#[test]
fn gymnasium_trait_narrows_the_native_step() {
    use gymnasium_rs::core::Space;
    let mut env = make("Pendulum-v1").expect("known id");
    let (obs, _) = env.reset(Some(3), Default::default());
    assert_eq!(obs, env.reset_native(Some(3)));
    let mut twin = make("Pendulum-v1").expect("known id");
    twin.reset_native(Some(3));
    let native = twin.step_native(&Action::Continuous(vec![5.0]));
    let (obs, reward, terminated, truncated, _) = env.step(Action::Continuous(vec![5.0]));
    assert_eq!(obs, native.obs);
    assert_eq!(reward, native.reward as f32);
    assert!(!terminated && !truncated);
    // Torque clipped to 2 in the dynamics and the cost.
    twin.reset_native(Some(3));
    assert_eq!(twin.step_native(&Action::Continuous(vec![2.0])), native);
    assert_eq!(
        env.action_space(),
        Space::Box {
            low: ndarray::arr1(&[-2.0]),
            high: ndarray::arr1(&[2.0])
        }
    );
    assert_eq!(
        make("CartPole-v1").expect("known id").action_space(),
        Space::Discrete(2)
    );
}
