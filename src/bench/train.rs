//! `flowrl bench train`: one training step (forward, backward, gradient clipping and
//! AdamW, f32) of the Decision-Flowformer and of the softmax Decision Transformer on
//! the CPU, for the three configurations of the performance issue, with time per
//! step, its split and peak memory. With `--compare`, the reference models in PyTorch
//! (`bench/anchors/train.py`) run the same cases in alternating rounds, and the ratios
//! of the two are printed.

use std::time::Instant;

use super::ms;

use std::fmt::Write;

use anyhow::{bail, Context};
use dfdx::prelude::*;
use flowrl_agents::agent::{ActionSpace, Agent, AgentConfig, AgentKind, HostActions, HostWindow};
use flowrl_agents::optim::{clip_grad_norm, AdamW, AdamWConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::anchors::{Anchors, Side};
use super::memory::{allocator_counts, PeakWindow};
use super::peak::{matmul_peak, step_flops, StepShape};
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
    /// Also measure the reference models in PyTorch 2.15 (bench/anchors/train.py, in the
    /// Python environment bench/anchors/run.sh builds) on the same cases, alternating
    /// with flowrl, and print the ratios.
    #[arg(long)]
    pub compare: bool,
    /// Measurement rounds (default: 2 with --compare, 1 without).
    #[arg(long)]
    pub rounds: Option<usize>,
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

    /// The issue's target for the Decision-Flowformer: seconds per step, peak bytes.
    fn target(self) -> (f64, Option<f64>) {
        match self {
            Setup::C1 => (0.3, None),
            Setup::C2 => (0.75, None),
            Setup::C3 => (3.0, Some(1.5e9)),
        }
    }

    /// Issue 18's target against PyTorch: the Decision-Flowformer is at least `speed`
    /// times as fast as PyTorch's `model`, and, where given, needs at most `1 / memory`
    /// of its peak memory.
    fn anchor_target(self) -> AnchorTarget {
        match self {
            Setup::C1 | Setup::C2 => AnchorTarget {
                model: Model::Softmax,
                speed: 1.5,
                memory: None,
            },
            Setup::C3 => AnchorTarget {
                model: Model::Flow,
                speed: 15.0,
                memory: Some(8.0),
            },
        }
    }
}

/// A target of the Decision-Flowformer against one PyTorch model.
struct AnchorTarget {
    model: Model,
    speed: f64,
    memory: Option<f64>,
}

/// Which sequence model a case trains.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
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

impl Measured {
    /// Median seconds per step.
    fn median(&self) -> f64 {
        median(self.steps.iter().map(Split::total).collect())
    }
}

