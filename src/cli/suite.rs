//! `flowrl suite`: run a learning-quality suite (environments × tiers × agents × seeds)
//! and write its results table and plots; reruns skip finished entries.

use std::path::PathBuf;

use crate::suite::{self, Filter, Pick, Shard, SuiteOptions};

/// Arguments of `flowrl suite`.
#[derive(clap::Args)]
pub struct SuiteArgs {
    /// Suite config (TOML); see configs/suite/README.md.
    #[arg(long)]
    config: PathBuf,
    /// Output folder; default: the config's `suite.output` (runs/suite/<name>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Run only matching entries, e.g. env=Pendulum-v1 or agent=mlp-bc,dt-k20
    /// (keys env, tier, agent, seed; repeatable, all must match).
    #[arg(long = "filter", value_name = "KEY=V[,V...]")]
    filters: Vec<Filter>,
    /// Run only the entry of this index among those left after --filter (from 0, as
    /// --dry-run lists them), e.g. a Slurm array task's $SLURM_ARRAY_TASK_ID.
    #[arg(long, value_name = "K", conflicts_with = "shard")]
    entry: Option<usize>,
    /// Run every N-th entry from index I (of those left after --filter), e.g. 0/4 .. 3/4
    /// for four workers.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// Override an experiment-config key of every entry, e.g. --set train.steps=500
    /// (repeatable; changes the entries, so earlier results become stale).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// List the selected entries and their state (done, partial, pending, stale);
    /// run nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Runs the subcommand.
pub fn run(args: SuiteArgs) -> anyhow::Result<()> {
    suite::run(&SuiteOptions {
        config: args.config,
        out: args.out,
        filters: args.filters,
        pick: match (args.entry, args.shard) {
            (Some(k), _) => Pick::Entry(k),
            (None, Some(shard)) => shard.into(),
            (None, None) => Pick::All,
        },
        set: args.set,
        dry_run: args.dry_run,
        progress: true,
    })?;
    Ok(())
}
