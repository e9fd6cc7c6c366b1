//! The result of one finished entry, one JSON file each (written atomically, so an
//! interrupted suite never leaves a half-written result): what was run, with every
//! fact needed to reproduce it without the repository's history, and what it scored.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::eval::EvalReport;

/// Version of the result file layout.
pub const RECORD_FORMAT: u32 = 1;

/// The dataset an entry trained on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetFacts {
    /// The cached file, relative to the suite's output folder.
    pub file: String,
    /// Episodes.
    pub episodes: usize,
    /// Transitions.
    pub transitions: usize,
    /// Mean episode return of the behaviour.
    pub return_mean: f64,
    /// Mean normalised score of the behaviour, when reference returns exist.
    pub normalised_mean: Option<f64>,
}

/// Training of an entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainFacts {
    /// Gradient steps done.
    pub steps: u64,
    /// Loss of the last step.
    pub final_loss: f32,
    /// Wall-clock seconds of training in the session that finished it (a resumed run
    /// counts only its last part).
    pub seconds: f64,
    /// CPU seconds (all threads) of the same, where the platform reports them.
    pub cpu_seconds: Option<f64>,
}

/// One finished entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntryRecord {
    /// [`RECORD_FORMAT`].
    pub format: u32,
    /// Environment id.
    pub env: String,
    /// Dataset tier.
    pub tier: String,
    /// Agent name (the suite's column label).
    pub agent: String,
    /// Training seed.
    pub seed: u64,
    /// flowrl version that produced it.
    pub flowrl_version: String,
    /// The full resolved experiment config (TOML): `flowrl train --config` on it
    /// collects the same dataset and trains the same run.
    pub config_toml: String,
    /// The dataset.
    pub dataset: DatasetFacts,
    /// The training.
    pub train: TrainFacts,
    /// Wall-clock seconds of the evaluation.
    pub eval_seconds: f64,
    /// CPU seconds (all threads) of the evaluation, where the platform reports them.
    pub eval_cpu_seconds: Option<f64>,
    /// The evaluation of the final checkpoint.
    pub eval: EvalReport,
}

impl EntryRecord {
    /// Reads a result file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the result file {}", path.display()))?;
        let record: Self = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a suite result file", path.display()))?;
        if record.format != RECORD_FORMAT {
            anyhow::bail!(
                "{}: expected result format {RECORD_FORMAT}, found {}",
                path.display(),
                record.format
            );
        }
        Ok(record)
    }

    /// Writes the record atomically.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        crate::atomic::write_bytes_atomic(path, json.as_bytes())
    }

    /// The recorded experiment config.
    pub fn config(&self) -> anyhow::Result<Config> {
        Config::from_toml_str(&self.config_toml, "recorded config", &[])
            .context("the result's recorded config is invalid")
    }

    /// The mean normalised score at the headline (first) target.
    pub fn headline_score(&self) -> Option<f64> {
        self.eval.targets.first()?.normalised.map(|n| n.mean)
    }
}