/// One case of one round: its figures, or why an anchor case has none.
struct Row {
    model: Model,
    side: Side,
    round: usize,
    result: Result<Measured, String>,
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
    let rounds = args.rounds.unwrap_or(if args.compare { 2 } else { 1 });
    if rounds == 0 {
        bail!("--rounds: expected at least 1, found 0");
    }
    let anchors = args.compare.then(Anchors::from_env);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "Training step (forward + backward + clip {GRAD_CLIP} + AdamW), f32, states {OBS_DIM}, actions {ACT_DIM}, dropout 0.1, {threads} cores, dfdx cache {}",
        if args.cache { "on" } else { "off" }
    );
    println!(
        "{} warm-up steps, then up to {} timed steps (within {} s) per case; {rounds} round(s){}",
        args.warmup,
        args.reps,
        args.budget,
        if args.compare {
            ", each flowrl then PyTorch 2.15 (bench/anchors/train.py, the reference models, same cases)"
        } else {
            ""
        }
    );
    if !allocator_counts() {
        println!(
            "(peak memory unavailable: the counting allocator is not installed in this binary)"
        );
    }
    let pool = rayon::current_num_threads();
    let peak = matmul_peak(pool);
    println!(
        "matrix-product peak: {:.0} GFLOP/s (gemm, f32, 1024^3 on {pool} threads, the fastest of 10)",
        peak / 1e9
    );
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
        let mut models = Vec::new();
        for &model in &args.models {
            if model == Model::Softmax && 3 * s.context > args.softmax_max_tokens {
                println!(
                    "({}: skipped, {} tokens > --softmax-max-tokens {})",
                    model.label(),
                    3 * s.context,
                    args.softmax_max_tokens
                );
            } else {
                models.push(model);
            }
        }
        let mut rows = Vec::new();
        for round in 1..=rounds {
            for &model in &models {
                let m = measure(&args, setup, model)
                    .with_context(|| format!("{setup} with the {} model", model.label()))?;
                rows.push(Row {
                    model,
                    side: Side::Flowrl,
                    round,
                    result: Ok(m),
                });
            }
            if let (Some(anchors), false) = (&anchors, models.is_empty()) {
                eprintln!("{setup} round {round}: PyTorch (bench/anchors/train.py)");
                rows.extend(measure_anchors(anchors, &args, setup, &models, round)?);
            }
        }
        print!("{}", table(&rows));
        print!("{}", shares_of_peak(setup, &rows, peak));
        print!("{}", verdicts(setup, &rows, args.compare));
    }
    println!();
    println!("ms/step = forward + backward + update; median and best of the timed steps; CPU ms = median user + system time of all threads per step; split columns are medians.");
    println!("peak MB, flowrl = most bytes allocated at once above the start of the case: parameters, AdamW moments, the batch, activations, gradients and dfdx's buffer cache.");
    if args.compare {
        println!("peak MB, PyTorch = peak resident size of the case's own Python process (ru_maxrss) above its resident size after one step of a tiny model of the same kind: the same contents and whatever PyTorch's allocator kept.");
        println!("PyTorch = the reference models written in plain PyTorch 2.15 (bench/anchors/train.py): the Decision Transformer with GPT-2's eager attention, the Decision-Flowformer with the reference's materialised Flow-Attention.");
    }
    Ok(())
}

/// Each flowrl model's products per step and, at its median time over the rounds,
/// its rate as a share of the matrix-product peak `peak` (FLOP/s).
fn shares_of_peak(setup: Setup, rows: &[Row], peak: f64) -> String {
    let s = setup.sizes();
    let mut out = String::new();
    for model in [Model::Flow, Model::Softmax] {
        let medians: Vec<f64> = rows
            .iter()
            .filter(|r| r.model == model && r.side == Side::Flowrl)
            .filter_map(|r| r.result.as_ref().ok().map(Measured::median))
            .collect();
        if medians.is_empty() {
            continue;
        }
        let flops = step_flops(StepShape {
            batch: s.batch,
            context: s.context,
            width: s.width,
            layers: s.layers,
            heads: s.heads,
            state_dim: OBS_DIM,
            action_dim: ACT_DIM,
            softmax: model == Model::Softmax,
        });
        let rate = flops / median(medians);
        let _ = writeln!(
            out,
            "{}: {:.1} GFLOP of products per step, {:.0} GFLOP/s at the median step = {:.0}% of the matrix-product peak",
            model.label(),
            flops / 1e9,
            rate / 1e9,
            100.0 * rate / peak
        );
    }
    out
}

/// The agent config of a case: the reference sizes at the configuration's shape.
fn agent_config(setup: Setup, model: Model) -> AgentConfig {
    let s = setup.sizes();
    AgentConfig {
        width: s.width,
        layers: s.layers,
        heads: s.heads,
        context: s.context,
        ..AgentConfig::new(
            model.kind(),
            OBS_DIM,
            ActionSpace::Continuous { dim: ACT_DIM },
        )
    }
}

/// One step of a line of `bench/anchors/train.py`, in seconds.
#[derive(serde::Deserialize)]
struct AnchorStep {
    forward: f64,
    backward: f64,
    update: f64,
    cpu: f64,
}

/// One line of `bench/anchors/train.py`: one model's timed steps and peak memory, or why
/// its process failed.
#[derive(serde::Deserialize)]
struct AnchorCase {
    model: Model,
    #[serde(default)]
    steps: Vec<AnchorStep>,
    peak_bytes: Option<f64>,
    error: Option<String>,
}

