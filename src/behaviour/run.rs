//! ARS runs: [`start`] a new one in an output folder, [`resume`] one from its checkpoint.
//! The folder's layout is described in [`crate::behaviour`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use flowrl_envs::FlowEnv;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

use super::ars::{ars_update, DirectionReturns};
use super::checkpoint::{self, Checkpoint, State};
use super::config::ArsConfig;
use super::normaliser::RunningStats;
use super::policy::BehaviourPolicy;
use super::rollout::{rollout, Rollout, Setting};
use super::snapshot::SnapshotInfo;
use crate::atomic::write_atomic;
use crate::data::{store, DatasetBuilder, Ending, Metadata, Provenance, ReferenceReturns, Space};
use crate::logging::RunLogger;
use crate::plot::{write_line_chart, LineChart};

/// Per-iteration record, see [`LogRow`].
pub const LOG_FILE: &str = "log.csv";
/// Evaluated return against training env steps.
pub const CURVE_FILE: &str = "learning_curve.png";
/// Folder of the policy snapshots.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// Folder of the training rollouts (one native dataset per iteration).
pub const ROLLOUTS_DIR: &str = "rollouts";

const LOG_HEADER: &str = "iteration,episodes,env_steps,rollout_return,reward_std,eval_return";

/// ChaCha8 stream ids of the run's key (`--seed`).
const DELTA_STREAM: u64 = 1;
const RESET_STREAM: u64 = 2;
const EVAL_STREAM: u64 = 3;

/// The snapshot `name` of the run in `out`.
pub fn snapshot_path(out: &Path, name: &str) -> PathBuf {
    out.join(SNAPSHOTS_DIR).join(format!("{name}.safetensors"))
}

/// The rollouts of `iteration` (1-based) of the run in `out`.
pub fn rollouts_path(out: &Path, iteration: u64) -> PathBuf {
    out.join(ROLLOUTS_DIR)
        .join(format!("iter-{iteration:06}.safetensors"))
}

/// How far to go.
#[derive(Clone, Copy, Debug, Default)]
pub struct TrainOptions {
    /// Stop after this many iterations in total (checkpointing there), to resume later.
    pub stop_at: Option<u64>,
}

/// Where a run stands when [`start`] or [`resume`] returns.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Iterations done.
    pub iteration: u64,
    /// Iterations the run is configured for.
    pub iterations: u64,
    /// M, row-major `[act_dim, obs_dim]`.
    pub weights: Vec<f64>,
    /// Best evaluated return so far.
    pub best_return: Option<f64>,
    /// Training environment steps so far.
    pub env_steps: u64,
}

impl Outcome {
    /// Whether every iteration is done.
    pub fn finished(&self) -> bool {
        self.iteration >= self.iterations
    }
}

/// One row of `log.csv`: `iteration,episodes,env_steps,rollout_return,reward_std,eval_return`
/// (empty fields where there is no value: iteration 0 has no rollouts, and only
/// evaluated iterations have an evaluated return). Numbers are written exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRow {
    /// Iterations done (0: the initial policy).
    pub iteration: u64,
    /// Training episodes so far.
    pub episodes: u64,
    /// Training environment steps so far.
    pub env_steps: u64,
    /// Mean return (environment reward) of the iteration's `2N` rollouts.
    pub rollout_return: Option<f64>,
    /// sigma_R of the update (shifted returns).
    pub reward_std: Option<f64>,
    /// Mean return of the evaluation episodes after the update.
    pub eval_return: Option<f64>,
}

/// Reads `log.csv` of the run in `out`.
pub fn read_log(out: &Path) -> anyhow::Result<Vec<LogRow>> {
    let path = out.join(LOG_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the ARS log {}", path.display()))?;
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, LOG_HEADER)) => {}
        other => bail!(
            "{}: expected the header `{LOG_HEADER}`, found {:?}",
            path.display(),
            other.map(|(_, l)| l)
        ),
    }
    lines
        .map(|(i, line)| {
            let bad = || {
                format!(
                    "{}:{}: expected `{LOG_HEADER}`, found `{line}`",
                    path.display(),
                    i + 1
                )
            };
            let f: Vec<&str> = line.split(',').collect();
            if f.len() != 6 {
                bail!(bad());
            }
            let opt = |s: &str| -> anyhow::Result<Option<f64>> {
                Ok(if s.is_empty() {
                    None
                } else {
                    Some(s.parse().with_context(bad)?)
                })
            };
            Ok(LogRow {
                iteration: f[0].parse().with_context(bad)?,
                episodes: f[1].parse().with_context(bad)?,
                env_steps: f[2].parse().with_context(bad)?,
                rollout_return: opt(f[3])?,
                reward_std: opt(f[4])?,
                eval_return: opt(f[5])?,
            })
        })
        .collect()
}

