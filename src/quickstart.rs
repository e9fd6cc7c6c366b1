//! The quickstart (`cargo run --release` with no arguments, or `flowrl quickstart`):
//! collects a Pendulum-v1 medium-expert dataset (unless it is already there), trains a
//! small Decision-Flowformer with the embedded defaults (`configs/quickstart.toml`),
//! evaluates it during and after training, and writes a run folder with TensorBoard
//! logs, checkpoints, `report.md`, `eval.json` and PNG plots:
//!
//! ```text
//! runs/quickstart[-N]/
//!   report.md              dataset, training and evaluation summary with the plots
//!   eval.json              the final evaluation report
//!   plots/loss.png         training loss per step
//!   plots/eval_return.png  evaluation return per target over training, with the
//!                          dataset's behaviour average and the expert reference
//!   config.toml, tb/, checkpoints/, train_log.csv   (see `flowrl::train`)
//! ```

use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use anyhow::Context;
use dfdx::prelude::Cpu;
use flowrl_agents::agent::Agent;
use flowrl_envs::Tier;

use crate::collect::{collect_with_bar, dataset_file_name};
use crate::config::{Config, DatasetConfig, DatasetSource, Override};
use crate::data::stats::DatasetInfo;
use crate::data::store;
use crate::eval::run::{plan_for, policy_of, EvalOverrides};
use crate::eval::{evaluate, EvalReport, References};
use crate::plot::{write_line_chart, LineChart};
use crate::train::{self, Preprocessing, TrainOptions};

/// The quickstart's defaults, `configs/quickstart.toml`.
pub const DEFAULT_CONFIG: &str = include_str!("../configs/quickstart.toml");

/// Name of the embedded config in error messages.
const CONFIG_ORIGIN: &str = "configs/quickstart.toml (embedded)";

