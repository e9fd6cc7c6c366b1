//! Evaluation: rollouts (episode mode = whole-history re-encoding, finished episodes
//! leaving the batch, clipping, greedy vs sampled actions), report numbers and JSON,
//! the `flowrl eval` CLI's errors, and a tiny end-to-end quickstart.

use std::path::Path;
use std::process::Command;

use dfdx::prelude::Cpu;
use flowrl::data::stats::Normalisation;
use flowrl::eval::{
    continuous_action, episode_seeds, evaluate, run_seeded, run_target, ActionChoice,
    EpisodeOutcome, EvalPlan, MeanStd, Policy, References, RolloutSettings, TargetResult,
};
use flowrl_agents::acting::ContextMode;
use flowrl_agents::agent::{ActionSpace, Agent, AgentConfig, AgentKind};
use flowrl_envs::{make, Action};

/// A small random-init agent.
fn agent(
    kind: AgentKind,
    obs: usize,
    action: ActionSpace,
    context: usize,
    seed: u64,
) -> Agent<f32, Cpu> {
    let mut cfg = AgentConfig::new(kind, obs, action);
    cfg.width = 32;
    cfg.layers = 2;
    cfg.heads = 2;
    cfg.dropout = 0.0;
    cfg.context = context;
    cfg.max_ep_len = 500;
    Agent::new(&Cpu::default(), cfg, seed).expect("valid test agent")
}

fn unit_norm(obs: usize) -> Normalisation {
    Normalisation {
        obs_mean: vec![0.0; obs],
        obs_std: vec![1.0; obs],
        reward_scale: 100.0,
    }
}

fn recorded(env: &str, episodes: usize, context: ContextMode, seed: u64) -> RolloutSettings {
    let mut s = RolloutSettings::new(env, episodes, context, seed);
    s.record_actions = true;
    s
}

fn continuous(a: &Action) -> f32 {
    match a {
        Action::Continuous(v) => v[0],
        Action::Discrete(_) => panic!("expected a continuous action, found {a}"),
    }
}

#[test]
fn episode_mode_picks_the_actions_of_whole_history_reencoding() {
    // K = 200 covers a whole Pendulum episode: window mode re-encodes the whole history.
    let agent = agent(
        AgentKind::DecisionFlowformer,
        3,
        ActionSpace::Continuous { dim: 1 },
        200,
        3,
    );
    let norm = unit_norm(3);
    let policy = Policy {
        agent: &agent,
        norm: &norm,
        action_bounds: None,
    };
    let episode = run_target(
        &policy,
        &recorded("Pendulum-v1", 2, ContextMode::Episode, 5),
        -200.0,
        &mut |_| {},
    )
    .unwrap();
    let reencoded = run_target(
        &policy,
        &recorded("Pendulum-v1", 2, ContextMode::Window, 5),
        -200.0,
        &mut |_| {},
    )
    .unwrap();
    for (e, r) in episode.iter().zip(&reencoded) {
        assert_eq!(e.length, 200);
        assert_eq!(e.actions.len(), r.actions.len());
        let worst = e
            .actions
            .iter()
            .zip(&r.actions)
            .map(|(a, b)| (continuous(a) - continuous(b)).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-5, "largest action difference {worst}");
    }
    // A short window sees less history: its actions differ (the comparison can fail).
    let short = agent_with_context(&agent, 2);
    let policy_short = Policy {
        agent: &short,
        norm: &norm,
        action_bounds: None,
    };
    let windowed = run_target(
        &policy_short,
        &recorded("Pendulum-v1", 2, ContextMode::Window, 5),
        -200.0,
        &mut |_| {},
    )
    .unwrap();
    let differs = windowed[0]
        .actions
        .iter()
        .zip(&episode[0].actions)
        .any(|(a, b)| (continuous(a) - continuous(b)).abs() > 1e-3);
    assert!(
        differs,
        "a 2-step window acted exactly like the whole episode"
    );
}

