//! Running a suite: for each selected entry, the cached dataset (collected once per
//! environment, tier, episode count and collection seed), training through
//! [`crate::train`], evaluation through [`crate::eval`], and the result file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use anyhow::{bail, Context};
use flowrl_envs::Tier;

use super::entry::{entries, same_config, same_training, Entry, EntryState, Filter};
use super::pick::Pick;
use super::record::{DatasetFacts, EntryRecord, TrainFacts, RECORD_FORMAT};
use super::report::write_report;
use super::spec::SuiteSpec;
use crate::collect::{collect_with_bar, dataset_file_name};
use crate::config::{Config, DatasetConfig};
use crate::cpu_time::process_cpu_seconds;
use crate::data::stats::DatasetInfo;
use crate::data::store;
use crate::eval::evaluate;
use crate::eval::run::{plan_for, policy_of, EvalOverrides};
use crate::train::{self, TrainOptions};

/// What `flowrl suite` is asked to do.
#[derive(Clone, Debug, Default)]
pub struct SuiteOptions {
    /// The suite config file.
    pub config: PathBuf,
    /// Output folder; default: the config's `suite.output`.
    pub out: Option<PathBuf>,
    /// Entries to run: all conditions must hold (none: every entry).
    pub filters: Vec<Filter>,
    /// Which of the filtered entries to run (`--entry`, `--shard`).
    pub pick: Pick,
    /// `--set key=value` experiment-config keys for every entry.
    pub set: Vec<String>,
    /// List the entries and their state; run nothing and write nothing.
    pub dry_run: bool,
    /// Show the progress bars of collection, training and evaluation.
    pub progress: bool,
}

/// What a suite call did.
#[derive(Clone, Debug, PartialEq)]
pub struct SuiteOutcome {
    /// The output folder.
    pub out: PathBuf,
    /// Each selected entry's id and its state before the call.
    pub selected: Vec<(String, EntryState)>,
    /// Entries run to completion by this call.
    pub ran: usize,
    /// `results.md`, unless a dry run.
    pub report: Option<PathBuf>,
}

/// Runs (or, with `dry_run`, lists) the suite.
pub fn run(opts: &SuiteOptions) -> anyhow::Result<SuiteOutcome> {
    let spec = SuiteSpec::load(&opts.config, &opts.set)?;
    let out = opts.out.clone().unwrap_or_else(|| spec.output.clone());
    let all = entries(&spec);
    for f in &opts.filters {
        f.check(&spec, &all)?;
    }
    let filtered: Vec<&Entry> = all
        .iter()
        .filter(|e| opts.filters.iter().all(|f| f.accepts(&spec, e)))
        .collect();
    opts.pick.check(filtered.len())?;
    let mut selected = Vec::new();
    let mut indices = Vec::new();
    for (index, entry) in filtered.into_iter().enumerate() {
        if !opts.pick.picks(index) {
            continue;
        }
        let config = entry.config(&spec)?;
        let state = entry.state(&out, &spec, &config)?;
        selected.push((entry.clone(), config, state));
        indices.push(index);
    }
    let listing: Vec<(String, EntryState)> =
        selected.iter().map(|(e, _, s)| (e.id(&spec), *s)).collect();
    if opts.dry_run {
        print_listing(&spec, &out, &listing, &indices, all.len());
        return Ok(SuiteOutcome {
            out,
            selected: listing,
            ran: 0,
            report: None,
        });
    }
    let stale: Vec<&str> = listing
        .iter()
        .filter(|(_, s)| *s == EntryState::Stale)
        .map(|(id, _)| id.as_str())
        .collect();
    if !stale.is_empty() {
        bail!(
            "{} holds results or runs of {} entries made with a different config (e.g. {}); \
             choose another output folder (--out), or delete their results/ and runs/ \
             subfolders to rerun them",
            out.display(),
            stale.len(),
            stale[..stale.len().min(3)].join(", ")
        );
    }
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create the output folder {}", out.display()))?;
    crate::atomic::write_bytes_atomic(
        &out.join("suite.toml"),
        std::fs::read(&spec.path)
            .with_context(|| format!("cannot read {}", spec.path.display()))?
            .as_slice(),
    )?;

    let todo: Vec<&(Entry, Config, EntryState)> = selected
        .iter()
        .filter(|(_, _, s)| *s != EntryState::Done)
        .collect();
    // A warm-started entry starts from its source's trained model: finished already,
    // or run earlier in this call.
    for (i, (entry, _, state)) in todo.iter().enumerate() {
        let Some(source) = entry.warm_start(&spec) else {
            continue;
        };
        let earlier = todo[..i].iter().any(|(e, _, _)| *e == source);
        if *state == EntryState::Pending
            && !earlier
            && source.state(&out, &spec, &source.config(&spec)?)? != EntryState::Done
        {
            bail!(
                "suite entry {} starts from the trained model of entry {}, which is not \
                 finished: run that entry first (the suite runs it first when both are \
                 selected)",
                entry.id(&spec),
                source.id(&spec)
            );
        }
    }
    println!(
        "suite {}: {} entries selected, {} already done, {} to run; output {}",
        spec.name,
        selected.len(),
        selected.len() - todo.len(),
        todo.len(),
        out.display()
    );
    let started = Instant::now();
    let mut datasets = DatasetCache::new(&out, opts.progress);
    for (i, (entry, config, state)) in todo.iter().enumerate() {
        println!(
            "{}",
            progress_line(i, todo.len(), started.elapsed().as_secs_f64())
        );
        println!("entry {} ({})", entry.id(&spec), state.name());
        let record = run_entry(
            &spec,
            &out,
            entry,
            config,
            *state,
            &mut datasets,
            opts.progress,
        )
        .with_context(|| format!("suite entry {} failed", entry.id(&spec)))?;
        let result = entry.result_file(&out, &spec);
        record.write(&result)?;
        println!(
            "  score {} at target {} (train {:.0} s, {} CPU s; eval {:.0} s, {} CPU s) -> {}",
            record
                .headline_score()
                .map_or("-".into(), |s| format!("{s:.1}")),
            record.eval.targets.first().map_or(f64::NAN, |t| t.target),
            record.train.seconds,
            cpu_text(record.train.cpu_seconds),
            record.eval_seconds,
            cpu_text(record.eval_cpu_seconds),
            result.display()
        );
    }
    if !todo.is_empty() {
        println!(
            "{}",
            progress_line(todo.len(), todo.len(), started.elapsed().as_secs_f64())
        );
    }
    let report = write_report(&spec, &out, &done_records(&spec, &out, &all)?)?;
    println!("wrote {}", report.display());
    Ok(SuiteOutcome {
        out,
        selected: listing,
        ran: todo.len(),
        report: Some(report),
    })
}

