//! `flowrl collect`: record a native dataset with a behaviour tier.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::Context;
use flowrl_envs::Tier;

use crate::collect::collect_with_bar;
use crate::data::stats::DatasetInfo;
use crate::data::store;

/// Arguments of `flowrl collect`.
#[derive(clap::Args)]
pub struct CollectArgs {
    /// Environment id, e.g. Pendulum-v1, CartPole-v1, TMaze-Passive-L100.
    #[arg(long)]
    env: String,
    /// Behaviour tier: random, medium, expert, medium-expert, medium-replay.
    #[arg(long)]
    tier: String,
    /// Number of episodes.
    #[arg(long)]
    episodes: usize,
    /// Seed of the collection (same seed, same dataset).
    #[arg(long, default_value_t = 0)]
    seed: u64,
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
    let bar = crate::progress::bar(args.episodes as u64, "episodes");
    bar.set_message(format!("{} {}", args.env, tier));
    let dataset = collect_with_bar(&args.env, tier, args.episodes, args.seed, &bar)
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