/// The same parameters with another context length K.
fn agent_with_context(a: &Agent<f32, Cpu>, k: usize) -> Agent<f32, Cpu> {
    let mut cfg = *a.config();
    cfg.context = k;
    let bytes = a.to_safetensors(&Default::default()).unwrap();
    let mut out = Agent::<f32, Cpu>::new(&Cpu::default(), cfg, 0).unwrap();
    out.params_mut().load_safetensors(&bytes).unwrap();
    out
}

#[test]
fn finished_episodes_leave_the_batch_without_disturbing_the_others() {
    // CartPole episodes of a random policy end at different steps.
    let agent = agent(
        AgentKind::DecisionFlowformer,
        4,
        ActionSpace::Discrete { n: 2 },
        10,
        11,
    );
    let norm = unit_norm(4);
    let policy = Policy {
        agent: &agent,
        norm: &norm,
        action_bounds: None,
    };
    for mode in [ContextMode::Episode, ContextMode::Window] {
        let settings = recorded("CartPole-v1", 6, mode, 21);
        let mut progress = Vec::new();
        let batch = run_target(&policy, &settings, 50.0, &mut |n| progress.push(n)).unwrap();
        let lengths: Vec<usize> = batch.iter().map(|o| o.length).collect();
        let distinct: std::collections::BTreeSet<_> = lengths.iter().collect();
        assert!(distinct.len() > 1, "episodes all of length {lengths:?}");
        assert_eq!(progress.last(), Some(&6));
        assert!(progress.windows(2).all(|w| w[0] < w[1]));
        // Each episode replayed alone acts and ends the same.
        let seeds = episode_seeds(21, 6);
        for (i, out) in batch.iter().enumerate() {
            let alone = run_seeded(&policy, &settings, 50.0, &seeds[i..=i], &mut |_| {}).unwrap();
            assert_eq!(alone[0].length, out.length, "{mode:?} episode {i}");
            assert_eq!(alone[0].actions, out.actions, "{mode:?} episode {i}");
            assert_eq!(out.ret, out.length as f64);
        }
    }
}

#[test]
fn continuous_actions_are_clipped_to_the_action_space() {
    let (env, model) = continuous_action(&[1.7, -3.0, 0.5], (&[-2.0; 3], &[2.0; 3]), -2.0, 2.0);
    assert_eq!(env, vec![2.0, -2.0, 1.0]);
    assert_eq!(model, vec![1.0, -1.0, 0.5]);
    // Scaling wider than the environment: mapped, then clipped, recorded as taken.
    let (env, model) = continuous_action(&[0.9, -0.25], (&[-4.0; 2], &[4.0; 2]), -2.0, 2.0);
    assert_eq!(env, vec![2.0, -1.0]);
    assert_eq!(model, vec![0.5, -0.25]);
    // In a rollout with that scaling every action stays inside Pendulum's [-2, 2].
    let agent = agent(
        AgentKind::MlpBc,
        3,
        ActionSpace::Continuous { dim: 1 },
        1,
        2,
    );
    let norm = unit_norm(3);
    let (low, high) = ([-40.0f32], [40.0f32]);
    let policy = Policy {
        agent: &agent,
        norm: &norm,
        action_bounds: Some((&low, &high)),
    };
    let out = run_target(
        &policy,
        &recorded("Pendulum-v1", 2, ContextMode::Window, 0),
        -100.0,
        &mut |_| {},
    )
    .unwrap();
    let actions: Vec<f32> = out
        .iter()
        .flat_map(|o| o.actions.iter().map(continuous))
        .collect();
    assert!(actions.iter().all(|a| (-2.0..=2.0).contains(a)));
    assert!(
        actions.iter().any(|a| a.abs() == 2.0),
        "no action reached the bounds"
    );
}

