//! Training recipes: how a behaviour set's training rollouts are made again on a
//! machine that has only the set's snapshots (the repository's sets do not carry their
//! rollouts, which run to gigabytes).
//!
//! `training.json` in a set holds the ARS run's configuration and the sha256 of each of
//! its rollout files. An ARS run is the same bit for bit for a configuration (see
//! [`crate::behaviour`]), so the replay tiers re-run it, 10 iterations at a time and
//! only as far as the rollouts they read, in a cache folder: `$FLOWRL_BEHAVIOUR_CACHE`
//! when set, otherwise `behaviour/` in flowrl's cache folder
//! ([`flowrl_envs::mujoco::flowrl_cache_dir`]), one subfolder per recipe
//! (`<env-id>-<first 16 hex digits of the recipe's sha256>`). Every file read from
//! there is checked against its recorded sha256 first: a machine whose simulation
//! differs gets an error naming the file, not different data.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::checkpoint;
use super::config::ArsConfig;
use super::run::{self, rollouts_path, TrainOptions};
use crate::digest::{sha256_bytes, sha256_file};
use crate::lock::Lock;

/// A recipe's file in a set.
pub const RECIPE_FILE: &str = "training.json";
/// The environment variable that names the cache folder of regenerated rollouts.
pub const CACHE_VAR: &str = "FLOWRL_BEHAVIOUR_CACHE";
/// Iterations regenerated at a time (a multiple of the checkpoint interval keeps the
/// resumes cheap).
const CHUNK: u64 = 10;

/// How an ARS run's rollouts are made again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The run's configuration (its checkpoint's).
    pub config: ArsConfig,
    /// sha256 of the rollout file of iteration `i` at index `i - 1`.
    pub rollouts_sha256: Vec<String>,
}

impl Recipe {
    /// The recipe of the training run in `run_dir`: its configuration and the hashes
    /// of its rollout files of iterations `1..=iterations`.
    pub fn of_run(run_dir: &Path, iterations: u64) -> anyhow::Result<Self> {
        let config = checkpoint::load(run_dir)?.state.config;
        let rollouts_sha256 = (1..=iterations)
            .map(|i| {
                let path = rollouts_path(run_dir, i);
                sha256_file(&path).with_context(|| format!("cannot read {}", path.display()))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            config,
            rollouts_sha256,
        })
    }

    /// The recipe's file text (pretty JSON).
    pub fn to_json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string_pretty(self)? + "\n")
    }

    /// Reads the recipe in `path`, checking it is one of `env_id` with a valid
    /// configuration and a hash per iteration at most.
    pub fn load(path: &Path, env_id: &str) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let recipe: Recipe = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid training recipe", path.display()))?;
        recipe
            .config
            .validate()
            .with_context(|| format!("{}: the configuration is not valid", path.display()))?;
        if recipe.config.env_id != env_id {
            bail!(
                "{}: a recipe of {}, not of {env_id}",
                path.display(),
                recipe.config.env_id
            );
        }
        let n = recipe.rollouts_sha256.len() as u64;
        if n > recipe.config.iterations {
            bail!(
                "{}: {n} rollout hashes for a run of {} iterations",
                path.display(),
                recipe.config.iterations
            );
        }
        if let Some(bad) = recipe
            .rollouts_sha256
            .iter()
            .position(|h| h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            bail!(
                "{}: rollouts_sha256[{bad}]: expected 64 hex digits, found `{}`",
                path.display(),
                recipe.rollouts_sha256[bad]
            );
        }
        Ok(recipe)
    }

    /// Iterations whose rollouts the recipe makes.
    pub fn iterations(&self) -> u64 {
        self.rollouts_sha256.len() as u64
    }

    /// The cache folder of this recipe's run.
    pub fn cache_dir(&self) -> anyhow::Result<PathBuf> {
        let root = match std::env::var_os(CACHE_VAR).filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => flowrl_envs::mujoco::flowrl_cache_dir()
                .with_context(|| {
                    format!("no cache folder for regenerated rollouts: none of {CACHE_VAR}, XDG_CACHE_HOME and HOME is set")
                })?
                .join("behaviour"),
        };
        let digest = sha256_bytes(self.to_json()?.as_bytes());
        Ok(root.join(format!("{}-{}", self.config.env_id, &digest[..16])))
    }

    /// The rollouts of `iteration` (1-based), regenerated in [`Recipe::cache_dir`] if
    /// they are not there yet, and checked against their recorded sha256.
    pub fn rollouts(&self, iteration: u64) -> anyhow::Result<PathBuf> {
        let Some(expected) = iteration
            .checked_sub(1)
            .and_then(|i| self.rollouts_sha256.get(i as usize))
        else {
            bail!(
                "the recipe makes the rollouts of iterations 1 to {}, not of iteration {iteration}",
                self.iterations()
            );
        };
        let dir = self.cache_dir()?;
        let path = rollouts_path(&dir, iteration);
        if !path.is_file() {
            // Several processes may need the same rollouts: one regenerates them, the
            // others wait and find them made.
            let _lock = Lock::acquire(
                &crate::lock::beside(&dir),
                &format!("the regeneration of {}", dir.display()),
            )?;
            if !path.is_file() {
                self.regenerate(&dir, iteration)?;
            }
        }
        let found = sha256_file(&path).with_context(|| {
            format!(
                "cannot read {} (delete {} to make it again)",
                path.display(),
                dir.display()
            )
        })?;
        if &found != expected {
            bail!(
                "{}: the regenerated rollouts differ from the recorded ones (sha256 {found}, \
                 expected {expected}): this machine's simulation is not bit for bit the one \
                 that made the set; collect the replay tiers from a set that carries its \
                 rollouts (--behaviour DIR)",
                path.display()
            );
        }
        Ok(path)
    }

    /// Runs (or continues) the recipe's ARS run in `dir` up to the chunk holding
    /// `iteration`.
    fn regenerate(&self, dir: &Path, iteration: u64) -> anyhow::Result<()> {
        let stop = (iteration.div_ceil(CHUNK) * CHUNK).min(self.iterations());
        eprintln!(
            "flowrl: regenerating the ARS rollouts of {} up to iteration {stop} in {}",
            self.config.env_id,
            dir.display()
        );
        let opts = TrainOptions {
            stop_at: Some(stop),
        };
        let outcome = if checkpoint::path(dir).exists() {
            run::resume(dir, None, &opts)
        } else {
            run::start(self.config.clone(), dir, &opts)
        };
        outcome.with_context(|| {
            format!(
                "cannot regenerate the rollouts in {} (delete the folder to start again)",
                dir.display()
            )
        })?;
        Ok(())
    }
}
