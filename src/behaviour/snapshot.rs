//! Policy snapshots: one safetensors file per policy.
//!
//! Arrays (F64): `weights` `[act_dim, obs_dim]` (M), `obs_mean` `[obs_dim]`,
//! `obs_std` `[obs_dim]`. `__metadata__`: `format` ([`FORMAT`]), `env_id`,
//! `eval_return`, `iteration`, `episodes`, `env_steps`, `seed` (see [`SnapshotInfo`]),
//! `action_low`, `action_high`. The header is written with its keys in sorted order
//! (metadata and arrays), so the same policy always gives the same bytes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use safetensors::{Dtype, SafeTensors};

use super::policy::BehaviourPolicy;
use crate::atomic::write_bytes_atomic;

/// Format version written into `__metadata__["format"]`.
pub const FORMAT: &str = "flowrl-behaviour-policy/1";

/// Where a snapshot's policy comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotInfo {
    /// Environment id.
    pub env_id: String,
    /// Mean evaluated return (environment reward, no noise) when it was saved.
    pub eval_return: f64,
    /// ARS iterations (updates) taken.
    pub iteration: u64,
    /// Training episodes rolled out so far.
    pub episodes: u64,
    /// Training environment steps taken so far.
    pub env_steps: u64,
    /// The run's seed.
    pub seed: u64,
}

impl BehaviourPolicy {
    /// The snapshot file's bytes (byte-reproducible).
    pub fn to_bytes(&self) -> Vec<u8> {
        let i = &self.info;
        let meta = BTreeMap::from([
            ("format", FORMAT.to_string()),
            ("env_id", i.env_id.clone()),
            ("eval_return", i.eval_return.to_string()),
            ("iteration", i.iteration.to_string()),
            ("episodes", i.episodes.to_string()),
            ("env_steps", i.env_steps.to_string()),
            ("seed", i.seed.to_string()),
            ("action_low", self.action_low.to_string()),
            ("action_high", self.action_high.to_string()),
        ]);
        let (act, obs) = (self.act_dim(), self.obs_dim());
        encode(
            &meta,
            &[
                ("obs_mean", vec![obs], &self.obs_mean),
                ("obs_std", vec![obs], &self.obs_std),
                ("weights", vec![act, obs], &self.weights),
            ],
        )
    }

    /// Writes the snapshot to `path` atomically.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        write_bytes_atomic(path, &self.to_bytes())
    }

    /// Reads a snapshot, checking its format, shapes (weights `[act, obs]`, mean and
    /// std `[obs]`) and values (finite, std > 0, action bounds low < high). Errors name
    /// the file and the problem.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the policy snapshot {}", path.display()))?;
        Self::from_bytes(&bytes)
            .with_context(|| format!("{} is not a valid policy snapshot", path.display()))
    }

    /// Parses and checks the bytes of a snapshot file (see [`BehaviourPolicy::load`]).
    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<Self> {
        let (meta, arrays) = decode(bytes)?;
        let format = meta_value(&meta, "format")?;
        if format != FORMAT {
            bail!("metadata `format`: expected \"{FORMAT}\", found \"{format}\"");
        }
        let info = SnapshotInfo {
            env_id: meta_value(&meta, "env_id")?.to_string(),
            eval_return: meta_parse(&meta, "eval_return")?,
            iteration: meta_parse(&meta, "iteration")?,
            episodes: meta_parse(&meta, "episodes")?,
            env_steps: meta_parse(&meta, "env_steps")?,
            seed: meta_parse(&meta, "seed")?,
        };
        let action_low: f32 = meta_parse(&meta, "action_low")?;
        let action_high: f32 = meta_parse(&meta, "action_high")?;
        if !(action_low.is_finite() && action_high.is_finite() && action_low < action_high) {
            bail!(
                "action bounds: expected finite low < high, found {action_low} and {action_high}"
            );
        }
        let (mean_shape, obs_mean) = array(&arrays, "obs_mean")?;
        let (std_shape, obs_std) = array(&arrays, "obs_std")?;
        let (w_shape, weights) = array(&arrays, "weights")?;
        let obs = match mean_shape.as_slice() {
            [n] if *n > 0 => *n,
            other => bail!("array `obs_mean`: expected shape [obs_dim > 0], found {other:?}"),
        };
        if std_shape != [obs] {
            bail!("array `obs_std`: expected shape [{obs}], found {std_shape:?}");
        }
        if w_shape.len() != 2 || w_shape[1] != obs || w_shape[0] == 0 {
            bail!("array `weights`: expected shape [act_dim > 0, {obs}], found {w_shape:?}");
        }
        finite("weights", &weights)?;
        finite("obs_mean", &obs_mean)?;
        finite("obs_std", &obs_std)?;
        if let Some(i) = obs_std.iter().position(|&s| s <= 0.0) {
            bail!(
                "array `obs_std`: expected values > 0, found {} at {i}",
                obs_std[i]
            );
        }
        Ok(Self {
            weights,
            obs_mean,
            obs_std,
            action_low,
            action_high,
            info,
        })
    }
}

