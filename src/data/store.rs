//! The native file format: one safetensors file.
//!
//! Arrays: `observations` `[N, obs_dim]` F32, `actions` `[N, act_dim]` F32 (continuous)
//! or `[N]` I64 (discrete), `rewards` `[N]` F32, `terminated` and `truncated` `[N]` BOOL,
//! `episode_offsets` `[E + 1]` I64. Rewards are f32 like the D4RL and Minari sources and
//! the model; sums (returns, returns-to-go) are taken in f64.
//!
//! `__metadata__` (string to string): `format` ([`FORMAT`]), `env_id`,
//! `observation_space` and `action_space` (JSON, see [`Space::to_json`]), `provenance`
//! (JSON), and `reference_returns` (JSON `{"random":..,"expert":..}`, only when known).
//! Python reads it with `safetensors.numpy.load_file`.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Metadata as Header, TensorInfo};
use safetensors::{Dtype, SafeTensors};

use super::dataset::{Actions, Dataset, DatasetParts, Metadata, Provenance, ReferenceReturns};
use super::error::{DataError, Problem};
use super::space::Space;

/// Format version written into `__metadata__["format"]`.
pub const FORMAT: &str = "flowrl-dataset/1";

/// One array to write: name, dtype, shape and a writer of its little-endian bytes.
struct Array<'a> {
    name: &'static str,
    dtype: Dtype,
    shape: Vec<usize>,
    data: ArrayData<'a>,
}

