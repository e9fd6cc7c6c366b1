//! Errors of config loading: each names the file, the full dotted key and what was
//! expected against what was found.

use std::fmt;
use std::path::PathBuf;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The operating-system error (shown in the message, so not a `source`: an
        /// error chain would print it twice).
        error: std::io::Error,
    },
    /// The text is not valid TOML.
    #[error("{origin}:{line}:{column}: invalid TOML: {message}")]
    Syntax {
        /// The file (or other source) of the text.
        origin: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the parser expected and found.
        message: String,
    },
    /// A `--set` argument is malformed or cannot be applied.
    #[error("--set {arg}: {message}")]
    Override {
        /// The argument as given.
        arg: String,
        /// What is wrong with it.
        message: String,
    },
    /// A key is unknown or its value has the wrong type.
    #[error("{origin}: `{key}`{}: {message}", Location(location))]
    Key {
        /// The file (or other source) of the text.
        origin: String,
        /// The full dotted key, e.g. `agent.width`.
        key: String,
        /// Where the key's value came from.
        location: KeySource,
        /// What was expected and what was found.
        message: String,
    },
    /// Values are out of range or inconsistent.
    #[error("{origin}: invalid values:{}", Listed(problems))]
    Invalid {
        /// The file (or other source) of the config.
        origin: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// The config cannot be written as TOML.
    #[error("cannot write the config as TOML: {0}")]
    Serialize(String),
}

/// Where the value of a rejected key was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// In the file, at this 1-based line.
    Line(usize),
    /// By this `--set` argument.
    Override(String),
    /// Not known (e.g. text without the key's position).
    Unknown,
}

struct Location<'a>(&'a KeySource);

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            KeySource::Line(line) => write!(f, " (line {line})"),
            KeySource::Override(arg) => write!(f, " (from --set {arg})"),
            KeySource::Unknown => Ok(()),
        }
    }
}

/// One out-of-range or inconsistent value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The full dotted key, e.g. `agent.dropout`.
    pub key: String,
    /// Where the value was written.
    pub location: KeySource,
    /// What was expected and what was found.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            location: KeySource::Unknown,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}`{}: {}",
            self.key,
            Location(&self.location),
            self.message
        )
    }
}

struct Listed<'a>(&'a [Problem]);

impl fmt::Display for Listed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in self.0 {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}
