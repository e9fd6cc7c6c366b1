//! D4RL HDF5 files: top-level `observations` `[N, obs]`, `actions` `[N, act]`, `rewards`
//! `[N]` or `[N, 1]` (f32 or f64), `terminals` and `timeouts` (h5py booleans), optional
//! `next_observations`, `infos/*`, `metadata/*`.
//!
//! Episodes end at a terminal or a timeout; a step flagged both counts as terminated.
//! Trailing steps with neither flag become a truncated episode or are dropped
//! ([`Trailing`]), with a warning giving the count. Without `timeouts`, episodes are
//! also cut at a maximum length.

use std::path::Path;

use super::hdf5::{column, row_width, H5File, Rows};
use super::{known_reference_returns, Imported};
use crate::data::dataset::{DatasetBuilder, Ending, Metadata, Provenance, ReferenceReturns};
use crate::data::error::{DataError, Problem};
use crate::data::space::Space;
use flowrl_agents::agent::MAX_FEATURES;

/// Maximum episode length used when a file has no `timeouts` and none is given (the
/// length of D4RL's MuJoCo episodes).
pub const DEFAULT_MAX_EPISODE_STEPS: usize = 1000;

/// What to do with trailing steps that carry neither a terminal nor a timeout flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Trailing {
    /// Keep them as a final truncated episode.
    #[default]
    Keep,
    /// Drop them.
    Drop,
}

/// Options of the D4RL importer.
#[derive(Clone, Debug, Default)]
pub struct D4rlOptions {
    /// Environment id to record (default: the file name without extension).
    pub env_id: Option<String>,
    /// Trailing unflagged steps: keep (as truncated) or drop.
    pub trailing: Trailing,
    /// Maximum episode length for files without `timeouts`
    /// (default [`DEFAULT_MAX_EPISODE_STEPS`]); ignored when `timeouts` exists.
    pub max_episode_steps: Option<usize>,
    /// Reference returns (default: D4RL's table for the locomotion tasks, or flowrl's
    /// own for its environments, when the environment id names one).
    pub reference_returns: Option<ReferenceReturns>,
}

/// D4RL's random and expert returns of the MuJoCo locomotion tasks (`REF_MIN_SCORE`,
/// `REF_MAX_SCORE` of `d4rl.infos`), matched on the id's first word.
pub fn d4rl_reference_returns(env_id: &str) -> Option<ReferenceReturns> {
    let task = env_id.split(['-', '_']).next()?.to_ascii_lowercase();
    let (random, expert) = match task.as_str() {
        "hopper" => (-20.272305, 3234.3),
        "halfcheetah" => (-280.178953, 12135.0),
        "walker2d" => (1.629008, 4592.3),
        "ant" => (-325.6, 3879.7),
        _ => return None,
    };
    Some(ReferenceReturns { random, expert })
}

