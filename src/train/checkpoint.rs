//! Checkpoints: writing one atomically, and loading a run's checkpoint for evaluation
//! ([`load`]) or for resuming training.
//!
//! A checkpoint is written into a temporary folder beside its final place (every file
//! through [`crate::atomic`]), renamed to `checkpoints/step-<N>` once complete, and
//! only then named in `checkpoints/latest` (itself written atomically). A crash at any
//! point leaves the previous checkpoint and pointer intact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use dfdx::prelude::Cpu;
use flowrl_agents::agent::Agent;
use flowrl_agents::optim::AdamW;
use serde::{Deserialize, Serialize};

use super::prepare::Preprocessing;
use super::run_dir::{
    self, CHECKPOINT_FILES, NORMALISATION_FILE, OPTIMIZER_FILE, PARAMS_FILE, STATE_FILE,
};
use crate::atomic::{write_atomic, write_bytes_atomic};
use crate::config::{Config, ContextMode};

/// Version of the `state.json` layout.
pub const STATE_FORMAT: u32 = 1;

/// Metadata key of the step in `params.safetensors`.
pub const STEP_KEY: &str = "flowrl.step";

/// Position of the window sampler's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerPosition {
    /// Seed of the sampler's `ChaCha8Rng`.
    pub seed: u64,
    /// Batches drawn since seeding.
    pub batches_drawn: u64,
}

/// Position of the device generator behind dropout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropoutPosition {
    /// Seed of dfdx's `Cpu` generator.
    pub seed: u64,
    /// `u64`s one training step draws.
    pub draws_per_step: u64,
    /// `u64`s drawn since seeding.
    pub draws: u64,
}

/// Enough of the dataset to notice that a resumed run would see different data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetFingerprint {
    /// [`content_hash`] of the dataset's arrays (empty in checkpoints written before
    /// it was recorded).
    #[serde(default)]
    pub content_hash: String,
    /// Steps (transitions).
    pub steps: usize,
    /// Episodes.
    pub episodes: usize,
    /// Observation size.
    pub obs_dim: usize,
    /// Bits of the sum of all rewards (f64).
    pub reward_sum_bits: u64,
}

impl DatasetFingerprint {
    /// The fingerprint of `ds`.
    pub fn of(ds: &crate::data::Dataset) -> Self {
        Self {
            content_hash: content_hash(ds),
            steps: ds.len(),
            episodes: ds.num_episodes(),
            obs_dim: ds.obs_dim(),
            reward_sum_bits: ds
                .rewards()
                .iter()
                .map(|&r| f64::from(r))
                .sum::<f64>()
                .to_bits(),
        }
    }
}

/// A hash of a dataset's content, `fnv1a64:<16 hex digits>`: 64-bit FNV-1a over its
/// arrays in a fixed order (episode offsets, observations, actions, rewards,
/// terminated, truncated), each preceded by its name and length, values as
/// little-endian bytes. Independent of the file's bytes (header, metadata order).
pub fn content_hash(ds: &crate::data::Dataset) -> String {
    use crate::data::Actions;
    let mut h = Fnv1a64::default();
    let mut array = |name: &str, len: usize, bytes: &mut dyn Iterator<Item = u8>| {
        h.write(name.bytes().chain((len as u64).to_le_bytes()));
        h.write(bytes);
    };
    let offsets = ds.episode_offsets();
    array(
        "episode_offsets",
        offsets.len(),
        &mut offsets.iter().flat_map(|&o| (o as u64).to_le_bytes()),
    );
    let obs = ds.observations();
    array(
        "observations",
        obs.len(),
        &mut obs.iter().flat_map(|x| x.to_le_bytes()),
    );
    match ds.actions() {
        Actions::Discrete { values } => array(
            "actions/discrete",
            values.len(),
            &mut values.iter().flat_map(|&a| (a as u64).to_le_bytes()),
        ),
        Actions::Continuous { values, .. } => array(
            "actions/continuous",
            values.len(),
            &mut values.iter().flat_map(|x| x.to_le_bytes()),
        ),
    }
    let rewards = ds.rewards();
    array(
        "rewards",
        rewards.len(),
        &mut rewards.iter().flat_map(|x| x.to_le_bytes()),
    );
    for (name, flags) in [
        ("terminated", ds.terminated()),
        ("truncated", ds.truncated()),
    ] {
        array(name, flags.len(), &mut flags.iter().map(|&b| u8::from(b)));
    }
    format!("fnv1a64:{:016x}", h.0)
}

/// 64-bit FNV-1a.
struct Fnv1a64(u64);

