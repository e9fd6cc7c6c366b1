//! Where `flowrl setup mujoco` puts MuJoCo's library and Gymnasium's model files.
//!
//! The folder is `$FLOWRL_MUJOCO_DIR` when that is set, otherwise
//! `$XDG_CACHE_HOME/flowrl/mujoco-3.17.0`, otherwise `$HOME/.cache/flowrl/mujoco-3.17.0`.
//! It holds `lib/libmujoco.so.3.17.0` and `assets/<model>.xml`.

use std::path::{Path, PathBuf};

use crate::EnvError;

/// The MuJoCo release flowrl runs.
pub const MUJOCO_VERSION: &str = "3.17.0";
/// `mj_version()` of that release.
pub const MUJOCO_VERSION_NUMBER: i32 = 3017000;
/// The environment variable that names the install folder.
pub const MUJOCO_DIR_VAR: &str = "FLOWRL_MUJOCO_DIR";
/// The library's file name inside `lib/`.
pub const LIBRARY_FILE: &str = "libmujoco.so.3.17.0";
/// Gymnasium 1.4's model files the locomotion environments load, inside `assets/`.
pub const MODEL_FILES: [&str; 4] = [
    "hopper.xml",
    "half_cheetah.xml",
    "walker2d_v5.xml",
    "walker2d.xml",
];

/// flowrl's cache folder: `$XDG_CACHE_HOME/flowrl`, otherwise `$HOME/.cache/flowrl`
/// (`None` when neither variable is set). MuJoCo's install and regenerated behaviour
/// rollouts live there.
pub fn flowrl_cache_dir() -> Option<PathBuf> {
    let non_empty = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
    non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|home| Path::new(&home).join(".cache")))
        .map(|cache| cache.join("flowrl"))
}

/// An install folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Install {
    root: PathBuf,
}

impl Install {
    /// The folder at `root` (not checked).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Install { root: root.into() }
    }

    /// The configured folder (see the module docs), not checked; an error when
    /// neither `FLOWRL_MUJOCO_DIR`, `XDG_CACHE_HOME` nor `HOME` is set.
    pub fn configured() -> Result<Self, EnvError> {
        if let Some(dir) = std::env::var_os(MUJOCO_DIR_VAR).filter(|v| !v.is_empty()) {
            return Ok(Install::at(dir));
        }
        let cache = flowrl_cache_dir().ok_or_else(|| EnvError::Mujoco {
            what: "the MuJoCo folder".into(),
            reason: format!("none of {MUJOCO_DIR_VAR}, XDG_CACHE_HOME and HOME is set"),
        })?;
        Ok(Install::at(cache.join(format!("mujoco-{MUJOCO_VERSION}"))))
    }

    /// The configured folder, checked to hold the library and every model file; the
    /// error names the folder, what is missing and the command that fixes it.
    pub fn locate() -> Result<Self, EnvError> {
        let install = Install::configured()?;
        let missing: Vec<String> = install
            .files()
            .into_iter()
            .filter(|f| !f.is_file())
            .map(|f| f.display().to_string())
            .collect();
        if missing.is_empty() {
            Ok(install)
        } else {
            Err(EnvError::MujocoNotSetUp {
                dir: install.root.display().to_string(),
                missing: missing.join(", "),
            })
        }
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The library file.
    pub fn library(&self) -> PathBuf {
        self.root.join("lib").join(LIBRARY_FILE)
    }

    /// A model file of [`MODEL_FILES`].
    pub fn model(&self, file: &str) -> PathBuf {
        self.root.join("assets").join(file)
    }

    /// Every file the install must hold: the library, then the model files.
    pub fn files(&self) -> Vec<PathBuf> {
        std::iter::once(self.library())
            .chain(MODEL_FILES.iter().map(|f| self.model(f)))
            .collect()
    }
}
