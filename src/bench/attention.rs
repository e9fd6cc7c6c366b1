//! `flowrl bench attention`: causal Flow-Attention versus causal softmax attention on the
//! CPU: forward+backward time and peak memory against the sequence length, and the cost
//! per token of the step-by-step Flow-Attention state against its position. With
//! `--compare`, PyTorch's cores (`bench/anchors/attention.py`: the reference Flowformer's
//! causal Flow-Attention and the fused `scaled_dot_product_attention`) run the same cases
//! in alternating rounds, and the ratios of the two are printed.

use super::anchors::{Anchors, Side};
use super::memory::{allocator_counts, PeakWindow};
use super::ms;
use crate::cpu_time::process_cpu_seconds;
use anyhow::{bail, Context};
use dfdx::prelude::*;
use flowrl_agents::attention::{
    causal_flow, causal_softmax, composed, AttentionKind, FlowConfig, FlowState, Tensor3, Tensor4,
};
use flowrl_agents::model::{Backbone, BackboneConfig};
use flowrl_agents::params::ParamStore;
use std::fmt::Write;
use std::time::Instant;

/// Arguments of `flowrl bench attention`.
#[derive(clap::Args)]
pub struct AttentionArgs {
    /// Sequence lengths L of the forward+backward table.
    #[arg(long, value_delimiter = ',', default_values_t = [256, 1024, 4096, 16384, 65536])]
    pub lengths: Vec<usize>,
    /// Least timed repetitions per case after one warm-up run; short cases repeat up to a
    /// second in total (the fastest is reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Batch size B.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Number of heads H.
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Head size (D = M).
    #[arg(long, default_value_t = 32)]
    pub head_dim: usize,
    /// Largest L at which the composed (stock dfdx ops, the Cuda path) causal flow also runs.
    #[arg(long, default_value_t = 4096)]
    pub composed_max: usize,
    /// Largest L at which the fused CPU causal softmax runs (its time grows as L^2).
    #[arg(long, default_value_t = 4096)]
    pub softmax_max: usize,
    /// Memory (GB) the composed causal softmax (stock ops, materialises (B,H,L,L)) may use;
    /// longer L are skipped with the amount needed.
    #[arg(long, default_value_t = 6.0)]
    pub softmax_budget_gb: f64,
    /// Positions at which the step-by-step cost per token is measured.
    #[arg(long, value_delimiter = ',', default_values_t = [100, 1000, 10000, 50000])]
    pub step_positions: Vec<usize>,
    /// Tokens per timed window at each of those positions (the fastest of 10 windows is reported).
    #[arg(long, default_value_t = 200)]
    pub step_window: usize,
    /// Instead of the tables above, time causal flow at the attention shapes of the
    /// training benchmark's configs C1-C3 (one layer's attention core).
    #[arg(long)]
    pub train_shapes: bool,
    /// Also measure PyTorch 2.15's cores (bench/anchors/attention.py, in the Python
    /// environment bench/anchors/run.sh builds) at the same lengths, alternating with
    /// flowrl's fused cores, and print the ratios: the reference Flowformer's causal
    /// Flow-Attention, and the fused causal SDPA up to --softmax-max.
    #[arg(long)]
    pub compare: bool,
    /// Measurement rounds of the fused cores (default: 2 with --compare, 1 without).
    #[arg(long)]
    pub rounds: Option<usize>,
}

/// Attention-core shapes `(name, B, H, L, D = M)` of `flowrl bench train`'s configs: batch,
/// heads, 3 K tokens and width / heads.
const TRAIN_SHAPES: [(&str, usize, usize, usize, usize); 3] = [
    ("C1", 64, 1, 60, 128),
    ("C2", 64, 4, 60, 64),
    ("C3", 16, 4, 3000, 32),
];

/// Most timed runs of one case.
const MAX_RUNS: usize = 30;

/// Time and peak memory of one case.
#[derive(Clone, Copy, Debug)]
struct Measured {
    seconds: f64,
    /// Peak bytes above the baseline at the start of the case; `None` without the counting allocator.
    peak: Option<usize>,
    /// Timed runs behind `seconds`.
    runs: usize,
    /// Mean processor seconds (all threads) of a timed run, where the system reports them:
    /// steadier than the wall clock when other processes share the cores.
    cpu: Option<f64>,
}

