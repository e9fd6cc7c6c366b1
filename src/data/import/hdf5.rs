//! Reading h5py-written arrays with the pure-Rust `hdf5-pure` reader, with errors that
//! name the file, the array and the problem.

use std::path::{Path, PathBuf};

use hdf5_pure::{DType, Dataset as H5Dataset, File};

use crate::data::error::{check_finite, DataError, Problem};

/// An open HDF5 file and its path (for messages).
pub(crate) struct H5File {
    file: File,
    path: PathBuf,
    /// The file's length in bytes.
    len: u64,
}

/// A numeric array read as f32 (finite, checked against the f32 range).
pub(crate) struct Array {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

fn h5_problem(object: &str, e: impl std::fmt::Display) -> Problem {
    Problem::Hdf5 {
        object: object.to_string(),
        detail: e.to_string(),
    }
}

impl H5File {
    /// Opens `path`, telling a missing, empty, foreign or truncated file apart.
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let meta = std::fs::metadata(path).map_err(|e| Problem::Io(e).at(path))?;
        if meta.is_dir() {
            return Err(Problem::NotFormat {
                format: "HDF5",
                detail: "it is a folder".into(),
            }
            .at(path));
        }
        if meta.len() == 0 {
            return Err(Problem::EmptyFile.at(path));
        }
        let is_h5 = hdf5_pure::is_hdf5(path).map_err(|e| Problem::Io(e).at(path))?;
        if !is_h5 {
            return Err(Problem::NotFormat {
                format: "HDF5",
                detail: "no HDF5 signature".into(),
            }
            .at(path));
        }
        let file = File::open_streaming(path).map_err(|e| {
            Problem::Hdf5 {
                object: "superblock".into(),
                detail: format!("cannot read it, the file is corrupt ({e})"),
            }
            .at(path)
        })?;
        let eof = file.superblock().eof_address;
        if meta.len() < eof {
            return Err(Problem::Truncated(format!(
                "the HDF5 superblock declares {eof} bytes but the file has {}",
                meta.len()
            ))
            .at(path));
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
            len: meta.len(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wraps a problem with this file's path.
    pub fn err(&self, problem: Problem) -> DataError {
        problem.at(&self.path)
    }

    /// Names of the datasets and of the groups directly under `group` ("" = root).
    pub fn members(&self, group: &str) -> Result<(Vec<String>, Vec<String>), DataError> {
        let g = if group.is_empty() {
            self.file.root()
        } else {
            self.file
                .group(group)
                .map_err(|e| self.err(h5_problem(group, e)))?
        };
        let datasets = g.datasets().map_err(|e| self.err(h5_problem(group, e)))?;
        let groups = g.groups().map_err(|e| self.err(h5_problem(group, e)))?;
        Ok((datasets, groups))
    }

    /// Whether the dataset `name` (a path such as `episode_0/rewards`) exists.
    pub fn has_dataset(&self, name: &str) -> Result<bool, DataError> {
        let (parent, leaf) = name.rsplit_once('/').unwrap_or(("", name));
        let group = if parent.is_empty() {
            self.file.root()
        } else {
            match self.file.group(parent) {
                Ok(g) => g,
                Err(_) => return Ok(false),
            }
        };
        let datasets = group
            .datasets()
            .map_err(|e| self.err(h5_problem(parent, e)))?;
        Ok(datasets.iter().any(|d| d == leaf))
    }

    /// Reads a scalar or one-element string dataset, if present and readable.
    pub fn read_text(&self, name: &str) -> Option<String> {
        if !self.has_dataset(name).ok()? {
            return None;
        }
        let ds = self.file.dataset(name).ok()?;
        ds.read_string().ok()?.into_iter().next()
    }

    /// Opens the required dataset `name`.
    pub fn require(&self, name: &str) -> Result<H5Dataset, DataError> {
        if !self.has_dataset(name)? {
            return Err(self.err(Problem::MissingArray(name.to_string())));
        }
        self.file
            .dataset(name)
            .map_err(|e| self.err(h5_problem(name, e)))
    }

    /// Shape of a dataset.
    pub fn shape(&self, ds: &H5Dataset, name: &str) -> Result<Vec<usize>, DataError> {
        let shape = ds.shape().map_err(|e| self.err(h5_problem(name, e)))?;
        Ok(shape.into_iter().map(|d| d as usize).collect())
    }

    /// Opens `name` and checks, before reading it, that its declared shape can be held
    /// (reading takes up to [`BYTES_PER_VALUE`] bytes per value: the file's values, the
    /// f32 copy and the dataset's own, compared with [`crate::limits::available`]) and
    /// that no chunk claims bytes beyond the end of the file.
    fn require_sized(&self, name: &str) -> Result<(H5Dataset, Vec<usize>), DataError> {
        let ds = self.require(name)?;
        let dims = ds.shape().map_err(|e| self.err(h5_problem(name, e)))?;
        let values = dims.iter().map(|&d| d as f64).product::<f64>();
        let too_large = |need: String, available: String| {
            self.err(Problem::TooLarge {
                name: name.into(),
                shape: dims.clone(),
                need,
                available,
            })
        };
        if dims.iter().any(|&d| usize::try_from(d).is_err()) || values > usize::MAX as f64 {
            return Err(too_large(
                format!("{values:e} values"),
                "that is more than can be addressed".into(),
            ));
        }
        let available = crate::limits::available();
        let need = values * BYTES_PER_VALUE;
        if need > available.bytes as f64 {
            return Err(too_large(crate::limits::human(need), available.to_string()));
        }
        // The reader sizes its buffers by the chunk records: a chunk that claims
        // bytes beyond the end of the file is corrupt, whatever the shape says.
        if let Some(chunk) = ds.chunks().ok().into_iter().flatten().find(|c| {
            c.address
                .checked_add(c.storage_size)
                .is_none_or(|end| end > self.len)
        }) {
            return Err(self.err(Problem::Hdf5 {
                object: name.into(),
                detail: format!(
                    "a chunk at byte {} declares {} bytes, beyond the end of the file ({} bytes)",
                    chunk.address, chunk.storage_size, self.len
                ),
            }));
        }
        Ok((ds, dims.into_iter().map(|d| d as usize).collect()))
    }

    fn dtype(&self, ds: &H5Dataset, name: &str) -> Result<DType, DataError> {
        ds.dtype().map_err(|e| self.err(h5_problem(name, e)))
    }

    /// Reads a numeric array (any float or integer type) as f32, checking that every
    /// value is finite and fits in f32 (the native format's precision).
    pub fn read_numbers(&self, name: &str) -> Result<Array, DataError> {
        let (ds, shape) = self.require_sized(name)?;
        let values = match self.dtype(&ds, name)? {
            DType::F32 => ds.read_f32().map_err(|e| self.err(h5_problem(name, e)))?,
            dtype if is_integer(&dtype) || dtype == DType::F64 => {
                let wide = ds.read_f64().map_err(|e| self.err(h5_problem(name, e)))?;
                if let Some(index) = wide.iter().position(|v| v.abs() > f64::from(f32::MAX)) {
                    let (name, value) = (name.to_string(), wide[index]);
                    return Err(self.err(if value.is_finite() {
                        Problem::OutOfRange { name, index, value }
                    } else {
                        Problem::NonFinite { name, index, value }
                    }));
                }
                wide.into_iter().map(|v| v as f32).collect()
            }
            other => {
                return Err(self.err(Problem::BadArray {
                    name: name.into(),
                    expected: "float or integer numbers".into(),
                    found: format!("{other}"),
                }))
            }
        };
        check_finite(name, &values).map_err(|p| self.err(p))?;
        self.check_count(name, &shape, values.len())?;
        Ok(Array { shape, values })
    }

    /// Reads action indices: integers (or integral floats), all non-negative.
    /// Returns the indices and the shape.
    pub fn read_indices(&self, name: &str) -> Result<(Vec<usize>, Vec<usize>), DataError> {
        let (ds, shape) = self.require_sized(name)?;
        let bad = |i: usize, v: String| {
            self.err(Problem::BadArray {
                name: name.into(),
                expected: "non-negative integer action indices".into(),
                found: format!("{v} at flat index {i}"),
            })
        };
        let values = if is_integer(&self.dtype(&ds, name)?) {
            let ints = ds.read_i64().map_err(|e| self.err(h5_problem(name, e)))?;
            let mut out = Vec::with_capacity(ints.len());
            for (i, v) in ints.into_iter().enumerate() {
                out.push(usize::try_from(v).map_err(|_| bad(i, v.to_string()))?);
            }
            out
        } else {
            let floats = self.read_numbers(name)?.values;
            let mut out = Vec::with_capacity(floats.len());
            for (i, v) in floats.into_iter().enumerate() {
                if v < 0.0 || v.fract() != 0.0 {
                    return Err(bad(i, v.to_string()));
                }
                out.push(v as usize);
            }
            out
        };
        self.check_count(name, &shape, values.len())?;
        Ok((values, shape))
    }

    /// Whether a dataset holds integers (so its actions are discrete indices).
    pub fn is_integer(&self, name: &str) -> Result<bool, DataError> {
        let ds = self.require(name)?;
        Ok(is_integer(&self.dtype(&ds, name)?))
    }

    /// Reads a flag array: h5py booleans (an HDF5 enum over u8), or numbers (non-zero
    /// is true). Returns the flags and the shape.
    pub fn read_flags(&self, name: &str) -> Result<(Vec<bool>, Vec<usize>), DataError> {
        let (ds, shape) = self.require_sized(name)?;
        let flags: Vec<bool> = match self.dtype(&ds, name)? {
            DType::Enum(_) | DType::U8 | DType::I8 => ds
                .read_u8()
                .map(|v| v.into_iter().map(|b| b != 0).collect())
                .map_err(|e| self.err(h5_problem(name, e)))?,
            DType::String | DType::VariableLengthString | DType::Compound(_) => {
                return Err(self.err(Problem::BadArray {
                    name: name.into(),
                    expected: "booleans".into(),
                    found: format!("{}", self.dtype(&ds, name)?),
                }))
            }
            _ => self
                .read_numbers(name)?
                .values
                .into_iter()
                .map(|v| v != 0.0)
                .collect(),
        };
        self.check_count(name, &shape, flags.len())?;
        Ok((flags, shape))
    }

    /// Checks that the reader returned as many values as the shape holds (a corrupt
    /// file can declare one and store another).
    fn check_count(&self, name: &str, shape: &[usize], found: usize) -> Result<(), DataError> {
        let expected = shape.iter().product::<usize>();
        if found == expected {
            return Ok(());
        }
        Err(self.err(Problem::BadArray {
            name: name.into(),
            expected: format!("{expected} values (shape {shape:?})"),
            found: format!("{found} values"),
        }))
    }
}

/// Bytes reading one value may take at most (an f64 read, its f32 copy and the
/// dataset's copy): the factor of the size check before reading an array.
const BYTES_PER_VALUE: f64 = 16.0;

fn is_integer(dtype: &DType) -> bool {
    matches!(
        dtype,
        DType::I8
            | DType::I16
            | DType::I32
            | DType::I64
            | DType::U8
            | DType::U16
            | DType::U32
            | DType::U64
    )
}

/// How [`row_width`] treats arrays of more than two dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rows {
    /// Only `[rows]` and `[rows, d]`: a file without a space to say how a 3-D array's
    /// rows are laid out (D4RL) is refused rather than flattened silently.
    Flat,
    /// Any trailing shape, flattened row-major (Minari: the metadata's Box shape says
    /// so, and the width is checked against it).
    Flatten,
}

/// Checks that an array has `rows` rows and returns its row width: 1 for `[rows]`,
/// the product of the trailing dimensions otherwise (at least 1; more than one
/// trailing dimension only with [`Rows::Flatten`]).
pub(crate) fn row_width(
    path: &Path,
    name: &str,
    shape: &[usize],
    rows: usize,
    what: &str,
    layout: Rows,
) -> Result<usize, DataError> {
    let bad = |expected: String| {
        Err(Problem::BadArray {
            name: name.into(),
            expected,
            found: format!("shape {shape:?}"),
        }
        .at(path))
    };
    match shape.split_first() {
        Some((&n, rest)) if n == rows && rest.contains(&0) => bad(format!(
            "{rows} rows of at least one value each ({what}); a dimension of size 0 holds no data"
        )),
        Some((&n, rest)) if n == rows && rest.len() > 1 && layout == Rows::Flat => bad(format!(
            "shape [{rows}] or [{rows}, d] (one flat vector per row, {what}); flatten the array \
             to [{rows}, {}] before importing",
            rest.iter().product::<usize>()
        )),
        Some((&n, rest)) if n == rows => Ok(rest.iter().product()),
        _ => Err(Problem::BadArray {
            name: name.into(),
            expected: format!("{rows} rows ({what})"),
            found: match shape.first() {
                Some(n) => format!("{n} rows (shape {shape:?})"),
                None => "a scalar".into(),
            },
        }
        .at(path)),
    }
}

/// Checks that an array is a column of `rows` values: shape `[rows]` or `[rows, 1]`.
pub(crate) fn column(
    path: &Path,
    name: &str,
    shape: &[usize],
    rows: usize,
    what: &str,
) -> Result<(), DataError> {
    if row_width(path, name, shape, rows, what, Rows::Flatten)? == 1 && shape.len() <= 2 {
        return Ok(());
    }
    Err(Problem::BadArray {
        name: name.into(),
        expected: format!("shape [{rows}] or [{rows}, 1] ({what})"),
        found: format!("shape {shape:?}"),
    }
    .at(path))
}
