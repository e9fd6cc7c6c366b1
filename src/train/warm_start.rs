//! Warm start (`train.init_from`): a new run's agent initialised from the parameters of
//! an earlier run's checkpoint instead of at random, e.g. a curriculum that trains on
//! short episodes first and then on long ones.
//!
//! Only the parameters are copied; the new run keeps its own optimiser (fresh AdamW
//! moments, step 0), random streams, dataset and preprocessing. Both agents must be of
//! the same kind with the same parameter names and shapes, except the timestep table
//! `embed_timestep.weight` (`[max_episode_length, width]`), which may have another
//! number of rows: it is **stretched** over the new table, row `t` of the new table
//! being row `round(t (n_old - 1) / (n_new - 1))` of the old one (first row to first
//! row, last to last, rows in between in proportion). A model trained on episodes of
//! length `n_old` thus sees the start, the middle and the end of a longer episode with
//! the timestep embeddings it learnt for its own start, middle and end.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use dfdx::prelude::Cpu;
use flowrl_agents::agent::Agent;

use super::checkpoint;
use super::run_dir::{self, PARAMS_FILE};

/// Name of the timestep embedding table, the one parameter whose row count may differ.
pub const TIMESTEP_TABLE: &str = "embed_timestep.weight";

/// What [`init_parameters`] copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarmStart {
    /// The source run folder.
    pub run_dir: PathBuf,
    /// The source checkpoint's step.
    pub step: u64,
    /// Parameters copied.
    pub params: usize,
    /// `(old rows, new rows)` of the timestep table when it was stretched.
    pub stretched: Option<(usize, usize)>,
}

/// The run folder and checkpoint step `source` names: a run folder (its newest
/// checkpoint) or a checkpoint folder `<run>/checkpoints/step-<N>`.
fn resolve(source: &Path) -> anyhow::Result<(PathBuf, Option<u64>)> {
    if !source.is_dir() {
        bail!(
            "train.init_from: {} is neither a run folder nor a checkpoint folder (no such folder)",
            source.display()
        );
    }
    if !source.join(PARAMS_FILE).is_file() {
        return Ok((source.to_path_buf(), None));
    }
    let step = source
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(run_dir::checkpoint_step);
    let run = source
        .parent()
        .filter(|p| p.file_name() == Some(run_dir::CHECKPOINTS_DIR.as_ref()))
        .and_then(Path::parent);
    match (run, step) {
        (Some(run), Some(step)) => Ok((run.to_path_buf(), Some(step))),
        _ => bail!(
            "train.init_from: {} holds {PARAMS_FILE} but is not a checkpoint folder \
             `<run>/{}/step-<N>`",
            source.display(),
            run_dir::CHECKPOINTS_DIR
        ),
    }
}

/// Row `t` of a table of `new` rows stretched from one of `old` rows (both >= 1).
pub fn stretched_row(t: usize, old: usize, new: usize) -> usize {
    if new <= 1 {
        return 0;
    }
    // Exact integer rounding of t (old - 1) / (new - 1), halves up.
    let num = t as u128 * (old as u128 - 1);
    let den = new as u128 - 1;
    ((2 * num + den) / (2 * den)) as usize
}

/// `old` (`old_rows` rows of `width` values) stretched to `new_rows` rows.
fn stretch(old: &[f32], old_rows: usize, new_rows: usize, width: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(new_rows * width);
    for t in 0..new_rows {
        let r = stretched_row(t, old_rows, new_rows);
        out.extend_from_slice(&old[r * width..(r + 1) * width]);
    }
    out
}

/// Overwrites every parameter of `agent` with the same-named parameter of the
/// checkpoint `source` names (see [`resolve`]). Errors name the parameter and both
/// shapes on any mismatch other than the timestep table's row count, and a different
/// agent kind.
pub fn init_parameters(agent: &mut Agent<f32, Cpu>, source: &Path) -> anyhow::Result<WarmStart> {
    let (run, step) = resolve(source)?;
    let loaded = checkpoint::load(&run, step)
        .with_context(|| format!("train.init_from: cannot load {}", source.display()))?;
    let (from, to) = (loaded.agent.config(), agent.config());
    if from.kind != to.kind {
        bail!(
            "train.init_from: {} holds a {:?} agent, this run trains a {:?}",
            source.display(),
            from.kind,
            to.kind
        );
    }
    let (src, dst) = (loaded.agent.params(), agent.params());
    let src_names: Vec<&str> = src.ids().map(|id| src.name(id)).collect();
    let dst_names: Vec<&str> = dst.ids().map(|id| dst.name(id)).collect();
    if let Some(extra) = src_names.iter().find(|n| !dst_names.contains(n)) {
        bail!(
            "train.init_from: {} has a parameter `{extra}` this run's agent does not have",
            source.display()
        );
    }
    let mut copies = Vec::with_capacity(dst_names.len());
    let mut stretched = None;
    for id in dst.ids() {
        let name = dst.name(id);
        let Ok(sid) = src.id(name) else {
            bail!(
                "train.init_from: {} has no parameter `{name}`, which this run's agent has",
                source.display()
            );
        };
        let (old, new) = (src.shape(sid), dst.shape(id));
        let values = if old == new {
            src.values(sid)
        } else if name == TIMESTEP_TABLE && old.len() == 2 && new.len() == 2 && old[1] == new[1] {
            stretched = Some((old[0], new[0]));
            stretch(&src.values(sid), old[0], new[0], new[1])
        } else {
            bail!(
                "train.init_from: parameter `{name}` has shape {old:?} in {} but {new:?} in \
                 this run's agent (only the rows of `{TIMESTEP_TABLE}` may differ)",
                source.display()
            );
        };
        copies.push((name.to_string(), values));
    }
    let params = copies.len();
    for (name, values) in copies {
        agent
            .params_mut()
            .set_values(&name, &values)
            .with_context(|| format!("train.init_from: cannot set `{name}`"))?;
    }
    Ok(WarmStart {
        run_dir: run,
        step: loaded.step,
        params,
        stretched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretch_maps_ends_to_ends_and_keeps_equal_sizes() {
        assert_eq!(stretched_row(0, 251, 1001), 0);
        assert_eq!(stretched_row(1000, 251, 1001), 250);
        assert_eq!(stretched_row(500, 251, 1001), 125);
        assert_eq!(stretched_row(2, 251, 1001), 1); // 0.5 rounds up
        assert_eq!(stretched_row(1, 251, 1001), 0);
        assert!((0..7).all(|t| stretched_row(t, 7, 7) == t));
        assert_eq!(stretched_row(2, 5, 3), 4); // shrinking also maps last to last
        assert_eq!(stretched_row(0, 5, 1), 0);
        let old = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(stretch(&old, 2, 3, 2), vec![1.0, 2.0, 3.0, 4.0, 3.0, 4.0]);
    }
}
