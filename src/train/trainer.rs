//! The training loop: sampling, masked loss, backward, clipping, AdamW with warm-up,
//! logging, evaluation hook and checkpoints; starting a run and resuming one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use dfdx::prelude::*;
use flowrl_agents::agent::{Agent, HostActions, HostWindow};
use flowrl_agents::optim::{clip_grad_norm, grad_norm, AdamW, AdamWConfig};

use super::checkpoint::{
    self, CheckpointParts, DatasetFingerprint, DropoutPosition, SamplerPosition, TrainState,
    STATE_FORMAT,
};
use super::prepare::{self, Plan, Preprocessing};
use super::run_dir::{self, CONFIG_FILE, TRAIN_LOG};
use super::schedule::warmup_lr;
use super::streams::{self, Seeds};
use super::warm_start;
use crate::atomic::write_atomic;
use crate::config::{Config, DatasetSource};
use crate::data::windows::{Batch, Sampler};
use crate::logging::RunLogger;

/// An evaluation callback: given the run folder, the step, the agent and its
/// preprocessing, returns `(tag, value)` pairs, logged as `eval/<tag>`. The progress
/// bar is hidden while it runs, so it may print.
pub type EvalHook<'a> = dyn FnMut(&Path, u64, &Agent<f32, Cpu>, &Preprocessing) -> anyhow::Result<Vec<(String, f64)>>
    + 'a;

/// How a call to [`start`] or [`resume`] runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrainOptions {
    /// Stop once this many steps are done (writing a checkpoint there), as if
    /// interrupted; `None` trains to `train.steps`.
    pub stop_at: Option<u64>,
}

impl TrainOptions {
    /// Checks the options before anything is written.
    fn check(&self) -> anyhow::Result<()> {
        if self.stop_at == Some(0) {
            bail!("the stop step (--stop-at) must be at least 1, found 0");
        }
        Ok(())
    }
}

/// How a training call began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStart {
    /// A new run in a folder that held none.
    New,
    /// The folder held a run that never reached a checkpoint: it started again from
    /// step 0 (by `train --config` with the new config, or by `--resume` with its own).
    Restarted,
    /// Continued from the checkpoint at this step.
    Resumed {
        /// The checkpoint's step.
        step: u64,
    },
}

/// What a training call did.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOutcome {
    /// The run folder.
    pub run_dir: PathBuf,
    /// How the call began.
    pub started: RunStart,
    /// Steps done.
    pub step: u64,
    /// Steps configured (`train.steps`).
    pub total_steps: u64,
    /// Loss of the last step taken (NaN if none).
    pub last_loss: f32,
    /// The last checkpoint written.
    pub checkpoint: PathBuf,
}

impl TrainOutcome {
    /// Whether the run reached `train.steps`.
    pub fn finished(&self) -> bool {
        self.step >= self.total_steps
    }
}

/// One step of the training record (`train_log.csv`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepRecord {
    /// 1-based step.
    pub step: u64,
    /// Training loss (masked, dropout on).
    pub loss: f32,
    /// Learning rate of the update.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// Reads `train_log.csv` of a run folder.
pub fn read_train_log(run: &Path) -> anyhow::Result<Vec<StepRecord>> {
    let path = run.join(TRAIN_LOG);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the training log {}", path.display()))?;
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, "step,loss,lr,grad_norm")) => {}
        other => bail!(
            "{}: expected the header `step,loss,lr,grad_norm`, found {:?}",
            path.display(),
            other.map(|(_, l)| l)
        ),
    }
    lines
        .map(|(i, line)| {
            let bad = || {
                format!(
                    "{}:{}: expected `step,loss,lr,grad_norm`, found `{line}`",
                    path.display(),
                    i + 1
                )
            };
            let f: Vec<&str> = line.split(',').collect();
            if f.len() != 4 {
                bail!(bad());
            }
            Ok(StepRecord {
                step: f[0].parse().with_context(bad)?,
                loss: f[1].parse().with_context(bad)?,
                lr: f[2].parse().with_context(bad)?,
                grad_norm: f[3].parse().with_context(bad)?,
            })
        })
        .collect()
}

