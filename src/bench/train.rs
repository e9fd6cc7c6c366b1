//! `flowrl bench train`: one training step (forward, backward, gradient clipping and
//! AdamW, f32) of the Decision-Flowformer and of the softmax Decision Transformer on
//! the CPU, for the three configurations of the performance issue, with time per
//! step, its split and peak memory. The PyTorch figures printed beside ours were
//! measured on the same 2-core machine with the original implementations.

use std::time::Instant;

use super::ms;

use anyhow::{bail, Context};
use dfdx::prelude::*;
use flowrl_agents::agent::{ActionSpace, Agent, AgentConfig, AgentKind, HostActions, HostWindow};
use flowrl_agents::optim::{clip_grad_norm, AdamW, AdamWConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::memory::{allocator_counts, PeakWindow};
use crate::cpu_time::process_cpu_seconds;

/// State and action sizes of every configuration (HalfCheetah / Walker2d).
const OBS_DIM: usize = 17;
const ACT_DIM: usize = 6;
/// Gradient-norm clip of the reference Decision Transformer.
const GRAD_CLIP: f64 = 0.25;

/// Arguments of `flowrl bench train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Configurations to run (c1, c2, c3).
    #[arg(long, value_delimiter = ',', default_values_t = [Setup::C1, Setup::C2, Setup::C3])]
    pub configs: Vec<Setup>,
    /// Models to run (flow: Decision-Flowformer, softmax: Decision Transformer).
    #[arg(long, value_delimiter = ',', default_values_t = [Model::Flow, Model::Softmax])]
    pub models: Vec<Model>,
    /// Timed steps per case after the warm-up (fewer when they would exceed --budget).
    #[arg(long, default_value_t = 7)]
    pub reps: usize,
    /// Untimed warm-up steps per case.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Seconds of timed steps a case may take: slow cases run fewer steps (at least 1).
    #[arg(long, default_value_t = 30.0)]
    pub budget: f64,
    /// Run with dfdx's buffer cache (`Cpu::enable_cache`; off by default, as in `flowrl train`).
    #[arg(long)]
    pub cache: bool,
    /// Longest sequence (tokens) the softmax model runs at: its attention costs grow as
    /// the square of the length (C3's 3000 tokens take minutes per step on 2 cores).
    #[arg(long, default_value_t = 1000)]
    pub softmax_max_tokens: usize,
}

/// A benchmark configuration of the performance issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Setup {
    /// Batch 64, K 20, width 128, 3 layers, 1 head.
    C1,
    /// Batch 64, K 20, width 256, 3 layers, 4 heads.
    C2,
    /// Batch 16, K 1000 (3000 tokens), width 128, 3 layers, 4 heads.
    C3,
}

impl std::fmt::Display for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Setup::C1 => "c1",
            Setup::C2 => "c2",
            Setup::C3 => "c3",
        })
    }
}

/// Sizes of a configuration.
struct Sizes {
    batch: usize,
    context: usize,
    width: usize,
    layers: usize,
    heads: usize,
}

impl Setup {
    fn sizes(self) -> Sizes {
        let (batch, context, width, heads) = match self {
            Setup::C1 => (64, 20, 128, 1),
            Setup::C2 => (64, 20, 256, 4),
            Setup::C3 => (16, 1000, 128, 4),
        };
        Sizes {
            batch,
            context,
            width,
            layers: 3,
            heads,
        }
    }

    /// PyTorch seconds per step and peak bytes (`None`: not measured) of the original
    /// implementation of `model`, or why it has none.
    fn pytorch(self, model: Model) -> Reference {
        match (self, model) {
            (Setup::C1, Model::Softmax) => Reference::Measured("160-210", Some(0.9e9)),
            (Setup::C1, Model::Flow) => Reference::Measured("4600", Some(2.4e9)),
            (Setup::C2, Model::Softmax) => Reference::Measured("500", None),
            (Setup::C2, Model::Flow) => Reference::Measured("5400", None),
            (Setup::C3, Model::Softmax) => Reference::OutOfMemory,
            (Setup::C3, Model::Flow) => Reference::Measured("29500", Some(8.9e9)),
        }
    }

    /// The target for the Decision-Flowformer: seconds per step, peak bytes.
    fn target(self) -> (f64, Option<f64>) {
        match self {
            Setup::C1 => (0.3, None),
            Setup::C2 => (0.75, None),
            Setup::C3 => (3.0, Some(1.5e9)),
        }
    }
}

/// A PyTorch reference figure.
enum Reference {
    /// Milliseconds per step (as printed) and peak bytes.
    Measured(&'static str, Option<f64>),
    /// The step ran out of memory (> 17 GB).
    OutOfMemory,
}

/// Which sequence model a case trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Model {
    /// Decision-Flowformer (causal Flow-Attention).
    Flow,
    /// Decision Transformer (causal softmax attention).
    Softmax,
}