/// The entries whose results are recorded for their current config, with the records.
fn done_records(
    spec: &SuiteSpec,
    out: &Path,
    all: &[Entry],
) -> anyhow::Result<Vec<(Entry, EntryRecord)>> {
    let mut done = Vec::new();
    for entry in all {
        let path = entry.result_file(out, spec);
        if path.exists() {
            let record = EntryRecord::read(&path)?;
            if same_config(&record.config()?, &entry.config(spec)?) {
                done.push((entry.clone(), record));
            }
        }
    }
    Ok(done)
}

/// `[=====>     ] 12/108 entries, elapsed 0:41:10, ETA 5:29:20` (ETA from this call's
/// average time per entry).
fn progress_line(done: usize, total: usize, elapsed: f64) -> String {
    const WIDTH: usize = 30;
    let filled = (WIDTH * done).checked_div(total).unwrap_or(WIDTH);
    let bar: String = (0..WIDTH)
        .map(|i| match i.cmp(&filled) {
            std::cmp::Ordering::Less => '=',
            std::cmp::Ordering::Equal => '>',
            std::cmp::Ordering::Greater => ' ',
        })
        .collect();
    let eta = if done == 0 {
        "?".to_string()
    } else {
        clock(elapsed / done as f64 * (total - done) as f64)
    };
    format!(
        "suite [{bar}] {done}/{total} entries, elapsed {}, ETA {eta}",
        clock(elapsed)
    )
}

/// CPU seconds in whole seconds, `-` where unknown.
fn cpu_text(secs: Option<f64>) -> String {
    secs.map_or("-".into(), |s| format!("{s:.0}"))
}

/// Seconds as `h:mm:ss`.
fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Prints the selected entries, each with its index (what `--entry` takes) and state.
fn print_listing(
    spec: &SuiteSpec,
    out: &Path,
    listing: &[(String, EntryState)],
    indices: &[usize],
    total: usize,
) {
    println!(
        "suite {} ({}): {} of {} entries selected; output {}",
        spec.name,
        spec.path.display(),
        listing.len(),
        total,
        out.display()
    );
    for ((id, state), index) in listing.iter().zip(indices) {
        println!("  {index:>4}  {:<8} {id}", state.name());
    }
    for state in [
        EntryState::Done,
        EntryState::Partial,
        EntryState::Pending,
        EntryState::Stale,
    ] {
        let n = listing.iter().filter(|(_, s)| *s == state).count();
        if n > 0 {
            println!("{n} {}", state.name());
        }
    }
}

/// Datasets collected into `<out>/datasets/`, each once, with their facts.
struct DatasetCache {
    dir: PathBuf,
    out: PathBuf,
    progress: bool,
    facts: HashMap<PathBuf, DatasetFacts>,
}

