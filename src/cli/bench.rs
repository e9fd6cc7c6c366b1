//! `flowrl bench ...`: benchmarks that print tables. Timings live here, never in tests.

use clap::{Args, Subcommand};

use crate::bench;

/// Arguments of `flowrl bench`.
#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    which: Which,
}

#[derive(Subcommand)]
enum Which {
    /// Causal Flow-Attention vs causal softmax: forward+backward time, peak memory, step-by-step cost.
    Attention(bench::attention::AttentionArgs),
    /// Environment steps per second and collection throughput.
    Envs(bench::envs::EnvsArgs),
    /// Dataset loading and training-window batch assembly.
    Data(bench::data::DataArgs),
    /// Training-step time, its split and peak memory of the Decision-Flowformer and the softmax Decision Transformer.
    Train(bench::train::TrainArgs),
    /// Per-step decision latency (window and episode modes) and lockstep rollout throughput.
    Rollout(bench::rollout::RolloutArgs),
}

/// Runs the chosen benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.which {
        Which::Attention(a) => bench::attention::run(a),
        Which::Envs(a) => bench::envs::run(a),
        Which::Data(a) => bench::data::run(a),
        Which::Train(a) => bench::train::run(a),
        Which::Rollout(a) => bench::rollout::run(a),
    }
}