impl std::fmt::Display for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Model::Flow => "flow",
            Model::Softmax => "softmax",
        })
    }
}

impl Model {
    fn kind(self) -> AgentKind {
        match self {
            Model::Flow => AgentKind::DecisionFlowformer,
            Model::Softmax => AgentKind::DecisionTransformer,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Model::Flow => "Decision-Flowformer",
            Model::Softmax => "Decision Transformer (softmax)",
        }
    }
}

/// Seconds of the three phases of one step, and the CPU seconds of all its threads.
#[derive(Clone, Copy)]
struct Split {
    forward: f64,
    backward: f64,
    update: f64,
    /// User plus system time of the whole process during the step (`None`: unknown).
    cpu: Option<f64>,
}

impl Split {
    fn total(&self) -> f64 {
        self.forward + self.backward + self.update
    }
}

/// The timed steps of one case and its peak memory.
struct Measured {
    steps: Vec<Split>,
    peak: Option<usize>,
}

/// Runs the benchmark.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    if args.reps == 0 {
        bail!("--reps: expected at least 1 timed step, found 0");
    }
    if !(args.budget.is_finite() && args.budget > 0.0) {
        bail!(
            "--budget: expected a positive number of seconds, found {}",
            args.budget
        );
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "Training step (forward + backward + clip {GRAD_CLIP} + AdamW), f32, states {OBS_DIM}, actions {ACT_DIM}, dropout 0.1, {threads} cores, dfdx cache {}",
        if args.cache { "on" } else { "off" }
    );
    println!(
        "{} warm-up steps, then up to {} timed steps (within {} s) per case",
        args.warmup, args.reps, args.budget
    );
    if !allocator_counts() {
        println!(
            "(peak memory unavailable: the counting allocator is not installed in this binary)"
        );
    }
    for &setup in &args.configs {
        let s = setup.sizes();
        println!();
        println!(
            "{}: batch {}, K {} ({} tokens), width {}, {} layers, {} heads",
            setup.to_string().to_uppercase(),
            s.batch,
            s.context,
            3 * s.context,
            s.width,
            s.layers,
            s.heads
        );
        let mut rows = Vec::new();
        for &model in &args.models {
            if model == Model::Softmax && 3 * s.context > args.softmax_max_tokens {
                println!(
                    "({}: skipped, {} tokens > --softmax-max-tokens {})",
                    model.label(),
                    3 * s.context,
                    args.softmax_max_tokens
                );
                continue;
            }
            let m = measure(&args, setup, model)
                .with_context(|| format!("{setup} with the {} model", model.label()))?;
            rows.push((model, m));
        }
        print_table(setup, &rows);
    }
    println!();
    println!("ms/step = forward + backward + update; median and best of the timed steps; CPU ms = median user + system time of all threads per step; split columns are medians.");
    println!("peak MB = most bytes allocated at once above the start of the case: parameters, AdamW moments, the batch, activations, gradients and dfdx's buffer cache.");
    Ok(())
}

/// Builds the agent, its optimiser and a random batch, then times the steps.
fn measure(args: &TrainArgs, setup: Setup, model: Model) -> anyhow::Result<Measured> {
    let s = setup.sizes();
    let window = PeakWindow::start();
    let dev = Cpu::seed_from_u64(0);
    if args.cache {
        dev.enable_cache();
    }
    let cfg = AgentConfig {
        width: s.width,
        layers: s.layers,
        heads: s.heads,
        context: s.context,
        ..AgentConfig::new(
            model.kind(),
            OBS_DIM,
            ActionSpace::Continuous { dim: ACT_DIM },
        )
    };
    let mut agent = Agent::<f32, Cpu>::new(&dev, cfg, 0)?;
    let mut opt = AdamW::new(
        agent.params(),
        AdamWConfig {
            lr: 1e-4,
            weight_decay: 1e-4,
            ..AdamWConfig::default()
        },
    )?;
    let batch = Batch::random(s.batch, s.context, cfg.max_ep_len, 0);
    let w = agent.window(&batch.host())?;

    for _ in 0..args.warmup {
        step(&mut agent, &mut opt, &w)?;
    }
    let mut steps = Vec::with_capacity(args.reps);
    let mut spent = 0.0;
    while steps.len() < args.reps && (steps.is_empty() || spent < args.budget) {
        let split = step(&mut agent, &mut opt, &w)?;
        spent += split.total();
        steps.push(split);
    }
    Ok(Measured {
        steps,
        peak: window.peak(),
    })
}