enum ArrayData<'a> {
    F32(&'a [f32]),
    Usize(&'a [usize]),
    Bool(&'a [bool]),
}

impl ArrayData<'_> {
    fn byte_len(&self) -> usize {
        match self {
            ArrayData::F32(v) => v.len() * 4,
            ArrayData::Usize(v) => v.len() * 8,
            ArrayData::Bool(v) => v.len(),
        }
    }

    fn write(&self, w: &mut dyn Write) -> std::io::Result<()> {
        const CHUNK: usize = 1 << 14;
        let mut buf = Vec::with_capacity(CHUNK * 8);
        match self {
            ArrayData::F32(v) => {
                for c in v.chunks(CHUNK) {
                    buf.clear();
                    buf.extend(c.iter().flat_map(|x| x.to_le_bytes()));
                    w.write_all(&buf)?;
                }
            }
            ArrayData::Usize(v) => {
                for c in v.chunks(CHUNK) {
                    buf.clear();
                    buf.extend(c.iter().flat_map(|&x| (x as i64).to_le_bytes()));
                    w.write_all(&buf)?;
                }
            }
            ArrayData::Bool(v) => {
                for c in v.chunks(CHUNK) {
                    buf.clear();
                    buf.extend(c.iter().map(|&b| u8::from(b)));
                    w.write_all(&buf)?;
                }
            }
        }
        Ok(())
    }
}

fn metadata_map(meta: &Metadata) -> HashMap<String, String> {
    let mut map = HashMap::new();
    map.insert("format".to_string(), FORMAT.to_string());
    map.insert("env_id".to_string(), meta.env_id.clone());
    map.insert(
        "observation_space".to_string(),
        meta.observation_space.to_json().to_string(),
    );
    map.insert(
        "action_space".to_string(),
        meta.action_space.to_json().to_string(),
    );
    map.insert(
        "provenance".to_string(),
        serde_json::to_string(&meta.provenance).unwrap_or_default(),
    );
    if let Some(r) = &meta.reference_returns {
        map.insert(
            "reference_returns".to_string(),
            serde_json::to_string(r).unwrap_or_default(),
        );
    }
    map
}

/// Writes the dataset to `path` atomically (temporary file, then rename).
pub fn save(dataset: &Dataset, path: &Path) -> anyhow::Result<()> {
    let n = dataset.len();
    let mut arrays = vec![Array {
        name: "episode_offsets",
        dtype: Dtype::I64,
        shape: vec![dataset.episode_offsets().len()],
        data: ArrayData::Usize(dataset.episode_offsets()),
    }];
    match dataset.actions() {
        Actions::Discrete { values } => arrays.push(Array {
            name: "actions",
            dtype: Dtype::I64,
            shape: vec![n],
            data: ArrayData::Usize(values),
        }),
        Actions::Continuous { dim, values } => arrays.push(Array {
            name: "actions",
            dtype: Dtype::F32,
            shape: vec![n, *dim],
            data: ArrayData::F32(values),
        }),
    }
    arrays.push(Array {
        name: "observations",
        dtype: Dtype::F32,
        shape: vec![n, dataset.obs_dim()],
        data: ArrayData::F32(dataset.observations()),
    });
    arrays.push(Array {
        name: "rewards",
        dtype: Dtype::F32,
        shape: vec![n],
        data: ArrayData::F32(dataset.rewards()),
    });
    arrays.push(Array {
        name: "terminated",
        dtype: Dtype::BOOL,
        shape: vec![n],
        data: ArrayData::Bool(dataset.terminated()),
    });
    arrays.push(Array {
        name: "truncated",
        dtype: Dtype::BOOL,
        shape: vec![n],
        data: ArrayData::Bool(dataset.truncated()),
    });
    // Widest dtypes first so every array stays aligned to its element size.
    arrays.sort_by(|a, b| b.dtype.cmp(&a.dtype).then(a.name.cmp(b.name)));
    let mut infos = Vec::with_capacity(arrays.len());
    let mut offset = 0;
    for a in &arrays {
        let len = a.data.byte_len();
        infos.push((
            a.name.to_string(),
            TensorInfo {
                dtype: a.dtype,
                shape: a.shape.clone(),
                data_offsets: (offset, offset + len),
            },
        ));
        offset += len;
    }
    let metadata = metadata_map(dataset.meta());
    // Validates the layout; the bytes come from `sorted_header` (reproducible).
    Header::new(Some(metadata.clone()), infos.clone())
        .map_err(|e| anyhow::anyhow!("cannot build the safetensors header: {e}"))?;
    let header = flowrl_agents::params::sorted_header(Some(&metadata), &infos)
        .map_err(anyhow::Error::msg)?;
    crate::atomic::write_atomic(path, |w| {
        w.write_all(&header)?;
        for a in &arrays {
            a.data.write(w)?;
        }
        Ok(())
    })
}

/// Reads and validates a dataset file. Every failure names the file and the problem.
pub fn load(path: &Path) -> Result<Dataset, DataError> {
    let bytes = std::fs::read(path).map_err(|e| Problem::Io(e).at(path))?;
    from_bytes(&bytes).map_err(|p| p.at(path))
}

/// Parses and validates a dataset from the bytes of a file.
pub fn from_bytes(bytes: &[u8]) -> Result<Dataset, Problem> {
    check_envelope(bytes)?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| Problem::NotFormat {
        format: "safetensors",
        detail: e.to_string(),
    })?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| Problem::NotFormat {
        format: "safetensors",
        detail: e.to_string(),
    })?;
    let empty = HashMap::new();
    let map = header.metadata().as_ref().unwrap_or(&empty);
    let meta = read_metadata(map)?;

    let rewards_view = tensor(&st, "rewards")?;
    let n = expect_shape(&rewards_view, "rewards", Dtype::F32, &[None])?[0];
    let rewards = f32s(rewards_view.data());

    let obs_view = tensor(&st, "observations")?;
    let obs_dim = match &meta.observation_space {
        Space::Box { low, .. } => Some(low.len()),
        Space::Discrete { .. } => None,
    };
    expect_shape(&obs_view, "observations", Dtype::F32, &[Some(n), obs_dim])?;
    let observations = f32s(obs_view.data());

    let act_view = tensor(&st, "actions")?;
    let actions = match &meta.action_space {
        Space::Box { low, .. } => {
            expect_shape(
                &act_view,
                "actions",
                Dtype::F32,
                &[Some(n), Some(low.len())],
            )?;
            Actions::Continuous {
                dim: low.len(),
                values: f32s(act_view.data()),
            }
        }
        Space::Discrete { .. } => {
            expect_shape(&act_view, "actions", Dtype::I64, &[Some(n)])?;
            Actions::Discrete {
                values: indices("actions", act_view.data())?,
            }
        }
    };
    let terminated = flags(&st, "terminated", n)?;
    let truncated = flags(&st, "truncated", n)?;
    let off_view = tensor(&st, "episode_offsets")?;
    expect_shape(&off_view, "episode_offsets", Dtype::I64, &[None])?;
    let episode_offsets = indices("episode_offsets", off_view.data())?;
    Dataset::new(DatasetParts {
        meta,
        observations,
        actions,
        rewards,
        terminated,
        truncated,
        episode_offsets,
    })
}

