//! Errors of suite configs: each names the file, the full key (with its line when
//! known) and what was expected against what was found.

use std::fmt;
use std::path::PathBuf;

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

/// The problems of an experiment config built by a suite, each naming its config key
/// (without the `--set` wording: the suite key is named instead).
pub fn experiment_problems(e: &ConfigError) -> String {
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