fn write_train_log(run: &Path, history: &[StepRecord]) -> anyhow::Result<()> {
    write_atomic(&run.join(TRAIN_LOG), |w| {
        writeln!(w, "step,loss,lr,grad_norm")?;
        for r in history {
            writeln!(w, "{},{},{},{}", r.step, r.loss, r.lr, r.grad_norm)?;
        }
        Ok(())
    })
}

/// AdamW settings of a config (the learning rate is set at every step).
fn adamw_config(cfg: &Config) -> AdamWConfig {
    AdamWConfig {
        lr: cfg.train.lr,
        betas: cfg.train.adam_betas,
        eps: cfg.train.adam_eps,
        weight_decay: cfg.train.weight_decay,
    }
}

/// Starts a new run of `config` in the folder `run`, then trains. The folder must not
/// hold a run with a checkpoint (continue that with [`resume`]); a run that never
/// reached a checkpoint is restarted in place with this config (its log, event files
/// and reports removed; a note is printed). The resolved config is saved, the dataset
/// loaded or collected, and if the start fails before the config is saved, a folder
/// this call created is removed again.
pub fn start(
    config: Config,
    run: &Path,
    opts: &TrainOptions,
    eval: Option<&mut EvalHook<'_>>,
) -> anyhow::Result<TrainOutcome> {
    opts.check()?;
    let config = prepare::with_absolute_dataset_path(config)?;
    config.validate()?;
    let started = if run.join(CONFIG_FILE).exists() || run_dir::checkpoints(run).exists() {
        if run_dir::has_checkpoint(run)? {
            bail!(
                "{} already holds a run with a checkpoint; continue it with \
                 `flowrl train --resume {}` or choose another folder",
                run.display(),
                run.display()
            );
        }
        let previous = Config::load(&run.join(CONFIG_FILE), &[] as &[&str]).with_context(|| {
            format!(
                "{} is not a run folder that can be restarted: it has no checkpoint and no \
                 readable run config {CONFIG_FILE}; choose another folder",
                run.display()
            )
        })?;
        run_dir::clear_unfinished(run, previous.dataset == config.dataset)?;
        eprintln!(
            "note: {} held a run that never reached a checkpoint; restarting it from step 0 \
             with the new config",
            run.display()
        );
        RunStart::Restarted
    } else {
        RunStart::New
    };
    if run.is_dir() {
        run_dir::remove_stale_temporaries(run)?;
    }
    let created = !run.exists();
    let result = begin(config, run, started, opts, eval);
    if result.is_err() && created && !run.join(CONFIG_FILE).exists() {
        // Nothing of a run was kept: leave no folder behind. Best effort, the start's
        // error is the one to report.
        let _ = std::fs::remove_dir_all(run);
    }
    result
}

/// Trains `config` from step 0 in `run`: loads or collects the dataset, builds (and
/// warm-starts) the agent, saves the config, then trains.
fn begin(
    config: Config,
    run: &Path,
    started: RunStart,
    opts: &TrainOptions,
    eval: Option<&mut EvalHook<'_>>,
) -> anyhow::Result<TrainOutcome> {
    std::fs::create_dir_all(run)
        .with_context(|| format!("cannot create the run folder {}", run.display()))?;
    let ds = prepare::load_dataset(&config, &prepare::collected_path(run))?;
    let seeds = Seeds::from_config_seed(config.seed);
    let plan = prepare::plan(&config, &ds, seeds.sampler)?;
    let dev = Cpu::seed_from_u64(seeds.dropout);
    let mut agent = Agent::new(&dev, plan.agent, seeds.init).context("cannot build the agent")?;
    if let Some(source) = &config.train.init_from {
        let warm = warm_start::init_parameters(&mut agent, source)?;
        let table = warm.stretched.map_or(String::new(), |(old, new)| {
            format!(", timestep table stretched from {old} to {new} rows")
        });
        eprintln!(
            "initialised {} parameters from {} (step {}){table}",
            warm.params,
            warm.run_dir.display(),
            warm.step
        );
    }
    // Saved once the agent stands: a failed warm start leaves no config that would
    // mark the folder as holding a run.
    config.save(&run.join(CONFIG_FILE))?;
    let optimizer = AdamW::new(agent.params(), adamw_config(&config))?;
    let draws_per_step = streams::draws_per_step(&plan.agent)?;
    let sampler =
        Sampler::new(&ds, plan.windows.clone()).context("cannot set up the window sampler")?;
    Session {
        run,
        started,
        config: &config,
        fingerprint: DatasetFingerprint::of(&ds),
        plan: &plan,
        seeds,
        agent,
        optimizer,
        sampler,
        step: 0,
        draws_per_step,
        history: Vec::new(),
    }
    .train(opts, eval)
}

