//! The registry, the long-memory tasks, action checking and the lockstep vector.

use flowrl_envs::memory::{KeyToDoor, TMaze};
use flowrl_envs::{make, Action, ActionSpec, EnvError, FlowEnv, VecEnv};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const IDS: [&str; 7] = [
    "CartPole-v1",
    "Pendulum-v1",
    "MountainCarContinuous-v0",
    "Acrobot-v1",
    "TMaze-Passive-L12",
    "TMaze-Active-L12",
    "KeyToDoor-L20",
];

const RIGHT: Action = Action::Discrete(0);
const UP: Action = Action::Discrete(1);
const LEFT: Action = Action::Discrete(2);
const DOWN: Action = Action::Discrete(3);

#[test]
fn registry_makes_every_id_and_lists_them_on_error() {
    for id in IDS {
        let env = make(id).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(env.id(), id);
    }
    let err = make("CartPole-v0").err().expect("unknown id");
    assert!(matches!(err, EnvError::UnknownId { .. }));
    for id in [
        "CartPole-v1",
        "Pendulum-v1",
        "MountainCarContinuous-v0",
        "Acrobot-v1",
        "TMaze-Passive-L",
        "TMaze-Active-L",
        "KeyToDoor-L",
    ] {
        assert!(err.to_string().contains(id), "error lists {id}: {err}");
    }
    for bad in [
        "TMaze-Passive-L0",
        "TMaze-Active-Lx",
        "KeyToDoor-L",
        "KeyToDoor-L-3",
    ] {
        assert!(
            matches!(make(bad).err(), Some(EnvError::BadId { .. })),
            "{bad}"
        );
    }
}

#[test]
fn observations_and_actions_fit_their_spaces() {
    for id in IDS {
        let mut env = make(id).expect("known id");
        let (low, high) = env.observation_bounds();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut obs = env.reset_native(Some(1));
        for _ in 0..300 {
            assert_eq!(obs.len(), env.obs_dim(), "{id}");
            for (i, v) in obs.iter().enumerate() {
                assert!(
                    v.is_finite() && *v >= low[i] && *v <= high[i],
                    "{id}: obs[{i}] = {v} outside [{}, {}]",
                    low[i],
                    high[i]
                );
            }
            let action = env.action_spec().sample(&mut rng);
            let step = env.try_step(&action).expect("sampled actions are valid");
            obs = if step.done() {
                env.reset_native(None)
            } else {
                step.obs
            };
        }
    }
}

#[test]
fn wrong_actions_are_errors() {
    let mut cartpole = make("CartPole-v1").expect("known id");
    cartpole.reset_native(Some(0));
    for bad in [Action::Discrete(2), Action::Continuous(vec![0.0])] {
        let err = cartpole.try_step(&bad).expect_err("invalid action");
        assert!(err.to_string().contains("0..2"), "{err}");
    }
    let mut pendulum = make("Pendulum-v1").expect("known id");
    pendulum.reset_native(Some(0));
    for bad in [
        Action::Discrete(0),
        Action::Continuous(vec![]),
        Action::Continuous(vec![0.0, 1.0]),
        Action::Continuous(vec![f32::NAN]),
    ] {
        assert!(
            matches!(pendulum.try_step(&bad), Err(EnvError::BadAction { .. })),
            "{bad:?}"
        );
    }
    let mut vec = VecEnv::new("Acrobot-v1", 2).expect("known id");
    let before = vec.reset(&[1, 2]).expect("two seeds");
    assert!(vec.reset(&[1]).is_err(), "one seed per environment");
    assert!(
        vec.step(&[Action::Discrete(0)]).is_err(),
        "one action per environment"
    );
    assert!(
        vec.step(&[Action::Discrete(0), Action::Discrete(3)])
            .is_err(),
        "action out of range"
    );
    // The failed steps left the vector untouched.
    let step = vec
        .step(&[Action::Discrete(1), Action::Discrete(1)])
        .expect("valid");
    let mut reference = make("Acrobot-v1").expect("known id");
    assert_eq!(reference.reset_native(Some(1)), before[0]);
    assert_eq!(
        step[0].as_ref().map(|s| &s.obs),
        Some(&reference.step_native(&Action::Discrete(1)).obs)
    );
    assert!(VecEnv::new("CartPole-v1", 0).is_err());
}

#[test]
#[should_panic(expected = "use try_step")]
fn native_step_panics_on_a_wrong_action_kind() {
    let mut env = make("Pendulum-v1").expect("known id");
    env.reset_native(Some(0));
    env.step_native(&Action::Discrete(0));
}

