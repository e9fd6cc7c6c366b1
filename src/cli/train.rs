//! `flowrl train`: train an agent from an experiment config, or resume a run. Rollouts
//! of the config's `[eval]` schedule run during training (`eval.episodes = 0` disables
//! them) and are logged as `eval/*`.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::Config;
use crate::eval;
use crate::train::{self, EvalHook, TrainOptions};

/// Arguments of `flowrl train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Experiment config (TOML); see configs/README.md.
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    config: Option<PathBuf>,
    /// Override one config key before validation, e.g. --set train.lr=3e-4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "config")]
    set: Vec<String>,
    /// Run folder of a new run (must not hold a run yet); default runs/<config name>-seed<seed>.
    #[arg(long, conflicts_with = "resume")]
    run_dir: Option<PathBuf>,
    /// Continue the run in this folder from its newest checkpoint.
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Stop after this many steps in total (checkpointing there), to resume later.
    #[arg(long, value_name = "STEPS")]
    stop_at: Option<u64>,
}

/// Runs the subcommand.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let opts = TrainOptions {
        stop_at: args.stop_at,
    };
    let outcome = match (&args.resume, &args.config) {
        (Some(run_dir), _) => {
            let config_file = run_dir.join(train::run_dir::CONFIG_FILE);
            let mut hook = Config::load(&config_file, &[] as &[&str])
                .ok()
                .map(|config| eval::run::training_hook(&config));
            train::resume(run_dir, &opts, hook.as_mut().map(|h| h as &mut EvalHook))
                .with_context(|| format!("cannot resume the run in {}", run_dir.display()))?
        }
        (None, Some(path)) => {
            let config = Config::load(path, &args.set)?;
            let mut hook = eval::run::training_hook(&config);
            let run_dir = match &args.run_dir {
                Some(dir) => dir.clone(),
                None => {
                    let stem = path
                        .file_stem()
                        .map_or("run".into(), |s| s.to_string_lossy());
                    PathBuf::from("runs").join(format!("{stem}-seed{}", config.seed))
                }
            };
            train::start(config, &run_dir, &opts, Some(&mut hook))
                .with_context(|| format!("training into {} failed", run_dir.display()))?
        }
        (None, None) => anyhow::bail!("give --config FILE (a new run) or --resume RUN_DIR"),
    };
    let state = if outcome.finished() {
        "finished"
    } else {
        "stopped"
    };
    println!(
        "{state} at step {}/{} (last loss {}); checkpoint {}",
        outcome.step,
        outcome.total_steps,
        outcome.last_loss,
        outcome.checkpoint.display()
    );
    Ok(())
}
