//! Errors of suite configs: each names the file, the full key (with its line when
//! known) and what was expected against what was found.

use std::fmt;
use std::path::PathBuf;

use crate::config::locate::{friendly, unknown_field, Document};
use crate::config::ConfigError;

/// Why a suite config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// The file cannot be read.
    #[error("cannot read suite config {}: {error}", path.display())]
    Read {
        /// The suite file (or the base experiment config it names).
        path: PathBuf,
        /// The operating-system error (shown in the message, so not a `source`: an
        /// error chain would print it twice).
        error: std::io::Error,
    },
    /// The text is not valid TOML.
    #[error("{origin}:{line}:{column}: invalid TOML: {message}")]
    Syntax {
        /// The suite file.
        origin: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the parser expected and found.
        message: String,
    },
    /// A key is unknown, missing, or has a wrong or out-of-range value.
    #[error("{origin}: `{key}`{}: {message}", Line(*line))]
    Key {
        /// The suite file.
        origin: String,
        /// The full key, e.g. `env[1].targets`.
        key: String,
        /// 1-based line of the key, when known.
        line: Option<usize>,
        /// What was expected and what was found.
        message: String,
    },
    /// The experiment config that a part of the suite gives is invalid.
    #[error("{origin}: `{key}`{}: invalid experiment config: {message}", Line(*line))]
    Experiment {
        /// The suite file.
        origin: String,
        /// The suite key whose settings make the config invalid, e.g. `agent[0]`.
        key: String,
        /// 1-based line of that key, when known.
        line: Option<usize>,
        /// The experiment config's problems, each naming its config key.
        message: String,
    },
}

/// The keys of one suite file, to name the key at fault and its line in errors.
pub(super) struct Keys<'a> {
    /// The parsed file.
    pub doc: &'a Document<'a>,
    /// The file name.
    pub origin: &'a str,
}

impl Keys<'_> {
    /// The error of the value at `key` (e.g. `env[1].targets`).
    pub fn error(&self, key: &str, message: impl Into<String>) -> SuiteError {
        SuiteError::Key {
            origin: self.origin.to_string(),
            key: key.to_string(),
            line: self.doc.line_of(key),
            message: message.into(),
        }
    }

    /// `value`, which is required at `key`: `what` says what it is.
    pub fn required<T>(
        &self,
        key: &str,
        value: Option<T>,
        what: impl fmt::Display,
    ) -> Result<T, SuiteError> {
        value.ok_or_else(|| self.error(key, format!("required: {what}")))
    }

    /// serde's error as the key at fault, its line, and what was expected against
    /// what was found (an unknown key: the valid keys of its table).
    pub fn serde_error(&self, e: &toml::de::Error) -> SuiteError {
        let at = e.span().map(|s| s.start);
        let mut key = at.map(|at| self.doc.key_at(at)).unwrap_or_default();
        let message = match unknown_field(e.message()) {
            Some((name, valid)) => {
                // The span of an unknown field is the key's own.
                if key.is_empty() {
                    key = name;
                }
                let section = match key.rsplit_once('.') {
                    Some((table, _)) => format!("in `{table}`"),
                    None => "at the top level".to_string(),
                };
                format!("unknown key; valid keys {section}: {}", valid.join(", "))
            }
            None => expected_found(&friendly(e.message())),
        };
        SuiteError::Key {
            origin: self.origin.to_string(),
            key: if key.is_empty() {
                "(top level)".into()
            } else {
                key
            },
            line: at.map(|at| self.doc.line(at)),
            message,
        }
    }

    /// The experiment config that the settings of `blamed` (a suite key such as
    /// `agent[0]`, written at `key`) give is invalid.
    pub fn experiment(&self, blamed: String, key: &str, e: &ConfigError) -> SuiteError {
        SuiteError::Experiment {
            origin: self.origin.to_string(),
            key: blamed,
            line: self.doc.line_of(key),
            message: experiment_problems(e),
        }
    }
}

/// serde's "invalid type: integer `0`, expected X" (or "invalid value: ...") as
/// "expected X, found the integer 0".
fn expected_found(message: &str) -> String {
    const WORDS: [(&str, &str); 6] = [
        ("integer `", "the integer "),
        ("floating point `", "the number "),
        ("boolean `", "the boolean "),
        ("string ", "the string "),
        ("sequence", "an array"),
        ("map", "a table"),
    ];
    let Some((found, expected)) = ["invalid type: ", "invalid value: "]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|m| m.split_once(", expected "))
    else {
        return message.to_string();
    };
    let found = WORDS
        .iter()
        .find_map(|(from, to)| {
            found
                .strip_prefix(from)
                .map(|rest| format!("{to}{}", rest.strip_suffix('`').unwrap_or(rest)))
        })
        .unwrap_or_else(|| found.to_string());
    format!("expected {expected}, found {found}")
}

/// The problems of an experiment config built by a suite, each naming its config key
/// (without the `--set` wording: the suite key is named instead).
fn experiment_problems(e: &ConfigError) -> String {
    match e {
        ConfigError::Invalid { problems, .. } => problems
            .iter()
            .map(|p| format!("`{}`: {}", p.key, p.message))
            .collect::<Vec<_>>()
            .join("; "),
        ConfigError::Key { key, message, .. } => format!("`{key}`: {message}"),
        other => other.to_string(),
    }
}

struct Line(Option<usize>);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, " (line {line})"),
            None => Ok(()),
        }
    }
}