fn write_log(out: &Path, rows: &[LogRow]) -> anyhow::Result<()> {
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    write_atomic(&out.join(LOG_FILE), |w| {
        writeln!(w, "{LOG_HEADER}")?;
        for r in rows {
            writeln!(
                w,
                "{},{},{},{},{},{}",
                r.iteration,
                r.episodes,
                r.env_steps,
                opt(r.rollout_return),
                opt(r.reward_std),
                opt(r.eval_return)
            )?;
        }
        Ok(())
    })
}

/// Starts a new run of `config` in `out` (created; it must not hold a run yet):
/// evaluates the initial policy (iteration 0), checkpoints, then trains.
pub fn start(config: ArsConfig, out: &Path, opts: &TrainOptions) -> anyhow::Result<Outcome> {
    config.validate()?;
    if checkpoint::path(out).exists() || out.join(LOG_FILE).exists() {
        bail!(
            "--out {}: the folder already holds a behaviour run; continue it with --resume {}",
            out.display(),
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut learner = Learner::new(config, out)?;
    let mut logger = RunLogger::create(out)?;
    let ret = learner.evaluate()?;
    learner.history.push(LogRow {
        iteration: 0,
        episodes: 0,
        env_steps: 0,
        rollout_return: None,
        reward_std: None,
        eval_return: Some(ret),
    });
    logger.scalars(
        0,
        &[("behaviour/eval_return", ret), ("behaviour/env_steps", 0.0)],
    )?;
    learner.after_eval(ret)?;
    learner.checkpoint()?;
    let outcome = learner.train(opts, &mut logger)?;
    logger.close()?;
    Ok(outcome)
}

/// Continues the run in `out` from its checkpoint, bit for bit as if it had not
/// stopped; `iterations` changes the total (at least the iterations already done).
pub fn resume(out: &Path, iterations: Option<u64>, opts: &TrainOptions) -> anyhow::Result<Outcome> {
    let ckpt = checkpoint::load(out)?;
    let state = ckpt.state;
    let mut config = state.config.clone();
    if let Some(total) = iterations {
        if total < state.iteration {
            bail!(
                "--iterations must be at least the {} iterations already done, found {total}",
                state.iteration
            );
        }
        config.iterations = total;
    }
    config.validate()?;
    let mut learner = Learner::new(config, out)?;
    if ckpt.stats.dim() != learner.stats.dim() || ckpt.weights.len() != learner.weights.len() {
        bail!(
            "{}: expected weights of {} values and statistics of {}, found {} and {}",
            checkpoint::path(out).display(),
            learner.weights.len(),
            learner.stats.dim(),
            ckpt.weights.len(),
            ckpt.stats.dim()
        );
    }
    learner.weights = ckpt.weights;
    learner.stats = ckpt.stats;
    learner
        .deltas
        .set_word_pos(parse_pos(&state.delta_stream_pos, "delta_stream_pos")?);
    learner
        .resets
        .set_word_pos(parse_pos(&state.reset_stream_pos, "reset_stream_pos")?);
    learner.iteration = state.iteration;
    learner.episodes = state.episodes;
    learner.env_steps = state.env_steps;
    learner.best = state.best_return_bits.map(f64::from_bits);
    learner.level = state.milestone_level;
    let mut history = read_log(out)?;
    history.retain(|r| r.iteration <= state.iteration);
    if history.last().map(|r| r.iteration) != Some(state.iteration) {
        bail!(
            "{}: expected rows up to the checkpoint's iteration {}, found {:?}",
            out.join(LOG_FILE).display(),
            state.iteration,
            history.last().map(|r| r.iteration)
        );
    }
    learner.history = history;
    remove_rollouts_after(out, state.iteration)?;
    let mut logger = RunLogger::create(out)?;
    let outcome = learner.train(opts, &mut logger)?;
    logger.close()?;
    Ok(outcome)
}

fn parse_pos(text: &str, key: &str) -> anyhow::Result<u128> {
    text.parse()
        .with_context(|| format!("checkpoint state `{key}`: expected an integer, found `{text}`"))
}

/// Deletes the rollout files of iterations after `iteration` (a resumed run rewrites them).
fn remove_rollouts_after(out: &Path, iteration: u64) -> anyhow::Result<()> {
    let dir = out.join(ROLLOUTS_DIR);
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
    {
        let path = entry?.path();
        let later = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| {
                n.strip_prefix("iter-")?
                    .strip_suffix(".safetensors")?
                    .parse::<u64>()
                    .ok()
            })
            .is_some_and(|i| i > iteration);
        if later {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// The learner: M, the normaliser, the streams, the counters and the environments.
struct Learner {
    cfg: ArsConfig,
    out: PathBuf,
    bounds: (f32, f32),
    weights: Vec<f64>,
    stats: RunningStats,
    iteration: u64,
    episodes: u64,
    env_steps: u64,
    deltas: ChaCha8Rng,
    resets: ChaCha8Rng,
    eval_seeds: Vec<u64>,
    /// One environment per rollout of an iteration (or evaluation episode).
    envs: Vec<Box<dyn FlowEnv>>,
    best: Option<f64>,
    level: Option<i64>,
    history: Vec<LogRow>,
    dataset_meta: Metadata,
}

impl Learner {
    /// A fresh learner (M = 0, no statistics, streams at their start) of `cfg` writing to `out`.
    fn new(cfg: ArsConfig, out: &Path) -> anyhow::Result<Self> {
        let (first, (low, high), act_dim) = cfg.make_env()?;
        let obs_dim = first.obs_dim();
        let (obs_low, obs_high) = first.observation_bounds();
        let count = (2 * cfg.directions).max(cfg.eval_episodes);
        let mut envs = vec![first];
        for _ in 1..count {
            envs.push(flowrl_envs::make(&cfg.env_id)?);
        }
        let seed = cfg.seed;
        let stream = move |id| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(id);
            rng
        };
        let mut eval_rng = stream(EVAL_STREAM);
        let eval_seeds = (0..cfg.eval_episodes)
            .map(|_| eval_rng.next_u64())
            .collect();
        let dataset_meta = Metadata {
            env_id: cfg.env_id.clone(),
            observation_space: Space::Box {
                low: obs_low,
                high: obs_high,
            },
            action_space: Space::Box {
                low: vec![low; act_dim],
                high: vec![high; act_dim],
            },
            provenance: Provenance {
                source: "ars".into(),
                behaviour_policy: None,
                tier: None,
                seed: Some(cfg.seed),
                episodes: 2 * cfg.directions,
                origin: None,
                behaviour_set: None,
            },
            reference_returns: flowrl_envs::reference_returns(&cfg.env_id).map(|r| {
                ReferenceReturns {
                    random: r.random,
                    expert: r.expert,
                }
            }),
        };
        Ok(Self {
            cfg,
            out: out.to_path_buf(),
            bounds: (low, high),
            weights: vec![0.0; act_dim * obs_dim],
            stats: RunningStats::new(obs_dim),
            iteration: 0,
            episodes: 0,
            env_steps: 0,
            deltas: stream(DELTA_STREAM),
            resets: stream(RESET_STREAM),
            eval_seeds,
            envs,
            best: None,
            level: None,
            history: Vec::new(),
            dataset_meta,
        })
    }

    fn train(&mut self, opts: &TrainOptions, logger: &mut RunLogger) -> anyhow::Result<Outcome> {
        let total = self.cfg.iterations;
        let stop = opts.stop_at.map_or(total, |s| s.min(total));
        let bar = crate::progress::bar(total, "iterations");
        bar.set_position(self.iteration);
        bar.set_message(self.cfg.env_id.clone());
        let mut checkpointed = true;
        while self.iteration < stop {
            self.iterate(logger)
                .with_context(|| format!("ARS iteration {} failed", self.iteration + 1))?;
            checkpointed = self.iteration.is_multiple_of(self.cfg.checkpoint_every);
            if checkpointed {
                self.checkpoint()?;
            }
            if let Some(ret) = self.history.last().and_then(|r| r.eval_return) {
                bar.set_message(format!("{} return {ret:.1}", self.cfg.env_id));
            }
            bar.inc(1);
        }
        if !checkpointed {
            self.checkpoint()?;
        }
        bar.finish_and_clear();
        Ok(Outcome {
            iteration: self.iteration,
            iterations: total,
            weights: self.weights.clone(),
            best_return: self.best,
            env_steps: self.env_steps,
        })
    }

    /// One iteration: directions, rollouts in parallel, update, normaliser, records.
    fn iterate(&mut self, logger: &mut RunLogger) -> anyhow::Result<()> {
        let n = self.cfg.directions;
        let p = self.weights.len();
        let deltas: Vec<f64> = (0..n * p)
            .map(|_| self.deltas.sample(StandardNormal))
            .collect();
        let seeds: Vec<u64> = (0..n).map(|_| self.resets.next_u64()).collect();
        let (mean, std) = (self.stats.mean().to_vec(), self.stats.std());
        let setting = Setting {
            mean: &mean,
            std: &std,
            bounds: self.bounds,
            horizon: self.cfg.horizon,
            reward_shift: self.cfg.reward_shift,
        };
        let (weights, noise) = (&self.weights, self.cfg.noise);
        let rollouts = self.envs[..2 * n]
            .par_iter_mut()
            .enumerate()
            .map(|(j, env)| {
                let (k, sign) = (j / 2, if j % 2 == 0 { 1.0 } else { -1.0 });
                let perturbed: Vec<f64> = weights
                    .iter()
                    .zip(&deltas[k * p..(k + 1) * p])
                    .map(|(m, d)| m + sign * (noise * d))
                    .collect();
                rollout(env.as_mut(), &perturbed, &setting, seeds[k], true)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .collect::<anyhow::Result<Vec<Rollout>>>()?;
        let returns: Vec<DirectionReturns> = rollouts
            .chunks_exact(2)
            .map(|pair| DirectionReturns {
                plus: pair[0].shifted_return,
                minus: pair[1].shifted_return,
            })
            .collect();
        let update = ars_update(
            &mut self.weights,
            &deltas,
            &returns,
            self.cfg.top,
            self.cfg.step_size,
        )?;
        for r in &rollouts {
            self.stats.merge(&r.stats);
        }
        self.iteration += 1;
        self.episodes += rollouts.len() as u64;
        self.env_steps += rollouts.iter().map(|r| r.steps as u64).sum::<u64>();
        self.save_rollouts(&rollouts)?;
        let rollout_return =
            rollouts.iter().map(|r| r.native_return).sum::<f64>() / rollouts.len() as f64;
        let due = self.iteration.is_multiple_of(self.cfg.eval_every)
            || self.iteration == self.cfg.iterations;
        let eval_return = if due { Some(self.evaluate()?) } else { None };
        self.history.push(LogRow {
            iteration: self.iteration,
            episodes: self.episodes,
            env_steps: self.env_steps,
            rollout_return: Some(rollout_return),
            reward_std: Some(update.reward_std),
            eval_return,
        });
        logger.scalars(
            self.iteration,
            &[
                ("behaviour/rollout_return", rollout_return),
                ("behaviour/reward_std", update.reward_std),
                ("behaviour/env_steps", self.env_steps as f64),
            ],
        )?;
        if let Some(ret) = eval_return {
            logger.scalar("behaviour/eval_return", self.iteration, ret)?;
            self.after_eval(ret)?;
        }
        Ok(())
    }

    /// Mean return of the evaluation episodes of the current policy (no noise, the
    /// environment's reward), run in parallel and summed in episode order.
    fn evaluate(&mut self) -> anyhow::Result<f64> {
        let (mean, std) = (self.stats.mean().to_vec(), self.stats.std());
        let setting = Setting {
            mean: &mean,
            std: &std,
            bounds: self.bounds,
            horizon: self.cfg.horizon,
            reward_shift: 0.0,
        };
        let weights = &self.weights;
        let episodes = self.envs[..self.cfg.eval_episodes]
            .par_iter_mut()
            .zip(&self.eval_seeds)
            .map(|(env, &seed)| rollout(env.as_mut(), weights, &setting, seed, false))
            .collect::<Vec<_>>()
            .into_iter()
            .collect::<anyhow::Result<Vec<Rollout>>>()
            .context("evaluation failed")?;
        Ok(episodes.iter().map(|e| e.native_return).sum::<f64>() / episodes.len() as f64)
    }

    /// Snapshots, log and learning curve after an evaluation that returned `ret`.
    fn after_eval(&mut self, ret: f64) -> anyhow::Result<()> {
        let level = (ret / self.cfg.milestone_step).floor() as i64;
        if self.level.is_none_or(|l| level > l) {
            let value = level as f64 * self.cfg.milestone_step;
            let name = if value < 0.0 {
                format!("return-minus{}", -value)
            } else {
                format!("return-{value}")
            };
            self.policy(ret).save(&snapshot_path(&self.out, &name))?;
            self.level = Some(level);
        }
        if self.best.is_none_or(|b| ret > b) {
            self.policy(ret).save(&snapshot_path(&self.out, "best"))?;
            self.best = Some(ret);
        }
        if self.iteration == self.cfg.iterations {
            self.policy(ret).save(&snapshot_path(&self.out, "final"))?;
        }
        write_log(&self.out, &self.history)?;
        self.write_curve()
    }

    fn policy(&self, ret: f64) -> BehaviourPolicy {
        BehaviourPolicy {
            weights: self.weights.clone(),
            obs_mean: self.stats.mean().to_vec(),
            obs_std: self.stats.std(),
            action_low: self.bounds.0,
            action_high: self.bounds.1,
            info: SnapshotInfo {
                env_id: self.cfg.env_id.clone(),
                eval_return: ret,
                iteration: self.iteration,
                episodes: self.episodes,
                env_steps: self.env_steps,
                seed: self.cfg.seed,
            },
        }
    }

    fn write_curve(&self) -> anyhow::Result<()> {
        let points: Vec<(f64, f64)> = self
            .history
            .iter()
            .filter_map(|r| Some((r.env_steps as f64, r.eval_return?)))
            .collect();
        let mut chart = LineChart::new(
            &format!("ARS on {} (seed {})", self.cfg.env_id, self.cfg.seed),
            "training env steps",
            "evaluated return",
        )
        .series("ARS V2-t", points);
        if let Some(r) = self.dataset_meta.reference_returns {
            chart = chart
                .reference("random", r.random)
                .reference("expert", r.expert);
        }
        write_line_chart(&self.out.join(CURVE_FILE), &chart)
    }

    /// Writes the iteration's rollouts as one native dataset.
    fn save_rollouts(&self, rollouts: &[Rollout]) -> anyhow::Result<()> {
        let obs_dim = self.stats.dim();
        let act_dim = self.weights.len() / obs_dim;
        let mut b = DatasetBuilder::new(obs_dim, act_dim, false);
        for r in rollouts {
            for t in 0..r.steps {
                b.push_continuous(
                    &r.observations[t * obs_dim..(t + 1) * obs_dim],
                    &r.actions[t * act_dim..(t + 1) * act_dim],
                    r.rewards[t],
                );
            }
            b.end_episode(if r.terminated {
                Ending::Terminated
            } else {
                Ending::Truncated
            });
        }
        let mut meta = self.dataset_meta.clone();
        meta.provenance.behaviour_policy = Some(format!(
            "ARS V2-t linear policy before update {}: episode 2k is direction k with +noise, \
             2k+1 with -noise",
            self.iteration
        ));
        let ds = b
            .build(meta)
            .map_err(|p| anyhow::anyhow!("rollouts of iteration {}: {p}", self.iteration))?;
        store::save(&ds, &rollouts_path(&self.out, self.iteration))
    }

    fn checkpoint(&self) -> anyhow::Result<()> {
        write_log(&self.out, &self.history)?;
        checkpoint::save(
            &self.out,
            &Checkpoint {
                state: State {
                    config: self.cfg.clone(),
                    iteration: self.iteration,
                    episodes: self.episodes,
                    env_steps: self.env_steps,
                    obs_count: self.stats.count(),
                    delta_stream_pos: self.deltas.get_word_pos().to_string(),
                    reset_stream_pos: self.resets.get_word_pos().to_string(),
                    best_return_bits: self.best.map(f64::to_bits),
                    milestone_level: self.level,
                },
                weights: self.weights.clone(),
                stats: self.stats.clone(),
            },
        )
    }
}