impl AnchorCase {
    fn into_row(self, round: usize) -> anyhow::Result<Row> {
        let result = match self.error {
            Some(error) => Err(error),
            None if self.steps.is_empty() => bail!("train.py: no timed steps for {}", self.model),
            None => Ok(Measured {
                steps: self
                    .steps
                    .iter()
                    .map(|s| Split {
                        forward: s.forward,
                        backward: s.backward,
                        update: s.update,
                        cpu: Some(s.cpu),
                    })
                    .collect(),
                peak: self.peak_bytes.map(|b| b.max(0.0) as usize),
            }),
        };
        Ok(Row {
            model: self.model,
            side: Side::PyTorch,
            round,
            result,
        })
    }
}

/// PyTorch's figures for `models` at `setup`, from `bench/anchors/train.py` with the
/// sizes flowrl's agents have and the same step counts.
fn measure_anchors(
    anchors: &Anchors,
    args: &TrainArgs,
    setup: Setup,
    models: &[Model],
    round: usize,
) -> anyhow::Result<Vec<Row>> {
    let cfg = agent_config(setup, Model::Flow);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let names: Vec<String> = models.iter().map(Model::to_string).collect();
    let script_args: Vec<String> = [
        ("--models", names.join(",")),
        ("--batch", setup.sizes().batch.to_string()),
        ("--context", cfg.context.to_string()),
        ("--width", cfg.width.to_string()),
        ("--layers", cfg.layers.to_string()),
        ("--heads", cfg.heads.to_string()),
        ("--states", OBS_DIM.to_string()),
        ("--actions", ACT_DIM.to_string()),
        ("--max-ep-len", cfg.max_ep_len.to_string()),
        ("--dropout", cfg.dropout.to_string()),
        ("--reps", args.reps.to_string()),
        ("--warmup", args.warmup.to_string()),
        ("--budget", args.budget.to_string()),
        ("--threads", threads.to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect();
    let cases: Vec<AnchorCase> = anchors.run("train.py", &script_args)?;
    let rows = cases
        .into_iter()
        .map(|case| case.into_row(round))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for model in models {
        if !rows.iter().any(|r| r.model == *model) {
            bail!("train.py printed nothing for the {model} model");
        }
    }
    Ok(rows)
}

/// Builds the agent, its optimiser and a random batch, then times the steps.
fn measure(args: &TrainArgs, setup: Setup, model: Model) -> anyhow::Result<Measured> {
    let s = setup.sizes();
    let window = PeakWindow::start();
    let dev = Cpu::seed_from_u64(0);
    if args.cache {
        dev.enable_cache();
    }
    let cfg = agent_config(setup, model);
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
    // On a rayon worker, as `flowrl train` runs its steps.
    rayon::scope(|_| step_on_worker(agent, opt, w))
}

/// [`step`]'s work, on the calling thread.
fn step_on_worker(
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

/// The table of one configuration: every case of every round, grouped by model and side.
fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| {:<30} | {:<7} | {:>5} | {:>5} | {:>9} | {:>8} | {:>8} | {:>7} | {:>7} | {:>6} | {:>7} |",
        "model",
        "impl",
        "round",
        "steps",
        "median ms",
        "best ms",
        "CPU ms",
        "fwd ms",
        "bwd ms",
        "upd ms",
        "peak MB"
    );
    let _ = writeln!(out, "|--------------------------------|---------|-------|-------|-----------|----------|----------|---------|---------|--------|---------|");
    let mut order: Vec<&Row> = rows.iter().collect();
    order.sort_by_key(|r| (r.model, r.side, r.round));
    for row in order {
        let m = match &row.result {
            Ok(m) => m,
            Err(error) => {
                let _ = writeln!(
                    out,
                    "| {:<30} | {:<7} | {:>5} | failed: {error} |",
                    row.model.label(),
                    row.side.label(),
                    row.round
                );
                continue;
            }
        };
        let of = |f: fn(&Split) -> f64| median(m.steps.iter().map(f).collect());
        let best = m
            .steps
            .iter()
            .map(Split::total)
            .fold(f64::INFINITY, f64::min);
        let cpu: Option<Vec<f64>> = m.steps.iter().map(|s| s.cpu).collect();
        let _ = writeln!(
            out,
            "| {:<30} | {:<7} | {:>5} | {:>5} | {:>9} | {:>8} | {:>8} | {:>7} | {:>7} | {:>6} | {:>7} |",
            row.model.label(),
            row.side.label(),
            row.round,
            m.steps.len(),
            ms(m.median()),
            ms(best),
            cpu.map_or_else(|| "n/a".into(), |c| ms(median(c))),
            ms(of(|s| s.forward)),
            ms(of(|s| s.backward)),
            ms(of(|s| s.update)),
            m.peak.map_or_else(|| "n/a".into(), |b| mb(b as f64)),
        );
    }
    out
}

/// The figures of `model` measured by `side` in `round`, if it ran and succeeded.
fn find(rows: &[Row], model: Model, side: Side, round: usize) -> Option<&Measured> {
    rows.iter()
        .find(|r| r.model == model && r.side == side && r.round == round)
        .and_then(|r| r.result.as_ref().ok())
}

/// The rounds present in `rows`, in order.
fn rounds_of(rows: &[Row]) -> Vec<usize> {
    let mut rounds: Vec<usize> = rows.iter().map(|r| r.round).collect();
    rounds.sort_unstable();
    rounds.dedup();
    rounds
}

/// `met` when every value passed, else `missed`.
fn verdict(passed: &[bool]) -> &'static str {
    if passed.iter().all(|&p| p) {
        "met"
    } else {
        "missed"
    }
}