/// Arguments of `flowrl quickstart` (all optional).
#[derive(clap::Args, Debug, Default)]
pub struct QuickstartArgs {
    /// Run folder (must not hold a run yet); default: runs/quickstart, or
    /// runs/quickstart-2, -3, ... when taken.
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Folder of collected datasets, reused across runs; default: data.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Override a key of the embedded config, e.g. --set train.steps=500 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// One evaluation during training: the step and its report.
type Evaluation = (u64, EvalReport);

/// Runs the quickstart.
pub fn run(args: QuickstartArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let overrides = args
        .set
        .iter()
        .map(|s| Override::from_str(s))
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = Config::from_toml_str(DEFAULT_CONFIG, CONFIG_ORIGIN, &overrides)?;
    let data_dir = args.data_dir.unwrap_or_else(|| PathBuf::from("data"));
    let data_path = ensure_dataset(&mut config, &data_dir)?;
    let dataset = store::load(&data_path)?;
    let info = DatasetInfo::of(&dataset);
    println!(
        "dataset {}: {} episodes, {} steps, return {:.1} ± {:.1}{}",
        data_path.display(),
        info.episodes,
        info.transitions,
        info.episode_return.mean,
        info.episode_return.std,
        info.normalised_score
            .map(|s| format!(", normalised score {:.1}", s.mean))
            .unwrap_or_default()
    );

    let run_dir = match args.run_dir {
        Some(dir) => dir,
        None => fresh_run_dir(Path::new("runs"))?,
    };
    println!(
        "training a {} (width {}, {} layers, K {}) for {} steps into {}",
        config.agent.kind,
        config.agent.width,
        config.agent.layers,
        config.agent.context,
        config.train.steps,
        run_dir.display()
    );
    let history: RefCell<Vec<Evaluation>> = RefCell::new(Vec::new());
    let hook_config = config.clone();
    let mut hook =
        |_: &std::path::Path, step: u64, agent: &Agent<f32, Cpu>, pre: &Preprocessing| {
            let mut plan = plan_for(&hook_config, pre, &EvalOverrides::default());
            plan.checkpoint_step = Some(step);
            let report = evaluate(&policy_of(agent, pre), &plan, false)?;
            let scalars = report.scalars();
            history.borrow_mut().push((step, report));
            Ok(scalars)
        };
    let train_start = Instant::now();
    let outcome = train::start(
        config.clone(),
        &run_dir,
        &TrainOptions::default(),
        Some(&mut hook),
    )
    .with_context(|| format!("training into {} failed", run_dir.display()))?;
    let train_secs = train_start.elapsed().as_secs_f64();
    let mut history = history.into_inner();
    if history.last().map(|(s, _)| *s) != Some(outcome.step) {
        let loaded = train::load(&run_dir, Some(outcome.step))?;
        let mut plan = plan_for(
            &loaded.config,
            &loaded.preprocessing,
            &EvalOverrides::default(),
        );
        plan.checkpoint_step = Some(outcome.step);
        let report = evaluate(
            &policy_of(&loaded.agent, &loaded.preprocessing),
            &plan,
            true,
        )?;
        history.push((outcome.step, report));
    }
    let (_, last) = history.last().context("no evaluation was run")?;
    print!("{}", last.table());

    crate::atomic::write_bytes_atomic(&run_dir.join("eval.json"), last.to_json()?.as_bytes())?;
    let plots = run_dir.join("plots");
    std::fs::create_dir_all(&plots)
        .with_context(|| format!("cannot create the folder {}", plots.display()))?;
    plot_loss(&run_dir, &plots.join("loss.png"))?;
    plot_eval(&history, &info, &plots.join("eval_return.png"))?;
    let summary = Summary {
        data_path: &data_path,
        info: &info,
        config: &config,
        steps: outcome.step,
        final_loss: outcome.last_loss,
        train_secs,
        history: &history,
    };
    crate::atomic::write_bytes_atomic(&run_dir.join("report.md"), summary.markdown().as_bytes())?;
    println!("{}", summary.verdict());
    println!(
        "wrote {} (report.md, eval.json, plots/, tb/, checkpoints/) in {:.0} s",
        run_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Collects the config's dataset into `data_dir` unless it is there already, and points
/// the config at the file. A config that names a dataset file is left as it is.
fn ensure_dataset(config: &mut Config, data_dir: &Path) -> anyhow::Result<PathBuf> {
    match config.dataset_source()? {
        DatasetSource::File(path) => Ok(path),
        DatasetSource::Collect {
            env,
            tier,
            episodes,
            seed,
        } => {
            let path = data_dir.join(dataset_file_name(&env, &tier, episodes, seed));
            if path.is_file() {
                println!("using the dataset {} (already collected)", path.display());
            } else {
                let tier_value = Tier::from_str(&tier).context("invalid dataset.tier")?;
                std::fs::create_dir_all(data_dir)
                    .with_context(|| format!("cannot create the folder {}", data_dir.display()))?;
                let bar = crate::progress::bar(episodes as u64, "episodes");
                bar.set_message(format!("collecting {env} {tier}"));
                let ds = collect_with_bar(&env, tier_value, episodes, seed, &bar)?;
                store::save(&ds, &path)?;
                println!(
                    "collected {episodes} episodes of {env} ({tier}) into {}",
                    path.display()
                );
            }
            config.dataset = DatasetConfig {
                path: Some(path.clone()),
                ..DatasetConfig::default()
            };
            Ok(path)
        }
    }
}

/// `base/quickstart`, or the first of `base/quickstart-2`, `-3`, ... that does not exist.
fn fresh_run_dir(base: &Path) -> anyhow::Result<PathBuf> {
    let first = base.join("quickstart");
    if !first.exists() {
        return Ok(first);
    }
    (2..10_000)
        .map(|i| base.join(format!("quickstart-{i}")))
        .find(|p| !p.exists())
        .with_context(|| format!("no free run folder name under {}", base.display()))
}

/// The training loss per step, from `train_log.csv`.
fn plot_loss(run_dir: &Path, path: &Path) -> anyhow::Result<()> {
    let log = train::read_train_log(run_dir)?;
    let points: Vec<(f64, f64)> = log
        .iter()
        .map(|r| (r.step as f64, f64::from(r.loss)))
        .collect();
    let chart = LineChart::new("Training loss", "step", "loss (masked MSE)").series("loss", points);
    write_line_chart(path, &chart)
}

/// The mean evaluation return per target over training, with the dataset's behaviour
/// average and the expert reference as dashed lines.
fn plot_eval(history: &[Evaluation], info: &DatasetInfo, path: &Path) -> anyhow::Result<()> {
    let Some((_, first)) = history.first() else {
        anyhow::bail!("no evaluation to plot");
    };
    let mut chart = LineChart::new(
        &format!("Evaluation return on {}", first.env_id),
        "training step",
        "mean episode return",
    );
    for (i, t) in first.targets.iter().enumerate() {
        let points = history
            .iter()
            .filter_map(|(step, r)| r.targets.get(i).map(|x| (*step as f64, x.ret.mean)))
            .collect();
        chart = chart.series(&format!("target {}", t.target), points);
    }
    chart = chart.reference("dataset behaviour average", info.episode_return.mean);
    if let Some(refs) = References::of(&first.env_id) {
        chart = chart.reference("expert reference", refs.expert);
    }
    write_line_chart(path, &chart)
}

/// What `report.md` summarises.
struct Summary<'a> {
    data_path: &'a Path,
    info: &'a DatasetInfo,
    config: &'a Config,
    steps: u64,
    final_loss: f32,
    train_secs: f64,
    history: &'a [Evaluation],
}

impl Summary<'_> {
    /// The best normalised score over the final report's targets.
    fn best_score(&self) -> Option<(f64, f64)> {
        let (_, last) = self.history.last()?;
        last.targets
            .iter()
            .filter_map(|t| t.normalised.map(|n| (t.target, n.mean)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// One line: the agent's best normalised score against the dataset's average.
    fn verdict(&self) -> String {
        match (self.best_score(), self.info.normalised_score) {
            (Some((target, agent)), Some(data)) => format!(
                "normalised score {agent:.1} (target {target}) vs the dataset's average {:.1}: {}",
                data.mean,
                if agent > data.mean {
                    "the agent beats its data"
                } else {
                    "the agent does NOT beat its data"
                }
            ),
            _ => "no reference returns for a normalised score".into(),
        }
    }

    /// The whole `report.md`.
    fn markdown(&self) -> String {
        let mut md = String::new();
        let (c, i) = (self.config, self.info);
        let _ = writeln!(
            md,
            "# flowrl quickstart: {} on {} ({})\n",
            c.agent.kind,
            i.env_id,
            i.tier.as_deref().unwrap_or("dataset")
        );
        let _ = writeln!(md, "{}\n", self.verdict());
        let _ = writeln!(md, "## Dataset\n");
        let _ = writeln!(
            md,
            "| file | episodes | steps | return (mean ± std) | normalised score |"
        );
        let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: |");
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {:.1} ± {:.1} | {} |\n",
            self.data_path.display(),
            i.episodes,
            i.transitions,
            i.episode_return.mean,
            i.episode_return.std,
            i.normalised_score
                .map(|s| format!("{:.1} ± {:.1}", s.mean, s.std))
                .unwrap_or_else(|| "-".into())
        );
        let _ = writeln!(md, "## Training\n");
        let _ = writeln!(md, "| model | steps | batch | lr | final loss | time |");
        let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: |");
        let _ = writeln!(
            md,
            "| {}, width {}, {} layers, {} head(s), K {} | {} | {} | {} | {:.4} | {:.0} s |\n",
            c.agent.kind,
            c.agent.width,
            c.agent.layers,
            c.agent.heads,
            c.agent.context,
            self.steps,
            c.train.batch,
            c.train.lr,
            self.final_loss,
            self.train_secs
        );
        if let Some((step, last)) = self.history.last() {
            let _ = writeln!(
                md,
                "## Evaluation\n\nStep {step}, {} episodes per target, context {} ({}), seed {}.\n",
                last.targets.first().map_or(0, |t| t.episodes),
                last.context,
                last.context_note,
                last.seed
            );
            let _ = writeln!(
                md,
                "| target | return (mean ± std) | normalised score | length | success rate |"
            );
            let _ = writeln!(md, "| ---: | ---: | ---: | ---: | ---: |");
            for t in &last.targets {
                let _ = writeln!(
                    md,
                    "| {} | {:.1} ± {:.1} | {} | {:.1} | {} |",
                    t.target,
                    t.ret.mean,
                    t.ret.std,
                    t.normalised
                        .map(|n| format!("{:.1} ± {:.1}", n.mean, n.std))
                        .unwrap_or_else(|| "-".into()),
                    t.length.mean,
                    t.success_rate
                        .map(|s| format!("{:.0}%", 100.0 * s))
                        .unwrap_or_else(|| "-".into())
                );
            }
            let _ = writeln!(md);
            if self.history.len() > 1 {
                let _ = writeln!(md, "During training (mean return per target):\n");
                let header: Vec<String> = last
                    .targets
                    .iter()
                    .map(|t| format!("target {}", t.target))
                    .collect();
                let _ = writeln!(md, "| step | {} |", header.join(" | "));
                let _ = writeln!(md, "| ---: |{}", " ---: |".repeat(header.len()));
                for (step, r) in self.history {
                    let cells: Vec<String> = r
                        .targets
                        .iter()
                        .map(|t| format!("{:.1}", t.ret.mean))
                        .collect();
                    let _ = writeln!(md, "| {step} | {} |", cells.join(" | "));
                }
                let _ = writeln!(md);
            }
            let _ = writeln!(
                md,
                "Context mode: {}. JSON: [eval.json](eval.json). TensorBoard: `tensorboard --logdir tb`.\n",
                c.eval_context_mode()
            );
        }
        let _ = writeln!(md, "## Plots\n");
        let _ = writeln!(md, "![training loss](plots/loss.png)\n");
        let _ = writeln!(md, "![evaluation return](plots/eval_return.png)");
        md
    }
}
