//! Evaluating trained runs: the rollout plan of a run's config (with command-line
//! overrides), the policy of a checkpoint, and the evaluation hook of training.

use std::path::{Path, PathBuf};

use anyhow::Context;
use dfdx::prelude::Cpu;
use flowrl_agents::acting::ContextMode;
use flowrl_agents::agent::Agent;

use super::report::Scalars;
use super::{evaluate, ActionChoice, EvalPlan, EvalReport, Policy, RolloutSettings};
use crate::config::Config;
use crate::train::{ActionScaling, Preprocessing};

/// Values that replace the run config's `[eval]` section (`None`: the config's value).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvalOverrides {
    /// Environment id.
    pub env: Option<String>,
    /// Target returns (unscaled).
    pub targets: Option<Vec<f64>>,
    /// Episodes per target.
    pub episodes: Option<usize>,
    /// Context mode.
    pub context: Option<ContextMode>,
    /// Evaluation seed.
    pub seed: Option<u64>,
    /// Discrete action choice (greedy by default).
    pub choice: Option<ActionChoice>,
}

/// The rollout plan of a run: `[eval]` of its config (environment: `eval.env`, else the
/// dataset's; targets: `eval.targets`, else the dataset's best return; context:
/// `eval.context_mode`, else `agent.context_mode`), then the overrides. Episodes are at
/// least 1 (a config with `eval.episodes = 0` evaluates one episode when asked).
pub fn plan_for(config: &Config, pre: &Preprocessing, over: &EvalOverrides) -> EvalPlan {
    let env_id = over
        .env
        .clone()
        .or_else(|| config.eval.env.clone())
        .unwrap_or_else(|| pre.env_id.clone());
    let targets = over.targets.clone().unwrap_or_else(|| {
        if config.eval.targets.is_empty() {
            vec![pre.best_return]
        } else {
            config.eval.targets.clone()
        }
    });
    let settings = RolloutSettings {
        env_id,
        episodes: over.episodes.unwrap_or(config.eval.episodes).max(1),
        context: over.context.unwrap_or_else(|| config.eval_context_mode()),
        seed: over.seed.unwrap_or(config.eval.seed),
        choice: over.choice.unwrap_or(ActionChoice::Greedy),
        delayed_reward: pre.delayed_reward,
        record_actions: false,
    };
    EvalPlan {
        settings,
        targets,
        checkpoint_step: None,
    }
}

/// Checks, before training starts, that the evaluations `config` schedules can run:
/// the evaluation environment exists and the agent (built for the dataset) fits it.
/// The error names where the environment id came from (`eval.env` or the dataset's
/// `env_id`).
pub fn check_evaluable(
    config: &Config,
    agent: &Agent<f32, Cpu>,
    pre: &Preprocessing,
) -> anyhow::Result<()> {
    let plan = plan_for(config, pre, &EvalOverrides::default());
    let env_id = &plan.settings.env_id;
    let source = if config.eval.env.is_some() {
        "eval.env"
    } else {
        "the dataset's env_id (no eval.env set)"
    };
    let targets_from = if config.eval.targets.is_empty() {
        "the default target (the dataset's best return)"
    } else {
        "eval.targets"
    };
    check_targets(&plan.targets, pre, targets_from, "of the dataset")?;
    super::rollout::check_env(&policy_of(agent, pre), env_id).with_context(|| {
        format!(
            "the agent cannot be evaluated on `{env_id}`, from {source}; set eval.env to the \
             dataset's environment or eval.episodes = 0"
        )
    })
}

/// Checks that every target return divided by the reward scale (`scale_from` says
/// where the scale comes from) is a finite 32-bit model input; the error names
/// `targets_from`, the flag or config key that gave the targets.
pub fn check_targets(
    targets: &[f64],
    pre: &Preprocessing,
    targets_from: &str,
    scale_from: &str,
) -> anyhow::Result<()> {
    let scale = pre.normalisation.reward_scale;
    for &t in targets {
        let scaled = (t / f64::from(scale)) as f32;
        if !scaled.is_finite() {
            anyhow::bail!(
                "{targets_from}: target return {t:?} divided by the reward scale {scale} \
                 ({scale_from}) is {scaled} as a 32-bit model input; expected a target whose \
                 scaled value is finite"
            );
        }
    }
    Ok(())
}

/// The policy of a trained agent with its preprocessing.
pub fn policy_of<'a>(agent: &'a Agent<f32, Cpu>, pre: &'a Preprocessing) -> Policy<'a> {
    Policy {
        agent,
        norm: &pre.normalisation,
        action_bounds: match &pre.actions {
            ActionScaling::Continuous { low, high } => Some((low.as_slice(), high.as_slice())),
            ActionScaling::Discrete { .. } => None,
        },
    }
}

/// Where `flowrl eval` and the training hook write the JSON report of an evaluation:
/// `<run>/eval/step-<N>-<context>-seed-<S>.json`.
pub fn report_file(run: &Path, step: u64, context: ContextMode, seed: u64) -> PathBuf {
    run.join(crate::train::run_dir::EVAL_DIR)
        .join(format!("step-{step}-{context}-seed-{seed}.json"))
}

/// Writes `report` as JSON to `path` atomically (its folder created if need be).
pub fn write_report_file(path: &Path, report: &EvalReport) -> anyhow::Result<()> {
    crate::atomic::write_bytes_atomic(path, report.to_json()?.as_bytes())
}

/// The evaluation hook of training: every evaluation runs the plan of `config` (no
/// overrides, no progress bar), prints the table `flowrl eval` prints, writes the same
/// JSON report into the run folder ([`report_file`]) and returns the report's scalars,
/// which the trainer logs as `eval/<tag>`.
pub fn training_hook(
    config: &Config,
) -> impl FnMut(&Path, u64, &Agent<f32, Cpu>, &Preprocessing) -> anyhow::Result<Scalars> {
    let config = config.clone();
    move |run, step, agent, pre| {
        let mut plan = plan_for(&config, pre, &EvalOverrides::default());
        plan.checkpoint_step = Some(step);
        let report = evaluate(&policy_of(agent, pre), &plan, false)?;
        print!("{}", report.table());
        let path = report_file(run, step, plan.settings.context, plan.settings.seed);
        write_report_file(&path, &report)?;
        println!("wrote {}", path.display());
        Ok(report.scalars())
    }
}
