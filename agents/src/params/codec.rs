//! Safetensors encoding and strict decoding of named flat tensors (bytes only: the
//! agents crate does no file I/O).

use std::collections::{BTreeSet, HashMap};

use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};

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
    safetensors::tensor::serialize(views, metadata).map_err(|e| ParamError::Format(e.to_string()))
}

/// Decodes exactly the `expected` `(name, shape)` tensors from safetensors bytes,
/// returning their flat values in the order of `expected` and the metadata map.
/// Fails, naming the tensor, on a missing name, a shape or dtype mismatch, or extra names.
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
        values.push(from_bytes(view.data(), dtype));
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