/// The dataset file a run's config trains on: its `dataset.path`, or the dataset
/// collected into the run folder.
fn dataset_file(config: &Config, run: &Path) -> anyhow::Result<PathBuf> {
    Ok(match config.dataset_source()? {
        DatasetSource::File(path) => path,
        DatasetSource::Collect { .. } => prepare::collected_path(run),
    })
}

/// Continues the run in folder `run` from its newest checkpoint, exactly: the same
/// batches, dropout masks and updates as if it had never stopped.
pub fn resume(
    run: &Path,
    opts: &TrainOptions,
    eval: Option<&mut EvalHook<'_>>,
) -> anyhow::Result<TrainOutcome> {
    opts.check()?;
    let config_path = run.join(CONFIG_FILE);
    if !run.is_dir() {
        bail!("{} is not a run folder (no such folder)", run.display());
    }
    let config = Config::load(&config_path, &[] as &[&str])
        .with_context(|| format!("run folder {}: cannot load its config", run.display()))?;
    run_dir::remove_stale_temporaries(run)?;
    if !run_dir::has_checkpoint(run)? {
        run_dir::clear_unfinished(run, true)?;
        eprintln!(
            "note: {} never reached a checkpoint; starting it from step 0 with its config",
            run.display()
        );
        return begin(config, run, RunStart::Restarted, opts, eval);
    }
    if let Some(step) = run_dir::restore_latest(run)? {
        eprintln!(
            "note: {} had no `latest` pointer (interrupted while checkpointing); resuming from \
             its newest complete checkpoint, step {step}",
            run.display()
        );
    }
    run_dir::latest_step(run)?;
    let ds = prepare::load_dataset(&config, &prepare::collected_path(run))?;
    let seeds = Seeds::from_config_seed(config.seed);
    let plan = prepare::plan(&config, &ds, seeds.sampler)?;
    let dev = Cpu::seed_from_u64(seeds.dropout);
    let loaded = checkpoint::load_on(run, None, &dev)?;
    let state = &loaded.state;
    let state_file = loaded.checkpoint_dir.join(run_dir::STATE_FILE);
    if loaded.agent.config() != &plan.agent {
        bail!(
            "{}: the checkpoint's agent {:?} differs from the one the run's config and dataset give {:?}",
            loaded.checkpoint_dir.display(),
            loaded.agent.config(),
            plan.agent
        );
    }
    let fingerprint = DatasetFingerprint::of(&ds);
    let trained_on = &state.dataset;
    if !trained_on.content_hash.is_empty() && trained_on.content_hash != fingerprint.content_hash {
        bail!(
            "dataset {} has content hash {}, but the run was trained on a dataset with content \
             hash {} (recorded in {}); resume with the dataset the run was trained on, or \
             start a new run",
            dataset_file(&config, run)?.display(),
            fingerprint.content_hash,
            trained_on.content_hash,
            state_file.display()
        );
    }
    let old_fields = DatasetFingerprint {
        content_hash: trained_on.content_hash.clone(),
        ..fingerprint.clone()
    };
    if *trained_on != old_fields {
        bail!(
            "{}: the run was trained on a dataset {:?}, the dataset {} is {:?}",
            state_file.display(),
            trained_on,
            dataset_file(&config, run)?.display(),
            fingerprint
        );
    }
    let draws_per_step = streams::draws_per_step(&plan.agent)?;
    let expected = (
        SamplerPosition {
            seed: seeds.sampler,
            batches_drawn: state.step,
        },
        DropoutPosition {
            seed: seeds.dropout,
            draws_per_step,
            draws: state.step * draws_per_step,
        },
    );
    if (state.sampler, state.dropout) != expected || state.seed != config.seed {
        bail!(
            "{}: random-stream positions {:?} do not match the config seed {} at step {} (expected {:?})",
            state_file.display(),
            (state.sampler, state.dropout),
            config.seed,
            state.step,
            expected
        );
    }
    streams::skip_device_draws(&dev, state.dropout.draws);
    let mut sampler =
        Sampler::new(&ds, plan.windows.clone()).context("cannot set up the window sampler")?;
    let mut scratch = sampler.new_batch();
    for _ in 0..state.sampler.batches_drawn {
        sampler.sample(&mut scratch);
    }
    let mut optimizer = AdamW::new(loaded.agent.params(), adamw_config(&config))?;
    checkpoint::load_optimizer(&loaded, &mut optimizer)?;
    let mut history = read_train_log(run)?;
    history.retain(|r| r.step <= state.step);
    if history.len() as u64 != state.step || history.iter().zip(1..).any(|(r, s)| r.step != s) {
        bail!(
            "{}: expected one record for each of the steps 1..={}, found {} records",
            run.join(TRAIN_LOG).display(),
            state.step,
            history.len()
        );
    }
    let step = state.step;
    // Steps after the checkpoint are trained (and logged) again.
    crate::logging::drop_steps_after(&crate::logging::tb_dir(run), step)?;
    Session {
        run,
        started: RunStart::Resumed { step },
        config: &config,
        fingerprint,
        plan: &plan,
        seeds,
        agent: loaded.agent,
        optimizer,
        sampler,
        step,
        draws_per_step,
        history,
    }
    .train(opts, eval)
}

