//! Seeds are `u64`, but TOML integers stop at `i64::MAX`: a seed above it is written
//! and read as a string of digits (`seed = "18446744073709551615"`); smaller seeds
//! stay integers.

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

/// Writes a seed as a TOML integer, or as a string of digits above `i64::MAX`.
pub(super) fn serialize<S: Serializer>(seed: &u64, s: S) -> Result<S::Ok, S::Error> {
    match i64::try_from(*seed) {
        Ok(small) => s.serialize_i64(small),
        Err(_) => s.serialize_str(&seed.to_string()),
    }
}

/// Reads a seed from a non-negative integer or a string of decimal digits.
pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(SeedVisitor)
}

/// The same for an optional seed (`dataset.seed`).
pub(super) mod option {
    use super::*;

    /// Writes `Some` as [`serialize`](super::serialize) does (`None` is skipped by the field).
    pub(in crate::config) fn serialize<S: Serializer>(
        seed: &Option<u64>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match seed {
            Some(seed) => super::serialize(seed, s),
            None => s.serialize_none(),
        }
    }

    /// Reads a present seed as [`deserialize`](super::deserialize) does.
    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<u64>, D::Error> {
        super::deserialize(d).map(Some)
    }
}

struct SeedVisitor;

impl Visitor<'_> for SeedVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "an integer in [0, {}] (above {}, a string of digits such as \"{}\")",
            u64::MAX,
            i64::MAX,
            u64::MAX
        )
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        v.trim()
            .parse()
            .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}
