//! Observation and action spaces as stored in dataset metadata (JSON), and the relaxed
//! JSON reader for files written by Python's `json` module (which emits `Infinity`/`NaN`).

use flowrl_agents::agent::MAX_FEATURES;
use serde_json::{json, Value};

/// A flat space: a box of `low.len()` continuous dimensions, or `n` discrete choices.
#[derive(Clone, Debug, PartialEq)]
pub enum Space {
    /// Continuous vectors; infinite bounds mean "unbounded".
    Box {
        /// Lower bound per dimension.
        low: Vec<f32>,
        /// Upper bound per dimension.
        high: Vec<f32>,
    },
    /// Indices `0..n`.
    Discrete {
        /// Number of choices.
        n: usize,
    },
}

impl Space {
    /// An unbounded box of `dim` dimensions (used when a source records no space).
    pub fn unbounded(dim: usize) -> Self {
        Space::Box {
            low: vec![f32::NEG_INFINITY; dim],
            high: vec![f32::INFINITY; dim],
        }
    }

    /// The JSON form stored in metadata: `{"type":"Box","shape":[d],"low":[..],"high":[..]}`
    /// with `null` for an infinite bound, or `{"type":"Discrete","n":n}`.
    pub fn to_json(&self) -> Value {
        match self {
            Space::Box { low, high } => {
                let bound = |v: &f32| {
                    if v.is_finite() {
                        json!(v)
                    } else {
                        Value::Null
                    }
                };
                json!({
                    "type": "Box",
                    "shape": [low.len()],
                    "low": low.iter().map(bound).collect::<Vec<_>>(),
                    "high": high.iter().map(bound).collect::<Vec<_>>(),
                })
            }
            Space::Discrete { n } => json!({ "type": "Discrete", "n": n }),
        }
    }

    /// Reads a space from its JSON form: flowrl's own, or Gymnasium/Minari's serialised
    /// `Box` (any shape, flattened) and `Discrete` (start 0). Bounds may be numbers, `null`
    /// (unbounded on that side) or the strings "inf"/"-inf".
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("expected an object with a \"type\" field, found {value}"))?;
        match kind {
            "Box" => {
                let low = bounds(value, "low", f32::NEG_INFINITY)?;
                let high = bounds(value, "high", f32::INFINITY)?;
                if low.len() != high.len() {
                    return Err(format!(
                        "Box bounds differ in length: low has {}, high has {}",
                        low.len(),
                        high.len()
                    ));
                }
                if let Some(shape) = value.get("shape").and_then(Value::as_array) {
                    let size = shape
                        .iter()
                        .filter_map(Value::as_u64)
                        .try_fold(1u64, u64::checked_mul);
                    if size != Some(low.len() as u64) {
                        let size = size.map_or("more than 2^64".into(), |s| s.to_string());
                        return Err(format!(
                            "Box shape {} holds {size} values but the bounds hold {}",
                            Value::Array(shape.clone()),
                            low.len()
                        ));
                    }
                }
                let space = Space::Box { low, high };
                space.check()?;
                Ok(space)
            }
            "Discrete" => {
                let n = value
                    .get("n")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| "Discrete space without a positive integer \"n\"".to_string())?;
                let start = value.get("start").and_then(Value::as_i64).unwrap_or(0);
                if start != 0 {
                    return Err(format!(
                        "Discrete space with start {start} is not supported (expected 0)"
                    ));
                }
                let space = Space::Discrete { n: n as usize };
                space.check()?;
                Ok(space)
            }
            other => Err(format!(
                "unsupported space type \"{other}\" (supported: Box, Discrete)"
            )),
        }
    }

    /// Checks the space itself: at least one dimension or choice, at most
    /// [`MAX_FEATURES`] choices, `low <= high`, no NaN.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Space::Box { low, high } => {
                if low.is_empty() {
                    return Err("Box space with no dimensions".into());
                }
                for (i, (l, h)) in low.iter().zip(high).enumerate() {
                    if l.is_nan() || h.is_nan() || l > h {
                        return Err(format!(
                            "Box bound {i} is invalid: low {l}, high {h} (need low <= high)"
                        ));
                    }
                }
                Ok(())
            }
            Space::Discrete { n } if *n == 0 => Err("Discrete space with n = 0".into()),
            Space::Discrete { n } if *n > MAX_FEATURES => Err(format!(
                "Discrete space with n = {n}, more than the {MAX_FEATURES} actions an agent takes"
            )),
            Space::Discrete { .. } => Ok(()),
        }
    }

    /// A short human description: `Box(17)` or `Discrete(2)`.
    pub fn describe(&self) -> String {
        match self {
            Space::Box { low, .. } => format!("Box({})", low.len()),
            Space::Discrete { n } => format!("Discrete({n})"),
        }
    }
}