/// Rejects empty, foreign and truncated files with precise messages before parsing.
fn check_envelope(bytes: &[u8]) -> Result<(), Problem> {
    if bytes.is_empty() {
        return Err(Problem::EmptyFile);
    }
    let not_st = |detail: String| Problem::NotFormat {
        format: "safetensors",
        detail,
    };
    if bytes.len() < 8 {
        return Err(not_st(format!(
            "{} bytes, shorter than the 8-byte header length",
            bytes.len()
        )));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[..8]);
    let header_len = u64::from_le_bytes(len);
    let looks_like_json = bytes.get(8) == Some(&b'{');
    if !looks_like_json || !(2..=100_000_000).contains(&header_len) {
        return Err(not_st(
            "it does not start with a JSON header (8-byte length, then `{`)".into(),
        ));
    }
    let data_start = 8 + header_len as usize;
    if bytes.len() < data_start {
        return Err(Problem::Truncated(format!(
            "the header declares {header_len} bytes but only {} follow",
            bytes.len() - 8
        )));
    }
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..data_start])
        .map_err(|e| not_st(format!("invalid JSON header: {e}")))?;
    let need = header
        .as_object()
        .ok_or_else(|| not_st("the header is not a JSON object".into()))?
        .values()
        .filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0) as usize;
    let have = bytes.len() - data_start;
    if have < need {
        return Err(Problem::Truncated(format!(
            "the header declares {need} bytes of array data but {have} are present"
        )));
    }
    if have > need {
        return Err(not_st(format!(
            "{} unexpected bytes after the declared {need} bytes of array data",
            have - need
        )));
    }
    Ok(())
}

fn meta_err(key: &str, detail: impl Into<String>) -> Problem {
    Problem::BadMetadata {
        key: key.into(),
        detail: detail.into(),
    }
}

fn read_metadata(map: &HashMap<String, String>) -> Result<Metadata, Problem> {
    let get = |key: &str| {
        map.get(key)
            .ok_or_else(|| meta_err(key, "missing from the safetensors `__metadata__`"))
    };
    let format = map.get("format").ok_or_else(|| {
        meta_err(
            "format",
            format!("missing: not a flowrl dataset (expected \"{FORMAT}\")"),
        )
    })?;
    if format != FORMAT {
        return Err(meta_err(
            "format",
            format!("unsupported version \"{format}\" (this flowrl reads \"{FORMAT}\")"),
        ));
    }
    let space = |key: &str| -> Result<Space, Problem> {
        let text = get(key)?;
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| meta_err(key, format!("invalid JSON: {e}")))?;
        Space::from_json(&value).map_err(|e| meta_err(key, e))
    };
    let provenance: Provenance = serde_json::from_str(get("provenance")?)
        .map_err(|e| meta_err("provenance", format!("invalid: {e}")))?;
    let reference_returns = match map.get("reference_returns") {
        None => None,
        Some(text) => Some(
            serde_json::from_str::<ReferenceReturns>(text)
                .map_err(|e| meta_err("reference_returns", format!("invalid: {e}")))?,
        ),
    };
    Ok(Metadata {
        env_id: get("env_id")?.clone(),
        observation_space: space("observation_space")?,
        action_space: space("action_space")?,
        provenance,
        reference_returns,
    })
}

fn tensor<'a>(
    st: &SafeTensors<'a>,
    name: &str,
) -> Result<safetensors::tensor::TensorView<'a>, Problem> {
    st.tensor(name)
        .map_err(|_| Problem::MissingArray(name.to_string()))
}

fn describe(dtype: Dtype, shape: &[usize]) -> String {
    format!("{dtype:?} {shape:?}")
}

/// Checks dtype and shape (`None` = any size) and returns the shape.
fn expect_shape(
    view: &safetensors::tensor::TensorView<'_>,
    name: &str,
    dtype: Dtype,
    shape: &[Option<usize>],
) -> Result<Vec<usize>, Problem> {
    let found = view.shape();
    let ok = view.dtype() == dtype
        && found.len() == shape.len()
        && found
            .iter()
            .zip(shape)
            .all(|(f, s)| s.is_none_or(|s| s == *f));
    if ok {
        return Ok(found.to_vec());
    }
    let expected: Vec<String> = shape
        .iter()
        .map(|s| s.map_or("_".to_string(), |s| s.to_string()))
        .collect();
    Err(Problem::BadArray {
        name: name.into(),
        expected: format!("{dtype:?} [{}]", expected.join(", ")),
        found: describe(view.dtype(), found),
    })
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn indices(name: &str, bytes: &[u8]) -> Result<Vec<usize>, Problem> {
    let mut out = Vec::with_capacity(bytes.len() / 8);
    for (i, c) in bytes.chunks_exact(8).enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        let v = i64::from_le_bytes(b);
        let v = usize::try_from(v).map_err(|_| Problem::BadArray {
            name: name.into(),
            expected: "non-negative integers".into(),
            found: format!("{v} at index {i}"),
        })?;
        out.push(v);
    }
    Ok(out)
}

fn flags(st: &SafeTensors<'_>, name: &str, n: usize) -> Result<Vec<bool>, Problem> {
    let view = tensor(st, name)?;
    expect_shape(&view, name, Dtype::BOOL, &[Some(n)])?;
    view.data()
        .iter()
        .enumerate()
        .map(|(i, &b)| match b {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(Problem::BadArray {
                name: name.into(),
                expected: "booleans (0 or 1)".into(),
                found: format!("{other} at index {i}"),
            }),
        })
        .collect()
}
