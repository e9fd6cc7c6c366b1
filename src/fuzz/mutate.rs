//! Mutations of fuzz inputs: generic byte edits, and cheap structure-aware ones for
//! the formats flowrl reads (safetensors headers, HDF5 size fields, TOML and JSON
//! number tokens and lines).

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::seeds::{Array, Values};

/// Integers that tend to break size arithmetic: zero, one, sign and width limits,
/// and sizes that overflow when multiplied or allocated.
const INTEGERS: [u64; 14] = [
    0,
    1,
    2,
    0x7f,
    0xff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    1 << 34,
    1 << 40,
    1 << 62,
    i64::MAX as u64,
    u64::MAX,
];

/// Number tokens for text formats: limits, huge, negative and non-finite values.
const NUMBERS: [&str; 16] = [
    "0",
    "-1",
    "1",
    "2.5",
    "-0.0",
    "1e300",
    "-1e300",
    "1e30",
    "nan",
    "inf",
    "-inf",
    "4294967296",
    "1000000000000",
    "9223372036854775807",
    "18446744073709551615",
    "17179869184",
];

/// One generic byte-level edit: bit flip, byte set, insertion, deletion, truncation,
/// duplication, or an interesting integer written over 1, 2, 4 or 8 bytes.
pub fn bytes(rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
    if data.is_empty() {
        data.push(rng.gen());
        return;
    }
    let at = rng.gen_range(0..data.len());
    match rng.gen_range(0..7) {
        0 => data[at] ^= 1 << rng.gen_range(0..8),
        1 => {
            data[at] = *[0u8, 0xff, 0x7f, 0x80, b'{', b'"']
                .choose(rng)
                .unwrap_or(&0)
        }
        2 => {
            let n = rng.gen_range(1..=16);
            let junk: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            data.splice(at..at, junk);
        }
        3 => {
            let end = (at + rng.gen_range(1..=64)).min(data.len());
            data.drain(at..end);
        }
        4 => data.truncate(at),
        5 => {
            let end = (at + rng.gen_range(1..=64)).min(data.len());
            let chunk = data[at..end].to_vec();
            let to = rng.gen_range(0..=data.len());
            data.splice(to..to, chunk);
        }
        _ => {
            let width = *[1usize, 2, 4, 8].choose(rng).unwrap_or(&8);
            let value = INTEGERS.choose(rng).copied().unwrap_or(0).to_le_bytes();
            let end = (at + width).min(data.len());
            data[at..end].copy_from_slice(&value[..end - at]);
        }
    }
}

/// One safetensors edit: the 8-byte header length, or a header entry (a tensor's
/// dtype, a dimension of its shape, a data offset, or a number inside a metadata
/// value), re-serialised in place. Falls back to [`bytes`] when the header does not
/// parse.
pub fn safetensors(rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
    let parsed = data.get(..8).and_then(|len| {
        let len = u64::from_le_bytes(len.try_into().ok()?) as usize;
        let header = data.get(8..8usize.checked_add(len)?)?;
        let json: serde_json::Value = serde_json::from_slice(header).ok()?;
        Some((len, json.as_object()?.clone()))
    });
    let Some((len, mut header)) = parsed else {
        return bytes(rng, data);
    };
    if rng.gen_bool(0.2) {
        let new = match rng.gen_range(0..3) {
            0 => INTEGERS.choose(rng).copied().unwrap_or(0),
            1 => (len as u64).wrapping_add(rng.gen_range(1..64)),
            _ => (len as u64).saturating_sub(rng.gen_range(1..64)),
        };
        data[..8].copy_from_slice(&new.to_le_bytes());
        return;
    }
    let keys: Vec<String> = header.keys().cloned().collect();
    let Some(key) = keys.choose(rng).cloned() else {
        return bytes(rng, data);
    };
    let entry = header.get_mut(&key).and_then(|v| v.as_object_mut());
    let Some(entry) = entry else {
        return bytes(rng, data);
    };
    if key == "__metadata__" {
        let names: Vec<String> = entry.keys().cloned().collect();
        if let Some(name) = names.choose(rng) {
            if let Some(serde_json::Value::String(text)) = entry.get_mut(name) {
                let mut edited = text.clone().into_bytes();
                text_tokens(rng, &mut edited);
                *text = String::from_utf8_lossy(&edited).into_owned();
            }
        }
    } else {
        let big = INTEGERS.choose(rng).copied().unwrap_or(0);
        match rng.gen_range(0..4) {
            0 => {
                let dtype = ["F32", "F64", "I64", "BOOL", "U8", "F16", "I32", "X"]
                    .choose(rng)
                    .copied()
                    .unwrap_or("F32");
                entry.insert("dtype".into(), dtype.into());
            }
            1 | 2 => {
                if let Some(shape) = entry.get_mut("shape").and_then(|s| s.as_array_mut()) {
                    if shape.is_empty() || rng.gen_bool(0.2) {
                        shape.push(big.into());
                    } else {
                        let i = rng.gen_range(0..shape.len());
                        shape[i] = big.into();
                    }
                }
            }
            _ => {
                if let Some(offsets) = entry.get_mut("data_offsets").and_then(|s| s.as_array_mut())
                {
                    if !offsets.is_empty() {
                        let i = rng.gen_range(0..offsets.len());
                        offsets[i] = big.into();
                    }
                }
            }
        }
    }
    let Ok(mut json) = serde_json::to_vec(&header) else {
        return;
    };
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&data[8 + len..]);
    *data = out;
}