impl Default for Fnv1a64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a64 {
    fn write(&mut self, bytes: impl Iterator<Item = u8>) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// The training state of a checkpoint (`state.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// Gradient steps taken.
    pub step: u64,
    /// Gradient steps the run is configured for.
    pub total_steps: u64,
    /// The config seed.
    pub seed: u64,
    /// The sampler's stream.
    pub sampler: SamplerPosition,
    /// The dropout stream.
    pub dropout: DropoutPosition,
    /// The dataset trained on.
    pub dataset: DatasetFingerprint,
    /// Loss of the last step.
    pub last_loss: f32,
}

/// What [`save`] writes.
pub struct CheckpointParts<'a> {
    /// The agent.
    pub agent: &'a Agent<f32, Cpu>,
    /// Its optimiser.
    pub optimizer: &'a AdamW<f32, Cpu>,
    /// Step and stream positions.
    pub state: &'a TrainState,
    /// Normalisation and action scaling.
    pub preprocessing: &'a Preprocessing,
}

/// Writes the checkpoint of `parts.state.step` into `run` and points `latest` at it.
/// An existing checkpoint folder of the same step is replaced.
pub fn save(run: &Path, parts: &CheckpointParts<'_>) -> anyhow::Result<PathBuf> {
    let step = parts.state.step;
    let root = run_dir::checkpoints(run);
    let final_dir = run_dir::checkpoint_dir(run, step);
    let tmp = root.join(run_dir::checkpoint_temporary(step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .with_context(|| format!("cannot remove {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    if let Err(e) = write_parts(&tmp, parts) {
        // Best effort: a full disk, say, should not also leave a partial folder.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)
            .with_context(|| format!("cannot replace {}", final_dir.display()))?;
    }
    std::fs::rename(&tmp, &final_dir)
        .with_context(|| format!("cannot move the checkpoint to {}", final_dir.display()))?;
    run_dir::write_latest(run, step)?;
    Ok(final_dir)
}

/// Writes every file of a checkpoint into the folder `dir`.
fn write_parts(dir: &Path, parts: &CheckpointParts<'_>) -> anyhow::Result<()> {
    let extra = HashMap::from([(STEP_KEY.to_string(), parts.state.step.to_string())]);
    let params = parts
        .agent
        .to_safetensors(&extra)
        .context("cannot serialise the parameters")?;
    write_bytes_atomic(&dir.join(PARAMS_FILE), &params)?;
    let optim = parts
        .optimizer
        .state_to_safetensors(parts.agent.params())
        .context("cannot serialise the optimiser state")?;
    write_bytes_atomic(&dir.join(OPTIMIZER_FILE), &optim)?;
    write_json(&dir.join(STATE_FILE), parts.state)?;
    write_json(&dir.join(NORMALISATION_FILE), parts.preprocessing)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    write_atomic(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value)?;
        w.write_all(b"\n")?;
        Ok(())
    })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the checkpoint file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "checkpoint file {} is corrupt or incomplete",
            path.display()
        )
    })
}

/// A run's checkpoint loaded for evaluation: the agent on the CPU (f32) and what it
/// needs to act as in training.
pub struct LoadedRun {
    /// The run folder.
    pub run_dir: PathBuf,
    /// The checkpoint folder.
    pub checkpoint_dir: PathBuf,
    /// Gradient steps the parameters have seen.
    pub step: u64,
    /// The run's resolved config (`config.toml`).
    pub config: Config,
    /// The trained agent.
    pub agent: Agent<f32, Cpu>,
    /// Observation normalisation, reward scale, action scaling, timestep table size.
    pub preprocessing: Preprocessing,
    /// The training state (step, stream positions, dataset fingerprint).
    pub state: TrainState,
}

impl LoadedRun {
    /// Returns-to-go are divided by this.
    pub fn reward_scale(&self) -> f32 {
        self.preprocessing.normalisation.reward_scale
    }

    /// K: the agent's context length (the longest episode in `episode` mode).
    pub fn context(&self) -> usize {
        self.agent.config().context
    }

    /// The context mode the agent was trained with.
    pub fn context_mode(&self) -> ContextMode {
        self.config.agent.context_mode
    }
}

/// Loads the checkpoint at `step` (or the newest one, per `checkpoints/latest`) of the
/// run folder `run` on the CPU. Errors name the run folder or the file at fault.
pub fn load(run: &Path, step: Option<u64>) -> anyhow::Result<LoadedRun> {
    load_on(run, step, &Cpu::default())
}

