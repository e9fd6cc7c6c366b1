//! Reading config text: TOML parsing, `--set` overrides and readable errors that name
//! the full dotted key and where its value was written.

use std::str::FromStr;

use toml::{Table, Value};

use super::locate::{friendly, unknown_field, Document, Syntax};
use super::{Config, ConfigError, KeySource};

/// One `--set key.path=value` override, applied to the TOML table before it is read
/// into a [`Config`]. The value is parsed as a TOML value (`3`, `1e-3`, `true`,
/// `[500.0, 250.0]`, `"text"`); anything that is not valid TOML is taken as a string,
/// so `--set agent.kind=mlp-bc` works unquoted. An empty value (`--set eval.env=`)
/// removes the key, so its default applies.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    arg: String,
    path: Vec<String>,
    value: Option<Value>,
}

impl Override {
    /// The dotted key, e.g. `train.lr`.
    pub fn key(&self) -> String {
        self.path.join(".")
    }

    /// The parsed value; `None` removes the key.
    pub fn value(&self) -> Option<&Value> {
        self.value.as_ref()
    }

    fn error(&self, message: String) -> ConfigError {
        ConfigError::Override {
            arg: self.arg.clone(),
            message,
        }
    }

    fn apply(&self, table: &mut Table) -> Result<(), ConfigError> {
        let Some((last, parents)) = self.path.split_last() else {
            return Err(self.error("expected a key before `=`".into()));
        };
        let mut current = table;
        for (i, segment) in parents.iter().enumerate() {
            let entry = current
                .entry(segment.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            current = match entry {
                Value::Table(t) => t,
                other => {
                    return Err(self.error(format!(
                        "`{}` holds a value ({}), not a section of keys",
                        self.path[..=i].join("."),
                        other.type_str()
                    )))
                }
            };
        }
        match &self.value {
            Some(v) => {
                current.insert(last.clone(), v.clone());
            }
            None => {
                current.remove(last);
            }
        }
        Ok(())
    }

    /// Whether this override wrote `key` (or a table holding it).
    fn covers(&self, key: &[String]) -> bool {
        self.path.starts_with(key) || key.starts_with(&self.path)
    }
}

impl FromStr for Override {
    type Err = ConfigError;

    fn from_str(arg: &str) -> Result<Self, ConfigError> {
        let bad = |message: String| ConfigError::Override {
            arg: arg.to_string(),
            message,
        };
        let (key, raw) = arg
            .split_once('=')
            .ok_or_else(|| bad("expected key=value (e.g. train.lr=3e-4), found no `=`".into()))?;
        let key = key.trim();
        let path: Vec<String> = key.split('.').map(str::to_string).collect();
        let well_formed = path.iter().all(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        if !well_formed {
            return Err(bad(format!(
                "expected a dotted key such as agent.width, found `{key}`"
            )));
        }
        Ok(Override {
            arg: arg.to_string(),
            path,
            value: Some(raw.trim()).filter(|r| !r.is_empty()).map(parse_value),
        })
    }
}

/// `raw` as a TOML value, or as a string if it is not one.
fn parse_value(raw: &str) -> Value {
    format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .filter(|t| t.len() == 1)
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

/// Parses `text`, applies `overrides`, deserialises and validates.
pub(super) fn parse(
    text: &str,
    origin: &str,
    overrides: &[Override],
) -> Result<Config, ConfigError> {
    let syntax = |e: Syntax| ConfigError::Syntax {
        origin: origin.to_string(),
        line: e.line,
        column: e.column,
        message: integer_hint(&e.message),
    };
    let doc = Document::parse(text).map_err(syntax)?;
    let mut table: Table = doc
        .deserialize()
        .map_err(|e| syntax(Syntax::new(text, &e)))?;
    for o in overrides {
        o.apply(&mut table)?;
    }
    let config: Config = Value::Table(table)
        .try_into()
        .map_err(|e| key_error(&e, &doc, origin, overrides))?;
    let mut problems = config.problems();
    if problems.is_empty() {
        return Ok(config);
    }
    for p in &mut problems {
        let base = p.key.split('[').next().unwrap_or(&p.key);
        let path: Vec<String> = base.split('.').map(str::to_string).collect();
        p.location = locate(&doc, &path, overrides);
    }
    Err(ConfigError::Invalid {
        origin: origin.to_string(),
        problems,
    })
}

/// A TOML integer too large for `i64` is a syntax error of the TOML reader: say how
/// to write a larger `u64` seed.
fn integer_hint(message: &str) -> String {
    if message.contains("too large") {
        format!(
            "{message}: TOML integers stop at {}; write a larger seed as a string of \
             digits, e.g. seed = \"{}\"",
            i64::MAX,
            u64::MAX
        )
    } else {
        message.to_string()
    }
}

/// Turns a deserialisation error into one naming the full dotted key.
fn key_error(
    e: &toml::de::Error,
    doc: &Document<'_>,
    origin: &str,
    overrides: &[Override],
) -> ConfigError {
    // Errors from a `toml::Value` carry no span; their display ends with
    // "in `dotted.key`" when the key is known.
    let shown = e.to_string();
    let mut path: Vec<String> = shown
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("in `"))
        .and_then(|l| l.strip_suffix('`'))
        .map(|k| k.split('.').map(str::to_string).collect())
        .unwrap_or_default();
    let message = match unknown_field(e.message()) {
        Some((key, valid)) => {
            let section = if path.is_empty() {
                "at the top level".to_string()
            } else {
                format!("in [{}]", path.join("."))
            };
            path.push(key);
            format!("unknown key; valid keys {section}: {}", valid.join(", "))
        }
        None => friendly(e.message()),
    };
    let key = if path.is_empty() {
        "(top level)".to_string()
    } else {
        path.join(".")
    };
    ConfigError::Key {
        origin: origin.to_string(),
        key,
        location: locate(doc, &path, overrides),
        message,
    }
}

/// Where the value of `path` was written: the last `--set` that covers it, else its
/// line in the file.
fn locate(doc: &Document<'_>, path: &[String], overrides: &[Override]) -> KeySource {
    if let Some(o) = overrides.iter().rev().find(|o| o.covers(path)) {
        return KeySource::Override(o.arg.clone());
    }
    doc.line_of(&path.join("."))
        .map_or(KeySource::Unknown, KeySource::Line)
}