fn bounds(value: &Value, key: &str, unbounded: f32) -> Result<Vec<f32>, String> {
    let items = value
        .get(key)
        .ok_or_else(|| format!("Box space without \"{key}\""))?;
    let mut out = Vec::new();
    flatten_bounds(items, key, unbounded, &mut out)?;
    Ok(out)
}

fn flatten_bounds(
    item: &Value,
    key: &str,
    unbounded: f32,
    out: &mut Vec<f32>,
) -> Result<(), String> {
    match item {
        Value::Array(items) => {
            for v in items {
                flatten_bounds(v, key, unbounded, out)?;
            }
            Ok(())
        }
        Value::Null => {
            out.push(unbounded);
            Ok(())
        }
        Value::Number(n) => {
            out.push(n.as_f64().unwrap_or(f64::NAN) as f32);
            Ok(())
        }
        Value::String(s) => match s.as_str() {
            "inf" | "Infinity" => {
                out.push(f32::INFINITY);
                Ok(())
            }
            "-inf" | "-Infinity" => {
                out.push(f32::NEG_INFINITY);
                Ok(())
            }
            other => Err(format!(
                "Box \"{key}\" holds \"{other}\", expected a number"
            )),
        },
        other => Err(format!("Box \"{key}\" holds {other}, expected a number")),
    }
}

/// Parses JSON as written by Python's `json` module, which writes the non-standard
/// tokens `Infinity`, `-Infinity` and `NaN`: outside string literals they are turned into
/// the strings "inf", "-inf" and "nan" before parsing.
pub fn parse_relaxed_json(text: &str) -> Result<Value, serde_json::Error> {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let replaced = [
            ("-Infinity", "\"-inf\""),
            ("Infinity", "\"inf\""),
            ("NaN", "\"nan\""),
        ]
        .iter()
        .find(|(token, _)| rest.starts_with(token));
        if let Some((token, with)) = replaced {
            out.push_str(with);
            rest = &rest[token.len()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    serde_json::from_str(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_round_trips_with_infinite_bounds() {
        let space = Space::Box {
            low: vec![f32::NEG_INFINITY, -1.0],
            high: vec![f32::INFINITY, 2.5],
        };
        let back = Space::from_json(&space.to_json()).unwrap();
        assert_eq!(back, space);
        assert_eq!(
            Space::from_json(&Space::Discrete { n: 3 }.to_json()).unwrap(),
            Space::Discrete { n: 3 }
        );
    }

    #[test]
    fn python_json_tokens_are_read_outside_strings_only() {
        let v = parse_relaxed_json(
            r#"{"type": "Box", "shape": [2], "low": [-Infinity, NaN], "high": [Infinity, 1.0], "s": "NaN \"Infinity\""}"#,
        )
        .unwrap();
        assert_eq!(v["low"][0], "-inf");
        assert_eq!(v["low"][1], "nan");
        assert_eq!(v["high"][0], "inf");
        assert_eq!(v["s"], "NaN \"Infinity\"");
        let err = Space::from_json(&v).unwrap_err();
        assert!(err.contains("\"nan\""), "{err}");
    }

    #[test]
    fn inconsistent_spaces_are_rejected() {
        let v = json!({"type": "Box", "shape": [3], "low": [0, 0], "high": [1, 1]});
        assert!(Space::from_json(&v).unwrap_err().contains("shape"));
        let v = json!({"type": "Box", "low": [2], "high": [1]});
        assert!(Space::from_json(&v).unwrap_err().contains("low <= high"));
        let v = json!({"type": "Dict"});
        assert!(Space::from_json(&v).unwrap_err().contains("Dict"));
    }
}