/// A run in progress.
struct Session<'a> {
    run: &'a Path,
    started: RunStart,
    config: &'a Config,
    /// The fingerprint of the dataset, recorded in every checkpoint.
    fingerprint: DatasetFingerprint,
    plan: &'a Plan,
    seeds: Seeds,
    agent: Agent<f32, Cpu>,
    optimizer: AdamW<f32, Cpu>,
    sampler: Sampler<'a>,
    step: u64,
    draws_per_step: u64,
    history: Vec<StepRecord>,
}

/// TensorBoard logging that never stops training: the first failure (a full disk,
/// say) is printed as a warning and logging ends there; `train_log.csv` still records
/// every step with the checkpoints.
struct TrainingLog(Option<RunLogger>);

impl TrainingLog {
    fn open(run: &Path) -> Self {
        Self(RunLogger::create(run).map_err(Self::warn).ok())
    }

    fn scalars(&mut self, step: u64, values: &[(&str, f64)]) {
        self.write(|logger| logger.scalars(step, values));
    }

    fn session_start(&mut self, step: u64) {
        self.write(|logger| logger.session_start(step));
    }

    fn write(&mut self, f: impl FnOnce(&mut RunLogger) -> anyhow::Result<()>) {
        if let Some(logger) = &mut self.0 {
            if let Err(e) = f(logger) {
                Self::warn(e);
                self.0 = None;
            }
        }
    }

    fn close(self) {
        if let Some(logger) = self.0 {
            logger.close().unwrap_or_else(Self::warn);
        }
    }

    fn warn(e: anyhow::Error) {
        eprintln!("warning: TensorBoard logging stopped ({e:#}); training continues");
    }
}

/// Running sums of the scalars between two log points.
struct Interval {
    loss: f64,
    grad_norm: f64,
    steps: u64,
    since: Instant,
}

