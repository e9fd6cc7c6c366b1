//! Minari datasets: `data/main_data.hdf5` with one `episode_<i>` group per episode
//! (`observations` has one more row than `actions`; `rewards`, `terminations`,
//! `truncations`), and `data/metadata.json` (serialised spaces, `env_spec`,
//! `ref_min_score` / `ref_max_score` when present).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::hdf5::{column, row_width, H5File, Rows};
use super::Imported;
use crate::data::dataset::{DatasetBuilder, Ending, Metadata, Provenance, ReferenceReturns};
use crate::data::error::{DataError, Problem};
use crate::data::space::{parse_relaxed_json, Space};

/// Options of the Minari importer.
#[derive(Clone, Debug, Default)]
pub struct MinariOptions {
    /// Environment id to record (default: `env_spec.id`, else `dataset_id`).
    pub env_id: Option<String>,
    /// Reference returns (default: `ref_min_score` / `ref_max_score` of the metadata;
    /// none when absent, since the dataset's time limit may differ from the one the
    /// known references were measured with).
    pub reference_returns: Option<ReferenceReturns>,
}

/// Finds `main_data.hdf5` and `metadata.json` from a dataset folder, its `data` folder,
/// or the HDF5 file itself.
fn locate(path: &Path) -> Result<(PathBuf, PathBuf), DataError> {
    let data_dir = if path.is_dir() {
        if path.join("data").join("main_data.hdf5").exists() {
            path.join("data")
        } else if path.join("main_data.hdf5").exists() {
            path.to_path_buf()
        } else {
            return Err(Problem::NotFormat {
                format: "Minari dataset",
                detail: "the folder holds neither data/main_data.hdf5 nor main_data.hdf5".into(),
            }
            .at(path));
        }
    } else if path.exists() {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        return Err(Problem::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file or folder",
        ))
        .at(path));
    };
    let h5 = if path.is_file() {
        path.to_path_buf()
    } else {
        data_dir.join("main_data.hdf5")
    };
    Ok((h5, data_dir.join("metadata.json")))
}

fn meta_err(path: &Path, key: &str, detail: impl Into<String>) -> DataError {
    Problem::BadMetadata {
        key: key.into(),
        detail: detail.into(),
    }
    .at(path)
}

/// A metadata entry that Minari stores either as a JSON object or as a JSON string.
fn nested_json(path: &Path, meta: &Value, key: &str) -> Result<Option<Value>, DataError> {
    match meta.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => parse_relaxed_json(text)
            .map(Some)
            .map_err(|e| meta_err(path, key, format!("invalid JSON: {e}"))),
        Some(other) => Ok(Some(other.clone())),
    }
}

fn space(path: &Path, meta: &Value, key: &str) -> Result<Space, DataError> {
    let value = nested_json(path, meta, key)?
        .ok_or_else(|| meta_err(path, key, "missing (needed to know the spaces)"))?;
    Space::from_json(&value).map_err(|e| meta_err(path, key, e))
}