/// As [`load`], building the agent on `dev` (training resumes on a seeded device).
pub(crate) fn load_on(run: &Path, step: Option<u64>, dev: &Cpu) -> anyhow::Result<LoadedRun> {
    let config_path = run.join(run_dir::CONFIG_FILE);
    if !run.is_dir() {
        bail!("{} is not a run folder (no such folder)", run.display());
    }
    let config = Config::load(&config_path, &[] as &[&str])
        .with_context(|| format!("run folder {}: cannot load its config", run.display()))?;
    let step = match step {
        Some(s) => s,
        None => run_dir::latest_step(run)?,
    };
    let dir = run_dir::checkpoint_dir(run, step);
    if !dir.is_dir() {
        let have = run_dir::checkpoint_steps(run)?;
        bail!(
            "run folder {} has no checkpoint at step {step} ({} missing); checkpoints: {:?}",
            run.display(),
            dir.display(),
            have
        );
    }
    let missing: Vec<&str> = CHECKPOINT_FILES
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "checkpoint {} is incomplete: missing {}",
            dir.display(),
            missing.join(", ")
        );
    }
    let state: TrainState = read_json(&dir.join(STATE_FILE))?;
    if state.format != STATE_FORMAT {
        bail!(
            "{}: expected state format {STATE_FORMAT}, found {}",
            dir.join(STATE_FILE).display(),
            state.format
        );
    }
    if state.step != step {
        bail!(
            "{}: the folder is for step {step} but the state records step {}",
            dir.join(STATE_FILE).display(),
            state.step
        );
    }
    let preprocessing: Preprocessing = read_json(&dir.join(NORMALISATION_FILE))?;
    check_normalisation(&dir.join(NORMALISATION_FILE), &preprocessing)?;
    let params_path = dir.join(PARAMS_FILE);
    let bytes = std::fs::read(&params_path)
        .with_context(|| format!("cannot read the checkpoint file {}", params_path.display()))?;
    let (agent, metadata) = Agent::from_safetensors(dev, &bytes).with_context(|| {
        format!(
            "checkpoint file {} is corrupt or incomplete",
            params_path.display()
        )
    })?;
    match metadata.get(STEP_KEY).map(|s| s.parse::<u64>()) {
        Some(Ok(s)) if s == step => {}
        other => bail!(
            "{}: metadata `{STEP_KEY}` should be {step}, found {other:?}",
            params_path.display()
        ),
    }
    Ok(LoadedRun {
        run_dir: run.to_path_buf(),
        checkpoint_dir: dir,
        step,
        config,
        agent,
        preprocessing,
        state,
    })
}

/// Checks what an agent's inputs are divided and shifted by: finite observation means,
/// finite positive observation standard deviations, a finite positive reward scale.
fn check_normalisation(path: &Path, pre: &Preprocessing) -> anyhow::Result<()> {
    let n = &pre.normalisation;
    let bad = |field: &str, expected: &str, values: &[f32], ok: fn(f32) -> bool| {
        values.iter().position(|&v| !ok(v)).map(|i| {
            anyhow::anyhow!(
                "{}: `{field}[{i}]` must be {expected}, found {} (a damaged or hand-edited checkpoint)",
                path.display(),
                values[i]
            )
        })
    };
    let problem = bad(
        "normalisation.obs_mean",
        "finite",
        &n.obs_mean,
        f32::is_finite,
    )
    .or_else(|| {
        bad("normalisation.obs_std", "finite and > 0", &n.obs_std, |v| {
            v.is_finite() && v > 0.0
        })
    })
    .or_else(|| {
        bad(
            "normalisation.reward_scale",
            "finite and > 0",
            &[n.reward_scale],
            |v| v.is_finite() && v > 0.0,
        )
    });
    problem.map_or(Ok(()), Err)
}

/// Restores the optimiser state of a loaded checkpoint into `optimizer`.
pub(crate) fn load_optimizer(
    loaded: &LoadedRun,
    optimizer: &mut AdamW<f32, Cpu>,
) -> anyhow::Result<()> {
    let path = loaded.checkpoint_dir.join(OPTIMIZER_FILE);
    let bytes = std::fs::read(&path)
        .with_context(|| format!("cannot read the checkpoint file {}", path.display()))?;
    optimizer
        .load_state_safetensors(loaded.agent.params(), &bytes)
        .with_context(|| {
            format!(
                "checkpoint file {} is corrupt or incomplete",
                path.display()
            )
        })?;
    if optimizer.step_count() != loaded.step {
        bail!(
            "{}: the optimiser has taken {} steps, the checkpoint is at step {}",
            path.display(),
            optimizer.step_count(),
            loaded.step
        );
    }
    Ok(())
}
