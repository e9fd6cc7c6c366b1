//! `flowrl bench envs`: single-thread environment steps per second, and collection
//! throughput of each quality tier, printed as tables.

use std::hint::black_box;
use std::time::Instant;

use anyhow::Context;
use flowrl_envs::{collect, make, Action, Tier};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The environments benchmarked by default.
const DEFAULT_IDS: [&str; 7] = [
    "CartPole-v1",
    "Pendulum-v1",
    "MountainCarContinuous-v0",
    "Acrobot-v1",
    "TMaze-Passive-L100",
    "TMaze-Active-L100",
    "KeyToDoor-L60",
];

/// Distinct pre-drawn actions cycled through while timing steps.
const ACTION_POOL: usize = 4096;

/// Arguments of `flowrl bench envs`.
#[derive(clap::Args)]
pub struct EnvsArgs {
    /// Environment ids (default: the four classic-control tasks, TMaze-Passive-L100,
    /// TMaze-Active-L100, KeyToDoor-L60).
    #[arg(long = "id", value_name = "ID")]
    ids: Vec<String>,
    /// Environment steps timed per environment (single thread, random actions).
    #[arg(long, default_value_t = 2_000_000)]
    steps: u64,
    /// Episodes collected per environment and tier.
    #[arg(long, default_value_t = 1000)]
    episodes: usize,
    /// Skip the collection table.
    #[arg(long)]
    no_collect: bool,
    /// Benchmark the MuJoCo locomotion tasks instead (needs `flowrl setup mujoco`):
    /// one environment and a lockstep vector, `--mujoco-steps` steps each.
    #[arg(long)]
    mujoco: bool,
    /// Steps timed per MuJoCo measurement (the lockstep vector runs four times as many).
    #[arg(long, default_value_t = 20_000)]
    mujoco_steps: usize,
    /// Environments in the MuJoCo lockstep vector.
    #[arg(long, default_value_t = 64)]
    lanes: usize,
    /// With --mujoco: also measure Gymnasium 1.4 and EnvPool in this run
    /// (bench/anchors/envs.py, in a Python environment bench/anchors/run.sh builds),
    /// alternating with flowrl, and print the ratios.
    #[arg(long)]
    compare: bool,
    /// With --mujoco: alternating measurement rounds.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

/// Times `steps` native steps of one environment with pre-drawn random actions,
/// resetting at episode ends; returns steps per second.
fn steps_per_second(id: &str, steps: u64) -> anyhow::Result<f64> {
    let mut env = make(id)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let actions: Vec<Action> = (0..ACTION_POOL)
        .map(|_| env.action_spec().sample(&mut rng))
        .collect();
    env.reset_native(Some(0));
    let start = Instant::now();
    for i in 0..steps {
        let step = env.step_native(&actions[i as usize % ACTION_POOL]);
        if step.terminated || step.truncated {
            env.reset_native(None);
        }
        black_box(step);
    }
    Ok(steps as f64 / start.elapsed().as_secs_f64())
}

/// Runs the benchmark.
pub fn run(args: EnvsArgs) -> anyhow::Result<()> {
    if args.mujoco {
        anyhow::ensure!(args.lanes > 0, "--lanes: expected at least 1, found 0");
        anyhow::ensure!(args.rounds > 0, "--rounds: expected at least 1, found 0");
        return super::locomotion::run(args.mujoco_steps, args.lanes, args.compare, args.rounds);
    }
    anyhow::ensure!(args.steps > 0, "--steps: expected at least 1, found 0");
    anyhow::ensure!(
        args.episodes > 0,
        "--episodes: expected at least 1, found 0"
    );
    let ids: Vec<String> = if args.ids.is_empty() {
        DEFAULT_IDS.iter().map(|s| s.to_string()).collect()
    } else {
        args.ids
    };

    println!("Single-thread environment steps ({} steps each, random actions, boxed FlowEnv::step_native)", args.steps);
    println!("| environment | steps/s | ns/step |");
    println!("| --- | ---: | ---: |");
    for id in &ids {
        let rate = steps_per_second(id, args.steps).with_context(|| format!("--id {id}"))?;
        println!("| {id} | {:.2}M | {:.0} |", rate / 1e6, 1e9 / rate);
    }

    if args.no_collect {
        return Ok(());
    }
    println!();
    println!(
        "Collection of {} episodes per tier (collect: 64 lockstep environments, one thread)",
        args.episodes
    );
    println!("| environment | tier | seconds | episodes/s | steps/s | mean return |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for id in &ids {
        for tier in Tier::SCRIPTED {
            let start = Instant::now();
            let episodes = collect(id, tier, args.episodes, 0, &mut |_| {})
                .with_context(|| format!("collecting {id} {tier}"))?;
            let seconds = start.elapsed().as_secs_f64();
            let steps: usize = episodes.iter().map(|e| e.len()).sum();
            let mean =
                episodes.iter().map(|e| e.total_reward()).sum::<f64>() / episodes.len() as f64;
            println!(
                "| {id} | {tier} | {seconds:.3} | {:.0} | {:.2}M | {mean:.2} |",
                episodes.len() as f64 / seconds,
                steps as f64 / seconds / 1e6
            );
        }
    }
    Ok(())
}
