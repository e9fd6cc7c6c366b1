//! Behaviour sets: the snapshots and rollouts of one ARS run that the D4RL-style tiers
//! of a MuJoCo locomotion task are collected from (see [`super::tiers`]).
//!
//! ```text
//! <set>/
//!   medium.safetensors      the medium snapshot (a policy file, see [`super::snapshot`])
//!   expert.safetensors      the expert snapshot
//!   training.json           the run's recipe: its configuration and the sha256 of
//!                           each rollout file (see [`super::recipe`])
//!   rollouts/iter-<i>.safetensors  every training rollout of iterations 1..=n, as
//!                           `flowrl behaviour train` wrote them (optional: the
//!                           repository's sets leave them out, and the replay tiers
//!                           make them again from training.json)
//!   selection.json          which run and snapshot names the set was selected from
//! ```
//!
//! Only the replay tiers read rollouts; a set with neither rollouts nor a recipe still
//! gives the snapshot tiers.
//!
//! `flowrl collect` looks for the set of an environment in `--behaviour DIR`, or by
//! default in `assets/behaviour/<env-id>/` of the repository ([`default_dir`]).
//! `flowrl behaviour select` makes a set from a training run ([`select`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::policy::BehaviourPolicy;
use super::recipe::{Recipe, RECIPE_FILE};
use super::run::{rollouts_path, snapshot_path, ROLLOUTS_DIR, SNAPSHOTS_DIR};

/// The medium snapshot's file in a set.
pub const MEDIUM_FILE: &str = "medium.safetensors";
/// The expert snapshot's file in a set.
pub const EXPERT_FILE: &str = "expert.safetensors";
/// Where a set records what it was selected from.
pub const SELECTION_FILE: &str = "selection.json";

/// The repository's behaviour set of `env_id`: `assets/behaviour/<env-id>/`.
pub fn default_dir(env_id: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join("behaviour")
        .join(env_id)
}

/// What `flowrl behaviour select` recorded.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Selection {
    /// The training run's folder.
    pub from: String,
    /// Name of the medium snapshot in the run (e.g. `return-1000`).
    pub medium: String,
    /// Name of the expert snapshot in the run (e.g. `best`).
    pub expert: String,
    /// Iterations of the run's rollouts (1..=rollouts), copied into the set or made
    /// again by its recipe.
    pub rollouts: u64,
}

/// An opened behaviour set.
#[derive(Clone, Debug)]
pub struct BehaviourSet {
    /// The set's folder.
    pub dir: PathBuf,
    /// The medium snapshot.
    pub medium: BehaviourPolicy,
    /// The expert snapshot.
    pub expert: BehaviourPolicy,
    /// The snapshot names and source run (`medium` / `expert` and no run when the set
    /// has no `selection.json`).
    pub selection: Selection,
    /// Number of rollout iterations in the set (files `iter-000001` .. this).
    pub rollout_iterations: u64,
    /// The run's recipe, which makes the rollouts the set does not carry.
    pub recipe: Option<Recipe>,
}

/// How to make a set, for the errors.
fn how_to_make(env_id: &str, dir: &Path) -> String {
    format!(
        "make one by training a learner and selecting two of its snapshots:\n  \
         flowrl behaviour train --env {env_id} --seed 0 --out <train-out>\n  \
         flowrl behaviour select --from <train-out> --medium <snapshot name> --expert <snapshot name> --out {}\n\
         (snapshot names are the files of <train-out>/{SNAPSHOTS_DIR}/ without .safetensors: \
         D4RL's medium policy reaches about a third of the expert's return, e.g. return-1000 \
         on Hopper, and the expert is usually `best`; log.csv has every evaluated return), \
         or pass another set with --behaviour DIR (the `random` tier needs no set)",
        dir.display()
    )
}

/// The iterations `1..=n` of the rollout files in `dir` (`iter-<i>.safetensors`),
/// checking they have no gap.
fn rollout_iterations(dir: &Path) -> anyhow::Result<u64> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut found: Vec<u64> = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(i) = name
            .strip_prefix("iter-")
            .and_then(|n| n.strip_suffix(".safetensors"))
            .and_then(|n| n.parse().ok())
        {
            found.push(i);
        }
    }
    found.sort_unstable();
    if let Some(gap) = found.iter().enumerate().find(|&(k, &i)| i != k as u64 + 1) {
        bail!(
            "{}: the rollouts of iteration {} are missing (found iterations {:?}..)",
            dir.display(),
            gap.0 + 1,
            found.first()
        );
    }
    Ok(found.len() as u64)
}

impl BehaviourSet {
    /// Opens the set of `env_id` in `dir`, checking its snapshots are valid policies of
    /// `env_id` and that its rollout files have no gap (the replay tiers check they
    /// reach far enough, [`BehaviourSet::require_rollouts`]). A missing folder or
    /// snapshot is named in the error with the commands that make a set.
    pub fn open(dir: &Path, env_id: &str) -> anyhow::Result<Self> {
        let missing = |what: String| {
            anyhow::anyhow!(
                "no behaviour set for {env_id} in {}: {what}; {}",
                dir.display(),
                how_to_make(env_id, dir)
            )
        };
        if !dir.is_dir() {
            return Err(missing("the folder does not exist".into()));
        }
        let load = |file: &str| -> anyhow::Result<BehaviourPolicy> {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(missing(format!("{file} is missing")));
            }
            let policy = BehaviourPolicy::load(&path)?;
            if policy.info().env_id != env_id {
                bail!(
                    "{}: a policy of {}, not of {env_id}",
                    path.display(),
                    policy.info().env_id
                );
            }
            Ok(policy)
        };
        let medium = load(MEDIUM_FILE)?;
        let expert = load(EXPERT_FILE)?;
        let rollout_iterations = rollout_iterations(&dir.join(ROLLOUTS_DIR))?;
        let recipe_path = dir.join(RECIPE_FILE);
        let recipe = if recipe_path.is_file() {
            Some(Recipe::load(&recipe_path, env_id)?)
        } else {
            None
        };
        let selection_path = dir.join(SELECTION_FILE);
        let selection = if selection_path.is_file() {
            let text = std::fs::read_to_string(&selection_path)
                .with_context(|| format!("cannot read {}", selection_path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid", selection_path.display()))?
        } else {
            Selection {
                from: String::new(),
                medium: "medium".into(),
                expert: "expert".into(),
                rollouts: rollout_iterations,
            }
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            medium,
            expert,
            selection,
            rollout_iterations,
            recipe,
        })
    }

