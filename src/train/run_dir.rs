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
/// Folder of the evaluation reports written during training and by `flowrl eval`.
pub const EVAL_DIR: &str = "eval";
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

/// Restores a missing `latest` pointer (a run killed between moving a checkpoint into
/// place and naming it) from the newest checkpoint folder holding every file of
/// [`CHECKPOINT_FILES`]. Returns the step it now names, `None` if the pointer was
/// there or no complete checkpoint folder exists.
pub fn restore_latest(run: &Path) -> anyhow::Result<Option<u64>> {
    let pointer = checkpoints(run).join(LATEST_FILE);
    if pointer.exists() {
        return Ok(None);
    }
    let complete = checkpoint_steps(run)?.into_iter().rev().find(|&step| {
        let dir = checkpoint_dir(run, step);
        CHECKPOINT_FILES.iter().all(|f| dir.join(f).is_file())
    });
    if let Some(step) = complete {
        write_latest(run, step)?;
    }
    Ok(complete)
}

/// Points `latest` at the checkpoint of `step` (atomically).
pub fn write_latest(run: &Path, step: u64) -> anyhow::Result<()> {
    crate::atomic::write_bytes_atomic(
        &checkpoints(run).join(LATEST_FILE),
        format!("{}\n", checkpoint_name(step)).as_bytes(),
    )
}

/// Whether `run` holds a checkpoint: a `latest` pointer or a `step-<N>` folder.
pub fn has_checkpoint(run: &Path) -> anyhow::Result<bool> {
    Ok(checkpoints(run).join(LATEST_FILE).exists() || !checkpoint_steps(run)?.is_empty())
}

/// Removes what an unfinished run (one that never reached a checkpoint) left in
/// `run`: the training log, TensorBoard event files, evaluation reports, the
/// checkpoints folder (only temporaries, as there is no checkpoint), and the collected
/// dataset unless `keep_dataset`. The config is kept (it is rewritten on restart), and
/// so is anything not of flowrl's naming.
pub fn clear_unfinished(run: &Path, keep_dataset: bool) -> anyhow::Result<()> {
    let remove_file = |path: &Path| match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    };
    remove_file(&run.join(TRAIN_LOG))?;
    if !keep_dataset {
        remove_file(&run.join(COLLECTED_DATASET))?;
    }
    for (dir, ours) in [
        (
            crate::logging::tb_dir(run),
            crate::logging::is_event_file as fn(&str) -> bool,
        ),
        (run.join(EVAL_DIR), is_eval_report),
    ] {
        for name in file_names(&dir)? {
            if ours(&name) {
                remove_file(&dir.join(name))?;
            }
        }
    }
    let dir = checkpoints(run);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    Ok(())
}

/// Whether `name` is an evaluation report's (`step-<N>-<context>-seed-<S>.json`).
fn is_eval_report(name: &str) -> bool {
    name.starts_with("step-") && name.ends_with(".json")
}

/// Names of the entries of `dir` (none if it does not exist).
fn file_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        names.extend(entry.file_name().to_str().map(str::to_string));
    }
    Ok(names)
}

/// Removes the temporaries an interrupted write left in `run`: files named
/// `.flowrl-*.tmp` ([`crate::atomic`]) in the run folder, its checkpoints, log and
/// evaluation folders, and unfinished checkpoint folders `.step-<N>.tmp`. Only call it
/// while no process writes into `run`.
pub fn remove_stale_temporaries(run: &Path) -> anyhow::Result<()> {
    let dirs = [
        run.to_path_buf(),
        checkpoints(run),
        crate::logging::tb_dir(run),
        run.join(EVAL_DIR),
    ];
    for dir in dirs {
        for name in file_names(&dir)? {
            let path = dir.join(&name);
            if crate::atomic::is_temporary(&name) {
                std::fs::remove_file(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
            } else if dir == checkpoints(run) && is_checkpoint_temporary(&name) && path.is_dir() {
                std::fs::remove_dir_all(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// Name of the folder a checkpoint of `step` is assembled in before it is renamed.
pub fn checkpoint_temporary(step: u64) -> String {
    format!(".{}.tmp", checkpoint_name(step))
}

/// Whether `name` is a checkpoint folder being assembled ([`checkpoint_temporary`]).
fn is_checkpoint_temporary(name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|n| n.strip_suffix(".tmp"))
        .and_then(checkpoint_step)
        .is_some()
}
