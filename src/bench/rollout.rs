//! `flowrl bench rollout`: per-step decision latency of one episode (`window 20`, on
//! the host path acting uses and, for comparison under the same load, through dfdx
//! tensors; and `episode` mode at several steps of a 1000-step episode) and the
//! throughput of many episodes in lockstep, for a Decision-Flowformer (random init).

use std::time::Instant;

use dfdx::prelude::Cpu;
use flowrl_agents::acting::{Actor, ContextMode, Encoder};
use flowrl_agents::agent::{ActionSpace, Agent, AgentConfig, AgentKind, HostActions};

use crate::data::stats::Normalisation;
use crate::eval::{run_target, Policy, RolloutSettings};

/// Arguments of `flowrl bench rollout`.
#[derive(clap::Args)]
pub struct RolloutArgs {
    /// Model width.
    #[arg(long, default_value_t = 128)]
    width: usize,
    /// Transformer blocks.
    #[arg(long, default_value_t = 3)]
    layers: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 1)]
    heads: usize,
    /// Context K of the window mode.
    #[arg(long, default_value_t = 20)]
    context: usize,
    /// Steps of the timed episode (batch 1).
    #[arg(long, default_value_t = 1000)]
    episode_steps: usize,
    /// Episodes in lockstep for the throughput row.
    #[arg(long, default_value_t = 100)]
    episodes: usize,
    /// Environment of the throughput row.
    #[arg(long, default_value = "Pendulum-v1")]
    env: String,
    /// Context modes of the throughput rows, comma-separated (`episode`, `window`).
    #[arg(long, value_delimiter = ',', default_value = "episode,window")]
    lockstep: Vec<ContextMode>,
}

/// Observation size of the synthetic latency episode (Pendulum's).
const OBS: usize = 3;

/// Per-step latencies (seconds) of one synthetic episode of `steps` steps, batch 1.
fn episode_latencies(
    agent: &Agent<f32, Cpu>,
    mode: ContextMode,
    encoder: Encoder,
    steps: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut actor = Actor::with_encoder(agent, mode, 1, encoder)?;
    let mut out = Vec::with_capacity(steps);
    for t in 0..steps {
        let x = t as f32 * 0.01;
        let state = [x.sin(), x.cos(), 0.1];
        let start = Instant::now();
        let pred = actor.observe(&[1.0 - x * 0.001], &state)?;
        let a = [pred.values[0].clamp(-1.0, 1.0)];
        actor.record(HostActions::Continuous(&a))?;
        out.push(start.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// Median and fastest of the latencies at indices `from..to`, in milliseconds (on a
/// shared machine the fastest is the closer estimate of the unloaded cost).
fn median_fastest_ms(lat: &[f64], from: usize, to: usize) -> (f64, f64) {
    let mut v: Vec<f64> = lat[from.min(lat.len() - 1)..to.min(lat.len())].to_vec();
    v.sort_by(f64::total_cmp);
    (1e3 * v[v.len() / 2], 1e3 * v[0])
}

/// The one-minute load average, where the system reports it (Linux).
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next().map(str::to_owned)
}

/// Runs the benchmark.
pub fn run(args: RolloutArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.episode_steps >= 1,
        "--episode-steps: expected at least 1, found 0"
    );
    anyhow::ensure!(
        args.episodes >= 1,
        "--episodes: expected at least 1, found 0"
    );
    let dev = Cpu::default();
    let mut cfg = AgentConfig::new(
        AgentKind::DecisionFlowformer,
        OBS,
        ActionSpace::Continuous { dim: 1 },
    );
    cfg.width = args.width;
    cfg.layers = args.layers;
    cfg.heads = args.heads;
    cfg.context = args.context;
    cfg.max_ep_len = args.episode_steps.max(1000);
    let agent = Agent::<f32, Cpu>::new(&dev, cfg, 0)?;
    println!(
        "Decision-Flowformer width {}, {} layers, {} heads (random init), f32, CPU, {} cores available",
        args.width,
        args.layers,
        args.heads,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if let Some(load) = load_average() {
        println!(
            "load average at start: {load} (timings grow when other processes share the cores)"
        );
    }
    println!();
    println!(
        "Per-step decision latency, one episode (batch 1): median and fastest over the steps shown"
    );
    println!("| mode | steps | ms/step | fastest |");
    println!("| --- | --- | ---: | ---: |");
    let steps = args.episode_steps;
    let k = args.context;
    // The host path and, for comparison under the same load, dfdx tensors.
    for (encoder, label) in [(Encoder::Auto, ""), (Encoder::Tensors, " (dfdx tensors)")] {
        let window = episode_latencies(&agent, ContextMode::Window, encoder, steps.min(200))?;
        let (median, fastest) = median_fastest_ms(&window, k, window.len());
        println!(
            "| window {k}{label} | {}..{} | {median:.3} | {fastest:.3} |",
            k.min(window.len()),
            window.len(),
        );
    }
    let episode = episode_latencies(&agent, ContextMode::Episode, Encoder::Auto, steps)?;
    for at in [1usize, 100, 500, 1000] {
        if at > steps {
            continue;
        }
        let (from, to) = (at.saturating_sub(5).max(1) - 1, (at + 5).min(steps));
        let (median, fastest) = median_fastest_ms(&episode, from, to);
        println!("| episode | step {at} (±5) | {median:.3} | {fastest:.3} |");
    }
    let total: f64 = episode.iter().sum();
    println!(
        "| episode | all {steps} steps | {:.3} (mean) | |",
        1e3 * total / steps as f64
    );
    println!();

    let norm = Normalisation {
        obs_mean: vec![0.0; OBS],
        obs_std: vec![1.0; OBS],
        reward_scale: 1000.0,
    };
    let policy = Policy {
        agent: &agent,
        norm: &norm,
        action_bounds: None,
    };
    println!(
        "Lockstep throughput: {} {} episodes, one batched forward per step",
        args.episodes, args.env
    );
    println!("| mode | episodes | env steps | seconds | env steps/s | target |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for &mode in &args.lockstep {
        let settings = RolloutSettings::new(&args.env, args.episodes, mode, 0);
        let start = Instant::now();
        let outcomes = run_target(&policy, &settings, -150.0, &mut |_| {})?;
        let secs = start.elapsed().as_secs_f64();
        let env_steps: usize = outcomes.iter().map(|o| o.length).sum();
        println!(
            "| {} | {} | {env_steps} | {secs:.2} | {:.0} | >= 5000 |",
            match mode {
                ContextMode::Window => format!("window {k}"),
                ContextMode::Episode => "episode".into(),
            },
            args.episodes,
            env_steps as f64 / secs
        );
    }
    if let Some(load) = load_average() {
        println!("load average at the end: {load}");
    }
    Ok(())
}
