//! `flowrl dataset import|info`: bring D4RL / Minari data into the native format, and
//! describe a native dataset.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use crate::data::import::d4rl::{import_d4rl, D4rlOptions, Trailing};
use crate::data::import::minari::{import_minari, MinariOptions};
use crate::data::stats::{ActionStats, DatasetInfo, Summary};
use crate::data::{store, ReferenceReturns};

/// Arguments of `flowrl dataset`.
#[derive(Args)]
pub struct DatasetArgs {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a D4RL HDF5 file or a Minari dataset into a native .safetensors dataset.
    Import(ImportArgs),
    /// Print episodes, transitions, length/return statistics, normalised score,
    /// observation and action statistics of a native dataset.
    Info(InfoArgs),
}

/// Source layouts `flowrl dataset import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Source {
    /// A D4RL HDF5 file.
    D4rl,
    /// A Minari dataset folder (or its data/main_data.hdf5).
    Minari,
}

#[derive(Args)]
struct ImportArgs {
    /// Source layout.
    #[arg(long = "from", value_enum)]
    from: Source,
    /// The D4RL file, or the Minari dataset folder.
    path: PathBuf,
    /// Output native dataset (.safetensors), written atomically.
    #[arg(long)]
    out: PathBuf,
    /// Overwrite --out if it exists.
    #[arg(long)]
    force: bool,
    /// Environment id to record (default: D4RL file name / Minari env_spec id).
    #[arg(long)]
    env: Option<String>,
    /// D4RL without `timeouts`: maximum episode length (default 1000).
    #[arg(long)]
    max_episode_steps: Option<usize>,
    /// D4RL: keep trailing steps without terminal/timeout as a truncated episode, or drop them.
    #[arg(long, value_enum, default_value_t = Trailing::Keep)]
    trailing: Trailing,
    /// Return of a uniform-random policy (with --ref-expert), for normalised scores.
    #[arg(long, requires = "ref_expert", allow_negative_numbers = true)]
    ref_random: Option<f64>,
    /// Return of an expert policy (with --ref-random).
    #[arg(long, requires = "ref_random", allow_negative_numbers = true)]
    ref_expert: Option<f64>,
}

#[derive(Args)]
struct InfoArgs {
    /// A native dataset (.safetensors).
    file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs the subcommand.
pub fn run(args: DatasetArgs) -> anyhow::Result<()> {
    match args.command {
        Command::Import(a) => import(a),
        Command::Info(a) => info(a),
    }
}

fn import(a: ImportArgs) -> anyhow::Result<()> {
    crate::atomic::check_output(&a.out, "--out", &[&a.path], a.force)?;
    let reference_returns = match (a.ref_random, a.ref_expert) {
        (Some(random), Some(expert)) => Some(ReferenceReturns { random, expert }),
        _ => None,
    };
    let imported = match a.from {
        Source::D4rl => import_d4rl(
            &a.path,
            &D4rlOptions {
                env_id: a.env,
                trailing: a.trailing,
                max_episode_steps: a.max_episode_steps,
                reference_returns,
            },
        ),
        Source::Minari => import_minari(
            &a.path,
            &MinariOptions {
                env_id: a.env,
                reference_returns,
            },
        ),
    }
    .context("import failed")?;
    for w in &imported.warnings {
        eprintln!("warning: {}: {w}", a.path.display());
    }
    if !imported.ignored.is_empty() {
        eprintln!("not kept: {}", imported.ignored.join(", "));
    }
    store::save(&imported.dataset, &a.out)?;
    let ds = &imported.dataset;
    println!(
        "wrote {}: {} episodes, {} transitions ({})",
        a.out.display(),
        ds.num_episodes(),
        ds.len(),
        ds.meta().env_id
    );
    Ok(())
}

fn info(a: InfoArgs) -> anyhow::Result<()> {
    let ds = store::load(&a.file)?;
    let info = DatasetInfo::of(&ds);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        print!("{}", render(&a.file.display().to_string(), &info));
    }
    Ok(())
}

fn row(name: &str, s: &Summary) -> String {
    format!(
        "  {name:<16} {:>12.4} {:>12.4} {:>12.4} {:>12.4}\n",
        s.mean, s.std, s.min, s.max
    )
}

fn header() -> String {
    format!(
        "  {:<16} {:>12} {:>12} {:>12} {:>12}\n",
        "", "mean", "std", "min", "max"
    )
}

/// The human-readable report of `flowrl dataset info`.
fn render(file: &str, i: &DatasetInfo) -> String {
    let mut out = format!("dataset      {file}\n");
    out += &format!("environment  {}\n", i.env_id);
    out += &format!(
        "spaces       observations {}, actions {}\n",
        i.observation_space, i.action_space
    );
    let mut made = i.source.clone();
    if let Some(p) = &i.behaviour_policy {
        made += &format!(", policy {p}");
    }
    if let Some(t) = &i.tier {
        made += &format!(", tier {t}");
    }
    if let Some(s) = i.seed {
        made += &format!(", seed {s}");
    }
    out += &format!("made by      {made}\n");
    out += &format!(
        "episodes     {} ({} terminated, {} truncated)\n",
        i.episodes, i.terminated_episodes, i.truncated_episodes
    );
    out += &format!("transitions  {}\n\n", i.transitions);
    out += &header();
    out += &row("episode length", &i.episode_length);
    out += &row("episode return", &i.episode_return);
    match (&i.normalised_score, i.reference_returns) {
        (Some(score), Some((random, expert))) => {
            out += &row("normalised", score);
            out += &format!("  (reference returns: random {random}, expert {expert})\n");
        }
        _ => out += "  normalised score: no reference returns known\n",
    }
    if let Some(b) = &i.behaviour_set {
        let score = b
            .expert_normalised
            .map(|s| format!(", normalised {s:.1}"))
            .unwrap_or_default();
        out += &format!(
            "  behaviour set {}: expert snapshot return {:.2}{score}, medium snapshot return {:.2}\n",
            b.folder, b.expert_return, b.medium_return
        );
        let counts: Vec<String> = b
            .episodes_by_policy
            .iter()
            .map(|(p, n)| format!("{p} {n}"))
            .collect();
        out += &format!("  episodes by policy: {}\n", counts.join(", "));
    }
    out += "\nobservations\n";
    out += &header();
    for (j, s) in i.observations.iter().enumerate() {
        out += &row(&format!("obs[{j}]"), s);
    }
    out += "\nactions\n";
    match &i.actions {
        ActionStats::Continuous(cols) => {
            out += &header();
            for (j, s) in cols.iter().enumerate() {
                out += &row(&format!("act[{j}]"), s);
            }
        }
        ActionStats::Discrete(counts) => {
            let total: usize = counts.iter().sum();
            for (a, c) in counts.iter().enumerate() {
                out += &format!(
                    "  action {a:<8} {c:>10} ({:.1}%)\n",
                    100.0 * *c as f64 / total.max(1) as f64
                );
            }
        }
    }
    out
}