/// Which core a case runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Core {
    FlowFused,
    FlowComposed,
    SoftmaxFused,
    SoftmaxComposed,
}

/// Sizes of one case: `(B, H, L, D = M)`, and whether the backward pass runs.
#[derive(Clone, Copy)]
struct Case {
    shape: (usize, usize, usize, usize),
    backward: bool,
}

impl Case {
    /// Forward+backward at length `l` with the table's batch, heads and head size.
    fn table(args: &AttentionArgs, l: usize) -> Self {
        Self {
            shape: (args.batch, args.heads, l, args.head_dim),
            backward: true,
        }
    }
}

/// Results at one length (`None`: skipped).
struct Row {
    l: usize,
    flow: Measured,
    flow_composed: Option<Measured>,
    softmax: Option<Measured>,
    softmax_composed: Option<Measured>,
}

/// Runs the benchmark.
pub fn run(args: AttentionArgs) -> anyhow::Result<()> {
    let sizes = [
        ("--reps", args.reps),
        ("--batch", args.batch),
        ("--heads", args.heads),
        ("--head-dim", args.head_dim),
    ];
    if let Some((flag, _)) = sizes.iter().find(|(_, value)| *value == 0) {
        bail!("{flag}: expected a positive number, found 0");
    }
    if let Some(l) = args.lengths.iter().find(|&&l| l == 0) {
        bail!("--lengths: expected positive lengths, found {l}");
    }
    if args.train_shapes {
        if args.compare {
            bail!("--compare: not with --train-shapes");
        }
        return run_train_shapes(&args);
    }
    let rounds = args.rounds.unwrap_or(if args.compare { 2 } else { 1 });
    if rounds == 0 {
        bail!("--rounds: expected at least 1, found 0");
    }
    let anchors = args.compare.then(Anchors::from_env);
    let counting = allocator_counts();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "Causal attention core, forward+backward of sum(out * W), B={} H={} D=M={}, f32, {threads} cores, fastest of at least {} runs after a warm-up",
        args.batch, args.heads, args.head_dim, args.reps
    );
    if let Some(load) = load_average() {
        println!(
            "load average at start: {load} (timings grow when other processes share the cores)"
        );
    }
    if !counting {
        println!(
            "(peak memory unavailable: the counting allocator is not installed in this binary)"
        );
    }
    let mut compared = Vec::new();
    for round in 1..=rounds {
        let bar = crate::progress::bar(args.lengths.len() as u64, "lengths");
        for &l in &args.lengths {
            let fused = |core| Compared {
                core,
                side: Side::Flowrl,
                l,
                round,
                result: Ok(measure(&args, Case::table(&args, l), core)),
            };
            compared.push(fused(Core::FlowFused));
            if l <= args.softmax_max {
                compared.push(fused(Core::SoftmaxFused));
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        if let Some(anchors) = &anchors {
            eprintln!("round {round}: PyTorch (bench/anchors/attention.py)");
            compared.extend(measure_anchors(anchors, &args, round)?);
        }
    }
    let fastest = |core, l| {
        compared
            .iter()
            .filter(|c| c.side == Side::Flowrl && c.core == core && c.l == l)
            .filter_map(|c| c.result.as_ref().ok().copied())
            .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
    };
    let mut rows = Vec::new();
    let bar = crate::progress::bar(args.lengths.len() as u64, "lengths");
    for &l in &args.lengths {
        let flow = fastest(Core::FlowFused, l).context("no flow figure")?;
        rows.push(Row {
            l,
            flow,
            flow_composed: (l <= args.composed_max)
                .then(|| measure(&args, Case::table(&args, l), Core::FlowComposed)),
            softmax: fastest(Core::SoftmaxFused, l),
            softmax_composed: (softmax_bytes(&args, l) <= args.softmax_budget_gb * 1e9)
                .then(|| measure(&args, Case::table(&args, l), Core::SoftmaxComposed)),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    print_flow(&rows, rounds);
    print_scaling(&rows);
    print_softmax(&args, &rows);
    if args.compare {
        print!("{}", comparison(&compared));
    }

    let steps = step_costs(&args).context("step-by-step benchmark")?;
    print_steps(&args, &steps);
    Ok(())
}

/// One fused case of one round, measured by flowrl or by PyTorch (`Err`: why the
/// anchor's case has no figures).
#[derive(Debug)]
struct Compared {
    core: Core,
    side: Side,
    l: usize,
    round: usize,
    result: Result<Measured, String>,
}

/// A core of `bench/anchors/attention.py`.
#[derive(Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum AnchorCore {
    /// The reference Flowformer's causal Flow-Attention.
    Flow,
    /// PyTorch's fused causal `scaled_dot_product_attention`.
    Sdpa,
}

/// One line of `bench/anchors/attention.py`: one case's figures, or why its process failed.
#[derive(serde::Deserialize)]
struct AnchorCase {
    #[serde(rename = "impl")]
    core: AnchorCore,
    l: usize,
    seconds: Option<f64>,
    runs: Option<usize>,
    cpu: Option<f64>,
    peak_bytes: Option<f64>,
    error: Option<String>,
}

impl AnchorCase {
    fn into_compared(self, round: usize) -> anyhow::Result<Compared> {
        let core = match self.core {
            AnchorCore::Flow => Core::FlowFused,
            AnchorCore::Sdpa => Core::SoftmaxFused,
        };
        let result = match (self.error, self.seconds, self.runs) {
            (Some(error), _, _) => Err(error),
            (None, Some(seconds), Some(runs)) => Ok(Measured {
                seconds,
                peak: self.peak_bytes.map(|b| b.max(0.0) as usize),
                runs,
                cpu: self.cpu,
            }),
            _ => bail!("attention.py: no seconds or runs at L {}", self.l),
        };
        Ok(Compared {
            core,
            side: Side::PyTorch,
            l: self.l,
            round,
            result,
        })
    }
}

/// PyTorch's figures at every length (SDPA up to `--softmax-max`), from
/// `bench/anchors/attention.py` with the same sizes and repetitions.
fn measure_anchors(
    anchors: &Anchors,
    args: &AttentionArgs,
    round: usize,
) -> anyhow::Result<Vec<Compared>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let lengths: Vec<String> = args.lengths.iter().map(usize::to_string).collect();
    let script_args: Vec<String> = [
        ("--lengths", lengths.join(",")),
        ("--impls", "flow,sdpa".to_string()),
        ("--sdpa-max", args.softmax_max.to_string()),
        ("--batch", args.batch.to_string()),
        ("--heads", args.heads.to_string()),
        ("--head-dim", args.head_dim.to_string()),
        ("--reps", args.reps.to_string()),
        ("--threads", threads.to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect();
    let cases: Vec<AnchorCase> = anchors.run("attention.py", &script_args)?;
    let compared = cases
        .into_iter()
        .map(|case| case.into_compared(round))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for &l in &args.lengths {
        let cores = [
            (Core::FlowFused, "flow", true),
            (Core::SoftmaxFused, "sdpa", l <= args.softmax_max),
        ];
        for (core, name, expected) in cores {
            if expected && !compared.iter().any(|c| c.core == core && c.l == l) {
                bail!("attention.py printed nothing for {name} at L {l}");
            }
        }
    }
    Ok(compared)
}

/// The `--compare` table: both sides' fused cores in every round, and the ratios.
fn comparison(compared: &[Compared]) -> String {
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Against PyTorch 2.15 (bench/anchors/attention.py), every round; ratio = PyTorch ms / flowrl ms (above 1: flowrl is faster)"
    );
    let _ = writeln!(
        out,
        "| {:>6} | {:>5} | {:>15} | {:>16} | {:>7} | {:>9} | {:>10} | {:>18} | {:>16} | {:>7} |",
        "L",
        "round",
        "flow, flowrl ms",
        "flow, PyTorch ms",
        "ratio",
        "flowrl MB",
        "PyTorch MB",
        "softmax, flowrl ms",
        "SDPA, PyTorch ms",
        "ratio"
    );
    let _ = writeln!(out, "|--------|-------|-----------------|------------------|---------|-----------|------------|--------------------|------------------|---------|");
    let mut keys: Vec<(usize, usize)> = compared.iter().map(|c| (c.l, c.round)).collect();
    keys.sort_unstable();
    keys.dedup();
    for (l, round) in keys {
        let find = |core, side| {
            compared
                .iter()
                .find(|c| c.core == core && c.side == side && c.l == l && c.round == round)
                .map(|c| &c.result)
        };
        let time = |r: Option<&Result<Measured, String>>| match r {
            Some(Ok(m)) => ms(m.seconds),
            Some(Err(error)) => format!("failed: {error}"),
            None => "-".into(),
        };
        let memory = |r: Option<&Result<Measured, String>>| match r {
            Some(Ok(m)) => peak_mb(m),
            _ => "-".into(),
        };
        let ratio = |core| match (find(core, Side::Flowrl), find(core, Side::PyTorch)) {
            (Some(Ok(ours)), Some(Ok(theirs))) => format!("{:.2}x", theirs.seconds / ours.seconds),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "| {l:>6} | {round:>5} | {:>15} | {:>16} | {:>7} | {:>9} | {:>10} | {:>18} | {:>16} | {:>7} |",
            time(find(Core::FlowFused, Side::Flowrl)),
            time(find(Core::FlowFused, Side::PyTorch)),
            ratio(Core::FlowFused),
            memory(find(Core::FlowFused, Side::Flowrl)),
            memory(find(Core::FlowFused, Side::PyTorch)),
            time(find(Core::SoftmaxFused, Side::Flowrl)),
            time(find(Core::SoftmaxFused, Side::PyTorch)),
            ratio(Core::SoftmaxFused),
        );
    }
    let _ = writeln!(out, "flow, PyTorch = the reference Flowformer's causal Flow-Attention (materialised cumulative sums); SDPA = torch's fused scaled_dot_product_attention, is_causal.");
    let _ = writeln!(out, "MB: flowrl = peak bytes allocated above the case's baseline; PyTorch = peak resident size of the case's own Python process above its size after a run at L = 16.");
    out
}

/// The one-minute load average, where the system reports it (Linux).
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next().map(str::to_owned)
}

/// Bytes the composed causal softmax needs: dfdx keeps about eight `(B,H,L,L)` tensors (scores, scaled,
/// masked, softmax and their gradients) until the backward pass ends.
fn softmax_bytes(args: &AttentionArgs, l: usize) -> f64 {
    8.0 * (args.batch * args.heads) as f64 * (l as f64).powi(2) * 4.0
}

/// Fastest of at least `reps` forward+backward runs after a warm-up, adding runs (up to
/// [`MAX_RUNS`]) while they total under a second, since the fastest of more runs is less
/// disturbed by other processes; the warm-up alone when it takes more than ten seconds.
/// Also the largest peak memory among them.
fn measure(args: &AttentionArgs, case: Case, core: Core) -> Measured {
    let (warm_up, mut peak, _) = run_case(case, core, 0);
    if warm_up > 10.0 {
        return Measured {
            seconds: warm_up,
            peak,
            runs: 1,
            cpu: None,
        };
    }
    let mut best = f64::INFINITY;
    let mut total = 0.0;
    let mut runs = 0;
    let mut cpu = Some(0.0);
    while runs < args.reps || (total < 1.0 && runs < MAX_RUNS) {
        runs += 1;
        let (seconds, bytes, used) = run_case(case, core, runs as u64);
        best = best.min(seconds);
        total += seconds;
        peak = peak.max(bytes);
        cpu = cpu.zip(used).map(|(a, b)| a + b);
    }
    Measured {
        seconds: best,
        peak,
        runs,
        cpu: cpu.map(|c| c / runs as f64),
    }
}

/// One forward(+backward) run: seconds and peak bytes above the baseline (inputs included).
/// Also the processor seconds of the run.
fn run_case(case: Case, core: Core, seed: u64) -> (f64, Option<usize>, Option<f64>) {
    let window = PeakWindow::start();
    let dev = Cpu::seed_from_u64(seed);
    let shape = case.shape;
    let q: Tensor4<f32, Cpu> = dev.sample_normal_like(&shape);
    let k: Tensor4<f32, Cpu> = dev.sample_normal_like(&shape);
    let v: Tensor4<f32, Cpu> = dev.sample_normal_like(&shape);
    let w: Tensor4<f32, Cpu> = dev.sample_normal_like(&shape);
    let cpu_start = process_cpu_seconds();
    let start = Instant::now();
    let (qt, kt, vt) = (q.leaky_trace(), k.leaky_trace(), v.leaky_trace());
    let cfg = FlowConfig::rl();
    let out = match core {
        Core::FlowFused => causal_flow(qt, kt, vt, &cfg),
        Core::FlowComposed => composed::causal_flow(qt, kt, vt, &cfg),
        Core::SoftmaxFused => causal_softmax(qt, kt, vt),
        Core::SoftmaxComposed => composed::causal_softmax(qt, kt, vt),
    };
    let cpu = |start: Option<f64>| Some(process_cpu_seconds()? - start?);
    if !case.backward {
        let seconds = start.elapsed().as_secs_f64();
        std::hint::black_box(out);
        return (seconds, window.peak(), cpu(cpu_start));
    }
    let grads = (out * w).sum::<Rank0, _>().backward();
    let seconds = start.elapsed().as_secs_f64();
    let used = cpu(cpu_start);
    std::hint::black_box(grads.get(&q));
    (seconds, window.peak(), used)
}

/// `--train-shapes`: causal flow (clamp 10, f32) at the training configs' attention shapes,
/// forward alone (with the tape recording) and forward+backward, fused and composed.
fn run_train_shapes(args: &AttentionArgs) -> anyhow::Result<()> {
    println!(
        "Causal Flow-Attention core at the training configs' shapes (one layer), f32, fastest of at least {} runs after a warm-up",
        args.reps
    );
    if let Some(load) = load_average() {
        println!("load average at start: {load}");
    }
    println!(
        "| {:>6} | {:>3} | {:>2} | {:>5} | {:>5} | {:>12} | {:>16} | {:>19} |",
        "config", "B", "H", "L", "D = M", "fused fwd ms", "fused fwd+bwd ms", "composed fwd+bwd ms"
    );
    println!("|--------|-----|----|-------|-------|--------------|------------------|---------------------|");
    for (name, b, h, l, d) in TRAIN_SHAPES {
        let case = |backward| Case {
            shape: (b, h, l, d),
            backward,
        };
        let forward = measure(args, case(false), Core::FlowFused);
        let both = measure(args, case(true), Core::FlowFused);
        let composed = measure(args, case(true), Core::FlowComposed);
        println!(
            "| {name:>6} | {b:>3} | {h:>2} | {l:>5} | {d:>5} | {:>12} | {:>16} | {:>19} |",
            with_cpu(&forward),
            with_cpu(&both),
            with_cpu(&composed)
        );
    }
    println!(
        "Each cell: fastest wall-clock ms (mean processor ms per run, all threads, in brackets)."
    );
    println!("Shapes of `flowrl bench train`: C1 B64 K20 width 128 1 head; C2 B64 K20 width 256 4 heads; C3 B16 K1000 width 128 4 heads (3 tokens per step).");
    Ok(())
}

/// Fastest wall-clock ms and, where known, the mean processor ms in brackets.
fn with_cpu(m: &Measured) -> String {
    match m.cpu {
        Some(cpu) => format!("{} ({})", ms(m.seconds), ms(cpu)),
        None => ms(m.seconds),
    }
}

fn mb(bytes: f64) -> String {
    format!("{:.0}", bytes / 1e6)
}

fn peak_mb(m: &Measured) -> String {
    m.peak.map_or_else(|| "n/a".into(), |b| mb(b as f64))
}

/// `ms` and `MB` cells of an optional measurement, or why it was skipped.
fn cells(m: &Option<Measured>, skipped: impl FnOnce() -> String) -> (String, String) {
    match m {
        Some(m) if m.runs == 1 => (format!("{} (1 run)", ms(m.seconds)), peak_mb(m)),
        Some(m) => (ms(m.seconds), peak_mb(m)),
        None => (skipped(), String::new()),
    }
}

fn print_flow(rows: &[Row], rounds: usize) {
    println!();
    println!("Causal Flow-Attention (clamp 10)");
    println!(
        "| {:>6} | {:>15} | {:>8} | {:>11} | {:>11} |",
        "L", "ours ms", "ours MB", "composed ms", "composed MB"
    );
    println!("|--------|-----------------|----------|-------------|-------------|");
    for row in rows {
        let (comp_ms, comp_mb) = cells(&row.flow_composed, || "skipped".into());
        println!(
            "| {:>6} | {:>15} | {:>8} | {:>11} | {:>11} |",
            row.l,
            with_cpu(&row.flow),
            peak_mb(&row.flow),
            comp_ms,
            comp_mb,
        );
    }
    println!(
        "ours ms = fastest wall clock (mean processor ms per run, all threads, in brackets){}.",
        if rounds > 1 {
            format!(", fastest of {rounds} rounds")
        } else {
            String::new()
        }
    );
    println!("ours = fused CPU kernel (Cpu's path); composed = stock dfdx ops, chunk 64 (Cuda's path, run up to --composed-max, one round).");
    println!("MB = peak bytes allocated above the baseline during the case, inputs, output and gradients included.");
}

fn print_softmax(args: &AttentionArgs, rows: &[Row]) {
    println!();
    println!("Causal softmax attention");
    println!(
        "| {:>6} | {:>14} | {:>8} | {:>16} | {:>11} |",
        "L", "fused ms", "fused MB", "composed ms", "composed MB"
    );
    println!("|--------|----------------|----------|------------------|-------------|");
    let mut last_fused: Option<(usize, f64)> = None;
    for row in rows {
        let (fused_ms, fused_mb) = cells(&row.softmax, || match last_fused {
            Some((l0, s0)) => format!("~{:.0} s, skipped", s0 * (row.l as f64 / l0 as f64).powi(2)),
            None => "skipped".into(),
        });
        if let Some(m) = &row.softmax {
            last_fused = Some((row.l, m.seconds));
        }
        let needed = softmax_bytes(args, row.l);
        let (comp_ms, comp_mb) = cells(&row.softmax_composed, || {
            format!("needs {:.0} GB", needed / 1e9)
        });
        println!(
            "| {:>6} | {:>14} | {:>8} | {:>16} | {:>11} |",
            row.l, fused_ms, fused_mb, comp_ms, comp_mb,
        );
    }
    println!("fused = CPU kernel, tiled online softmax (FlashAttention-2 style), memory linear in L, time O(L^2) (run up to --softmax-max);");
    println!("composed = stock dfdx ops materialising (B,H,L,L) tensors (run while they fit --softmax-budget-gb).");
}

/// Growth of the flow kernel's time and memory per step in L (from 1k on) and the targets.
fn print_scaling(rows: &[Row]) {
    println!();
    for pair in rows.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.l < 1024 {
            continue;
        }
        let grow = b.l as f64 / a.l as f64;
        let mem = match (a.flow.peak, b.flow.peak) {
            (Some(x), Some(y)) => format!("memory x{:.2}", y as f64 / x as f64),
            _ => "memory n/a".into(),
        };
        println!(
            "flow L {} -> {} (x{grow:.0}): time x{:.2}, {mem} (target: time <= x{:.0})",
            a.l,
            b.l,
            b.flow.seconds / a.flow.seconds,
            grow * 1.25
        );
    }
    if let Some(row) = rows.iter().find(|r| r.l == 65536) {
        if let Some(p) = row.flow.peak {
            let gib = p as f64 / (1u64 << 30) as f64;
            let verdict = if gib <= 1.0 { "met" } else { "MISSED" };
            println!("flow peak memory at 64k: {gib:.2} GiB (target <= 1 GiB: {verdict})");
        }
    }
}

/// Timed windows of `--step-window` tokens at each position (the fastest is reported).
const STEP_WINDOWS: usize = 10;

/// Microseconds per token at each requested position of the step-by-step forms: one
/// Flowformer block's recurrent step as episode acting runs it on the CPU (its
/// Flow-Attention state in host memory; `B` rows, `H` heads of width `D`), and the
/// attention state alone with the composed ops ([`FlowState`], what CUDA runs).
fn step_costs(args: &AttentionArgs) -> anyhow::Result<Vec<(usize, f64, f64)>> {
    let mut positions = args.step_positions.clone();
    positions.sort_unstable();
    positions.dedup();
    let window = args.step_window.max(1);
    let Some(&last) = positions.last() else {
        return Ok(Vec::new());
    };
    let (b, h, d) = (args.batch, args.heads, args.head_dim);
    let dev = Cpu::seed_from_u64(7);
    let mut store = ParamStore::new(&dev, 7);
    let cfg = BackboneConfig {
        width: h * d,
        heads: h,
        layers: 1,
        attention: AttentionKind::CausalFlow,
        dropout: 0.0,
        layer_norm_eps: 1e-5,
        flow: FlowConfig::rl(),
    };
    let block = Backbone::register(&mut store, "", cfg)?;
    let pool: Vec<[Tensor3<f32, Cpu>; 3]> = (0..64)
        .map(|_| {
            [
                dev.sample_normal_like(&(b, h, d)),
                dev.sample_normal_like(&(b, h, d)),
                dev.sample_normal_like(&(b, h, d)),
            ]
        })
        .collect();
    let rows = |t: &Tensor3<f32, Cpu>| t.clone().reshape_like(&(b, h * d));
    let mut host = block.recurrent_state(&dev, b)?;
    let mut composed = FlowState::<f32, Cpu>::new(&dev, b, h, d, d, FlowConfig::rl());
    let bar = crate::progress::bar(last as u64, "tokens");
    // Each window starts from a copy of the state at the target position, so every
    // window measures that position; the fastest drops windows another process preempted.
    let time = |window_of: &mut dyn FnMut(usize) -> f64| {
        (0..STEP_WINDOWS)
            .map(|w| window_of(w * window) / window as f64)
            .fold(f64::INFINITY, f64::min)
    };
    let mut costs = Vec::new();
    for target in positions {
        while composed.position() < target {
            let [q, k, v] = pool[composed.position() % pool.len()].clone();
            block.step_tokens(&store, &mut host, rows(&q))?;
            composed.step(q, k, v);
            bar.inc(1);
        }
        let host_us = time(&mut |first| {
            let mut state = host.clone();
            let start = Instant::now();
            for i in first..first + window {
                let x = rows(&pool[i % pool.len()][0]);
                std::hint::black_box(block.step_tokens(&store, &mut state, x).ok());
            }
            start.elapsed().as_secs_f64() * 1e6
        });
        let composed_us = time(&mut |first| {
            let mut state = composed.clone();
            let start = Instant::now();
            for i in first..first + window {
                let [q, k, v] = pool[i % pool.len()].clone();
                std::hint::black_box(state.step(q, k, v));
            }
            start.elapsed().as_secs_f64() * 1e6
        });
        costs.push((target, host_us, composed_us));
    }
    bar.finish_and_clear();
    Ok(costs)
}

fn print_steps(args: &AttentionArgs, steps: &[(usize, f64, f64)]) {
    println!();
    println!(
        "Step by step, B={} H={} D=M={}, f32: microseconds per token (fastest of {STEP_WINDOWS} windows of {} tokens); a Flowformer block as episode acting runs it on the CPU (host-memory state), and the Flow-Attention state alone with the composed ops",
        args.batch, args.heads, args.head_dim, args.step_window
    );
    println!(
        "| {:>9} | {:>15} | {:>22} |",
        "position", "block, Cpu us", "attention, composed us"
    );
    println!("|-----------|-----------------|------------------------|");
    for (p, f, c) in steps {
        println!("| {p:>9} | {f:>15.2} | {c:>22.1} |");
    }
    if let (Some(first), Some(last)) = (steps.first(), steps.last()) {
        println!(
            "cost at {} / cost at {}: block x{:.2}, composed attention x{:.2} (target: within 20%)",
            last.0,
            first.0,
            last.1 / first.1,
            last.2 / first.2
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::anchors::tests::fake_runner;

    fn args(lengths: &str) -> AttentionArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            attention: AttentionArgs,
        }
        Cli::parse_from([
            "bench",
            "--lengths",
            lengths,
            "--softmax-max",
            "1024",
            "--compare",
        ])
        .attention
    }

    fn flowrl(core: Core, l: usize, seconds: f64) -> Compared {
        Compared {
            core,
            side: Side::Flowrl,
            l,
            round: 1,
            result: Ok(Measured {
                seconds,
                peak: Some(2_000_000),
                runs: 3,
                cpu: None,
            }),
        }
    }

    /// A stand-in for attention.py: flow 40 ms and 400 ms, SDPA 3 ms at L 1024, and
    /// L 4096's SDPA left out (beyond --softmax-max); it records its arguments.
    const FAKE_ATTENTION: &str = r#"echo "$@" > "$(dirname "$0")/args"
echo '{"impl": "flow", "l": 1024, "seconds": 0.04, "runs": 25, "cpu": 0.07, "peak_bytes": 2.5e8}'
echo '{"impl": "sdpa", "l": 1024, "seconds": 0.003, "runs": 30, "cpu": 0.005, "peak_bytes": 1.2e7}'
echo '{"impl": "flow", "l": 4096, "error": "killed by signal 9 (out of memory?)"}'"#;

    #[test]
    fn anchor_lines_are_compared_round_by_round() {
        let dir = tempfile::tempdir().unwrap();
        let anchors = Anchors::with_runner(fake_runner(&dir, FAKE_ATTENTION));
        let mut compared = vec![
            flowrl(Core::FlowFused, 1024, 0.004),
            flowrl(Core::SoftmaxFused, 1024, 0.002),
            flowrl(Core::FlowFused, 4096, 0.016),
        ];
        compared.extend(measure_anchors(&anchors, &args("1024,4096"), 1).unwrap());
        let passed = std::fs::read_to_string(dir.path().join("args")).unwrap();
        assert!(
            passed.starts_with("attention.py --lengths 1024,4096 --impls flow,sdpa --sdpa-max 1024 --batch 1 --heads 4 --head-dim 32 --reps 3 "),
            "{passed}"
        );
        let table = comparison(&compared);
        assert!(
            table.contains("|   1024 |     1 |             4.0 |             40.0 |  10.00x |         2 |        250 |                2.0 |              3.0 |   1.50x |"),
            "{table}"
        );
        assert!(
            table.contains("|   4096 |     1 |            16.0 | failed: killed by signal 9 (out of memory?) |       - |         2 |          - |                  - |                - |       - |"),
            "{table}"
        );
    }

    #[test]
    fn a_missing_case_or_bad_line_is_an_error() {
        let fails = |body: &str| {
            let dir = tempfile::tempdir().unwrap();
            let anchors = Anchors::with_runner(fake_runner(&dir, body));
            format!(
                "{:#}",
                measure_anchors(&anchors, &args("1024"), 1).unwrap_err()
            )
        };
        let no_sdpa = r#"echo '{"impl": "flow", "l": 1024, "seconds": 0.04, "runs": 25, "cpu": 0.07, "peak_bytes": 2.5e8}'"#;
        let err = fails(no_sdpa);
        assert!(err.contains("printed nothing for sdpa at L 1024"), "{err}");
        let err = fails(r#"echo '{"impl": "flow", "l": 1024}'"#);
        assert!(err.contains("no seconds or runs at L 1024"), "{err}");
        let err = fails(r#"echo '{"impl": "xformers", "l": 1024, "seconds": 1, "runs": 1}'"#);
        assert!(err.contains("unknown variant `xformers`"), "{err}");
    }
}