impl Interval {
    fn new() -> Self {
        Self {
            loss: 0.0,
            grad_norm: 0.0,
            steps: 0,
            since: Instant::now(),
        }
    }
}

impl Session<'_> {
    fn train(
        mut self,
        opts: &TrainOptions,
        mut eval: Option<&mut EvalHook<'_>>,
    ) -> anyhow::Result<TrainOutcome> {
        let total = self.config.train.steps as u64;
        let stop = opts.stop_at.map_or(total, |s| s.min(total));
        let log_every = self.config.train.log_every as u64;
        let checkpoint_every = self.config.train.checkpoint_every as u64;
        let eval_every = self.config.eval.every as u64;
        let evaluating = self.config.eval.episodes > 0;
        if self.step >= stop && self.step > 0 {
            // Nothing to do (a finished run resumed, or a stop point already passed).
            return Ok(TrainOutcome {
                run_dir: self.run.to_path_buf(),
                started: self.started,
                step: self.step,
                total_steps: total,
                last_loss: self.history.last().map_or(f32::NAN, |r| r.loss),
                checkpoint: run_dir::checkpoint_dir(self.run, run_dir::latest_step(self.run)?),
            });
        }
        if evaluating && eval.is_some() {
            crate::eval::run::check_evaluable(self.config, &self.agent, &self.plan.preprocessing)
                .with_context(|| {
                format!(
                    "checked before training: the evaluations of [eval] (eval.episodes = {}) \
                         cannot run",
                    self.config.eval.episodes
                )
            })?;
        }
        let mut logger = TrainingLog::open(self.run);
        if self.step > 0 {
            logger.session_start(self.step + 1);
        }
        let bar = crate::progress::bar(total, "steps");
        bar.set_position(self.step);
        let mut batch = self.sampler.new_batch();
        let mut actions = vec![0.0f32; batch.actions.len()];
        let mut interval = Interval::new();
        let mut last_checkpoint = None;
        let mut last_loss = f32::NAN;
        while self.step < stop {
            let record = self.update(&mut batch, &mut actions)?;
            self.step = record.step;
            last_loss = record.loss;
            self.history.push(record);
            interval.loss += f64::from(record.loss);
            interval.grad_norm += record.grad_norm;
            interval.steps += 1;
            bar.set_position(self.step);
            bar.set_message(format!("loss {:.4}", record.loss));
            if self.step.is_multiple_of(log_every) || self.step == stop {
                let secs = interval.since.elapsed().as_secs_f64().max(1e-9);
                let n = interval.steps as f64;
                bar.suspend(|| {
                    logger.scalars(
                        self.step,
                        &[
                            ("train/loss", interval.loss / n),
                            ("train/lr", record.lr),
                            ("train/grad_norm", interval.grad_norm / n),
                            ("train/steps_per_s", n / secs),
                        ],
                    )
                });
                interval = Interval::new();
            }
            // Checkpoint first: a failing evaluation must not lose the steps.
            if (checkpoint_every > 0 && self.step.is_multiple_of(checkpoint_every))
                || self.step == stop
            {
                last_checkpoint = Some(self.checkpoint(last_loss)?);
            }
            if let Some(hook) = eval.as_deref_mut() {
                let due =
                    (eval_every > 0 && self.step.is_multiple_of(eval_every)) || self.step == total;
                if evaluating && due {
                    let outcome = bar.suspend(|| {
                        hook(self.run, self.step, &self.agent, &self.plan.preprocessing)
                    });
                    let values = match outcome {
                        Ok(values) => values,
                        Err(e) => {
                            // Keep the steps done so far: the run can be resumed.
                            if last_checkpoint != Some(run_dir::checkpoint_dir(self.run, self.step))
                            {
                                self.checkpoint(last_loss)?;
                            }
                            return Err(e.context(format!(
                                "evaluation at step {} failed (checkpoint written; resume with \
                                 `flowrl train --resume {}`)",
                                self.step,
                                self.run.display()
                            )));
                        }
                    };
                    let values: Vec<(String, f64)> = values
                        .into_iter()
                        .map(|(t, v)| (format!("eval/{t}"), v))
                        .collect();
                    let values: Vec<(&str, f64)> =
                        values.iter().map(|(t, v)| (t.as_str(), *v)).collect();
                    logger.scalars(self.step, &values);
                }
            }
        }
        bar.finish_and_clear();
        logger.close();
        let checkpoint = match last_checkpoint {
            Some(c) => c,
            None => run_dir::checkpoint_dir(self.run, run_dir::latest_step(self.run)?),
        };
        Ok(TrainOutcome {
            run_dir: self.run.to_path_buf(),
            started: self.started,
            step: self.step,
            total_steps: total,
            last_loss,
            checkpoint,
        })
    }

    /// One gradient step on a fresh batch.
    fn update(&mut self, batch: &mut Batch, actions: &mut [f32]) -> anyhow::Result<StepRecord> {
        let step = self.step + 1;
        self.sampler.sample(batch);
        self.plan
            .preprocessing
            .actions
            .to_model(&batch.actions, actions);
        let host_actions = if batch.act_dim > 0 {
            HostActions::Continuous(&*actions)
        } else {
            HostActions::Discrete(&batch.action_indices)
        };
        let window = self
            .agent
            .window(&HostWindow {
                batch: batch.batch_size,
                len: batch.context,
                states: &batch.states,
                actions: host_actions,
                returns_to_go: &batch.returns_to_go,
                timesteps: &batch.timesteps,
                mask: &batch.mask,
            })
            .with_context(|| format!("step {step}: the sampled batch is not a valid window"))?;
        let lr = warmup_lr(
            self.step,
            self.config.train.lr,
            self.config.train.warmup_steps as u64,
        );
        let clip = self.config.train.grad_clip;
        let (agent, optimizer) = (&mut self.agent, &mut self.optimizer);
        // The step runs on a rayon worker: its serial parts then run on a pool thread,
        // and the pool's idle workers, which spin for a while after each parallel
        // kernel, no longer compete with a third runnable thread (the caller).
        let (loss_value, norm) = rayon::scope(|_| -> anyhow::Result<(f32, f64)> {
            let loss = agent
                .loss(&window, true)
                .with_context(|| format!("step {step}: loss"))?;
            let loss_value: f32 = loss.array();
            if !loss_value.is_finite() {
                bail!("step {step}: the training loss is {loss_value}; stopping (lower train.lr or check the dataset)");
            }
            let mut gradients = loss.backward();
            let mut grads = agent.params().grads(&mut gradients);
            let norm = if clip > 0.0 {
                clip_grad_norm(&mut grads, clip)
                    .with_context(|| format!("step {step}: gradient clipping"))?
            } else {
                grad_norm(&grads)
            };
            if !norm.is_finite() {
                bail!("step {step}: the gradient norm is {norm}; stopping");
            }
            optimizer.set_lr(lr);
            optimizer
                .update(agent.params_mut(), &grads)
                .with_context(|| format!("step {step}: AdamW update"))?;
            Ok((loss_value, norm))
        })?;
        Ok(StepRecord {
            step,
            loss: loss_value,
            lr,
            grad_norm: norm,
        })
    }

    fn checkpoint(&self, last_loss: f32) -> anyhow::Result<PathBuf> {
        let state = TrainState {
            format: STATE_FORMAT,
            step: self.step,
            total_steps: self.config.train.steps as u64,
            seed: self.config.seed,
            sampler: SamplerPosition {
                seed: self.seeds.sampler,
                batches_drawn: self.step,
            },
            dropout: DropoutPosition {
                seed: self.seeds.dropout,
                draws_per_step: self.draws_per_step,
                draws: self.step * self.draws_per_step,
            },
            dataset: self.fingerprint.clone(),
            last_loss,
        };
        write_train_log(self.run, &self.history)?;
        checkpoint::save(
            self.run,
            &CheckpointParts {
                agent: &self.agent,
                optimizer: &self.optimizer,
                state: &state,
                preprocessing: &self.plan.preprocessing,
            },
        )
    }
}
