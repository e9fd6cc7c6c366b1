//! `flowrl behaviour`: behaviour policies made in flowrl (`flowrl behaviour train`:
//! ARS V2-t linear policies, see [`crate::behaviour`] for the defaults and outputs;
//! `flowrl behaviour select`: a behaviour set from a run, see [`crate::behaviour::set`]).

use std::path::PathBuf;

use crate::behaviour::{self, ArsConfig, TrainOptions};

/// Arguments of `flowrl behaviour`.
#[derive(clap::Args)]
pub struct BehaviourArgs {
    #[command(subcommand)]
    command: BehaviourCommand,
}

#[derive(clap::Subcommand)]
enum BehaviourCommand {
    /// Train a linear policy with Augmented Random Search (V2-t), saving snapshots,
    /// every rollout, logs and checkpoints in --out; or continue one with --resume.
    Train(TrainArgs),
    /// Make a behaviour set (what `flowrl collect` takes the D4RL-style tiers of a
    /// MuJoCo task from) out of a training run: copies the --medium and --expert
    /// snapshots, the run's recipe and every training rollout into --out, atomically.
    Select(SelectArgs),
}

/// Arguments of `flowrl behaviour select`.
#[derive(clap::Args)]
struct SelectArgs {
    /// Output folder of `flowrl behaviour train`.
    #[arg(long, value_name = "TRAIN_OUT")]
    from: PathBuf,
    /// Name of the medium snapshot in <TRAIN_OUT>/snapshots/, e.g. return-1000.
    #[arg(long, value_name = "SNAPSHOT")]
    medium: String,
    /// Name of the expert snapshot in <TRAIN_OUT>/snapshots/, e.g. best.
    #[arg(long, value_name = "SNAPSHOT")]
    expert: String,
    /// The set's folder (must not exist), e.g. assets/behaviour/Hopper-v5.
    #[arg(long)]
    out: PathBuf,
    /// Leave the rollouts out (the set stays small, as the repository's are): the
    /// replay tiers then make them again from the set's training.json.
    #[arg(long)]
    without_rollouts: bool,
}

/// Arguments of `flowrl behaviour train`; unset hyper-parameters take the defaults of
/// the environment (documented in `flowrl::behaviour`).
#[derive(clap::Args)]
struct TrainArgs {
    /// Environment id with continuous actions, e.g. Hopper-v5, HalfCheetah-v5, Pendulum-v1.
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    env: Option<String>,
    /// Seed of every random stream (same seed, same run).
    #[arg(long, default_value_t = 0, conflicts_with = "resume")]
    seed: u64,
    /// Output folder of a new run (must not hold a run yet).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Continue the run in this folder from its checkpoint.
    #[arg(long, value_name = "OUT")]
    resume: Option<PathBuf>,
    /// N: directions per iteration (Hopper 8, HalfCheetah 32, Walker2d 40, others 8).
    #[arg(long, conflicts_with = "resume")]
    directions: Option<usize>,
    /// b: directions kept per update (Hopper 4, HalfCheetah 4, Walker2d 30, others 4).
    #[arg(long, conflicts_with = "resume")]
    top: Option<usize>,
    /// alpha: step size (Hopper 0.01, HalfCheetah 0.02, Walker2d 0.03, others 0.02).
    #[arg(long, conflicts_with = "resume")]
    step_size: Option<f64>,
    /// nu: exploration noise (Hopper 0.025, HalfCheetah 0.03, Walker2d 0.025, others 0.03).
    #[arg(long, conflicts_with = "resume")]
    noise: Option<f64>,
    /// Subtracted from every training reward (the survival bonus): 1 for Hopper and
    /// Walker2d, 0 otherwise. Evaluation and stored rollouts keep the real reward.
    #[arg(long, allow_hyphen_values = true, conflicts_with = "resume")]
    reward_shift: Option<f64>,
    /// Longest rollout in steps (default 1000).
    #[arg(long, conflicts_with = "resume")]
    horizon: Option<usize>,
    /// Iterations in total (MuJoCo 1000, others 100); with --resume, a new total.
    #[arg(long)]
    iterations: Option<u64>,
    /// Evaluate every this many iterations (default 10; also iteration 0 and the last).
    #[arg(long, conflicts_with = "resume")]
    eval_every: Option<u64>,
    /// Episodes per evaluation (default 10).
    #[arg(long, conflicts_with = "resume")]
    eval_episodes: Option<usize>,
    /// Save a snapshot at every multiple of this return that is reached (default 250).
    #[arg(long, conflicts_with = "resume")]
    milestone_step: Option<f64>,
    /// Checkpoint every this many iterations (default 10; also at the end).
    #[arg(long, conflicts_with = "resume")]
    checkpoint_every: Option<u64>,
    /// Stop after this many iterations in total (checkpointing there), to resume later.
    #[arg(long, value_name = "ITERATIONS")]
    stop_at: Option<u64>,
}