/// A safetensors file of F64 arrays with `meta` as `__metadata__`, the header's keys in
/// sorted order (`arrays` must be given sorted by name).
pub(crate) fn encode(
    meta: &BTreeMap<&str, String>,
    arrays: &[(&str, Vec<usize>, &[f64])],
) -> Vec<u8> {
    debug_assert!(arrays.windows(2).all(|w| w[0].0 < w[1].0));
    let json = |s: &str| serde_json::Value::from(s).to_string();
    let meta_json: Vec<String> = meta
        .iter()
        .map(|(k, v)| format!("{}:{}", json(k), json(v)))
        .collect();
    let mut entries = vec![format!("\"__metadata__\":{{{}}}", meta_json.join(","))];
    let mut offset = 0;
    for (name, shape, data) in arrays {
        let end = offset + data.len() * 8;
        let shape: Vec<String> = shape.iter().map(usize::to_string).collect();
        entries.push(format!(
            "{}:{{\"dtype\":\"F64\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            json(name),
            shape.join(",")
        ));
        offset = end;
    }
    let mut header = format!("{{{}}}", entries.join(",")).into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for (_, _, data) in arrays {
        out.extend(data.iter().flat_map(|x| x.to_le_bytes()));
    }
    out
}

/// The F64 arrays (name to shape and values) and the metadata of a safetensors file.
pub(crate) type Decoded = (
    HashMap<String, String>,
    HashMap<String, (Vec<usize>, Vec<f64>)>,
);

/// Parses a safetensors file whose arrays are all F64.
pub(crate) fn decode(bytes: &[u8]) -> anyhow::Result<Decoded> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow!("not a safetensors file: {e}"))?;
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| anyhow!("not a safetensors file: {e}"))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let mut arrays = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F64 {
            bail!("array `{name}`: expected F64, found {:?}", view.dtype());
        }
        let values = view
            .data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunks of 8 bytes")))
            .collect();
        arrays.insert(name, (view.shape().to_vec(), values));
    }
    Ok((meta, arrays))
}

/// The metadata value under `key`.
pub(crate) fn meta_value<'a>(
    meta: &'a HashMap<String, String>,
    key: &str,
) -> anyhow::Result<&'a str> {
    meta.get(key)
        .map(String::as_str)
        .ok_or_else(|| anyhow!("metadata `{key}` is missing"))
}

/// The metadata value under `key`, parsed.
pub(crate) fn meta_parse<T: std::str::FromStr>(
    meta: &HashMap<String, String>,
    key: &str,
) -> anyhow::Result<T> {
    let text = meta_value(meta, key)?;
    text.parse().map_err(|_| {
        anyhow!(
            "metadata `{key}`: expected a {}, found `{text}`",
            std::any::type_name::<T>()
        )
    })
}

/// The array `name` (shape and values).
pub(crate) fn array(
    arrays: &HashMap<String, (Vec<usize>, Vec<f64>)>,
    name: &str,
) -> anyhow::Result<(Vec<usize>, Vec<f64>)> {
    arrays
        .get(name)
        .cloned()
        .ok_or_else(|| anyhow!("array `{name}` is missing"))
}

fn finite(name: &str, values: &[f64]) -> anyhow::Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => bail!(
            "array `{name}`: expected finite values, found {} at {i}",
            values[i]
        ),
        None => Ok(()),
    }
}
