//! `flowrl eval`: roll a trained run's policy out in its environment, conditioned on
//! target returns, and report the results as a table and as JSON.

use std::path::PathBuf;

use anyhow::{bail, Context};
use flowrl_agents::acting::ContextMode;

use crate::eval::run::{plan_for, policy_of, report_file, write_report_file, EvalOverrides};
use crate::eval::{evaluate, ActionChoice};
use crate::train;

/// Arguments of `flowrl eval`.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// Run folder written by `flowrl train` (or the quickstart).
    #[arg(long = "run", value_name = "RUN_DIR")]
    run: PathBuf,
    /// Training step of the checkpoint to evaluate; default: the newest.
    #[arg(long, value_name = "STEP")]
    checkpoint: Option<u64>,
    /// Environment id; default: the run's `eval.env`, else the dataset's environment.
    #[arg(long, value_name = "ID")]
    env: Option<String>,
    /// Target returns, unscaled, comma-separated (e.g. `-150,-300`); default: the run's
    /// `eval.targets`, else the dataset's best episode return.
    #[arg(
        long,
        value_name = "A,B,...",
        value_delimiter = ',',
        allow_hyphen_values = true
    )]
    targets: Option<Vec<f64>>,
    /// Episodes per target, run in lockstep; default: the run's `eval.episodes`.
    #[arg(long, value_name = "N")]
    episodes: Option<usize>,
    /// Context mode: `window` (the last K steps re-encoded) or `episode` (whole
    /// episode; O(1) per step for the Decision-Flowformer); default: the run's.
    #[arg(long, value_name = "window|episode", value_parser = parse_context)]
    context: Option<ContextMode>,
    /// Evaluation seed (same seed, same report); default: the run's `eval.seed`.
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Sample discrete actions from softmax(logits / T) instead of acting greedily.
    #[arg(long, value_name = "T")]
    temperature: Option<f64>,
    /// Where to write the JSON report; default: <RUN_DIR>/eval/step-<N>-<context>-seed-<S>.json.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

/// Parses `--context`.
fn parse_context(s: &str) -> Result<ContextMode, String> {
    match s {
        "window" => Ok(ContextMode::Window),
        "episode" => Ok(ContextMode::Episode),
        other => Err(format!("expected `window` or `episode`, found `{other}`")),
    }
}

/// Runs the subcommand.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if let Some(env) = &args.env {
        flowrl_envs::make(env).with_context(|| format!("invalid --env `{env}`"))?;
    }
    if args.episodes == Some(0) {
        bail!("--episodes: expected at least 1, found 0");
    }
    if let Some(targets) = &args.targets {
        if targets.is_empty() || targets.iter().any(|t| !t.is_finite()) {
            bail!("--targets: expected finite numbers separated by commas, found {targets:?}");
        }
    }
    let choice = match args.temperature {
        None | Some(0.0) => ActionChoice::Greedy,
        Some(t) if t.is_finite() && t > 0.0 => ActionChoice::Temperature(t),
        Some(t) => bail!("--temperature: expected a finite value >= 0, found {t}"),
    };
    let loaded = train::load(&args.run, args.checkpoint)
        .with_context(|| format!("cannot evaluate --run {}", args.run.display()))?;
    let over = EvalOverrides {
        env: args.env,
        targets: args.targets,
        episodes: args.episodes,
        context: args.context,
        seed: args.seed,
        choice: Some(choice),
    };
    let mut plan = plan_for(&loaded.config, &loaded.preprocessing, &over);
    plan.checkpoint_step = Some(loaded.step);
    let policy = policy_of(&loaded.agent, &loaded.preprocessing);
    let report = evaluate(&policy, &plan, true)?;
    print!("{}", report.table());
    let path = args.json.unwrap_or_else(|| {
        report_file(
            &args.run,
            loaded.step,
            plan.settings.context,
            plan.settings.seed,
        )
    });
    write_report_file(&path, &report)?;
    println!("wrote {}", path.display());
    Ok(())
}