/// Runs the subcommand.
pub fn run(args: BehaviourArgs) -> anyhow::Result<()> {
    match args.command {
        BehaviourCommand::Train(args) => train(args),
        BehaviourCommand::Select(args) => select(args),
    }
}

fn select(args: SelectArgs) -> anyhow::Result<()> {
    let s = behaviour::set::select(
        &args.from,
        &args.medium,
        &args.expert,
        !args.without_rollouts,
        &args.out,
    )?;
    let set = behaviour::BehaviourSet::open(&args.out, &behaviour_env(&args.out)?)?;
    println!(
        "wrote the behaviour set {}: medium {} (return {:.2}, iteration {}), expert {} \
         (return {:.2}, iteration {}), rollouts of iterations 1 to {} {} (medium-replay: \
         1 to {})",
        args.out.display(),
        s.medium,
        set.medium.info().eval_return,
        set.medium.info().iteration,
        s.expert,
        set.expert.info().eval_return,
        set.expert.info().iteration,
        s.rollouts,
        if args.without_rollouts {
            "made again from training.json when read"
        } else {
            "copied"
        },
        set.medium.info().iteration
    );
    Ok(())
}

/// The environment of the set in `dir` (from its expert snapshot).
fn behaviour_env(dir: &std::path::Path) -> anyhow::Result<String> {
    let expert = behaviour::BehaviourPolicy::load(&dir.join(behaviour::set::EXPERT_FILE))?;
    Ok(expert.info().env_id.clone())
}

fn train(args: TrainArgs) -> anyhow::Result<()> {
    let opts = TrainOptions {
        stop_at: args.stop_at,
    };
    let (out, outcome) = match (&args.resume, &args.env, &args.out) {
        (Some(out), _, _) => (out.clone(), behaviour::resume(out, args.iterations, &opts)?),
        (None, Some(env), Some(out)) => {
            let mut config = ArsConfig::defaults(env, args.seed);
            set(&mut config.directions, args.directions);
            set(&mut config.top, args.top);
            set(&mut config.step_size, args.step_size);
            set(&mut config.noise, args.noise);
            set(&mut config.reward_shift, args.reward_shift);
            set(&mut config.horizon, args.horizon);
            set(&mut config.iterations, args.iterations);
            set(&mut config.eval_every, args.eval_every);
            set(&mut config.eval_episodes, args.eval_episodes);
            set(&mut config.milestone_step, args.milestone_step);
            set(&mut config.checkpoint_every, args.checkpoint_every);
            (out.clone(), behaviour::start(config, out, &opts)?)
        }
        _ => anyhow::bail!("give --env ID --out DIR (a new run) or --resume DIR"),
    };
    let state = if outcome.finished() {
        "finished"
    } else {
        "stopped"
    };
    let best = outcome
        .best_return
        .map_or("none".to_string(), |b| format!("{b:.2}"));
    println!(
        "{state} at iteration {}/{} after {} env steps (best evaluated return {best}); outputs in {}",
        outcome.iteration,
        outcome.iterations,
        outcome.env_steps,
        out.display()
    );
    Ok(())
}

/// Overrides a default with a flag's value when the flag was given.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}