#[test]
fn greedy_is_deterministic_and_temperature_sampling_is_seeded() {
    let agent = agent(
        AgentKind::DecisionFlowformer,
        4,
        ActionSpace::Discrete { n: 2 },
        5,
        8,
    );
    let norm = unit_norm(4);
    let policy = Policy {
        agent: &agent,
        norm: &norm,
        action_bounds: None,
    };
    let run = |choice, seed| {
        let mut s = recorded("CartPole-v1", 3, ContextMode::Episode, seed);
        s.choice = choice;
        run_target(&policy, &s, 50.0, &mut |_| {}).unwrap()
    };
    let acts = |o: &[EpisodeOutcome]| o.iter().map(|e| e.actions.clone()).collect::<Vec<_>>();
    let greedy = run(ActionChoice::Greedy, 1);
    assert_eq!(acts(&greedy), acts(&run(ActionChoice::Greedy, 1)));
    let hot = run(ActionChoice::Temperature(5.0), 1);
    assert_eq!(acts(&hot), acts(&run(ActionChoice::Temperature(5.0), 1)));
    assert_ne!(acts(&hot), acts(&greedy), "sampling at T=5 acted greedily");
    // A tiny temperature samples the argmax.
    assert_eq!(
        acts(&run(ActionChoice::Temperature(1e-6), 1)),
        acts(&greedy)
    );
    // Bad temperatures are rejected.
    let mut s = RolloutSettings::new("CartPole-v1", 1, ContextMode::Episode, 0);
    s.choice = ActionChoice::Temperature(-1.0);
    let err = run_target(&policy, &s, 1.0, &mut |_| {}).unwrap_err();
    assert!(format!("{err:#}").contains("temperature"), "{err:#}");
}

/// An agent whose parameters are all zero: its prediction is 0 (tanh) or equal logits.
fn zero_agent(action: ActionSpace, obs: usize) -> Agent<f32, Cpu> {
    let mut a = agent(AgentKind::MlpBc, obs, action, 1, 0);
    let params: Vec<(String, usize)> = a
        .params()
        .ids()
        .map(|id| {
            (
                a.params().name(id).to_string(),
                a.params().shape(id).iter().product(),
            )
        })
        .collect();
    for (name, n) in params {
        a.params_mut().set_values(&name, &vec![0.0; n]).unwrap();
    }
    a
}