/// Under a configuration's table: the ratios per round (with `compare`), the issue's
/// target for the Decision-Flowformer and, with `compare`, issue 18's target against
/// PyTorch.
fn verdicts(setup: Setup, rows: &[Row], compare: bool) -> String {
    let mut out = String::new();
    let rounds = rounds_of(rows);
    let ratio = |ours: Model, theirs: Model, round: usize| {
        let flowrl = find(rows, ours, Side::Flowrl, round)?;
        let pytorch = find(rows, theirs, Side::PyTorch, round)?;
        Some(pytorch.median() / flowrl.median())
    };
    if compare {
        let _ = writeln!(
            out,
            "PyTorch / flowrl, median ms per step (above 1: flowrl is faster)"
        );
        let _ = writeln!(out, "| round | Decision-Flowformer vs PyTorch's | Decision Transformer vs PyTorch's | Decision-Flowformer vs PyTorch's Decision Transformer |");
        let _ = writeln!(out, "|-------|----------------------------------|-----------------------------------|-------------------------------------------------------|");
        let cell = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"));
        for &round in &rounds {
            let _ = writeln!(
                out,
                "| {round:>5} | {:>32} | {:>33} | {:>53} |",
                cell(ratio(Model::Flow, Model::Flow, round)),
                cell(ratio(Model::Softmax, Model::Softmax, round)),
                cell(ratio(Model::Flow, Model::Softmax, round)),
            );
        }
    }
    let flowrl: Vec<(usize, &Measured)> = rounds
        .iter()
        .filter_map(|&round| Some((round, find(rows, Model::Flow, Side::Flowrl, round)?)))
        .collect();
    if flowrl.is_empty() {
        return out;
    }
    let (secs, bytes) = setup.target();
    let medians: Vec<String> = flowrl.iter().map(|(_, m)| ms(m.median())).collect();
    let time_ok: Vec<bool> = flowrl.iter().map(|(_, m)| m.median() <= secs).collect();
    let mem = match bytes {
        Some(limit) => {
            let peaks: Option<Vec<usize>> = flowrl.iter().map(|(_, m)| m.peak).collect();
            match peaks {
                Some(peaks) => {
                    let ok: Vec<bool> = peaks.iter().map(|&p| p as f64 <= limit).collect();
                    format!(", <= {} MB: {}", mb(limit), verdict(&ok))
                }
                None => format!(", <= {} MB: not measured", mb(limit)),
            }
        }
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "Decision-Flowformer target <= {} ms/step: {} (median {} ms){mem}",
        ms(secs),
        verdict(&time_ok),
        medians.join(", ")
    );
    if !compare {
        return out;
    }
    let target = setup.anchor_target();
    let against = match target.model {
        Model::Flow => "the reference Decision-Flowformer",
        Model::Softmax => "the reference Decision Transformer",
    };
    let memory = target.memory.map_or(String::new(), |m| {
        format!(" at <= 1/{m:.0} of its peak memory")
    });
    let mut figures = Vec::new();
    let mut passed = Vec::new();
    for &(round, ours) in &flowrl {
        let Some(theirs) = find(rows, target.model, Side::PyTorch, round) else {
            continue;
        };
        let speed = theirs.median() / ours.median();
        let mut ok = speed >= target.speed;
        let mut figure = format!("{speed:.2}x");
        if let Some(least) = target.memory {
            match (ours.peak, theirs.peak) {
                (Some(a), Some(b)) if a > 0 => {
                    let share = b as f64 / a as f64;
                    ok &= share >= least;
                    figure += &format!(" at 1/{share:.1}");
                }
                _ => {
                    ok = false;
                    figure += " (memory not measured)";
                }
            }
        }
        figures.push(figure);
        passed.push(ok);
    }
    let outcome = if passed.is_empty() {
        format!(
            "not measured (PyTorch's {} model did not run)",
            target.model
        )
    } else {
        format!("{} ({})", verdict(&passed), figures.join(", "))
    };
    let _ = writeln!(
        out,
        "Issue 18 target: Decision-Flowformer >= {}x as fast as {against} in PyTorch{memory}: {outcome}",
        target.speed
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::anchors::tests::fake_runner;

    /// A flowrl case whose steps take `seconds` each (split 1:2:1) with `peak` bytes.
    fn flowrl(model: Model, round: usize, seconds: f64, peak: usize) -> Row {
        let split = Split {
            forward: seconds / 4.0,
            backward: seconds / 2.0,
            update: seconds / 4.0,
            cpu: Some(2.0 * seconds),
        };
        Row {
            model,
            side: Side::Flowrl,
            round,
            result: Ok(Measured {
                steps: vec![split; 3],
                peak: Some(peak),
            }),
        }
    }

    #[test]
    fn shares_of_peak_divide_the_counted_products_by_the_median_step() {
        let c1 = Setup::C1.sizes();
        let flops = step_flops(StepShape {
            batch: c1.batch,
            context: c1.context,
            width: c1.width,
            layers: c1.layers,
            heads: c1.heads,
            state_dim: OBS_DIM,
            action_dim: ACT_DIM,
            softmax: false,
        });
        // Rounds of 0.1 s and 0.3 s: median 0.2 s, against a peak of twice that rate.
        let rows = [
            flowrl(Model::Flow, 1, 0.1, 1),
            flowrl(Model::Flow, 2, 0.3, 1),
        ];
        let text = shares_of_peak(Setup::C1, &rows, 2.0 * flops / 0.2);
        assert!(
            text.contains(&format!("{:.1} GFLOP of products per step", flops / 1e9)),
            "{text}"
        );
        assert!(text.contains("= 50% of the matrix-product peak"), "{text}");
        assert!(!text.contains("softmax"), "{text}");
    }

    fn args(models: &str) -> TrainArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            train: TrainArgs,
        }
        Cli::parse_from(["bench", "--models", models, "--compare", "--reps", "2"]).train
    }

    /// Lines of a stand-in for train.py: the flow model at 0.5 s per step (1 GB), the
    /// softmax model at 0.25 s (0.5 GB); it also records its arguments.
    const FAKE_TRAIN: &str = r#"echo "$@" > "$(dirname "$0")/args"