/// One training step, timed by phase.
fn step(
    agent: &mut Agent<f32, Cpu>,
    opt: &mut AdamW<f32, Cpu>,
    w: &flowrl_agents::agent::Window<f32, Cpu>,
) -> anyhow::Result<Split> {
    let cpu_start = process_cpu_seconds();
    let start = Instant::now();
    let loss = agent.loss(w, true)?;
    let forward = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut gradients = loss.backward();
    let mut grads = agent.params().grads(&mut gradients);
    drop(gradients);
    let backward = start.elapsed().as_secs_f64();
    let start = Instant::now();
    clip_grad_norm(&mut grads, GRAD_CLIP)?;
    opt.update(agent.params_mut(), &grads)?;
    let update = start.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds()
        .zip(cpu_start)
        .map(|(end, start)| end - start);
    Ok(Split {
        forward,
        backward,
        update,
        cpu,
    })
}

/// A random full batch (no padding) in the data layer's host layout.
struct Batch {
    batch: usize,
    len: usize,
    states: Vec<f32>,
    actions: Vec<f32>,
    returns: Vec<f32>,
    timesteps: Vec<usize>,
    mask: Vec<f32>,
}

impl Batch {
    fn random(batch: usize, len: usize, max_ep_len: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let steps = batch * len;
        let mut uniform = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
            (0..n).map(|_| rng.gen_range(lo..hi)).collect()
        };
        let states = uniform(steps * OBS_DIM, -2.0, 2.0);
        let actions = uniform(steps * ACT_DIM, -1.0, 1.0);
        let returns = uniform(steps, 0.0, 5.0);
        let last_start = max_ep_len.saturating_sub(len);
        let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
        let timesteps = (0..batch)
            .flat_map(|_| {
                let t0 = rng.gen_range(0..=last_start);
                (t0..t0 + len).map(move |t| t.min(max_ep_len - 1))
            })
            .collect();
        Self {
            batch,
            len,
            states,
            actions,
            returns,
            timesteps,
            mask: vec![1.0; steps],
        }
    }

    fn host(&self) -> HostWindow<'_, f32> {
        HostWindow {
            batch: self.batch,
            len: self.len,
            states: &self.states,
            actions: HostActions::Continuous(&self.actions),
            returns_to_go: &self.returns,
            timesteps: &self.timesteps,
            mask: &self.mask,
        }
    }
}

fn mb(bytes: f64) -> String {
    format!("{:.0}", bytes / 1e6)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        0.5 * (xs[n / 2 - 1] + xs[n / 2])
    }
}

fn print_table(setup: Setup, rows: &[(Model, Measured)]) {
    println!(
        "| {:<30} | {:>5} | {:>9} | {:>8} | {:>8} | {:>7} | {:>7} | {:>6} | {:>7} | {:>10} | {:>10} |",
        "model",
        "steps",
        "median ms",
        "best ms",
        "CPU ms",
        "fwd ms",
        "bwd ms",
        "upd ms",
        "peak MB",
        "PyTorch ms",
        "PyTorch MB"
    );
    println!("|--------------------------------|-------|-----------|----------|----------|---------|---------|--------|---------|------------|------------|");
    for (model, m) in rows {
        let of = |f: fn(&Split) -> f64| median(m.steps.iter().map(f).collect());
        let best = m
            .steps
            .iter()
            .map(Split::total)
            .fold(f64::INFINITY, f64::min);
        let (pt_ms, pt_mb) = match setup.pytorch(*model) {
            Reference::Measured(ms, bytes) => (ms.to_string(), bytes.map_or(String::new(), mb)),
            Reference::OutOfMemory => ("OOM".to_string(), "> 17000".to_string()),
        };
        let cpu: Option<Vec<f64>> = m.steps.iter().map(|s| s.cpu).collect();
        println!(
            "| {:<30} | {:>5} | {:>9} | {:>8} | {:>8} | {:>7} | {:>7} | {:>6} | {:>7} | {:>10} | {:>10} |",
            model.label(),
            m.steps.len(),
            ms(of(Split::total)),
            ms(best),
            cpu.map_or_else(|| "n/a".into(), |c| ms(median(c))),
            ms(of(|s| s.forward)),
            ms(of(|s| s.backward)),
            ms(of(|s| s.update)),
            m.peak.map_or_else(|| "n/a".into(), |b| mb(b as f64)),
            pt_ms,
            pt_mb,
        );
    }
    if let Some((_, m)) = rows.iter().find(|(model, _)| *model == Model::Flow) {
        let (secs, bytes) = setup.target();
        let med = median(m.steps.iter().map(Split::total).collect());
        let time_ok = med <= secs;
        let mem_ok = match (bytes, m.peak) {
            (Some(limit), Some(peak)) => Some(peak as f64 <= limit),
            _ => None,
        };
        let mem = match (bytes, mem_ok) {
            (Some(limit), Some(ok)) => format!(
                ", <= {} MB: {}",
                mb(limit),
                if ok { "met" } else { "missed" }
            ),
            (Some(limit), None) => format!(", <= {} MB: not measured", mb(limit)),
            _ => String::new(),
        };
        println!(
            "Decision-Flowformer target <= {} ms/step: {}{mem}",
            ms(secs),
            if time_ok { "met" } else { "missed" }
        );
    }
}
