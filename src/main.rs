//! The `flowrl` command line.

use clap::{Parser, Subcommand};
use flowrl::cli;

/// Counting allocator: lets `flowrl bench` report peak memory (a thin wrapper over the system allocator).
#[global_allocator]
static PEAK_ALLOC: peak_alloc::PeakAlloc = peak_alloc::PeakAlloc;

/// flowrl: offline reinforcement learning with a linear-time Decision-Flowformer policy.
#[derive(Parser)]
#[command(name = "flowrl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmarks that print tables (attention, environments, datasets).
    Bench(cli::bench::BenchArgs),
    /// Collect a dataset with a behaviour policy.
    Collect(cli::collect::CollectArgs),
    /// Import and inspect datasets.
    Dataset(cli::dataset::DatasetArgs),
    /// Train an agent from an experiment config, or resume a run.
    Train(cli::train::TrainArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench(args) => cli::bench::run(args),
        Command::Collect(args) => cli::collect::run(args),
        Command::Dataset(args) => cli::dataset::run(args),
        Command::Train(args) => cli::train::run(args),
    }
}