/// Imports a D4RL file.
pub fn import_d4rl(path: &Path, opts: &D4rlOptions) -> Result<Imported, DataError> {
    let h5 = H5File::open(path)?;
    let obs = h5.read_numbers("observations")?;
    let n = *obs.shape.first().ok_or_else(|| {
        h5.err(Problem::BadArray {
            name: "observations".into(),
            expected: "an [N, obs_dim] array".into(),
            found: "a scalar".into(),
        })
    })?;
    let obs_dim = row_width(path, "observations", &obs.shape, n, "N steps", Rows::Flat)?;
    let rows = "one per observation";
    let discrete = h5.is_integer("actions")?;
    let (act_dim, continuous, indices) = if discrete {
        let (indices, shape) = h5.read_indices("actions")?;
        column(
            path,
            "actions",
            &shape,
            n,
            "integer actions, one per observation",
        )?;
        (1, Vec::new(), indices)
    } else {
        let a = h5.read_numbers("actions")?;
        (
            row_width(path, "actions", &a.shape, n, rows, Rows::Flat)?,
            a.values,
            Vec::new(),
        )
    };
    let rewards = h5.read_numbers("rewards")?;
    column(path, "rewards", &rewards.shape, n, rows)?;
    let (terminals, shape) = h5.read_flags("terminals")?;
    column(path, "terminals", &shape, n, rows)?;
    let timeouts = if h5.has_dataset("timeouts")? {
        let (flags, shape) = h5.read_flags("timeouts")?;
        column(path, "timeouts", &shape, n, rows)?;
        Some(flags)
    } else {
        None
    };
    if n == 0 {
        return Err(h5.err(Problem::EmptyDataset("`observations` has 0 rows".into())));
    }
    let mut ignored = Vec::new();
    if h5.has_dataset("next_observations")? {
        let ds = h5.require("next_observations")?;
        let shape = h5.shape(&ds, "next_observations")?;
        if shape != obs.shape {
            return Err(h5.err(Problem::BadArray {
                name: "next_observations".into(),
                expected: format!("the shape of `observations` {:?}", obs.shape),
                found: format!("{shape:?}"),
            }));
        }
        ignored.push("next_observations (derived from observations)".to_string());
    }
    let (_, groups) = h5.members("")?;
    for group in ["infos", "metadata"] {
        if groups.iter().any(|g| g == group) {
            let (datasets, subgroups) = h5.members(group)?;
            for name in datasets.iter().chain(&subgroups) {
                ignored.push(format!("{group}/{name}"));
            }
        }
    }

    let action_space = match indices.iter().enumerate().max_by_key(|&(_, a)| *a) {
        Some((step, &max)) if discrete => {
            if max >= MAX_FEATURES {
                return Err(h5.err(Problem::BadArray {
                    name: "actions".into(),
                    expected: format!(
                        "integer action indices below {MAX_FEATURES} (the most discrete \
                         actions an agent takes; integer actions are read as indices)"
                    ),
                    found: format!("{max} at step {step}"),
                }));
            }
            Space::Discrete { n: max + 1 }
        }
        _ => Space::unbounded(act_dim),
    };

    let mut warnings = Vec::new();
    let max_len = match (&timeouts, opts.max_episode_steps) {
        (Some(_), _) => None,
        (None, Some(0)) => {
            return Err(h5.err(Problem::BadMetadata {
                key: "max_episode_steps".into(),
                detail: "must be at least 1".into(),
            }))
        }
        (None, Some(len)) => {
            warnings.push(format!(
                "no `timeouts` array: episodes are cut at {len} steps (the given maximum episode length)"
            ));
            Some(len)
        }
        (None, None) => {
            warnings.push(format!(
                "no `timeouts` array: episodes are cut at {DEFAULT_MAX_EPISODE_STEPS} steps \
                 (the default maximum episode length; set it with --max-episode-steps)"
            ));
            Some(DEFAULT_MAX_EPISODE_STEPS)
        }
    };

    let mut builder = DatasetBuilder::new(obs_dim, act_dim, discrete);
    let mut both = 0;
    for (i, o) in obs.values.chunks_exact(obs_dim).enumerate() {
        let r = rewards.values[i];
        if discrete {
            builder.push_discrete(o, indices[i], r);
        } else {
            builder.push_continuous(o, &continuous[i * act_dim..(i + 1) * act_dim], r);
        }
        let timeout = timeouts.as_ref().is_some_and(|t| t[i]);
        if terminals[i] {
            both += usize::from(timeout);
            builder.end_episode(Ending::Terminated);
        } else if timeout || max_len == Some(builder.open_steps()) {
            builder.end_episode(Ending::Truncated);
        }
    }
    if both > 0 {
        warnings.push(format!(
            "{both} step(s) flagged both terminal and timeout were counted as terminated"
        ));
    }
    let trailing = builder.open_steps();
    if trailing > 0 {
        match opts.trailing {
            Trailing::Keep => {
                builder.end_episode(Ending::Truncated);
                warnings.push(format!(
                    "the last {trailing} step(s) have neither a terminal nor a timeout flag: \
                     kept as a final truncated episode"
                ));
            }
            Trailing::Drop => {
                builder.discard_open_episode();
                warnings.push(format!(
                    "the last {trailing} step(s) have neither a terminal nor a timeout flag: dropped"
                ));
            }
        }
    }
    let episodes = builder.episodes();
    let env_id = opts.env_id.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unknown".into())
    });
    let reference_returns = opts
        .reference_returns
        .or_else(|| known_reference_returns(&env_id));
    let meta = Metadata {
        env_id,
        observation_space: Space::unbounded(obs_dim),
        action_space,
        provenance: Provenance {
            source: "d4rl".into(),
            behaviour_policy: h5.read_text("metadata/algorithm"),
            origin: Some(path.display().to_string()),
            episodes,
            ..Provenance::default()
        },
        reference_returns,
    };
    let dataset = builder.build(meta).map_err(|p| h5.err(p))?;
    Ok(Imported {
        dataset,
        warnings,
        ignored,
    })
}