/// Imports a Minari dataset (folder, `data` folder or `main_data.hdf5`).
pub fn import_minari(path: &Path, opts: &MinariOptions) -> Result<Imported, DataError> {
    let (h5_path, meta_path) = locate(path)?;
    // The HDF5 file first: a file that is not one is reported as such, not as a
    // dataset without `metadata.json`.
    let h5 = H5File::open(&h5_path)?;
    let text = std::fs::read_to_string(&meta_path).map_err(|e| Problem::Io(e).at(&meta_path))?;
    let meta = parse_relaxed_json(&text).map_err(|e| {
        Problem::NotFormat {
            format: "JSON",
            detail: e.to_string(),
        }
        .at(&meta_path)
    })?;
    let observation_space = space(&meta_path, &meta, "observation_space")?;
    let action_space = space(&meta_path, &meta, "action_space")?;
    let obs_dim = match &observation_space {
        Space::Box { low, .. } => low.len(),
        Space::Discrete { .. } => {
            return Err(meta_err(
                &meta_path,
                "observation_space",
                "Discrete observations are not supported (observations are f32 vectors)",
            ))
        }
    };
    let (discrete, act_dim) = match &action_space {
        Space::Box { low, .. } => (false, low.len()),
        Space::Discrete { .. } => (true, 1),
    };
    let env_spec = nested_json(&meta_path, &meta, "env_spec")?;
    let env_id = opts
        .env_id
        .clone()
        .or_else(|| env_spec.as_ref()?.get("id")?.as_str().map(String::from))
        .or_else(|| meta.get("dataset_id")?.as_str().map(String::from))
        .unwrap_or_else(|| "unknown".into());
    let reference_returns = match opts.reference_returns {
        Some(r) => Some(r),
        None => match (
            meta.get("ref_min_score").and_then(Value::as_f64),
            meta.get("ref_max_score").and_then(Value::as_f64),
        ) {
            (Some(random), Some(expert)) => Some(ReferenceReturns { random, expert }),
            _ => None,
        },
    };

    let (_, groups) = h5.members("")?;
    let mut episodes: Vec<(usize, String)> = groups
        .iter()
        .filter_map(|g| Some((g.strip_prefix("episode_")?.parse().ok()?, g.clone())))
        .collect();
    episodes.sort();
    if episodes.is_empty() {
        return Err(h5.err(Problem::EmptyDataset(
            "no `episode_<i>` groups in the file".into(),
        )));
    }
    let mut warnings = Vec::new();
    if let Some(total) = meta.get("total_episodes").and_then(Value::as_u64) {
        if total as usize != episodes.len() {
            warnings.push(format!(
                "metadata.json says total_episodes = {total} but the file holds {} episode groups",
                episodes.len()
            ));
        }
    }
    let mut builder = DatasetBuilder::new(obs_dim, act_dim, discrete);
    let mut unended = 0;
    let mut empty = 0;
    let mut infos = false;
    for (index, group) in &episodes {
        let name = |array: &str| format!("{group}/{array}");
        let (datasets, subgroups) = h5.members(group)?;
        infos |= datasets.iter().chain(&subgroups).any(|m| m == "infos");
        let rewards = h5.read_numbers(&name("rewards"))?;
        let t = rewards.shape.first().copied().unwrap_or(0);
        column(
            h5.path(),
            &name("rewards"),
            &rewards.shape,
            t,
            "one per step",
        )?;
        if t == 0 {
            empty += 1;
            continue;
        }
        if !datasets.iter().any(|d| d == "observations")
            && subgroups.iter().any(|g| g == "observations")
        {
            return Err(h5.err(Problem::BadArray {
                name: name("observations"),
                expected: "one array (a Box observation space)".into(),
                found: "a group (Dict or Tuple observations are not supported)".into(),
            }));
        }
        let obs = h5.read_numbers(&name("observations"))?;
        let width = row_width(
            h5.path(),
            &name("observations"),
            &obs.shape,
            t + 1,
            "one more than the steps in `rewards`",
            Rows::Flatten,
        )?;
        if width != obs_dim {
            return Err(h5.err(Problem::BadArray {
                name: name("observations"),
                expected: format!("{obs_dim} values per row (observation_space)"),
                found: format!("{width} (shape {:?})", obs.shape),
            }));
        }
        let (continuous, indices) = if discrete {
            let (indices, shape) = h5.read_indices(&name("actions"))?;
            column(h5.path(), &name("actions"), &shape, t, "one index per step")?;
            (Vec::new(), indices)
        } else {
            let actions = h5.read_numbers(&name("actions"))?;
            let width = row_width(
                h5.path(),
                &name("actions"),
                &actions.shape,
                t,
                "one per step",
                Rows::Flatten,
            )?;
            if width != act_dim {
                return Err(h5.err(Problem::BadArray {
                    name: name("actions"),
                    expected: format!("{act_dim} values per row (action_space)"),
                    found: format!("{width} (shape {:?})", actions.shape),
                }));
            }
            (actions.values, Vec::new())
        };
        let (terms, shape) = h5.read_flags(&name("terminations"))?;
        column(h5.path(), &name("terminations"), &shape, t, "one per step")?;
        let (truncs, shape) = h5.read_flags(&name("truncations"))?;
        column(h5.path(), &name("truncations"), &shape, t, "one per step")?;
        if let Some(i) = (0..t - 1).find(|&i| terms[i] || truncs[i]) {
            return Err(h5.err(Problem::BadEpisode {
                episode: *index,
                detail: format!("step {i} of {t} is flagged as the end but is not the last"),
            }));
        }
        let steps = obs.values[..t * obs_dim]
            .chunks_exact(obs_dim)
            .zip(&rewards.values);
        if discrete {
            for ((o, &r), &a) in steps.zip(&indices) {
                builder.push_discrete(o, a, r);
            }
        } else {
            for ((o, &r), a) in steps.zip(continuous.chunks_exact(act_dim)) {
                builder.push_continuous(o, a, r);
            }
        }
        if terms[t - 1] {
            builder.end_episode(Ending::Terminated);
        } else {
            unended += usize::from(!truncs[t - 1]);
            builder.end_episode(Ending::Truncated);
        }
    }
    if empty > 0 {
        warnings.push(format!("{empty} episode(s) without steps were skipped"));
    }
    if unended > 0 {
        warnings.push(format!(
            "{unended} episode(s) end with neither termination nor truncation: kept as truncated"
        ));
    }
    let count = builder.episodes();
    let meta = Metadata {
        env_id,
        observation_space,
        action_space,
        provenance: Provenance {
            source: "minari".into(),
            behaviour_policy: meta
                .get("algorithm_name")
                .and_then(Value::as_str)
                .map(String::from),
            origin: Some(path.display().to_string()),
            episodes: count,
            ..Provenance::default()
        },
        reference_returns,
    };
    let dataset = builder.build(meta).map_err(|p| h5.err(p))?;
    Ok(Imported {
        dataset,
        warnings,
        ignored: if infos {
            vec!["episode_<i>/infos".into()]
        } else {
            Vec::new()
        },
    })
}