echo 'loading torch'
echo '{"model": "flow", "steps": [{"forward": 0.1, "backward": 0.3, "update": 0.1, "cpu": 0.9}, {"forward": 0.1, "backward": 0.3, "update": 0.1, "cpu": 0.9}], "peak_bytes": 1e9}'
echo '{"model": "softmax", "steps": [{"forward": 0.05, "backward": 0.15, "update": 0.05, "cpu": 0.4}], "peak_bytes": 5e8}'"#;

    #[test]
    fn anchor_lines_become_rows_with_ratios_and_targets() {
        let dir = tempfile::tempdir().unwrap();
        let anchors = Anchors::with_runner(fake_runner(&dir, FAKE_TRAIN));
        let models = [Model::Flow, Model::Softmax];
        let mut rows = vec![
            flowrl(Model::Flow, 1, 0.1, 100_000_000),
            flowrl(Model::Softmax, 1, 0.2, 50_000_000),
        ];
        rows.extend(
            measure_anchors(&anchors, &args("flow,softmax"), Setup::C2, &models, 1).unwrap(),
        );
        let passed = std::fs::read_to_string(dir.path().join("args")).unwrap();
        assert!(passed.starts_with("train.py --models flow,softmax --batch 64 --context 20 --width 256 --layers 3 --heads 4 --states 17 --actions 6 --max-ep-len 1000 --dropout 0.1 --reps 2 "), "{passed}");

        let table = table(&rows);
        assert!(
            table.contains("| Decision-Flowformer            | PyTorch |     1 |     2 |       500 |      500 |      900 |     100 |     300 |    100 |    1000 |"),
            "{table}"
        );
        assert!(
            table.contains(
                "| Decision Transformer (softmax) | PyTorch |     1 |     1 |       250 |"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "| Decision-Flowformer            | flowrl  |     1 |     3 |       100 |"
            ),
            "{table}"
        );

        let c2 = verdicts(Setup::C2, &rows, true);
        // PyTorch / flowrl: flow 0.5 / 0.1, softmax 0.25 / 0.2, DT 0.25 / flow 0.1.
        assert!(c2.contains("|     1 |                            5.00x |                             1.25x |                                                 2.50x |"), "{c2}");
        assert!(
            c2.contains("Decision-Flowformer target <= 750 ms/step: met (median 100 ms)"),
            "{c2}"
        );
        assert!(c2.contains("Issue 18 target: Decision-Flowformer >= 1.5x as fast as the reference Decision Transformer in PyTorch: met (2.50x)"), "{c2}");

        // C3 against the reference Flowformer: 5x is short of 15x; memory 1/10 is enough.
        let c3 = verdicts(Setup::C3, &rows, true);
        assert!(
            c3.contains("at <= 1/8 of its peak memory: missed (5.00x at 1/10.0)"),
            "{c3}"
        );
    }

    #[test]
    fn a_failed_anchor_case_is_shown_and_left_out_of_the_ratios() {
        let dir = tempfile::tempdir().unwrap();
        let anchors = Anchors::with_runner(fake_runner(
            &dir,
            r#"echo '{"model": "flow", "error": "killed by signal 9 (out of memory?)"}'"#,
        ));
        let mut rows = vec![flowrl(Model::Flow, 1, 2.0, 1_000_000_000)];
        rows.extend(
            measure_anchors(&anchors, &args("flow"), Setup::C3, &[Model::Flow], 1).unwrap(),
        );
        assert!(table(&rows)
            .contains("| PyTorch |     1 | failed: killed by signal 9 (out of memory?) |"));
        let verdicts = verdicts(Setup::C3, &rows, true);
        assert!(
            verdicts.contains("|     1 |                                - |"),
            "{verdicts}"
        );
        assert!(
            verdicts.contains("not measured (PyTorch's flow model did not run)"),
            "{verdicts}"
        );
    }

    #[test]
    fn without_compare_there_is_no_pytorch_figure() {
        let rows = [flowrl(Model::Flow, 1, 4.0, 2_000_000_000)];
        let text = table(&rows) + &verdicts(Setup::C3, &rows, false);
        assert!(!text.contains("PyTorch"), "{text}");
        assert!(
            text.contains("target <= 3000 ms/step: missed (median 4000 ms), <= 1500 MB: missed"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_model_or_bad_line_is_an_error() {
        let fails = |body: &str, models: &[Model]| {
            let dir = tempfile::tempdir().unwrap();
            let anchors = Anchors::with_runner(fake_runner(&dir, body));
            match measure_anchors(&anchors, &args("flow"), Setup::C1, models, 1) {
                Ok(_) => panic!("expected an error"),
                Err(err) => format!("{err:#}"),
            }
        };
        let only_flow = r#"echo '{"model": "flow", "steps": [{"forward": 1, "backward": 1, "update": 1, "cpu": 1}]}'"#;
        let err = fails(only_flow, &[Model::Flow, Model::Softmax]);
        assert!(
            err.contains("printed nothing for the softmax model"),
            "{err}"
        );
        let err = fails(r#"echo '{"model": "flow", "steps": []}'"#, &[Model::Flow]);
        assert!(err.contains("no timed steps for flow"), "{err}");
        let err = fails(r#"echo '{"model": "mlp"}'"#, &[Model::Flow]);
        assert!(err.contains("unknown variant `mlp`"), "{err}");
    }
}