#[test]
fn report_numbers_of_a_constant_policy_match_stepping_by_hand() {
    // Zero torque on Pendulum (a zero model's tanh output 0 maps to 0 in [-2, 2]).
    let agent = zero_agent(ActionSpace::Continuous { dim: 1 }, 3);
    let norm = unit_norm(3);
    let policy = Policy {
        agent: &agent,
        norm: &norm,
        action_bounds: None,
    };
    let plan = EvalPlan {
        settings: RolloutSettings::new("Pendulum-v1", 4, ContextMode::Window, 9),
        targets: vec![-100.0, -900.0],
        checkpoint_step: Some(12),
    };
    let report = evaluate(&policy, &plan, false).unwrap_or_else(|e| panic!("{e:#}"));
    let by_hand: Vec<f64> = episode_seeds(9, 4)
        .iter()
        .map(|&seed| {
            let mut env = make("Pendulum-v1").unwrap();
            env.reset_native(Some(seed));
            (0..200)
                .map(|_| env.step_native(&Action::Continuous(vec![0.0])).reward)
                .sum()
        })
        .collect();
    let refs = References::of("Pendulum-v1").unwrap();
    let expected = MeanStd::of(&by_hand);
    for t in &report.targets {
        assert_eq!(t.returns, by_hand);
        assert!(
            (t.ret.mean - expected.mean).abs() < 1e-9 && (t.ret.std - expected.std).abs() < 1e-9
        );
        assert_eq!(
            t.length,
            MeanStd {
                mean: 200.0,
                std: 0.0
            }
        );
        let n = t.normalised.unwrap();
        assert!(
            (n.mean - 100.0 * (expected.mean - refs.random) / (refs.expert - refs.random)).abs()
                < 1e-9
        );
        assert_eq!(t.success_rate, None);
    }
    assert!(report.table().contains("-100.00") && report.table().contains("checkpoint step 12"));
    let tags: Vec<String> = report.scalars().into_iter().map(|(t, _)| t).collect();
    assert!(
        tags.contains(&"return_mean/target_-900".to_string()),
        "{tags:?}"
    );
    // Hand-made outcomes: mean, population std, success rate.
    let outcome = |ret: f64, length, success| EpisodeOutcome {
        ret,
        length,
        success,
        actions: Vec::new(),
    };
    let r = TargetResult::of(
        1.0,
        &[
            outcome(1.0, 3, Some(true)),
            outcome(2.0, 5, Some(false)),
            outcome(3.0, 7, Some(true)),
        ],
        None,
    );
    assert_eq!(r.ret.mean, 2.0);
    assert!((r.ret.std - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
    assert_eq!(r.length.mean, 5.0);
    assert_eq!(r.success_rate, Some(2.0 / 3.0));
    assert_eq!(r.normalised, None);
}

#[test]
fn json_report_has_the_documented_fields_and_round_trips() {
    let env = make("TMaze-Passive-L10").unwrap();
    let n = match env.action_spec() {
        flowrl_envs::ActionSpec::Discrete { n } => n,
        other => panic!("T-Maze has discrete actions, found {other:?}"),
    };
    let agent = zero_agent(ActionSpace::Discrete { n }, env.obs_dim());
    let norm = unit_norm(env.obs_dim());
    let policy = Policy {
        agent: &agent,
        norm: &norm,
        action_bounds: None,
    };
    let plan = EvalPlan {
        settings: RolloutSettings::new("TMaze-Passive-L10", 3, ContextMode::Episode, 4),
        targets: vec![1.0],
        checkpoint_step: None,
    };
    let report = evaluate(&policy, &plan, false).unwrap_or_else(|e| panic!("{e:#}"));
    let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
    for key in [
        "env_id",
        "agent",
        "context",
        "context_note",
        "seed",
        "checkpoint_step",
        "reward_scale",
        "action_choice",
        "references",
        "targets",
    ] {
        assert!(json.get(key).is_some(), "missing `{key}` in {json}");
    }
    let t = &json["targets"][0];
    for key in [
        "target",
        "episodes",
        "ret",
        "normalised",
        "length",
        "success_rate",
        "returns",
    ] {
        assert!(t.get(key).is_some(), "missing `targets[0].{key}` in {t}");
    }
    assert!(t["ret"]["mean"].is_number() && t["ret"]["std"].is_number());
    assert!(t["success_rate"].is_number(), "T-Maze defines success: {t}");
    assert_eq!(json["context"], "episode");
    assert_eq!(json["agent"], "mlp-bc");
    let back: flowrl::eval::EvalReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
}

fn flowrl(args: &[&str], cwd: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flowrl"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the flowrl binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn eval_cli_rejects_a_missing_run_a_bad_context_and_an_unknown_env() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = flowrl(&["eval", "--run", "no-such-run"], dir.path());
    assert!(!ok && err.contains("no-such-run"), "{err}");
    let (ok, _, err) = flowrl(&["eval", "--run", "r", "--context", "forever"], dir.path());
    assert!(
        !ok && err.contains("forever") && err.contains("window"),
        "{err}"
    );
    let (ok, _, err) = flowrl(&["eval", "--run", "r", "--env", "Nope-v9"], dir.path());
    assert!(
        !ok && err.contains("Nope-v9") && err.contains("Pendulum-v1"),
        "{err}"
    );
    let (ok, _, err) = flowrl(&["eval", "--run", "r", "--episodes", "0"], dir.path());
    assert!(!ok && err.contains("--episodes"), "{err}");
}

#[test]
fn tiny_quickstart_writes_report_plots_and_eval_scalars() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let sets = [
        "dataset.episodes=6",
        "agent.width=16",
        "agent.layers=1",
        "agent.context=5",
        "train.steps=12",
        "train.batch=4",
        "train.warmup_steps=2",
        "train.log_every=4",
        "train.checkpoint_every=6",
        "eval.every=6",
        "eval.episodes=2",
        "eval.targets=[-150.0,-700.0]",
    ];
    let mut args = vec!["quickstart", "--run-dir", "run", "--data-dir", "data"];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let (ok, out, err) = flowrl(&args, dir.path());
    assert!(ok, "quickstart failed:\n{out}\n{err}");
    assert!(dir
        .path()
        .join("data/Pendulum-v1-medium-expert-6ep-seed0.safetensors")
        .is_file());
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    for needle in [
        "## Dataset",
        "## Training",
        "## Evaluation",
        "-150",
        "-700",
        "plots/loss.png",
        "plots/eval_return.png",
    ] {
        assert!(
            report.contains(needle),
            "report.md lacks `{needle}`:\n{report}"
        );
    }
    for png in ["plots/loss.png", "plots/eval_return.png"] {
        let bytes = std::fs::read(run.join(png)).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{png}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    assert_eq!(json["targets"].as_array().map(Vec::len), Some(2));
    let scalars = flowrl::logging::read_scalars(&flowrl::logging::tb_dir(&run)).unwrap();
    let eval_steps: std::collections::BTreeSet<i64> = scalars
        .iter()
        .filter(|s| s.tag == "eval/return_mean/target_-150")
        .map(|s| s.step as i64)
        .collect();
    assert_eq!(eval_steps.into_iter().collect::<Vec<_>>(), vec![6, 12]);

    // flowrl eval on the run: same seed, same report.
    let eval = |json: &str| {
        let (ok, out, err) = flowrl(
            &[
                "eval",
                "--run",
                "run",
                "--targets",
                "-200,-400",
                "--episodes",
                "2",
                "--context",
                "episode",
                "--seed",
                "3",
                "--json",
                json,
            ],
            dir.path(),
        );
        assert!(ok, "flowrl eval failed:\n{out}\n{err}");
        assert!(out.contains("-200.00") && out.contains("episode"), "{out}");
        std::fs::read_to_string(dir.path().join(json)).unwrap()
    };
    assert_eq!(eval("a.json"), eval("b.json"));
}

/// `$name(kind, action, tol)` checks, in float type `$e`, window-mode acting (which
/// computes the last block and the head for each row's last state token only) against
/// the full forward pass over the same windows.
macro_rules! window_acting_check {
    ($name:ident, $e:ty) => {
fn $name(kind: AgentKind, action: ActionSpace, tol: f64) {
    type E = $e;
    use flowrl_agents::acting::Actor;
    use flowrl_agents::agent::{HostActions, HostWindow};
    let (obs, k, batch, steps) = (3, 4, 3, 11);
    let mut cfg = AgentConfig::new(kind, obs, action);
    cfg.width = 32;
    cfg.layers = 2;
    cfg.heads = 2;
    cfg.dropout = 0.0;
    cfg.context = k;
    cfg.max_ep_len = 50;
    let agent = Agent::<E, Cpu>::new(&Cpu::default(), cfg, 11).unwrap();
    let dim = match action {
        ActionSpace::Continuous { dim } => dim,
        ActionSpace::Discrete { .. } => 1,
    };
    let mut actor = Actor::new(&agent, ContextMode::Window, batch).unwrap();
    // Per live episode: its (return, state, action) history.
    let mut history: Vec<Vec<(f32, Vec<f32>, Vec<f32>)>> = vec![Vec::new(); batch];
    let mut compared = 0;
    for t in 0..steps {
        if t == 6 {
            // Episode 1 finishes: the others keep their histories.
            actor.keep_rows(&[0, 2]).unwrap();
            history.remove(1);
        }
        let b = history.len();
        let returns: Vec<f32> = (0..b).map(|i| 1.0 - 0.1 * (t + i) as f32).collect();
        let states: Vec<f32> = (0..b * obs)
            .map(|j| ((t * 7 + j) as f32 * 0.37).sin())
            .collect();
        let pred = actor.observe(&returns, &states).unwrap();
        for (i, h) in history.iter_mut().enumerate() {
            h.push((
                returns[i],
                states[i * obs..(i + 1) * obs].to_vec(),
                vec![0.0; dim],
            ));
        }
        // The full forward over each row's last K steps (right-padded), read at the last step.
        let len = history.iter().map(|h| h.len().min(k)).max().unwrap();
        let (mut s, mut a, mut idx, mut r, mut ts, mut mask) = (
            vec![0.0f32; b * len * obs],
            vec![0.0f32; b * len * dim],
            vec![0usize; b * len],
            vec![0.0f32; b * len],
            vec![0usize; b * len],
            vec![0.0f32; b * len],
        );
        let mut last = Vec::new();
        for (i, h) in history.iter().enumerate() {
            let start = h.len().saturating_sub(k);
            for (j, (ret, st, act)) in h[start..].iter().enumerate() {
                let f = i * len + j;
                s[f * obs..(f + 1) * obs].copy_from_slice(st);
                a[f * dim..(f + 1) * dim].copy_from_slice(act);
                idx[f] = act[0] as usize;
                r[f] = *ret;
                ts[f] = start + j;
                mask[f] = 1.0;
            }
            last.push(i * len + h.len() - start - 1);
        }
        let actions = match action {
            ActionSpace::Continuous { .. } => HostActions::Continuous(&a),
            ActionSpace::Discrete { .. } => HostActions::Discrete(&idx),
        };
        let w = agent
            .window(&HostWindow {
                batch: b,
                len,
                states: &s,
                actions,
                returns_to_go: &r,
                timesteps: &ts,
                mask: &mask,
            })
            .unwrap();
        let full = agent.predict(&w).unwrap().as_vec();
        let outputs = pred.width;
        for (i, &f) in last.iter().enumerate() {
            for o in 0..outputs {
                let (x, y) = (pred.row(i)[o], full[f * outputs + o]);
                let diff = (x - y).abs() as f64;
                assert!(
                    diff <= tol,
                    "{kind:?} step {t} row {i} output {o}: window acting {x:?}, full forward {y:?}"
                );
                compared += 1;
            }
        }
        // Actions in the model's scale: continuous values or indices.
        let chosen: Vec<f32> = (0..b)
            .map(|i| match action {
                ActionSpace::Continuous { .. } => (pred.row(i)[0] as f32).clamp(-1.0, 1.0),
                ActionSpace::Discrete { .. } => pred.greedy()[i] as f32,
            })
            .collect();
        for (h, &c) in history.iter_mut().zip(&chosen) {
            h.last_mut().unwrap().2 = vec![c; dim];
        }
        match action {
            ActionSpace::Continuous { .. } => {
                let flat: Vec<f32> = chosen.iter().flat_map(|&c| vec![c; dim]).collect();
                actor.record(HostActions::Continuous(&flat)).unwrap();
            }
            ActionSpace::Discrete { .. } => {
                let indices: Vec<usize> = chosen.iter().map(|&c| c as usize).collect();
                actor.record(HostActions::Discrete(&indices)).unwrap();
            }
        }
    }
    assert_eq!(compared, (6 * 3 + 5 * 2) * match action {
        ActionSpace::Continuous { dim } => dim,
        ActionSpace::Discrete { n } => n,
    });
}
    };
}

window_acting_check!(window_acting_check_f32, f32);
window_acting_check!(window_acting_check_f64, f64);

#[test]
fn window_acting_reads_the_full_forward_at_the_last_step() {
    let continuous = ActionSpace::Continuous { dim: 2 };
    let discrete = ActionSpace::Discrete { n: 3 };
    window_acting_check_f32(AgentKind::DecisionFlowformer, continuous, 1e-5);
    window_acting_check_f64(AgentKind::DecisionFlowformer, continuous, 1e-12);
    window_acting_check_f32(AgentKind::DecisionTransformer, discrete, 1e-5);
    window_acting_check_f64(AgentKind::DecisionFlowformer, discrete, 1e-12);
}
