//! `flowrl bench envs --mujoco`: MuJoCo locomotion step rates, one environment and
//! 64 in lockstep on the thread pool; with `--compare`, Gymnasium 1.4 (one env and
//! its synchronous vector env) and EnvPool (64 envs, 2 threads) measured in the same
//! run by `bench/anchors/envs.py`, alternating with flowrl, two rounds.

use std::time::Instant;

use anyhow::bail;
use flowrl_envs::{make, Action, VecEnv};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::anchors::Anchors;

/// The locomotion tasks benchmarked.
pub const LOCOMOTION_IDS: [&str; 3] = ["Hopper-v5", "HalfCheetah-v5", "Walker2d-v5"];

/// One measured rate (also a line of `bench/anchors/envs.py`).
#[derive(Clone, Debug, serde::Deserialize)]
struct Rate {
    #[serde(rename = "impl")]
    implementation: String,
    id: String,
    mode: String,
    steps_per_s: f64,
}

/// Uniform actions in [-1, 1], drawn before timing.
fn action_pool(dim: usize, count: usize) -> Vec<Action> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    (0..count)
        .map(|_| Action::Continuous((0..dim).map(|_| rng.gen_range(-1.0..=1.0)).collect()))
        .collect()
}

fn action_dim(id: &str) -> anyhow::Result<usize> {
    match make(id)?.action_spec() {
        flowrl_envs::ActionSpec::Continuous { dim, .. } => Ok(dim),
        flowrl_envs::ActionSpec::Discrete { .. } => bail!("{id} is not a locomotion task"),
    }
}

/// Steps per second of one environment over `steps` steps, resetting at episode ends.
fn single(id: &str, steps: usize) -> anyhow::Result<f64> {
    let mut env = make(id)?;
    let actions = action_pool(action_dim(id)?, 4096);
    env.reset_native(Some(0));
    let start = Instant::now();
    for i in 0..steps {
        if env.step_native(&actions[i % actions.len()]).done() {
            env.reset_native(None);
        }
    }
    Ok(steps as f64 / start.elapsed().as_secs_f64())
}

/// Steps per second of `n` environments in lockstep (about `steps` steps in all),
/// resetting each at its episode end.
fn lockstep(id: &str, n: usize, steps: usize) -> anyhow::Result<f64> {
    let mut vec = VecEnv::new(id, n)?;
    let pool = action_pool(action_dim(id)?, 64 * n);
    vec.reset(&(0..n as u64).collect::<Vec<_>>())?;
    let rounds = (steps / n).max(1);
    let start = Instant::now();
    let mut stepped = 0;
    for round in 0..rounds {
        let actions = &pool[(round % 64) * n..(round % 64 + 1) * n];
        let results = vec.step(actions)?;
        for (i, step) in results.iter().enumerate() {
            if let Some(step) = step {
                stepped += 1;
                if step.done() {
                    vec.reset_env(i, None)?;
                }
            }
        }
    }
    Ok(stepped as f64 / start.elapsed().as_secs_f64())
}

/// flowrl's rates for every task.
fn measure_flowrl(ids: &[String], steps: usize, lanes: usize) -> anyhow::Result<Vec<Rate>> {
    let mut rates = Vec::new();
    for id in ids {
        let rate = |mode: &str, steps_per_s| Rate {
            implementation: "flowrl".into(),
            id: id.clone(),
            mode: mode.into(),
            steps_per_s,
        };
        rates.push(rate("single", single(id, steps)?));
        rates.push(rate("lockstep", lockstep(id, lanes, steps * 4)?));
    }
    Ok(rates)
}

/// The anchors' rates, from `bench/anchors/envs.py`.
fn measure_anchors(
    anchors: &Anchors,
    ids: &[String],
    steps: usize,
    lanes: usize,
) -> anyhow::Result<Vec<Rate>> {
    let mut args: Vec<String> = ids
        .iter()
        .flat_map(|id| ["--id".into(), id.clone()])
        .collect();
    args.extend(
        [
            "--steps",
            &steps.to_string(),
            "--lockstep",
            &lanes.to_string(),
            "--threads",
            "2",
        ]
        .map(String::from),
    );
    anchors.run("envs.py", &args)
}

/// Runs the locomotion benchmark: `rounds` alternating rounds of flowrl and, with
/// `compare`, the anchors; prints every round's figures and the ratios.
pub fn run(steps: usize, lanes: usize, compare: bool, rounds: usize) -> anyhow::Result<()> {
    flowrl_envs::mujoco::available()?;
    let ids: Vec<String> = LOCOMOTION_IDS.iter().map(|s| s.to_string()).collect();
    let anchors = compare.then(Anchors::from_env);
    let mut all = Vec::new();
    for round in 1..=rounds {
        eprintln!("round {round}: flowrl");
        all.extend(measure_flowrl(&ids, steps, lanes)?);
        if let Some(anchors) = &anchors {
            eprintln!("round {round}: Gymnasium and EnvPool (bench/anchors/envs.py)");
            all.extend(measure_anchors(anchors, &ids, steps, lanes)?);
        }
    }
    println!(
        "MuJoCo locomotion steps/s (random actions in [-1, 1]; single: one environment; \
         lockstep: {lanes} environments, flowrl on its thread pool, EnvPool on 2 threads, \
         Gymnasium's synchronous vector env); every round, in order"
    );
    println!("| environment | mode | implementation | steps/s per round | best |");
    println!("| --- | --- | --- | --- | ---: |");
    let best = |implementation: &str, id: &str, mode: &str| -> Option<f64> {
        all.iter()
            .filter(|r| r.implementation == implementation && r.id == id && r.mode == mode)
            .map(|r| r.steps_per_s)
            .reduce(f64::max)
    };
    for id in &ids {
        for mode in ["single", "lockstep"] {
            for implementation in ["flowrl", "gymnasium", "gymnasium-sync", "envpool"] {
                let figures: Vec<String> = all
                    .iter()
                    .filter(|r| r.implementation == implementation && &r.id == id && r.mode == mode)
                    .map(|r| format!("{:.0}", r.steps_per_s))
                    .collect();
                if let Some(b) = best(implementation, id, mode) {
                    println!(
                        "| {id} | {mode} | {implementation} | {} | {b:.0} |",
                        figures.join(", ")
                    );
                }
            }
        }
    }
    if compare {
        println!();
        println!("Ratios of best rates (flowrl / anchor)");
        println!("| environment | single vs Gymnasium | lockstep vs EnvPool | lockstep vs Gymnasium sync |");
        println!("| --- | ---: | ---: | ---: |");
        for id in &ids {
            let ratio =
                |mode: &str, anchor: &str| match (best("flowrl", id, mode), best(anchor, id, mode))
                {
                    (Some(a), Some(b)) => format!("{:.2}x", a / b),
                    _ => "-".into(),
                };
            println!(
                "| {id} | {} | {} | {} |",
                ratio("single", "gymnasium"),
                ratio("lockstep", "envpool"),
                ratio("lockstep", "gymnasium-sync")
            );
        }
    }
    Ok(())
}
