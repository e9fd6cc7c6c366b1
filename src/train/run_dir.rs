//! Names and paths inside a run folder (the layout is described in [`super`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The resolved config of the run.
pub const CONFIG_FILE: &str = "config.toml";
/// The dataset collected for the run (only when the config collects one).
pub const COLLECTED_DATASET: &str = "dataset.safetensors";
/// Folder of the checkpoints.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// File naming the newest complete checkpoint (its folder name).
pub const LATEST_FILE: &str = "latest";
/// Per-step training record: `step,loss,lr,grad_norm`.
pub const TRAIN_LOG: &str = "train_log.csv";
/// Parameters with the agent config in their metadata.
pub const PARAMS_FILE: &str = "params.safetensors";
/// AdamW step count and moments.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Step, random-stream positions and dataset fingerprint ([`super::checkpoint::TrainState`]).
pub const STATE_FILE: &str = "state.json";
/// Observation normalisation, reward scale and action scaling ([`super::Preprocessing`]).
pub const NORMALISATION_FILE: &str = "normalisation.json";
/// Every file of a complete checkpoint folder.
pub const CHECKPOINT_FILES: [&str; 4] =
    [PARAMS_FILE, OPTIMIZER_FILE, STATE_FILE, NORMALISATION_FILE];

/// The checkpoints folder of `run`.
pub fn checkpoints(run: &Path) -> PathBuf {
    run.join(CHECKPOINTS_DIR)
}

/// Folder name of the checkpoint at `step`.
pub fn checkpoint_name(step: u64) -> String {
    format!("step-{step}")
}

/// The step a checkpoint folder name `step-<N>` stands for.
pub fn checkpoint_step(name: &str) -> Option<u64> {
    name.strip_prefix("step-")?.parse().ok()
}

/// Folder of the checkpoint at `step`.
pub fn checkpoint_dir(run: &Path, step: u64) -> PathBuf {
    checkpoints(run).join(checkpoint_name(step))
}

/// Steps of the checkpoint folders of `run`, ascending (empty if there are none).
pub fn checkpoint_steps(run: &Path) -> anyhow::Result<Vec<u64>> {
    let dir = checkpoints(run);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut steps = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
    {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name();
        if let Some(step) = name.to_str().and_then(checkpoint_step) {
            steps.push(step);
        }
    }
    steps.sort_unstable();
    Ok(steps)
}

/// The step of the newest complete checkpoint, read from the `latest` file.
pub fn latest_step(run: &Path) -> anyhow::Result<u64> {
    let path = checkpoints(run).join(LATEST_FILE);
    if !run.is_dir() {
        bail!("{} is not a run folder (no such folder)", run.display());
    }
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "run folder {} has no readable checkpoint pointer {} (was a checkpoint ever written?)",
            run.display(),
            path.display()
        )
    })?;
    let name = text.trim();
    checkpoint_step(name)
        .with_context(|| format!("{}: expected `step-<N>`, found `{name}`", path.display()))
}
