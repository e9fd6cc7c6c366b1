//! Acting through [`Actor`]: episode mode (the recurrent Flow-Attention state) equals
//! re-encoding the whole history, window mode re-encodes the last K steps, the softmax
//! model and the MLP re-encode in episode mode, out-of-order calls and bad inputs are
//! errors, and the discrete helpers pick greedily and sample reproducibly.

use dfdx::prelude::*;
use flowrl_agents::acting::{ActionPredictions, Actor, ContextMode, Encoder};
use flowrl_agents::agent::{Agent, AgentConfig, AgentError, AgentKind, HostActions};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::common::inputs::{random_inputs, small, HostInputs, CONTINUOUS, DISCRETE};
use crate::common::lockstep::{lockstep, Discrete};
use crate::common::max_abs_diff;

/// The largest difference of the predictions of `agent` acting in modes `a` and `b`
/// over `steps` steps of random episodes; rows are dropped as `drops` says.
fn compare_actors(
    agent: &Agent<f32, Cpu>,
    a: ContextMode,
    b: ContextMode,
    batch: usize,
    steps: usize,
    drops: &[(usize, Vec<usize>)],
) -> f64 {
    let cfg = *agent.config();
    let first = Actor::new(agent, a, batch).unwrap();
    let second = Actor::new(agent, b, batch).unwrap();
    let io = (cfg.obs_dim, cfg.action);
    lockstep(first, second, io, 21, steps, drops, Discrete::Sampled)
}

/// Episode mode (recurrent Flow-Attention state) chooses the same actions as
/// re-encoding the whole history every step, over 200 steps, also after finished
/// episodes are dropped from the batch.
#[test]
fn episode_mode_equals_reencoding_the_whole_history() {
    let dev = Cpu::default();
    for (action, steps) in [(CONTINUOUS, 200), (DISCRETE, 60)] {
        let cfg = AgentConfig {
            context: 256,
            ..small(AgentKind::DecisionFlowformer, action)
        };
        let agent = Agent::<f32, Cpu>::new(&dev, cfg, 9).unwrap();
        let drops = [(40, vec![0, 2, 3]), (120, vec![2, 0])];
        let err = compare_actors(
            &agent,
            ContextMode::Episode,
            ContextMode::Window,
            4,
            steps,
            &drops,
        );
        println!("{action:?}: episode vs re-encode max difference {err:e}");
        assert!(
            err <= 1e-5,
            "{action:?}: episode mode differs from re-encoding by {err:e}"
        );
    }
}

/// Window mode re-encodes the last K steps with their absolute timesteps, positions
/// restarting at the window start: the same as `predict_last` on that window.
#[test]
fn window_mode_reencodes_the_last_k_steps() {
    let dev = Cpu::default();
    let cfg = AgentConfig {
        context: 4,
        ..small(AgentKind::DecisionFlowformer, CONTINUOUS)
    };
    let agent = Agent::<f32, Cpu>::new(&dev, cfg, 2).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // The tensor path computes what `predict_last` computes, bit for bit (the host path
    // agrees up to rounding: `host_acting`).
    let mut actor = Actor::with_encoder(&agent, ContextMode::Window, 2, Encoder::Tensors).unwrap();
    let mut episode = Actor::new(&agent, ContextMode::Episode, 2).unwrap();
    let mut history = random_inputs(&mut rng, &cfg, 10, &[10, 10]);
    for r in 0..2 {
        for t in 0..10 {
            history.timesteps[r * 10 + t] = t;
        }
    }
    let (obs, dim) = (3, 2);
    let mut last = None;
    let mut from_episode = None;
    for t in 0..10 {
        let returns: Vec<f32> = (0..2).map(|r| history.returns[r * 10 + t]).collect();
        let states: Vec<f32> = (0..2)
            .flat_map(|r| history.states[(r * 10 + t) * obs..(r * 10 + t + 1) * obs].to_vec())
            .collect();
        let actions: Vec<f32> = (0..2)
            .flat_map(|r| history.actions[(r * 10 + t) * dim..(r * 10 + t + 1) * dim].to_vec())
            .collect();
        last = Some(actor.observe(&returns, &states).unwrap());
        from_episode = Some(episode.observe(&returns, &states).unwrap());
        actor.record(HostActions::Continuous(&actions)).unwrap();
        episode.record(HostActions::Continuous(&actions)).unwrap();
    }
    // The window of steps 6..=9, with the current action slot zeroed.
    let mut window = HostInputs {
        len: 4,
        ..history.clone()
    };
    let pick = |v: &[f32], width: usize| -> Vec<f32> {
        (0..2)
            .flat_map(|r| v[(r * 10 + 6) * width..(r * 10 + 10) * width].to_vec())
            .collect()
    };
    window.states = pick(&history.states, obs);
    window.actions = pick(&history.actions, dim);
    for r in 0..2 {
        window.actions[(r * 4 + 3) * dim..(r * 4 + 4) * dim].fill(0.0);
    }
    window.returns = pick(&history.returns, 1);
    window.timesteps = (0..2).flat_map(|_| 6..10).collect();
    window.mask = vec![1.0; 8];
    let want = agent
        .predict_last(&agent.window(&window.host()).unwrap())
        .unwrap()
        .as_vec();
    let got = last.unwrap();
    assert_eq!(
        got.values, want,
        "window mode equals predict_last on the last K steps"
    );
    let full = from_episode.unwrap();
    let diff = max_abs_diff(&got.values, &full.values);
    assert!(
        diff > 1e-4,
        "a 4-step window should differ from the whole episode ({diff:e})"
    );
}

