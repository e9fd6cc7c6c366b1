//! Evaluation of trained policies: return-conditioned rollouts of many episodes in
//! lockstep ([`rollout`]) summarised per target return ([`report`]).
//!
//! [`evaluate`] runs every target of an [`EvalPlan`] and returns an [`EvalReport`]
//! (terminal table, JSON, `eval/*` TensorBoard scalars).

pub mod report;
pub mod rollout;
pub mod run;

pub use report::{EvalReport, MeanStd, References, TargetResult};
pub use rollout::{
    continuous_action, episode_seeds, run_seeded, run_target, ActionChoice, EpisodeOutcome, Policy,
    RolloutSettings,
};

/// Rollout settings and the target returns to condition on.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalPlan {
    /// What every target runs.
    pub settings: RolloutSettings,
    /// Target returns (unscaled), in report order.
    pub targets: Vec<f64>,
    /// Training step of the evaluated parameters, recorded in the report.
    pub checkpoint_step: Option<u64>,
}

/// Runs every target of `plan` with `policy` and summarises them. With `show_progress`
/// a progress bar counts finished episodes over all targets.
pub fn evaluate(
    policy: &Policy<'_>,
    plan: &EvalPlan,
    show_progress: bool,
) -> anyhow::Result<EvalReport> {
    if plan.targets.is_empty() {
        anyhow::bail!("no target returns to evaluate: give at least one");
    }
    let s = &plan.settings;
    let refs = References::of(&s.env_id);
    let total = (s.episodes * plan.targets.len()) as u64;
    let bar = if show_progress {
        crate::progress::bar(total, "episodes")
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_message(format!("evaluating on {}", s.env_id));
    let mut results = Vec::with_capacity(plan.targets.len());
    for (i, &target) in plan.targets.iter().enumerate() {
        let done_before = (i * s.episodes) as u64;
        let outcomes = run_target(policy, s, target, &mut |finished| {
            bar.set_position(done_before + finished as u64)
        })?;
        results.push(TargetResult::of(target, &outcomes, refs));
    }
    bar.finish_and_clear();
    let cfg = policy.agent.config();
    Ok(EvalReport {
        env_id: s.env_id.clone(),
        agent: cfg.kind.to_string(),
        context: s.context.to_string(),
        context_note: rollout::context_note(cfg.kind, s.context, cfg.context),
        seed: s.seed,
        checkpoint_step: plan.checkpoint_step,
        reward_scale: f64::from(policy.norm.reward_scale),
        action_choice: match s.choice {
            ActionChoice::Greedy => "greedy".into(),
            ActionChoice::Temperature(t) => format!("temperature {t}"),
        },
        references: refs,
        targets: results,
    })
}
