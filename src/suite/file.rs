//! A suite file as written (format in `configs/suite/README.md`), read by serde:
//! unknown keys are rejected and every value is checked as it is read, so that an
//! error carries the span of the key or value at fault.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, SeqAccess, Unexpected, Visitor};
use serde::Deserialize;
use toml::Table;

use crate::config::TIERS;

/// The whole file.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct SuiteFile {
    pub suite: SuiteSection,
    pub dataset: Sampling,
    pub eval: Sampling,
    pub base: Table,
    pub env: Option<Vec<EnvSection>>,
    pub agent: Option<Vec<AgentSection>>,
}

/// `[suite]`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of keys")]
pub(super) struct SuiteSection {
    pub name: Option<Text>,
    pub output: Option<Text>,
    pub base_config: Option<Text>,
    pub seeds: Option<List<Int<0>>>,
    pub tiers: Option<List<Tier>>,
}

/// `[dataset]` or `[eval]`: episodes and seed.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of keys")]
pub(super) struct Sampling {
    pub episodes: Option<Int<1>>,
    pub seed: Option<Int<0>>,
}

/// One `[[env]]` section.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub(super) struct EnvSection {
    pub id: Option<Text>,
    pub targets: Option<List<Number>>,
    pub tiers: Option<List<Tier>>,
    pub dataset_episodes: Option<Int<1>>,
    pub set: Table,
    pub warm_start: Option<Text>,
}

/// One `[[agent]]` section.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub(super) struct AgentSection {
    pub name: Option<Text>,
    pub kind: Option<Text>,
    pub context: Option<Int<1>>,
    pub context_mode: Option<Text>,
    pub eval_context_mode: Option<Text>,
    pub envs: Option<List<Text>>,
    pub tiers: Option<List<Tier>>,
    pub set: Table,
}

/// One TOML integer, float or string.
enum Raw<'a> {
    Int(i64),
    Float(f64),
    Str(&'a str),
}

/// Reads a value from one TOML integer, float or string that `check` accepts; any
/// other value, or one `check` rejects, is an error saying that `expected` was expected.
fn scalar<'de, D: Deserializer<'de>, T>(
    d: D,
    expected: &dyn fmt::Display,
    check: fn(Raw<'_>) -> Option<T>,
) -> Result<T, D::Error> {
    struct Scalar<'e, T> {
        expected: &'e dyn fmt::Display,
        check: fn(Raw<'_>) -> Option<T>,
    }

    impl<T> Visitor<'_> for Scalar<'_, T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.expected.fmt(f)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            (self.check)(Raw::Int(v)).ok_or_else(|| E::invalid_value(Unexpected::Signed(v), &self))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            (self.check)(Raw::Float(v)).ok_or_else(|| E::invalid_value(Unexpected::Float(v), &self))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.check)(Raw::Str(v)).ok_or_else(|| E::invalid_value(Unexpected::Str(v), &self))
        }
    }

    d.deserialize_any(Scalar { expected, check })
}

/// An element of a [`List`].
pub(super) trait Item: Sized {
    /// The elements in words, e.g. "integers >= 0".
    const PLURAL: &'static str;

    /// Why `self` may not follow `earlier` (it repeats one), if it may not.
    fn repeats(&self, _earlier: &[Self]) -> Option<String> {
        None
    }
}

/// An integer >= `MIN` (`MIN` >= 0).
pub(super) struct Int<const MIN: i64>(pub u64);

impl<'de, const MIN: i64> Deserialize<'de> for Int<MIN> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let check = |v: Raw<'_>| match v {
            Raw::Int(i) if i >= MIN => u64::try_from(i).ok().map(Self),
            _ => None,
        };
        scalar(d, &format_args!("an integer >= {MIN}"), check)
    }
}

impl Item for Int<0> {
    const PLURAL: &'static str = "integers >= 0";

    fn repeats(&self, earlier: &[Self]) -> Option<String> {
        let seen = earlier.iter().any(|e| e.0 == self.0);
        seen.then(|| format!("{} is listed twice", self.0))
    }
}

/// A string that is not blank.
pub(super) struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let check = |v: Raw<'_>| match v {
            Raw::Str(s) if !s.trim().is_empty() => Some(Self(s.to_string())),
            _ => None,
        };
        scalar(d, &"a non-empty string", check)
    }
}

impl Item for Text {
    const PLURAL: &'static str = "non-empty strings";

    fn repeats(&self, earlier: &[Self]) -> Option<String> {
        let seen = earlier.iter().any(|e| e.0 == self.0);
        seen.then(|| format!("`{}` is listed twice", self.0))
    }
}

/// A finite number (an integer is taken as one).
pub(super) struct Number(pub f64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let check = |v: Raw<'_>| match v {
            Raw::Int(i) => Some(Self(i as f64)),
            Raw::Float(x) if x.is_finite() => Some(Self(x)),
            _ => None,
        };
        scalar(d, &"a finite number", check)
    }
}

impl Item for Number {
    const PLURAL: &'static str = "numbers";
}

/// A dataset tier name, one of [`TIERS`].
pub(super) struct Tier(pub String);

impl<'de> Deserialize<'de> for Tier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let check = |v: Raw<'_>| match v {
            Raw::Str(s) if TIERS.contains(&s) => Some(Self(s.to_string())),
            _ => None,
        };
        scalar(d, &format_args!("one of {}", TIERS.join(", ")), check)
    }
}

impl Item for Tier {
    const PLURAL: &'static str = "names";

    fn repeats(&self, earlier: &[Self]) -> Option<String> {
        let seen = earlier.iter().any(|e| e.0 == self.0);
        seen.then(|| format!("`{}` is listed twice", self.0))
    }
}

/// A non-empty array of [`Item`]s, none repeating an earlier one.
pub(super) struct List<T>(pub Vec<T>);

struct ListVisitor<T>(PhantomData<T>);

impl<'de, T: Item + Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
    type Value = List<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a non-empty array of {}", T::PLURAL)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<T>()? {
            if let Some(why) = item.repeats(&items) {
                return Err(de::Error::custom(why));
            }
            items.push(item);
        }
        if items.is_empty() {
            return Err(de::Error::invalid_value(
                Unexpected::Other("an empty array"),
                &self,
            ));
        }
        Ok(List(items))
    }
}

impl<'de, T: Item + Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(ListVisitor(PhantomData))
    }
}
