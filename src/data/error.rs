//! Errors of the data layer. Every error names the file (or source) it concerns and
//! what is wrong with it; [`Problem`] lets callers tell the failures apart.

use std::path::{Path, PathBuf};

/// A data-layer failure: the file it concerns and the problem found in it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct DataError {
    /// The file (or folder, or output target) the problem was found in.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: Problem,
}

/// What is wrong with a dataset or a dataset file.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The file cannot be opened or read.
    #[error("cannot read: {0}")]
    Io(std::io::Error),
    /// The file exists but holds no bytes.
    #[error("the file is empty (0 bytes)")]
    EmptyFile,
    /// The file is not in the expected format at all.
    #[error("not a {format} file: {detail}")]
    NotFormat {
        /// The expected format ("safetensors", "HDF5").
        format: &'static str,
        /// Why the file was rejected.
        detail: String,
    },
    /// The file starts well but ends early.
    #[error("the file is truncated: {0}")]
    Truncated(String),
    /// A required array is absent.
    #[error("missing required array `{0}`")]
    MissingArray(String),
    /// An array has the wrong type, shape or length.
    #[error("array `{name}`: expected {expected}, found {found}")]
    BadArray {
        /// The array's name in the file.
        name: String,
        /// What was expected (type, shape, length).
        expected: String,
        /// What the file holds.
        found: String,
    },
    /// An array holds NaN or an infinity.
    #[error("array `{name}` holds a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        /// The array's name.
        name: String,
        /// Flat index of the first non-finite value.
        index: usize,
        /// The value found.
        value: f64,
    },
    /// A finite number too large for the native format's f32 arrays.
    #[error("array `{name}` holds {value:e} at flat index {index}, outside the f32 range of the native format (magnitude at most {max:e})", max = f32::MAX)]
    OutOfRange {
        /// The array's name.
        name: String,
        /// Flat index of the first such value.
        index: usize,
        /// The value found.
        value: f64,
    },
    /// An array would need more memory than the machine has available.
    #[error("array `{name}` of shape {shape:?} needs about {need} to read, but {available}")]
    TooLarge {
        /// The array's name.
        name: String,
        /// Its shape in the file.
        shape: Vec<u64>,
        /// The estimate, human-readable.
        need: String,
        /// What is available and where that figure comes from.
        available: String,
    },
    /// There is nothing to learn from: no steps or no episodes.
    #[error("the dataset is empty: {0}")]
    EmptyDataset(String),
    /// A metadata entry is missing or invalid.
    #[error("metadata `{key}`: {detail}")]
    BadMetadata {
        /// The metadata key.
        key: String,
        /// What is wrong with it.
        detail: String,
    },
    /// An episode's structure is inconsistent (boundaries, end flags).
    #[error("episode {episode}: {detail}")]
    BadEpisode {
        /// Index of the episode.
        episode: usize,
        /// What is wrong with it.
        detail: String,
    },
    /// The HDF5 reader failed on an object of the file.
    #[error("HDF5 object `{object}`: {detail}")]
    Hdf5 {
        /// The dataset or group being read.
        object: String,
        /// The reader's message.
        detail: String,
    },
}

impl Problem {
    /// Attaches the file this problem was found in.
    pub fn at(self, path: impl AsRef<Path>) -> DataError {
        DataError {
            path: path.as_ref().to_path_buf(),
            problem: self,
        }
    }
}

/// Checks that every value of the array `name` is finite.
pub(crate) fn check_finite(name: &str, values: &[f32]) -> Result<(), Problem> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(Problem::NonFinite {
            name: name.to_string(),
            index,
            value: f64::from(values[index]),
        }),
    }
}