    /// Iterations whose rollouts the set gives: those it carries, or all its recipe
    /// makes.
    pub fn replay_iterations(&self) -> u64 {
        let made = self.recipe.as_ref().map_or(0, Recipe::iterations);
        self.rollout_iterations.max(made)
    }

    /// Checks the set gives the rollouts of iterations `1..=last` (what a replay tier
    /// needs; the snapshot tiers need no rollouts); the error names the folder, what
    /// is missing and how to make a set.
    pub fn require_rollouts(&self, tier: &str, last: u64) -> anyhow::Result<()> {
        if last == 0 || self.replay_iterations() < last {
            let env_id = &self.expert.info().env_id;
            bail!(
                "the behaviour set of {env_id} in {} lacks rollouts: {tier} needs those of \
                 iterations 1 to {last} in {}/ or a {RECIPE_FILE} that makes them, it gives \
                 {}; {}",
                self.dir.display(),
                ROLLOUTS_DIR,
                self.replay_iterations(),
                how_to_make(env_id, &self.dir)
            );
        }
        Ok(())
    }

    /// The rollouts file of `iteration` (1-based): the set's own, or else one its
    /// recipe regenerates (and checks) in the cache.
    pub fn rollouts_file(&self, iteration: u64) -> anyhow::Result<PathBuf> {
        match &self.recipe {
            Some(recipe) if iteration > self.rollout_iterations => recipe.rollouts(iteration),
            _ => Ok(rollouts_path(&self.dir, iteration)),
        }
    }
}

/// `flowrl behaviour select`: makes the set `out` from the training run in `from`:
/// copies its snapshots `medium` and `expert` (names in `from/snapshots/`), writes its
/// recipe and, with `with_rollouts`, copies every rollout file (the medium-replay tier
/// is those up to the medium snapshot's iteration, full-replay all of them). `out`
/// must not exist; the set is built in a temporary folder beside it and renamed into
/// place, so it appears whole or not at all.
pub fn select(
    from: &Path,
    medium: &str,
    expert: &str,
    with_rollouts: bool,
    out: &Path,
) -> anyhow::Result<Selection> {
    if out.exists() {
        bail!(
            "--out {}: already exists (remove it first to select again)",
            out.display()
        );
    }
    let load = |name: &str, flag: &str| -> anyhow::Result<BehaviourPolicy> {
        let path = snapshot_path(from, name);
        if !path.is_file() {
            bail!(
                "{flag} {name}: there is no snapshot {} (the names are the files of {})",
                path.display(),
                from.join(SNAPSHOTS_DIR).display()
            );
        }
        BehaviourPolicy::load(&path)
    };
    let m = load(medium, "--medium")?;
    let e = load(expert, "--expert")?;
    if m.info().env_id != e.info().env_id {
        bail!(
            "--medium {medium} is a policy of {} but --expert {expert} of {}",
            m.info().env_id,
            e.info().env_id
        );
    }
    if m.info().iteration == 0 {
        bail!(
            "--medium {medium} was saved at iteration 0, before any training rollout, so \
             its medium-replay tier would be empty; pick a snapshot saved later (log.csv \
             has the evaluated return of every iteration)"
        );
    }
    let iterations = rollout_iterations(&from.join(ROLLOUTS_DIR))?;
    if iterations < m.info().iteration.max(1) {
        bail!(
            "{} holds the rollouts of {iterations} iterations, fewer than the medium \
             snapshot's {}",
            from.join(ROLLOUTS_DIR).display(),
            m.info().iteration.max(1)
        );
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let name = out
        .file_name()
        .map_or("set".into(), |n| n.to_string_lossy());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial-"))
        .tempdir_in(&parent)
        .with_context(|| format!("cannot make a temporary folder in {}", parent.display()))?;
    let copy = |src: &Path, dst: &Path| -> anyhow::Result<()> {
        std::fs::copy(src, dst)
            .map(|_| ())
            .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))
    };
    copy(&snapshot_path(from, medium), &tmp.path().join(MEDIUM_FILE))?;
    copy(&snapshot_path(from, expert), &tmp.path().join(EXPERT_FILE))?;
    let recipe = Recipe::of_run(from, iterations)?;
    std::fs::write(tmp.path().join(RECIPE_FILE), recipe.to_json()?)?;
    if with_rollouts {
        std::fs::create_dir(tmp.path().join(ROLLOUTS_DIR))?;
        for i in 1..=iterations {
            copy(&rollouts_path(from, i), &rollouts_path(tmp.path(), i))?;
        }
    }
    let selection = Selection {
        from: from.display().to_string(),
        medium: medium.to_string(),
        expert: expert.to_string(),
        rollouts: iterations,
    };
    std::fs::write(
        tmp.path().join(SELECTION_FILE),
        serde_json::to_string_pretty(&selection)? + "\n",
    )?;
    let tmp = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp, out) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e).with_context(|| format!("cannot move the set into {}", out.display()));
    }
    Ok(selection)
}