#[test]
fn mountain_car_rewards_the_unclipped_action() {
    let mut a = make("MountainCarContinuous-v0").expect("known id");
    let mut b = make("MountainCarContinuous-v0").expect("known id");
    a.reset_native(Some(4));
    b.reset_native(Some(4));
    let clipped = a.step_native(&Action::Continuous(vec![1.0]));
    let over = b.step_native(&Action::Continuous(vec![3.0]));
    // The force is clipped to 1 (as a Python float, so the velocity update runs in
    // float64 where a float32 action of 1 runs in float32: the last bit may differ).
    for (c, o) in clipped.obs.iter().zip(&over.obs) {
        assert!(
            (c - o).abs() <= 1e-7,
            "the force is clipped to 1: {:?} vs {:?}",
            clipped.obs,
            over.obs
        );
    }
    assert_eq!(clipped.reward, -0.1);
    assert!(
        (over.reward + 0.9).abs() < 1e-12,
        "reward uses the action 3: {}",
        over.reward
    );
}

#[test]
fn vector_steps_in_lockstep_with_own_seeds() {
    let mut vec = VecEnv::new("CartPole-v1", 3).expect("known id");
    assert!(vec.all_done(), "done until reset");
    let obs = vec.reset(&[5, 6, 5]).expect("three seeds");
    assert_eq!(obs[0], obs[2]);
    assert_ne!(obs[0], obs[1]);
    let mut lengths = [0usize; 3];
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    while !vec.all_done() {
        let actions: Vec<Action> = (0..3).map(|_| vec.action_spec().sample(&mut rng)).collect();
        let was_done = vec.done().to_vec();
        let steps = vec.step(&actions).expect("valid actions");
        for i in 0..3 {
            assert_eq!(
                steps[i].is_some(),
                !was_done[i],
                "only running environments step"
            );
            if let Some(step) = &steps[i] {
                lengths[i] += 1;
                assert_eq!(vec.done()[i], step.done());
            }
        }
    }
    assert!(lengths.iter().all(|&n| n > 0));
    let again = vec.reset_env(1, Some(6)).expect("index 1");
    assert_eq!(again, obs[1]);
    assert_eq!(vec.done(), &[true, false, true]);
    assert!(vec.reset_env(3, None).is_err());
}

/// Runs `actions` from a reset with `seed`; returns the steps.
fn run(env: &mut dyn FlowEnv, seed: u64, actions: &[Action]) -> (Vec<f32>, Vec<flowrl_envs::Step>) {
    let first = env.reset_native(Some(seed));
    let steps = actions
        .iter()
        .map(|a| env.try_step(a).expect("valid action"))
        .collect();
    (first, steps)
}

#[test]
fn passive_tmaze_follows_the_specification() {
    let l = 4;
    let mut env = TMaze::new(false, l).expect("length >= 1");
    assert!(TMaze::new(false, 0).is_err() && TMaze::new(true, 0).is_err());
    for seed in 0..8 {
        let first = env.reset_native(Some(seed));
        let g = env.goal();
        assert_eq!(first, vec![0.0, g as f32], "reset shows the cue");
        // Left at x = 0 stays; the cue is not shown again; behind schedule: -1/L.
        let step = env.try_step(&LEFT).expect("valid");
        assert_eq!(step.obs, vec![0.0, 0.0]);
        assert_eq!(step.reward, -0.25);
        // Up/down in the corridor do nothing.
        let step = env.try_step(&UP).expect("valid");
        assert_eq!((step.obs.clone(), step.reward), (vec![0.0, 0.0], -0.25));
        // Right twice: x = 2 at t = 4, still behind.
        for _ in 0..2 {
            let step = env.try_step(&RIGHT).expect("valid");
            assert_eq!(
                (step.obs, step.reward, step.terminated),
                (vec![0.0, 0.0], -0.25, false)
            );
        }
        // The last step pays only the arm (none here), without a penalty.
        let step = env.try_step(&RIGHT).expect("valid");
        assert_eq!(step.reward, 0.0);
        assert!(
            step.terminated && step.success == Some(false),
            "episode is L + 1 = 5 steps"
        );
    }
    // The optimal route: L rights, then the goal arm.
    for seed in 0..8 {
        env.reset_native(Some(seed));
        let arm = if env.goal() == 1 { UP } else { DOWN };
        let (_, steps) = run(&mut env, seed, &[RIGHT, RIGHT, RIGHT, RIGHT, arm]);
        assert_eq!(steps[3].obs, vec![1.0, 0.0], "junction column shows [1, y]");
        assert!(steps[..4]
            .iter()
            .all(|s| s.reward == 0.0 && !s.terminated && s.success.is_none()));
        let last = &steps[4];
        assert_eq!(
            (last.obs.clone(), last.reward, last.terminated, last.success),
            (vec![1.0, env.goal() as f32], 1.0, true, Some(true))
        );
        // The wrong arm: no reward, no success; right at the junction stays.
        let wrong = if env.goal() == 1 { DOWN } else { UP };
        let (_, steps) = run(&mut env, seed, &[RIGHT, RIGHT, RIGHT, RIGHT, wrong]);
        assert_eq!((steps[4].reward, steps[4].success), (0.0, Some(false)));
        let (_, steps) = run(&mut env, seed, &[RIGHT, RIGHT, RIGHT, RIGHT, RIGHT]);
        assert_eq!(
            (steps[4].obs.clone(), steps[4].reward),
            (vec![1.0, 0.0], 0.0)
        );
    }
}

