//! Range and consistency checks of config values; each problem names its key.

use flowrl_agents::agent::{MAX_LAYERS, MAX_STEPS, MAX_WIDTH};

use super::{
    AgentConfig, DatasetConfig, DatasetSource, EvalConfig, Problem, TrainConfig,
    DEFAULT_COLLECT_EPISODES, TIERS,
};
use crate::limits::{MAX_BATCH, MAX_EPISODES};

impl DatasetConfig {
    pub(super) fn resolve(&self, p: &mut Vec<Problem>) -> Option<DatasetSource> {
        match (&self.path, &self.env) {
            (Some(_), Some(_)) => {
                p.push(Problem::new(
                    "dataset",
                    "set either `dataset.path` (a dataset file) or `dataset.env` \
                     (collect before training), found both",
                ));
                None
            }
            (None, None) => {
                p.push(Problem::new(
                    "dataset",
                    "set either `dataset.path` (a dataset file) or `dataset.env` \
                     (collect before training), found neither",
                ));
                None
            }
            (Some(path), None) => {
                if path.as_os_str().is_empty() {
                    p.push(Problem::new(
                        "dataset.path",
                        "expected a file path, found an empty string",
                    ));
                }
                let stray = [
                    ("dataset.tier", self.tier.is_some()),
                    ("dataset.episodes", self.episodes.is_some()),
                    ("dataset.seed", self.seed.is_some()),
                ];
                for (key, set) in stray {
                    if set {
                        p.push(Problem::new(
                            key,
                            "only applies to a collected dataset (`dataset.env`), \
                             but `dataset.path` is set",
                        ));
                    }
                }
                Some(DatasetSource::File(path.clone()))
            }
            (None, Some(env)) => {
                if env.trim().is_empty() {
                    p.push(Problem::new(
                        "dataset.env",
                        "expected an environment id, found an empty string",
                    ));
                }
                let tier = match &self.tier {
                    Some(t) if TIERS.contains(&t.as_str()) => Some(t.clone()),
                    Some(t) => {
                        p.push(Problem::new(
                            "dataset.tier",
                            format!("expected one of {}, found `{t}`", TIERS.join(", ")),
                        ));
                        None
                    }
                    None => {
                        p.push(Problem::new(
                            "dataset.tier",
                            format!("required with `dataset.env`: one of {}", TIERS.join(", ")),
                        ));
                        None
                    }
                };
                let episodes = self.episodes.unwrap_or(DEFAULT_COLLECT_EPISODES);
                within(p, "dataset.episodes", episodes, 1, MAX_EPISODES);
                Some(DatasetSource::Collect {
                    env: env.clone(),
                    tier: tier?,
                    episodes,
                    seed: self.seed.unwrap_or(0),
                })
            }
        }
    }
}

impl AgentConfig {
    pub(super) fn check(&self, p: &mut Vec<Problem>) {
        within(p, "agent.width", self.width, 1, MAX_WIDTH);
        within(p, "agent.layers", self.layers, 1, MAX_LAYERS);
        positive(p, "agent.heads", self.heads);
        if self.heads > 0 && !self.width.is_multiple_of(self.heads) {
            p.push(Problem::new(
                "agent.width",
                format!(
                    "expected a multiple of agent.heads = {}, found {}",
                    self.heads, self.width
                ),
            ));
        }
        probability(p, "agent.dropout", self.dropout);
        within(p, "agent.context", self.context, 1, MAX_STEPS);
        within(
            p,
            "agent.max_episode_length",
            self.max_episode_length,
            0,
            MAX_STEPS,
        );
        if !(self.flow_clamp.is_finite() && self.flow_clamp > 0.0) {
            p.push(Problem::new(
                "agent.flow_clamp",
                format!("expected a finite number > 0, found {}", self.flow_clamp),
            ));
        }
    }
}

impl TrainConfig {
    pub(super) fn check(&self, p: &mut Vec<Problem>) {
        positive(p, "train.steps", self.steps);
        within(p, "train.batch", self.batch, 1, MAX_BATCH);
        greater_than_zero(p, "train.lr", self.lr);
        at_least_zero(p, "train.weight_decay", self.weight_decay);
        probability(p, "train.adam_betas[0]", self.adam_betas[0]);
        probability(p, "train.adam_betas[1]", self.adam_betas[1]);
        greater_than_zero(p, "train.adam_eps", self.adam_eps);
        at_least_zero(p, "train.grad_clip", self.grad_clip);
        greater_than_zero(p, "train.reward_scale", self.reward_scale);
        if !(self.gamma > 0.0 && self.gamma <= 1.0) {
            p.push(Problem::new(
                "train.gamma",
                format!("expected a number in (0, 1], found {}", self.gamma),
            ));
        }
        positive(p, "train.log_every", self.log_every);
    }
}

impl EvalConfig {
    pub(super) fn check(&self, p: &mut Vec<Problem>) {
        within(p, "eval.episodes", self.episodes, 0, MAX_EPISODES);
        if let Some(env) = &self.env {
            if env.trim().is_empty() {
                p.push(Problem::new(
                    "eval.env",
                    "expected an environment id, found an empty string",
                ));
            }
        }
        for (i, t) in self.targets.iter().enumerate() {
            if !t.is_finite() {
                p.push(Problem::new(
                    format!("eval.targets[{i}]"),
                    format!("expected a finite return, found {t}"),
                ));
            }
        }
    }
}

/// Sizes are bounded so that a config cannot ask for an absurd allocation; whether
/// the sizes fit the machine is checked once the dataset is known
/// ([`crate::limits::check_training`]).
fn within(p: &mut Vec<Problem>, key: &str, value: usize, min: usize, max: usize) {
    if !(min..=max).contains(&value) {
        p.push(Problem::new(
            key,
            format!("expected an integer in [{min}, {max}], found {value}"),
        ));
    }
}

fn positive(p: &mut Vec<Problem>, key: &str, value: usize) {
    if value == 0 {
        p.push(Problem::new(key, "expected an integer >= 1, found 0"));
    }
}

fn greater_than_zero(p: &mut Vec<Problem>, key: &str, value: f64) {
    if !(value.is_finite() && value > 0.0) {
        p.push(Problem::new(
            key,
            format!("expected a finite number > 0, found {value}"),
        ));
    }
}

fn at_least_zero(p: &mut Vec<Problem>, key: &str, value: f64) {
    if !(value.is_finite() && value >= 0.0) {
        p.push(Problem::new(
            key,
            format!("expected a finite number >= 0, found {value}"),
        ));
    }
}

fn probability(p: &mut Vec<Problem>, key: &str, value: f64) {
    if !(0.0..1.0).contains(&value) {
        p.push(Problem::new(
            key,
            format!("expected a number in [0, 1), found {value}"),
        ));
    }
}
