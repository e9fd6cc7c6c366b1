//! `flowrl bench attention`: causal Flow-Attention versus causal softmax attention on the
//! CPU: forward+backward time and peak memory against the sequence length, and the cost
//! per token of the step-by-step Flow-Attention state against its position. The PyTorch
//! figures printed beside ours were measured on the same 2-core machine.

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
}

/// Attention-core shapes `(name, B, H, L, D = M)` of `flowrl bench train`'s configs: batch,
/// heads, 3 K tokens and width / heads.
const TRAIN_SHAPES: [(&str, usize, usize, usize, usize); 3] = [
    ("C1", 64, 1, 60, 128),
    ("C2", 64, 4, 60, 64),
    ("C3", 16, 4, 3000, 32),
];

/// PyTorch causal Flow-Attention (forward+backward seconds, peak bytes) and PyTorch's fused
/// causal softmax (seconds), B=1 H=4 D=M=32 f32, on this 2-core machine.
const PYTORCH: [(usize, f64, f64, f64); 5] = [
    (256, 0.020, 67e6, 0.0013),
    (1024, 0.072, 224e6, 0.014),
    (4096, 0.53, 372e6, 0.17),
    (16384, 2.2, 1.4e9, 2.5),
    (65536, 15.5, 4.7e9, 35.0),
];

/// Most timed runs of one case.
const MAX_RUNS: usize = 30;

/// Time and peak memory of one case.
#[derive(Clone, Copy)]
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
#[derive(Clone, Copy, PartialEq)]
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
        return run_train_shapes(&args);
    }
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
    let mut rows = Vec::new();
    let bar = crate::progress::bar(args.lengths.len() as u64, "lengths");
    for &l in &args.lengths {
        rows.push(Row {
            l,
            flow: measure(&args, Case::table(&args, l), Core::FlowFused),
            flow_composed: (l <= args.composed_max)
                .then(|| measure(&args, Case::table(&args, l), Core::FlowComposed)),
            softmax: (l <= args.softmax_max)
                .then(|| measure(&args, Case::table(&args, l), Core::SoftmaxFused)),
            softmax_composed: (softmax_bytes(&args, l) <= args.softmax_budget_gb * 1e9)
                .then(|| measure(&args, Case::table(&args, l), Core::SoftmaxComposed)),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    print_flow(&rows);
    print_scaling(&rows);
    print_softmax(&args, &rows);

    let steps = step_costs(&args).context("step-by-step benchmark")?;
    print_steps(&args, &steps);
    Ok(())
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

fn pytorch(l: usize) -> Option<(f64, f64, f64)> {
    PYTORCH.iter().find(|r| r.0 == l).map(|r| (r.1, r.2, r.3))
}

/// `ms` and `MB` cells of an optional measurement, or why it was skipped.
fn cells(m: &Option<Measured>, skipped: impl FnOnce() -> String) -> (String, String) {
    match m {
        Some(m) if m.runs == 1 => (format!("{} (1 run)", ms(m.seconds)), peak_mb(m)),
        Some(m) => (ms(m.seconds), peak_mb(m)),
        None => (skipped(), String::new()),
    }
}

fn print_flow(rows: &[Row]) {
    println!();
    println!("Causal Flow-Attention (clamp 10)");
    println!(
        "| {:>6} | {:>15} | {:>10} | {:>7} | {:>8} | {:>10} | {:>11} | {:>11} |",
        "L",
        "ours ms",
        "PyTorch ms",
        "speedup",
        "ours MB",
        "PyTorch MB",
        "composed ms",
        "composed MB"
    );
    println!("|--------|-----------------|------------|---------|----------|------------|-------------|-------------|");
    for row in rows {
        let pt = pytorch(row.l);
        let (comp_ms, comp_mb) = cells(&row.flow_composed, || "skipped".into());
        println!(
            "| {:>6} | {:>15} | {:>10} | {:>7} | {:>8} | {:>10} | {:>11} | {:>11} |",
            row.l,
            with_cpu(&row.flow),
            pt.map_or(String::new(), |p| ms(p.0)),
            pt.map_or(String::new(), |p| format!("{:.1}x", p.0 / row.flow.seconds)),
            peak_mb(&row.flow),
            pt.map_or(String::new(), |p| mb(p.1)),
            comp_ms,
            comp_mb,
        );
    }
    println!("ours ms = fastest wall clock (mean processor ms per run, all threads, in brackets).");
    println!("ours = fused CPU kernel (Cpu's path); composed = stock dfdx ops, chunk 64 (Cuda's path, run up to --composed-max).");
    println!("MB = peak bytes allocated above the baseline during the case, inputs, output and gradients included.");
}

fn print_softmax(args: &AttentionArgs, rows: &[Row]) {
    println!();
    println!("Causal softmax attention");
    println!(
        "| {:>6} | {:>14} | {:>8} | {:>16} | {:>11} | {:>15} |",
        "L", "fused ms", "fused MB", "composed ms", "composed MB", "PyTorch fused ms"
    );
    println!("|--------|----------------|----------|------------------|-------------|------------------|");
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
            "| {:>6} | {:>14} | {:>8} | {:>16} | {:>11} | {:>16} |",
            row.l,
            fused_ms,
            fused_mb,
            comp_ms,
            comp_mb,
            pytorch(row.l).map_or(String::new(), |p| ms(p.2)),
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
