//! Safetensors encoding and strict decoding of named flat tensors (bytes only: the
//! agents crate does no file I/O).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorInfo, TensorView};

use super::{from_f64, to_f64, ParamError};

/// The safetensors `__metadata__` string map.
pub type Metadata = HashMap<String, String>;

fn st_dtype<E>() -> Result<StDtype, ParamError> {
    match std::mem::size_of::<E>() {
        4 => Ok(StDtype::F32),
        8 => Ok(StDtype::F64),
        bytes => Err(ParamError::UnsupportedElement { bytes }),
    }
}

fn to_bytes<E: num_traits::Float>(values: &[E], dtype: StDtype) -> Vec<u8> {
    if dtype == StDtype::F32 {
        values
            .iter()
            .flat_map(|&x| (to_f64(x) as f32).to_le_bytes())
            .collect()
    } else {
        values
            .iter()
            .flat_map(|&x| to_f64(x).to_le_bytes())
            .collect()
    }
}

fn from_bytes<E: num_traits::Float>(bytes: &[u8], dtype: StDtype) -> Vec<E> {
    if dtype == StDtype::F32 {
        bytes
            .chunks_exact(4)
            .map(|c| from_f64(f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64))
            .collect()
    } else {
        bytes
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                from_f64(f64::from_le_bytes(b))
            })
            .collect()
    }
}

/// Encodes `(name, shape, flat values)` entries with a metadata map.
pub(crate) fn encode<E: num_traits::Float>(
    entries: &[(&str, &[usize], Vec<E>)],
    metadata: &Metadata,
) -> Result<Vec<u8>, ParamError> {
    let dtype = st_dtype::<E>()?;
    let bytes: Vec<Vec<u8>> = entries.iter().map(|(_, _, v)| to_bytes(v, dtype)).collect();
    let views = entries
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            TensorView::new(dtype, shape.to_vec(), b)
                .map(|view| (name.to_string(), view))
                .map_err(|e| ParamError::Format(format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = (!metadata.is_empty()).then(|| metadata.clone());
    let bytes = safetensors::tensor::serialize(views, metadata)
        .map_err(|e| ParamError::Format(e.to_string()))?;
    with_sorted_header(&bytes).map_err(ParamError::Format)
}

/// The safetensors header (8-byte length, then JSON padded with spaces to a multiple
/// of 8) of `metadata` and `tensors`, byte-reproducible: `__metadata__` first with
/// its keys sorted, then the tensors in the given order. (safetensors 0.8 writes its
/// `HashMap` metadata in hash order, so the same content gave different bytes.)
pub fn sorted_header(
    metadata: Option<&HashMap<String, String>>,
    tensors: &[(String, TensorInfo)],
) -> Result<Vec<u8>, String> {
    let json = |e: serde_json::Error| format!("cannot serialise the safetensors header: {e}");
    let mut out = String::from("{");
    if let Some(map) = metadata {
        let sorted: BTreeMap<&String, &String> = map.iter().collect();
        out += "\"__metadata__\":";
        out += &serde_json::to_string(&sorted).map_err(json)?;
    }
    for (i, (name, info)) in tensors.iter().enumerate() {
        if i > 0 || metadata.is_some() {
            out.push(',');
        }
        out += &serde_json::to_string(name).map_err(json)?;
        out.push(':');
        out += &serde_json::to_string(info).map_err(json)?;
    }
    out.push('}');
    let mut header = out.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header);
    Ok(bytes)
}

/// `bytes` (a whole safetensors file) with its header rewritten by [`sorted_header`].
fn with_sorted_header(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let (n, header) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let mut tensors: Vec<(String, TensorInfo)> = header
        .tensors()
        .into_iter()
        .map(|(name, info)| (name, info.clone()))
        .collect();
    tensors.sort_by(|(a, x), (b, y)| x.data_offsets.cmp(&y.data_offsets).then(a.cmp(b)));
    let mut out = sorted_header(header.metadata().as_ref(), &tensors)?;
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

/// Decodes exactly the `expected` `(name, shape)` tensors from safetensors bytes,
/// returning their flat values in the order of `expected` and the metadata map.
/// Fails, naming the tensor, on a missing name, a shape or dtype mismatch, a NaN or
/// infinite value, or extra names.
pub(crate) fn decode<E: num_traits::Float>(
    bytes: &[u8],
    expected: &[(&str, &[usize])],
) -> Result<(Vec<Vec<E>>, Metadata), ParamError> {
    let dtype = st_dtype::<E>()?;
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| ParamError::Format(e.to_string()))?;
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| ParamError::Format(e.to_string()))?;
    let mut values = Vec::with_capacity(expected.len());
    for &(name, shape) in expected {
        let view = tensors.tensor(name).map_err(|_| ParamError::Missing {
            name: name.to_string(),
            shape: shape.to_vec(),
        })?;
        if view.shape() != shape {
            return Err(ParamError::Shape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        if view.dtype() != dtype {
            return Err(ParamError::Dtype {
                name: name.to_string(),
                expected: format!("{dtype:?}"),
                found: format!("{:?}", view.dtype()),
            });
        }
        let v: Vec<E> = from_bytes(view.data(), dtype);
        if let Some(index) = v.iter().position(|x| !x.is_finite()) {
            return Err(ParamError::NonFinite {
                name: name.to_string(),
                index,
                value: to_f64(v[index]),
            });
        }
        values.push(v);
    }
    let known: BTreeSet<&str> = expected.iter().map(|(n, _)| *n).collect();
    let extra: Vec<String> = tensors
        .names()
        .into_iter()
        .filter(|n| !known.contains(n))
        .map(str::to_string)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !extra.is_empty() {
        return Err(ParamError::Unexpected { names: extra });
    }
    Ok((values, header.metadata().clone().unwrap_or_default()))
}
