//! Running a suite: for each selected entry, the cached dataset (collected once per
//! environment, tier, episode count and collection seed), training through
//! [`crate::train`], evaluation through [`crate::eval`], and the result file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use flowrl_envs::Tier;

use super::entry::{entries, same_config, same_training, Entry, EntryState, Filter};
use super::pick::Pick;
use super::record::{DatasetFacts, EntryRecord, TrainFacts, RECORD_FORMAT};
use super::report::{write_report, Unfinished};
use super::spec::SuiteSpec;
use crate::collect::{collect_with_bar, dataset_file_name};
use crate::config::{Config, DatasetConfig};
use crate::cpu_time::process_cpu_seconds;
use crate::data::stats::DatasetInfo;
use crate::data::store;
use crate::eval::evaluate;
use crate::eval::run::{plan_for, policy_of, EvalOverrides};
use crate::lock::{holder, Lock};
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

/// The entries a call works on, after `--filter` and `--entry`/`--shard`.
pub(super) struct Selection {
    /// The suite.
    pub spec: SuiteSpec,
    /// The output folder.
    pub out: PathBuf,
    /// Every entry of the matrix, in run order.
    pub all: Vec<Entry>,
    /// The selected entries: index among the filtered ones (what `--entry` takes),
    /// entry, resolved config and state.
    pub picked: Vec<(usize, Entry, Config, EntryState)>,
}

impl Selection {
    /// Loads the suite and selects the entries `opts` names.
    pub fn of(opts: &SuiteOptions) -> anyhow::Result<Selection> {
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
        let mut picked = Vec::new();
        for (index, entry) in filtered.into_iter().enumerate() {
            if opts.pick.picks(index) {
                let config = entry.config(&spec)?;
                let state = entry.state(&out, &spec, &config)?;
                picked.push((index, entry.clone(), config, state));
            }
        }
        Ok(Selection {
            spec,
            out,
            all,
            picked,
        })
    }

    /// Fails when an output folder holds entries made with another config.
    pub fn refuse_stale(&self) -> anyhow::Result<()> {
        let stale: Vec<String> = self
            .picked
            .iter()
            .filter(|(_, _, _, s)| *s == EntryState::Stale)
            .map(|(_, e, _, _)| e.id(&self.spec))
            .collect();
        if !stale.is_empty() {
            bail!(
                "{} holds results or runs of {} entries made with a different config (e.g. {}); \
                 choose another output folder (--out), or delete their results/ and runs/ \
                 subfolders to rerun them",
                self.out.display(),
                stale.len(),
                stale[..stale.len().min(3)].join(", ")
            );
        }
        Ok(())
    }

    /// Copies the suite config into the output folder.
    pub fn write_suite_copy(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("cannot create the output folder {}", self.out.display()))?;
        crate::atomic::write_bytes_atomic(
            &self.out.join("suite.toml"),
            std::fs::read(&self.spec.path)
                .with_context(|| format!("cannot read {}", self.spec.path.display()))?
                .as_slice(),
        )
    }

    /// Writes `results.md` and the plots from every finished entry.
    pub fn write_report(&self) -> anyhow::Result<PathBuf> {
        let (spec, out) = (&self.spec, &self.out);
        let done = done_records(spec, out, &self.all)?;
        let unfinished = unfinished(spec, out, &self.all, &done)?;
        write_report(spec, out, &done, &unfinished)
    }
}