/// One HDF5 edit: a little-endian size field (an 8-byte integer from 1 to 4096, as
/// the seeds' dimensions are) replaced by an interesting integer, else a generic
/// edit. Effective on files without checksums (h5py's earliest format).
pub fn hdf5(rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
    let hits: Vec<usize> = data
        .windows(8)
        .enumerate()
        .filter(|(_, w)| {
            let v = u64::from_le_bytes((*w).try_into().unwrap_or([0; 8]));
            (1..=4096).contains(&v)
        })
        .map(|(i, _)| i)
        .collect();
    match hits.choose(rng) {
        Some(&at) if rng.gen_bool(0.5) => {
            let value = INTEGERS.choose(rng).copied().unwrap_or(0);
            data[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
        _ => bytes(rng, data),
    }
}

/// One edit of an HDF5 file's arrays (written afterwards, so checksums stay valid):
/// a dimension set to 0, a `[n, d]` array made `[n, 1, d]`, the last row dropped, a
/// value set to NaN, an infinity, a huge or negative number, the element type
/// changed, an array removed, or two arrays' names swapped. Shapes keep matching the
/// number of values.
pub fn arrays(rng: &mut ChaCha8Rng, arrays: &mut Vec<Array>) {
    if arrays.is_empty() {
        return;
    }
    let k = rng.gen_range(0..arrays.len());
    let a = &mut arrays[k];
    match rng.gen_range(0..7) {
        0 => {
            let d = rng.gen_range(0..a.shape.len().max(1));
            if let Some(dim) = a.shape.get_mut(d) {
                *dim = 0;
            }
            a.values = empty_like(&a.values);
        }
        1 => {
            if a.shape.len() == 2 {
                a.shape.insert(1, 1);
            } else {
                a.shape.push(1);
            }
        }
        2 => {
            if let Some(&rows) = a.shape.first().filter(|&&r| r > 0) {
                let width = a.values.len() / rows as usize;
                a.shape[0] = rows - 1;
                truncate(&mut a.values, (rows as usize - 1) * width);
            }
        }
        3 | 4 => {
            if !a.values.is_empty() {
                let i = rng.gen_range(0..a.values.len());
                match &mut a.values {
                    Values::F32(v) => {
                        v[i] = *[f32::NAN, f32::INFINITY, 1e30, -1e30, f32::MAX]
                            .choose(rng)
                            .unwrap_or(&0.0)
                    }
                    Values::F64(v) => {
                        v[i] = *[f64::NAN, f64::NEG_INFINITY, 1e300, 1e39, -1e39]
                            .choose(rng)
                            .unwrap_or(&0.0)
                    }
                    Values::I64(v) => {
                        v[i] = *[1_000_000_000_000, -1, i64::MAX, 1 << 20, i64::MIN]
                            .choose(rng)
                            .unwrap_or(&0)
                    }
                    Values::U8(v) => v[i] = *[2u8, 255].choose(rng).unwrap_or(&0),
                }
            }
        }
        5 => {
            a.values = match &a.values {
                Values::F32(v) => Values::F64(v.iter().map(|&x| f64::from(x)).collect()),
                Values::F64(v) => Values::I64(v.iter().map(|&x| x as i64).collect()),
                Values::I64(v) => Values::U8(v.iter().map(|&x| x as u8).collect()),
                Values::U8(v) => Values::F32(v.iter().map(|&x| f32::from(x)).collect()),
            }
        }
        _ => {
            if rng.gen_bool(0.5) {
                arrays.remove(k);
            } else {
                let j = rng.gen_range(0..arrays.len());
                let path = arrays[j].path.clone();
                arrays[j].path = std::mem::replace(&mut arrays[k].path, path);
            }
        }
    }
}

fn empty_like(values: &Values) -> Values {
    match values {
        Values::F32(_) => Values::F32(Vec::new()),
        Values::F64(_) => Values::F64(Vec::new()),
        Values::I64(_) => Values::I64(Vec::new()),
        Values::U8(_) => Values::U8(Vec::new()),
    }
}

fn truncate(values: &mut Values, len: usize) {
    match values {
        Values::F32(v) => v.truncate(len),
        Values::F64(v) => v.truncate(len),
        Values::I64(v) => v.truncate(len),
        Values::U8(v) => v.truncate(len),
    }
}

/// One text edit (TOML or JSON): a number token replaced by a huge, negative or
/// non-finite one, a line deleted or duplicated, two lines' values swapped, or a
/// generic byte edit.
pub fn text_tokens(rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
    let text = String::from_utf8_lossy(data).into_owned();
    let numbers = number_spans(&text);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    match rng.gen_range(0..5) {
        0 | 1 if !numbers.is_empty() => {
            let &(start, end) = numbers.choose(rng).unwrap_or(&(0, 0));
            let new = NUMBERS.choose(rng).copied().unwrap_or("0");
            *data = format!("{}{new}{}", &text[..start], &text[end..]).into_bytes();
        }
        2 if !lines.is_empty() => {
            let i = rng.gen_range(0..lines.len());
            if rng.gen_bool(0.5) {
                lines.remove(i);
            } else {
                let line = lines[i].clone();
                lines.insert(rng.gen_range(0..=lines.len()), line);
            }
            *data = lines.join("\n").into_bytes();
        }
        3 if lines.len() >= 2 => {
            let (i, j) = (rng.gen_range(0..lines.len()), rng.gen_range(0..lines.len()));
            let value = |l: &str| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            };
            if let (Some((ki, vi)), Some((kj, vj))) = (value(&lines[i]), value(&lines[j])) {
                lines[i] = format!("{ki}={vj}");
                lines[j] = format!("{kj}={vi}");
            } else {
                lines.swap(i, j);
            }
            *data = lines.join("\n").into_bytes();
        }
        _ => bytes(rng, data),
    }
}

/// Byte ranges of the number tokens of `text` (digits with sign, point, exponent).
fn number_spans(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts =
            b[i].is_ascii_digit() || (b[i] == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit));
        let inside_word = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if starts && !inside_word {
            let start = i;
            i += 1;
            while i < b.len()
                && (b[i].is_ascii_digit()
                    || matches!(b[i], b'.' | b'e' | b'E' | b'+' | b'-' | b'_'))
            {
                i += 1;
            }
            spans.push((start, i));
        } else {
            i += 1;
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn number_spans_find_numbers_not_words() {
        let text = "width = 128\nlr = -3e-4\nkind = \"v1\"";
        let found: Vec<&str> = number_spans(text)
            .iter()
            .map(|&(a, b)| &text[a..b])
            .collect();
        assert_eq!(found, ["128", "-3e-4"]);
    }

    #[test]
    fn safetensors_edits_keep_a_parsable_envelope() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let mut data = (header.len() as u64).to_le_bytes().to_vec();
        data.extend_from_slice(header);
        data.extend_from_slice(&[0; 8]);
        for _ in 0..50 {
            let mut copy = data.clone();
            safetensors(&mut rng, &mut copy);
            assert!(!copy.is_empty());
        }
    }
}