impl DatasetCache {
    fn new(out: &Path, progress: bool) -> Self {
        Self {
            dir: out.join("datasets"),
            out: out.to_path_buf(),
            progress,
            facts: HashMap::new(),
        }
    }

    /// The file of `env`'s `tier` dataset (collected now if missing) and its facts.
    fn get(
        &mut self,
        env: &str,
        tier: &str,
        episodes: usize,
        seed: u64,
    ) -> anyhow::Result<(PathBuf, DatasetFacts)> {
        let path = self.dir.join(dataset_file_name(env, tier, episodes, seed));
        if let Some(f) = self.facts.get(&path) {
            return Ok((path, f.clone()));
        }
        let ds = if path.is_file() {
            store::load(&path)
                .with_context(|| format!("cannot load the cached dataset {}", path.display()))?
        } else {
            let tier_value = Tier::from_str(tier).context("invalid tier")?;
            let bar = if self.progress {
                crate::progress::bar(episodes as u64, "episodes")
            } else {
                indicatif::ProgressBar::hidden()
            };
            bar.set_message(format!("collecting {env} {tier}"));
            let ds = collect_with_bar(env, tier_value, episodes, seed, &bar)?;
            store::save(&ds, &path)?;
            println!(
                "  collected {episodes} episodes of {env} ({tier}) into {}",
                path.display()
            );
            ds
        };
        let info = DatasetInfo::of(&ds);
        let facts = DatasetFacts {
            file: path
                .strip_prefix(&self.out)
                .unwrap_or(&path)
                .display()
                .to_string(),
            episodes: info.episodes,
            transitions: info.transitions,
            return_mean: info.episode_return.mean,
            normalised_mean: info.normalised_score.map(|s| s.mean),
        };
        self.facts.insert(path.clone(), facts.clone());
        Ok((path, facts))
    }
}

/// Trains (or continues) and evaluates one entry.
fn run_entry(
    spec: &SuiteSpec,
    out: &Path,
    entry: &Entry,
    config: &Config,
    state: EntryState,
    datasets: &mut DatasetCache,
    progress: bool,
) -> anyhow::Result<EntryRecord> {
    let env = &spec.envs[entry.env];
    let (data, dataset) = datasets.get(
        &env.id,
        &entry.tier,
        env.dataset_episodes as usize,
        spec.dataset_seed,
    )?;
    let data = std::path::absolute(&data)
        .with_context(|| format!("cannot make {} absolute", data.display()))?;
    let mut config = config.clone();
    config.train.init_from = entry.warm_start(spec).map(|s| s.run_dir(out, spec));
    let mut train_config = config.clone();
    train_config.dataset = DatasetConfig {
        path: Some(data),
        ..DatasetConfig::default()
    };
    let run = entry.run_dir(out, spec);
    let opts = TrainOptions::default();
    let train_start = Instant::now();
    let train_cpu = process_cpu_seconds();
    let outcome = if state == EntryState::Partial {
        train::resume(&run, &opts, None)?
    } else {
        if run.exists() {
            // A run folder without a checkpoint: interrupted before its first one.
            std::fs::remove_dir_all(&run)
                .with_context(|| format!("cannot clear the unfinished run {}", run.display()))?;
        }
        train::start(train_config, &run, &opts, None)?
    };
    let train_seconds = train_start.elapsed().as_secs_f64();
    let eval_cpu = process_cpu_seconds();
    let cpu_between = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    let train_cpu_seconds = cpu_between(train_cpu, eval_cpu);

    let eval_start = Instant::now();
    let loaded = train::load(&run, None)?;
    if !same_training(&loaded.config, &config) {
        bail!(
            "{}: the run's config differs from the suite's for this entry",
            run.display()
        );
    }
    let mut plan = plan_for(
        &loaded.config,
        &loaded.preprocessing,
        &EvalOverrides::default(),
    );
    plan.checkpoint_step = Some(loaded.step);
    let report = evaluate(
        &policy_of(&loaded.agent, &loaded.preprocessing),
        &plan,
        progress,
    )?;
    Ok(EntryRecord {
        format: RECORD_FORMAT,
        env: env.id.clone(),
        tier: entry.tier.clone(),
        agent: spec.agents[entry.agent].name.clone(),
        seed: entry.seed,
        flowrl_version: env!("CARGO_PKG_VERSION").to_string(),
        config_toml: config.to_toml_string()?,
        dataset,
        train: TrainFacts {
            steps: outcome.step,
            final_loss: outcome.last_loss,
            seconds: train_seconds,
            cpu_seconds: train_cpu_seconds,
        },
        eval_seconds: eval_start.elapsed().as_secs_f64(),
        eval_cpu_seconds: cpu_between(eval_cpu, process_cpu_seconds()),
        eval: report,
    })
}