#[test]
fn active_tmaze_hides_the_cue_behind_the_start() {
    let l = 3;
    let mut env = TMaze::new(true, l).expect("length >= 1");
    let mut goals = [0; 2];
    for seed in 0..20 {
        let first = env.reset_native(Some(seed));
        let g = env.goal();
        goals[usize::from(g == 1)] += 1;
        assert_eq!(first, vec![0.0, 0.0], "the start shows no cue");
        let arm = if g == 1 { UP } else { DOWN };
        // Left onto the cue, right L + 1 times to the junction at L + 1, the arm: L + 3 steps.
        let (_, steps) = run(&mut env, seed, &[LEFT, RIGHT, RIGHT, RIGHT, RIGHT, arm]);
        assert_eq!(steps[0].obs, vec![0.0, g as f32]);
        assert_eq!(steps[3].obs, vec![0.0, 0.0]);
        assert_eq!(steps[4].obs, vec![1.0, 0.0]);
        assert!(steps[..5].iter().all(|s| s.reward == 0.0 && !s.terminated));
        assert_eq!(
            (steps[5].reward, steps[5].terminated, steps[5].success),
            (1.0, true, Some(true))
        );
        // Going right at once is never penalised but never sees the cue; a second visit shows no cue.
        let (_, steps) = run(&mut env, seed, &[RIGHT, LEFT, LEFT, LEFT]);
        assert!(steps[..2].iter().all(|s| s.reward == 0.0));
        assert_eq!(steps[2].obs, vec![0.0, g as f32]);
        assert_eq!(steps[3].obs, vec![0.0, 0.0]);
        assert_eq!(steps[2].reward, -1.0 / 3.0, "x = 0 < t - 1 = 2");
    }
    assert!(
        goals[0] > 3 && goals[1] > 3,
        "both sides are drawn: {goals:?}"
    );
    assert_eq!(env.max_episode_steps(), Some(6));
}

#[test]
fn key_to_door_has_three_phases_and_an_egocentric_view() {
    let l = 7;
    let mut env = KeyToDoor::new(l).expect("length >= 1");
    assert!(KeyToDoor::new(0).is_err());
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for seed in 0..20 {
        let mut obs = env.reset_native(Some(seed));
        assert_eq!(obs.len(), 153);
        for t in 0.. {
            let cells = &obs[..150];
            for cell in cells.chunks(6) {
                assert_eq!(cell.iter().sum::<f32>(), 1.0, "one-hot cells");
            }
            assert_eq!(cells[12 * 6 + 5], 1.0, "the agent is the centre cell");
            let phase = obs[150..]
                .iter()
                .position(|&p| p == 1.0)
                .expect("one-hot phase");
            let expected = if t < 15 {
                0
            } else if t < 15 + l {
                1
            } else {
                2
            };
            assert_eq!(phase, expected, "phase at step {t}");
            let step = env
                .try_step(&env.action_spec().sample(&mut rng))
                .expect("valid");
            if phase < 2 {
                assert!(!step.terminated, "only the door phase ends the episode");
                assert!(step.reward == 0.0 || (phase == 1 && step.reward == 1.0));
            }
            if step.terminated {
                assert!(t < 15 + l + 10);
                assert!(step.success.is_some());
                assert_eq!(step.reward == 5.0, step.success == Some(true));
                break;
            }
            obs = step.obs;
        }
    }
    assert!(matches!(env.action_spec(), ActionSpec::Discrete { n: 4 }));
}