/// Runs (or, with `dry_run`, lists) the suite.
///
/// Several processes, on one machine or several sharing the output folder, may run
/// one suite at once: each entry is run by the first worker to lock it (the others
/// skip it), each dataset is collected by the first worker that needs it (the others
/// wait for it), and a warm-started entry waits for a source another worker runs.
pub fn run(opts: &SuiteOptions) -> anyhow::Result<SuiteOutcome> {
    let selection = Selection::of(opts)?;
    let (spec, out) = (&selection.spec, &selection.out);
    let listing: Vec<(String, EntryState)> = selection
        .picked
        .iter()
        .map(|(_, e, _, s)| (e.id(spec), *s))
        .collect();
    if opts.dry_run {
        print_listing(&selection, selection.all.len());
        return Ok(SuiteOutcome {
            out: out.clone(),
            selected: listing,
            ran: 0,
            report: None,
        });
    }
    selection.refuse_stale()?;
    selection.write_suite_copy()?;

    let todo: Vec<&(usize, Entry, Config, EntryState)> = selection
        .picked
        .iter()
        .filter(|(_, _, _, s)| *s != EntryState::Done)
        .collect();
    // A warm-started entry starts from its source's trained model: finished already,
    // run earlier in this call, or being run by another worker.
    for (i, (_, entry, _, state)) in todo.iter().enumerate() {
        let Some(source) = entry.warm_start(spec) else {
            continue;
        };
        let earlier = todo[..i].iter().any(|(_, e, _, _)| *e == source);
        if *state == EntryState::Pending
            && !earlier
            && source.state(out, spec, &source.config(spec)?)? != EntryState::Done
            && Lock::try_acquire(&source.lock_file(out, spec))?.is_some()
        {
            let err = anyhow!(
                "suite entry {} starts from the trained model of entry {}, which is not \
                 finished: run that entry first (the suite runs it first when both are \
                 selected)",
                entry.id(spec),
                source.id(spec)
            );
            record_failure(&entry.failure_file(out, spec), &err)?;
            return Err(err);
        }
    }
    println!(
        "suite {}: {} entries selected, {} already done, {} to run; output {}",
        spec.name,
        listing.len(),
        listing.len() - todo.len(),
        todo.len(),
        out.display()
    );
    let started = Instant::now();
    let mut datasets = DatasetCache::new(out, opts.progress);
    let mut ran = 0;
    for (i, (_, entry, config, _)) in todo.iter().enumerate() {
        println!(
            "{}",
            progress_line(i, todo.len(), started.elapsed().as_secs_f64())
        );
        let id = entry.id(spec);
        let lock_file = entry.lock_file(out, spec);
        let Some(_lock) = Lock::try_acquire(&lock_file)? else {
            println!(
                "entry {id}: skipped, another worker runs it ({})",
                holder(&lock_file)
            );
            continue;
        };
        // Re-read under the lock: another worker may have finished or started it.
        let state = entry.state(out, spec, config)?;
        if state == EntryState::Done {
            println!("entry {id}: skipped, finished by another worker");
            continue;
        }
        println!("entry {id} ({})", state.name());
        let failure = entry.failure_file(out, spec);
        let record = match await_source(spec, out, entry).and_then(|()| {
            run_entry(
                spec,
                out,
                entry,
                config,
                state,
                &mut datasets,
                opts.progress,
            )
        }) {
            Ok(record) => record,
            Err(err) => {
                let err = err.context(format!("suite entry {id} failed"));
                record_failure(&failure, &err)?;
                return Err(err);
            }
        };
        let result = entry.result_file(out, spec);
        record.write(&result)?;
        if failure.exists() {
            std::fs::remove_file(&failure)
                .with_context(|| format!("cannot remove {}", failure.display()))?;
        }
        ran += 1;
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
    let report = selection.write_report()?;
    println!("wrote {}", report.display());
    Ok(SuiteOutcome {
        out: out.clone(),
        selected: listing,
        ran,
        report: Some(report),
    })
}

/// Writes `results.md` and the plots from the finished entries; runs nothing (what the
/// final job of a Slurm submission does).
pub fn report(opts: &SuiteOptions) -> anyhow::Result<PathBuf> {
    let selection = Selection::of(&SuiteOptions {
        pick: Pick::All,
        ..opts.clone()
    })?;
    let report = selection.write_report()?;
    println!("wrote {}", report.display());
    Ok(report)
}

/// Waits while another worker runs the source of `entry`'s warm start; fails clearly
/// if the source is not finished once no one runs it.
fn await_source(spec: &SuiteSpec, out: &Path, entry: &Entry) -> anyhow::Result<()> {
    let Some(source) = entry.warm_start(spec) else {
        return Ok(());
    };
    let done = |s: &Entry| -> anyhow::Result<bool> {
        Ok(s.state(out, spec, &s.config(spec)?)? == EntryState::Done)
    };
    if done(&source)? {
        return Ok(());
    }
    let _lock = Lock::acquire(
        &source.lock_file(out, spec),
        &format!("entry {}, the warm start of this one", source.id(spec)),
    )?;
    if !done(&source)? {
        bail!(
            "it starts from the trained model of entry {}, which is not finished (its \
             worker stopped before the end): run that entry first",
            source.id(spec)
        );
    }
    Ok(())
}

/// Records the error of an entry's failed attempt, for the report.
fn record_failure(path: &Path, err: &anyhow::Error) -> anyhow::Result<()> {
    crate::atomic::write_bytes_atomic(path, format!("{err:#}\n").as_bytes())
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
fn print_listing(selection: &Selection, total: usize) {
    let spec = &selection.spec;
    println!(
        "suite {} ({}): {} of {} entries selected; output {}",
        spec.name,
        spec.path.display(),
        selection.picked.len(),
        total,
        selection.out.display()
    );
    for (index, entry, _, state) in &selection.picked {
        println!("  {index:>4}  {:<8} {}", state.name(), entry.id(spec));
    }
    for state in [
        EntryState::Done,
        EntryState::Partial,
        EntryState::Pending,
        EntryState::Stale,
    ] {
        let n = selection
            .picked
            .iter()
            .filter(|(_, _, _, s)| *s == state)
            .count();
        if n > 0 {
            println!("{n} {}", state.name());
        }
    }
}

/// The entries, among those not `done`, that were started and did not finish: failed
/// (with the error of their last attempt), interrupted, or being run now; with their
/// Slurm log, if any.
fn unfinished(
    spec: &SuiteSpec,
    out: &Path,
    all: &[Entry],
    done: &[(Entry, EntryRecord)],
) -> anyhow::Result<Vec<Unfinished>> {
    let logs = super::slurm::task_logs(out)?;
    let mut found = Vec::new();
    for entry in all {
        if done.iter().any(|(e, _)| e == entry) {
            continue;
        }
        let state = entry.state(out, spec, &entry.config(spec)?)?;
        let id = entry.id(spec);
        let failure = entry.failure_file(out, spec);
        let error = if failure.is_file() {
            let text = std::fs::read_to_string(&failure)
                .with_context(|| format!("cannot read {}", failure.display()))?;
            Some(text.trim().to_string())
        } else {
            None
        };
        // A lock file that was never made is held by no one (and is not made here).
        let lock_file = entry.lock_file(out, spec);
        let running = lock_file.exists() && Lock::try_acquire(&lock_file)?.is_none();
        let status = match (running, &error, state) {
            (true, _, _) => "running",
            (false, Some(_), _) => "failed",
            (false, None, EntryState::Partial) => "interrupted",
            _ => continue,
        };
        found.push(Unfinished {
            log: logs.get(&id).cloned(),
            id,
            status,
            error,
        });
    }
    Ok(found)
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
        // Workers needing the same dataset: the first collects it, the others wait for
        // the lock and then load the finished file (saved whole, under a temporary name).
        let lock_file = self.out.join("locks/datasets").join(format!(
            "{}.lock",
            dataset_file_name(env, tier, episodes, seed)
        ));
        let _lock = Lock::acquire(&lock_file, &format!("the collection of {}", path.display()))?;
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
