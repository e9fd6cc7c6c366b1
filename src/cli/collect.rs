//! `flowrl collect`: record a native dataset with a behaviour tier.
//!
//! Size: exactly one of `--episodes N` (that many episodes) and `--transitions N`
//! (whole episodes, in order, until they hold at least `N` transitions; the last one
//! is not cut). On the MuJoCo locomotion tasks every tier but `random` comes from a
//! behaviour set (`--behaviour DIR`, default `assets/behaviour/<env-id>/` of the
//! repository; see `flowrl::behaviour::tiers` for the tiers and the action noise).

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::Context;
use flowrl_envs::Tier;

use crate::collect::{collect_sized, CollectOptions, Size};
use crate::data::stats::DatasetInfo;
use crate::data::store;

/// Arguments of `flowrl collect`.
#[derive(clap::Args)]
pub struct CollectArgs {
    /// Environment id, e.g. Pendulum-v1, CartPole-v1, TMaze-Passive-L100, Hopper-v5.
    #[arg(long)]
    env: String,
    /// Behaviour tier: random, medium, expert, medium-expert, medium-replay, and on the
    /// MuJoCo locomotion tasks full-replay.
    #[arg(long)]
    tier: String,
    /// Number of episodes (or give --transitions).
    #[arg(
        long,
        required_unless_present = "transitions",
        conflicts_with = "transitions"
    )]
    episodes: Option<usize>,
    /// Whole episodes in order until at least this many transitions (or give --episodes).
    #[arg(long)]
    transitions: Option<usize>,
    /// Seed of the collection (same seed, same dataset).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Behaviour set of a MuJoCo locomotion task (medium.safetensors,
    /// expert.safetensors, rollouts/); default assets/behaviour/<env-id>/ of the repository.
    #[arg(long, value_name = "DIR")]
    behaviour: Option<PathBuf>,
    /// Standard deviation of the Gaussian noise added to the actions of the behaviour
    /// set's snapshots (medium, expert, medium-expert), clipped to the action bounds.
    #[arg(long, default_value_t = crate::behaviour::DEFAULT_ACTION_NOISE)]
    action_noise: f64,
    /// Output native dataset (.safetensors), written atomically.
    #[arg(long)]
    out: PathBuf,
    /// Overwrite --out if it exists.
    #[arg(long)]
    force: bool,
}

/// Runs the subcommand.
pub fn run(args: CollectArgs) -> anyhow::Result<()> {
    let tier = Tier::from_str(&args.tier).context("invalid --tier")?;
    crate::atomic::check_output(&args.out, "--out", &[], args.force)?;
    let size = match (args.episodes, args.transitions) {
        (Some(n), None) => Size::Episodes(n),
        (None, Some(n)) => Size::Transitions(n),
        _ => anyhow::bail!("give exactly one of --episodes and --transitions"),
    };
    let (flag, found, most) = match size {
        Size::Episodes(n) => ("--episodes", n, crate::limits::MAX_EPISODES),
        Size::Transitions(n) => ("--transitions", n, crate::limits::MAX_TRANSITIONS),
    };
    anyhow::ensure!(
        (1..=most).contains(&found),
        "{flag}: expected an integer in [1, {most}], found {found}"
    );
    let bar = match size {
        Size::Episodes(n) => crate::progress::bar(n as u64, "episodes"),
        Size::Transitions(_) => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_message(format!("{} {}", args.env, tier));
    let opts = CollectOptions {
        behaviour: args.behaviour.clone(),
        action_noise: Some(args.action_noise),
    };
    let dataset = collect_sized(&args.env, tier, size, args.seed, &opts, &mut |done| {
        bar.set_position(done as u64)
    });
    bar.finish_and_clear();
    let dataset = dataset
        .with_context(|| format!("cannot collect {} into {}", args.env, args.out.display()))?;
    store::save(&dataset, &args.out)?;
    let info = DatasetInfo::of(&dataset);
    let score = info
        .normalised_score
        .map(|s| format!(", normalised score {:.1} ± {:.1}", s.mean, s.std))
        .unwrap_or_default();
    println!(
        "wrote {}: {} episodes, {} transitions, return {:.2} ± {:.2}{score}",
        args.out.display(),
        info.episodes,
        info.transitions,
        info.episode_return.mean,
        info.episode_return.std
    );
    Ok(())
}
