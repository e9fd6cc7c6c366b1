//! `flowrl suite`: run a learning-quality suite (environments × tiers × agents × seeds)
//! and write its results table and plots; reruns skip finished entries. `flowrl suite
//! slurm` hands the entries to a Slurm cluster, `flowrl suite report` rewrites the
//! report.

use std::path::PathBuf;

use crate::suite::{self, Filter, Pick, Resources, Shard, SlurmOptions, SuiteOptions};

/// Arguments of `flowrl suite`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SuiteArgs {
    #[command(subcommand)]
    action: Option<SuiteAction>,
    #[command(flatten)]
    selection: Option<SelectionArgs>,
    /// Run only the entry of this index among those left after --filter (from 0, as
    /// --dry-run lists them), e.g. a Slurm array task's $SLURM_ARRAY_TASK_ID.
    #[arg(long, value_name = "K", conflicts_with = "shard")]
    entry: Option<usize>,
    /// Run every N-th entry from index I (of those left after --filter), e.g. 0/4 .. 3/4
    /// for four workers.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// List the selected entries and their state (done, partial, pending, stale);
    /// run nothing.
    #[arg(long)]
    dry_run: bool,
}

/// The suite and its entries, as every `flowrl suite` form takes them.
#[derive(clap::Args)]
struct SelectionArgs {
    /// Suite config (TOML); see configs/suite/README.md.
    #[arg(long)]
    config: PathBuf,
    /// Output folder; default: the config's `suite.output` (runs/suite/<name>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Only matching entries, e.g. env=Pendulum-v1 or agent=mlp-bc,dt-k20
    /// (keys env, tier, agent, seed; repeatable, all must match).
    #[arg(long = "filter", value_name = "KEY=V[,V...]")]
    filters: Vec<Filter>,
    /// Override an experiment-config key of every entry, e.g. --set train.steps=500
    /// (repeatable; changes the entries, so earlier results become stale).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl SelectionArgs {
    fn options(self, pick: Pick, dry_run: bool) -> SuiteOptions {
        SuiteOptions {
            config: self.config,
            out: self.out,
            filters: self.filters,
            pick,
            set: self.set,
            dry_run,
            progress: true,
        }
    }
}

#[derive(clap::Subcommand)]
enum SuiteAction {
    /// Write Slurm job arrays for the unfinished entries (one task per entry, a final
    /// report job); with --submit, submit them.
    Slurm(SlurmArgs),
    /// Write results.md and the plots from the finished entries; run nothing.
    Report(SelectionArgs),
}

/// Arguments of `flowrl suite slurm`.
#[derive(clap::Args)]
struct SlurmArgs {
    #[command(flatten)]
    selection: SelectionArgs,
    /// Slurm partition of the jobs.
    #[arg(long)]
    partition: Option<String>,
    /// Time limit of each task (Slurm's format, e.g. 2:00:00).
    #[arg(long)]
    time: Option<String>,
    /// CPUs of each task (the threads an entry uses).
    #[arg(long, default_value_t = 2)]
    cpus_per_task: u32,
    /// Memory of each task (Slurm's format, e.g. 4G).
    #[arg(long)]
    mem: Option<String>,
    /// At most P tasks of the suite at once (`--array=...%P`).
    #[arg(long, value_name = "P")]
    throttle: Option<u32>,
    /// A further #SBATCH line for every job, e.g. --sbatch=--account=rl (repeatable).
    #[arg(long = "sbatch", value_name = "OPTION", allow_hyphen_values = true)]
    extra: Vec<String>,
    /// Submit the jobs with sbatch and print their ids.
    #[arg(long)]
    submit: bool,
    /// After --submit, wait until every job has ended; fails if entries are unfinished.
    #[arg(long, requires = "submit")]
    wait: bool,
}

/// Runs the subcommand.
pub fn run(args: SuiteArgs) -> anyhow::Result<()> {
    match (args.action, args.selection) {
        (Some(SuiteAction::Slurm(s)), _) => {
            suite::slurm::run(&SlurmOptions {
                suite: s.selection.options(Pick::All, false),
                flowrl: std::env::current_exe()?,
                resources: Resources {
                    partition: s.partition,
                    time: s.time,
                    cpus_per_task: s.cpus_per_task,
                    mem: s.mem,
                    throttle: s.throttle,
                    extra: s.extra,
                },
                submit: s.submit,
                wait: s.wait,
                poll_seconds: 5.0,
            })?;
        }
        (Some(SuiteAction::Report(selection)), _) => {
            suite::report(&selection.options(Pick::All, false))?;
        }
        (None, Some(selection)) => {
            let pick = match (args.entry, args.shard) {
                (Some(k), _) => Pick::Entry(k),
                (None, Some(shard)) => shard.into(),
                (None, None) => Pick::All,
            };
            suite::run(&selection.options(pick, args.dry_run))?;
        }
        (None, None) => anyhow::bail!("flowrl suite: expected --config FILE or a subcommand"),
    }
    Ok(())
}