/// The softmax model's episode mode re-encodes everything (same as a window longer
/// than the episode); the MLP's episode mode equals its window mode.
#[test]
fn episode_mode_of_softmax_and_mlp_reencodes() {
    let dev = Cpu::default();
    let cfg = AgentConfig {
        context: 64,
        ..small(AgentKind::DecisionTransformer, CONTINUOUS)
    };
    let agent = Agent::<f32, Cpu>::new(&dev, cfg, 2).unwrap();
    assert_eq!(
        compare_actors(
            &agent,
            ContextMode::Episode,
            ContextMode::Window,
            2,
            30,
            &[]
        ),
        0.0
    );
    let agent = Agent::<f32, Cpu>::new(&dev, small(AgentKind::MlpBc, DISCRETE), 2).unwrap();
    assert_eq!(
        compare_actors(
            &agent,
            ContextMode::Episode,
            ContextMode::Window,
            3,
            10,
            &[(5, vec![1])]
        ),
        0.0
    );
    assert!(matches!(
        agent.recurrent_state(1),
        Err(AgentError::Acting(_))
    ));
}

#[test]
fn acting_calls_out_of_order_or_with_bad_inputs_are_errors() {
    let dev = Cpu::default();
    let agent =
        Agent::<f32, Cpu>::new(&dev, small(AgentKind::DecisionFlowformer, DISCRETE), 0).unwrap();
    for mode in [ContextMode::Window, ContextMode::Episode] {
        let mut actor = Actor::new(&agent, mode, 2).unwrap();
        assert!(matches!(
            actor.record(HostActions::Discrete(&[0, 1])),
            Err(AgentError::Acting(_))
        ));
        assert!(matches!(
            actor.observe(&[1.0], &[0.0; 6]),
            Err(AgentError::Window {
                field: "returns_to_go",
                ..
            })
        ));
        assert!(matches!(
            actor.observe(&[1.0, f32::NAN], &[0.0; 6]),
            Err(AgentError::Window { .. })
        ));
        actor.observe(&[1.0, 2.0], &[0.0; 6]).unwrap();
        assert!(matches!(
            actor.observe(&[1.0, 2.0], &[0.0; 6]),
            Err(AgentError::Acting(_))
        ));
        assert!(matches!(
            actor.record(HostActions::Discrete(&[0, 3])),
            Err(AgentError::Window {
                field: "actions",
                ..
            })
        ));
        assert!(matches!(
            actor.record(HostActions::Continuous(&[0.0, 0.0])),
            Err(AgentError::Window { .. })
        ));
        assert!(matches!(actor.keep_rows(&[2]), Err(AgentError::Acting(_))));
        actor.keep_rows(&[1]).unwrap();
        assert_eq!(actor.batch(), 1);
        actor.record(HostActions::Discrete(&[2])).unwrap();
        assert_eq!(actor.observe(&[1.0], &[0.0; 3]).unwrap().batch, 1);
    }
}

#[test]
fn discrete_helpers_pick_greedily_and_sample_reproducibly() {
    let preds = ActionPredictions {
        batch: 2,
        width: 3,
        values: vec![0.1f32, 2.0, -1.0, 5.0, 5.0, 1.0],
    };
    assert_eq!(preds.greedy(), vec![1, 0]);
    assert_eq!(preds.row(1), &[5.0, 5.0, 1.0]);
    let draw = |seed| {
        preds
            .sample(1.0, &mut ChaCha8Rng::seed_from_u64(seed))
            .unwrap()
    };
    assert_eq!(draw(1), draw(1));
    let cold = preds
        .sample(1e-3, &mut ChaCha8Rng::seed_from_u64(2))
        .unwrap();
    assert_eq!(cold[0], 1, "a low temperature is greedy");
    for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            preds.sample(t, &mut ChaCha8Rng::seed_from_u64(0)),
            Err(AgentError::Config {
                field: "temperature",
                ..
            })
        ));
    }
    // logits [0, ln 3]: probabilities 1/4, 3/4.
    let two = ActionPredictions {
        batch: 1,
        width: 2,
        values: vec![0.0f64, 3f64.ln()],
    };
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let ones = (0..4000)
        .filter(|_| two.sample(1.0, &mut rng).unwrap()[0] == 1)
        .count();
    let freq = ones as f64 / 4000.0;
    assert!((freq - 0.75).abs() < 0.03, "frequency {freq}");
    let nan = ActionPredictions {
        batch: 1,
        width: 2,
        values: vec![f32::NAN, 0.0],
    };
    assert!(nan.sample(1.0, &mut rng).is_err());
}
