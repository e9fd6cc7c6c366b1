//! The names of [`crate::agent::AgentKind`] and [`crate::acting::ContextMode`] in
//! experiment configs, suite files and on the command line: their clap [`ValueEnum`]
//! names (kebab-case: `decision-flowformer`, `mlp-bc`, `window`, `episode`). serde reads
//! and writes them (a context mode always, an agent kind through [`by_name`]); an unknown
//! name is rejected with every accepted one.

use std::fmt;
use std::str::FromStr;

use clap::ValueEnum;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::acting::ContextMode;
use crate::spec::AgentKind;

/// A fieldless enum written by its [`ValueEnum`] name.
pub trait Named: ValueEnum {
    /// What a value is, in errors (e.g. "an agent kind").
    const WHAT: &'static str;

    /// The name of `self`, e.g. `mlp-bc`.
    fn name(&self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }

    /// Every name, in declaration order.
    fn names() -> Vec<String> {
        Self::value_variants().iter().map(Self::name).collect()
    }

    /// The value named `s`; the error lists every name, e.g. "expected an agent kind
    /// `decision-flowformer` | `decision-transformer` | `mlp-bc`, found `gpt`".
    fn parse_name(s: &str) -> Result<Self, String> {
        Self::value_variants()
            .iter()
            .find(|v| v.name() == s)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "expected {} `{}`, found `{s}`",
                    Self::WHAT,
                    Self::names().join("` | `")
                )
            })
    }
}

impl Named for AgentKind {
    const WHAT: &'static str = "an agent kind";
}

impl Named for ContextMode {
    const WHAT: &'static str = "a context mode";
}

impl FromStr for AgentKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse_name(s)
    }
}

impl FromStr for ContextMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse_name(s)
    }
}

impl fmt::Display for AgentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl fmt::Display for ContextMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A context mode is read and written by its name.
impl Serialize for ContextMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        by_name::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for ContextMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        by_name::deserialize(d)
    }
}

/// serde of a [`Named`] value as its name (`#[serde(with = "by_name")]`, for an
/// agent kind, whose own serde is the snake_case of checkpoints).
pub mod by_name {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    use super::Named;

    /// Writes the name.
    pub fn serialize<T: Named, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.name())
    }

    /// Reads a name; any other string is an error listing the names.
    pub fn deserialize<'de, T: Named, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        T::parse_name(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}
