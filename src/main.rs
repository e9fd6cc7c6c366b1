//! The `flowrl` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flowrl::cli;

/// Counting allocator: lets `flowrl bench` report peak memory (a thin wrapper over the
/// system allocator), with the cap `flowrl fuzz` arms around each input.
#[global_allocator]
static ALLOC: flowrl::allocator::CappedAlloc = flowrl::allocator::CappedAlloc;

/// flowrl: offline reinforcement learning with a linear-time Decision-Flowformer policy.
/// Without a subcommand, runs the quickstart.
#[derive(Parser)]
#[command(name = "flowrl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Behaviour policies made in flowrl (`flowrl behaviour train`: ARS linear policies).
    Behaviour(cli::behaviour::BehaviourArgs),
    /// Benchmarks that print tables (attention, environments, datasets).
    Bench(cli::bench::BenchArgs),
    /// Collect a dataset with a behaviour policy.
    Collect(cli::collect::CollectArgs),
    /// Import and inspect datasets.
    Dataset(cli::dataset::DatasetArgs),
    /// Train an agent from an experiment config, or resume a run.
    Train(cli::train::TrainArgs),
    /// Evaluate a trained run: return-conditioned rollouts, table and JSON report.
    Eval(cli::eval::EvalArgs),
    /// Install what optional environments need (`flowrl setup mujoco`).
    Setup(cli::setup::SetupArgs),
    /// Mutation-fuzz a reader of untrusted input (dataset, checkpoint, d4rl, minari, config).
    Fuzz(cli::fuzz::FuzzArgs),
    /// Run a suite config: environments × tiers × agents × seeds, results table and plots.
    Suite(cli::suite::SuiteArgs),
    /// Collect, train, evaluate and report with the embedded defaults (the default command).
    Quickstart(flowrl::quickstart::QuickstartArgs),
}

/// Runs the chosen command, with freed memory kept for reuse (see
/// [`flowrl::allocator`]); errors are printed as one readable chain of causes
/// (no backtrace, whatever RUST_BACKTRACE says) with exit status 1.
fn main() -> ExitCode {
    flowrl::allocator::retain_freed_memory();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => flowrl::quickstart::run(flowrl::quickstart::QuickstartArgs::default()),
        Some(Command::Quickstart(args)) => flowrl::quickstart::run(args),
        Some(Command::Eval(args)) => cli::eval::run(args),
        Some(Command::Behaviour(args)) => cli::behaviour::run(args),
        Some(Command::Bench(args)) => cli::bench::run(args),
        Some(Command::Collect(args)) => cli::collect::run(args),
        Some(Command::Dataset(args)) => cli::dataset::run(args),
        Some(Command::Train(args)) => cli::train::run(args),
        Some(Command::Suite(args)) => cli::suite::run(args),
        Some(Command::Setup(args)) => cli::setup::run(args),
        Some(Command::Fuzz(args)) => cli::fuzz::run(args),
    }
}
