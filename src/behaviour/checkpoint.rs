//! The learner's checkpoint: `<out>/checkpoint.safetensors`, written atomically.
//!
//! Arrays (F64): `weights` (M), `obs_mean`, `obs_m2` (the normaliser's statistics).
//! `__metadata__`: `format` ([`FORMAT`]) and `state`, the JSON of [`State`]: the
//! config, the iteration, the counters, the positions of the random streams and the
//! snapshot bookkeeping.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::config::ArsConfig;
use super::normaliser::RunningStats;
use super::snapshot::{array, decode, encode, meta_value};
use crate::atomic::write_bytes_atomic;

/// File name of the checkpoint in the output folder.
pub(crate) const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// Format version written into `__metadata__["format"]`.
const FORMAT: &str = "flowrl-ars-checkpoint/1";

/// Everything but the arrays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct State {
    /// The run's settings.
    pub config: ArsConfig,
    /// Iterations done.
    pub iteration: u64,
    /// Training episodes so far.
    pub episodes: u64,
    /// Training environment steps so far.
    pub env_steps: u64,
    /// States merged into the normaliser.
    pub obs_count: u64,
    /// Word position of the directions' ChaCha8 stream (decimal u128).
    pub delta_stream_pos: String,
    /// Word position of the reset seeds' ChaCha8 stream (decimal u128).
    pub reset_stream_pos: String,
    /// Bits of the best evaluated return so far.
    pub best_return_bits: Option<u64>,
    /// Highest milestone multiple saved so far.
    pub milestone_level: Option<i64>,
}

/// A checkpoint: the state, M and the normaliser.
pub(crate) struct Checkpoint {
    /// Counters, stream positions, config.
    pub state: State,
    /// M, row-major `[act_dim, obs_dim]`.
    pub weights: Vec<f64>,
    /// The normaliser.
    pub stats: RunningStats,
}

/// The checkpoint path of the output folder `out`.
pub(crate) fn path(out: &Path) -> PathBuf {
    out.join(CHECKPOINT_FILE)
}

/// Writes the checkpoint of `out` atomically.
pub(crate) fn save(out: &Path, ckpt: &Checkpoint) -> anyhow::Result<()> {
    let state = serde_json::to_string(&ckpt.state).context("cannot serialise the ARS state")?;
    let meta = BTreeMap::from([("format", FORMAT.to_string()), ("state", state)]);
    let dim = ckpt.stats.dim();
    let bytes = encode(
        &meta,
        &[
            ("obs_m2", vec![dim], ckpt.stats.m2()),
            ("obs_mean", vec![dim], ckpt.stats.mean()),
            (
                "weights",
                vec![ckpt.weights.len() / dim, dim],
                &ckpt.weights,
            ),
        ],
    );
    write_bytes_atomic(&path(out), &bytes)
}

/// Reads the checkpoint of `out`; errors name the file and the problem.
pub(crate) fn load(out: &Path) -> anyhow::Result<Checkpoint> {
    let file = path(out);
    if !out.is_dir() {
        bail!(
            "{} is not a behaviour run folder (no such folder)",
            out.display()
        );
    }
    let bytes = std::fs::read(&file).with_context(|| {
        format!(
            "{} has no readable checkpoint {} (was the run started there?)",
            out.display(),
            file.display()
        )
    })?;
    parse(&bytes).with_context(|| format!("checkpoint {} is corrupt or incomplete", file.display()))
}

fn parse(bytes: &[u8]) -> anyhow::Result<Checkpoint> {
    let (meta, arrays) = decode(bytes)?;
    let format = meta_value(&meta, "format")?;
    if format != FORMAT {
        bail!("metadata `format`: expected \"{FORMAT}\", found \"{format}\"");
    }
    let state: State = serde_json::from_str(meta_value(&meta, "state")?)
        .context("metadata `state` is not a valid ARS state")?;
    let (_, mean) = array(&arrays, "obs_mean")?;
    let (_, m2) = array(&arrays, "obs_m2")?;
    let (shape, weights) = array(&arrays, "weights")?;
    if shape.len() != 2 || shape[1] != mean.len() {
        bail!(
            "array `weights`: expected shape [_, {}], found {shape:?}",
            mean.len()
        );
    }
    if let Some(w) = weights.iter().find(|w| !w.is_finite()) {
        bail!("array `weights`: expected finite values, found {w}");
    }
    let stats = RunningStats::from_parts(state.obs_count, mean, m2)?;
    Ok(Checkpoint {
        state,
        weights,
        stats,
    })
}
