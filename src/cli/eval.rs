//! `flowrl eval`: roll a trained run's policy out in its environment, conditioned on
//! target returns, and report the results as a table and as JSON.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use flowrl_agents::acting::ContextMode;

use crate::eval::run::{
    check_targets, plan_for, policy_of, report_file, write_report_file, EvalOverrides,
};
use crate::eval::{evaluate, ActionChoice};
use crate::limits::MAX_EPISODES;
use crate::train;
use crate::train::run_dir::{CONFIG_FILE, NORMALISATION_FILE};

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
    #[arg(long, value_name = "window|episode")]
    context: Option<ContextMode>,
    /// Evaluation seed (same seed, same report); default: the run's `eval.seed`.
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Sample discrete actions from softmax(logits / T) instead of acting greedily
    /// (discrete action spaces only: an error for a continuous policy).
    #[arg(long, value_name = "T")]
    temperature: Option<f64>,
    /// Where to write the JSON report; default: <RUN_DIR>/eval/step-<N>-<context>-seed-<S>.json.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Overwrite the --json file if it exists.
    #[arg(long, requires = "json")]
    force: bool,
}

/// The files of `run` that evaluating `loaded` reads: its config, training log,
/// collected dataset, the checkpoint's files and pointer, and the dataset file.
fn run_inputs(run: &Path, loaded: &train::LoadedRun) -> Vec<PathBuf> {
    use train::run_dir::{self, CHECKPOINT_FILES, COLLECTED_DATASET, CONFIG_FILE, TRAIN_LOG};
    let mut inputs: Vec<PathBuf> = [CONFIG_FILE, TRAIN_LOG, COLLECTED_DATASET]
        .iter()
        .map(|f| run.join(f))
        .collect();
    inputs.push(run_dir::checkpoints(run).join(run_dir::LATEST_FILE));
    inputs.extend(
        CHECKPOINT_FILES
            .iter()
            .map(|f| loaded.checkpoint_dir.join(f)),
    );
    inputs.extend(loaded.config.dataset.path.clone());
    inputs
}

/// Runs the subcommand.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if let Some(env) = &args.env {
        flowrl_envs::make(env).with_context(|| format!("invalid --env `{env}`"))?;
    }
    if let Some(n) = args.episodes {
        if !(1..=MAX_EPISODES).contains(&n) {
            bail!("--episodes: expected an integer in [1, {MAX_EPISODES}], found {n}");
        }
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
    if let Some(json) = &args.json {
        let inputs = run_inputs(&args.run, &loaded);
        let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
        crate::atomic::check_output(json, "--json", &inputs, args.force)?;
    }
    if let (Some(t), train::ActionScaling::Continuous { low, .. }) =
        (args.temperature, &loaded.preprocessing.actions)
    {
        bail!(
            "--temperature {t}: sampling applies to discrete actions only, but the run {} \
             acts in a continuous space ({} dimensions); leave out --temperature",
            args.run.display(),
            low.len()
        );
    }
    let targets_from = match &args.targets {
        Some(_) => "--targets".to_string(),
        None => format!("eval.targets of {}", args.run.join(CONFIG_FILE).display()),
    };
    let scale_from = loaded.checkpoint_dir.join(NORMALISATION_FILE);
    check_targets(
        args.targets
            .as_deref()
            .unwrap_or(&loaded.config.eval.targets),
        &loaded.preprocessing,
        &targets_from,
        &format!("from {}", scale_from.display()),
    )?;
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
    let episodes = plan.settings.episodes;
    crate::limits::check_rollout(
        loaded.agent.config(),
        episodes.saturating_mul(plan.targets.len()),
        &format!(
            "{} {episodes} x {} target(s)",
            if args.episodes.is_some() {
                "--episodes"
            } else {
                "eval.episodes"
            },
            plan.targets.len()
        ),
    )?;
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
