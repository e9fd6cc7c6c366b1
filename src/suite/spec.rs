//! The suite config: a matrix of environments × dataset tiers × agents × seeds over a
//! base experiment config (format in `configs/suite/README.md`).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use toml::{Table, Value};

use super::error::SuiteError;
use super::toml_reader::{index, join, leaves, line_column, Reader, Segment};
use crate::config::{AgentKind, Config, ContextMode, Override, TIERS};
use flowrl_agents::named::Named;

/// Episodes per target when `[eval] episodes` is absent.
pub const DEFAULT_EVAL_EPISODES: u64 = 100;
/// Evaluation seed when `[eval] seed` is absent.
pub const DEFAULT_EVAL_SEED: u64 = 1_000_000;
/// Episodes collected per dataset when `[dataset] episodes` is absent.
pub const DEFAULT_DATASET_EPISODES: u64 = 1000;

/// One experiment-config key set by the suite, with the suite key that wrote it.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    /// The experiment-config key, e.g. `train.steps`.
    pub key: String,
    /// Its value.
    pub value: Value,
}

impl Setting {
    fn new(key: &str, value: impl Into<Value>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }

    /// Removes `key`, so that its default applies.
    fn remove(key: &str) -> Option<Override> {
        format!("{key}=").parse().ok()
    }

    fn to_override(&self) -> Result<Override, crate::config::ConfigError> {
        format!("{}={}", self.key, self.value).parse()
    }
}

/// One environment of the matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvSpec {
    /// Environment id (also the dataset's), e.g. `Pendulum-v1` or `TMaze-Passive-L50`.
    pub id: String,
    /// Target returns (unscaled) to evaluate at; the first is the headline target of
    /// `results.md`. Agents that ignore the return (`mlp-bc`) run the first only.
    pub targets: Vec<f64>,
    /// Tiers of this environment (default: the suite's).
    pub tiers: Vec<String>,
    /// Episodes of its datasets.
    pub dataset_episodes: u64,
    /// Experiment-config keys for this environment's entries.
    pub set: Vec<Setting>,
    /// Curriculum: index into [`SuiteSpec::envs`] of an earlier environment whose
    /// trained model (same tier, agent and seed) initialises each entry of this one
    /// (`train.init_from`).
    pub warm_start: Option<usize>,
}

/// One agent (a column of `results.md`).
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSpec {
    /// Column label and folder name.
    pub name: String,
    /// The policy kind.
    pub kind: AgentKind,
    /// Experiment-config keys of this agent (kind, context, context modes, `set`).
    pub set: Vec<Setting>,
}

/// A whole suite config.
#[derive(Clone, Debug)]
pub struct SuiteSpec {
    /// The suite file.
    pub path: PathBuf,
    /// Its text (kept to locate keys in errors).
    text: String,
    /// Name (default: the file stem).
    pub name: String,
    /// Output folder (datasets, runs, results, report).
    pub output: PathBuf,
    /// The base experiment config file, if any.
    pub base_config: Option<PathBuf>,
    base_text: String,
    /// Training seeds.
    pub seeds: Vec<u64>,
    /// Collection seed of every dataset.
    pub dataset_seed: u64,
    /// Episodes per target.
    pub eval_episodes: u64,
    /// Evaluation seed.
    pub eval_seed: u64,
    /// `[base]`: experiment-config keys of every entry.
    pub base: Vec<Setting>,
    /// Command-line `--set` keys, applied last.
    pub cli: Vec<Setting>,
    /// The environments, in report order.
    pub envs: Vec<EnvSpec>,
    /// The agents, in column order.
    pub agents: Vec<AgentSpec>,
}

/// Experiment-config keys the matrix sets itself, which `[base]` and `set` may not.
const MATRIX_KEYS: [&str; 3] = ["seed", "dataset", "eval.targets"];

impl SuiteSpec {
    /// Reads and checks the suite file at `path`; `cli_set` are `--set key=value`
    /// experiment-config overrides applied to every entry.
    pub fn load(path: &Path, cli_set: &[String]) -> Result<Self, SuiteError> {
        let text = std::fs::read_to_string(path).map_err(|error| SuiteError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let origin = path.display().to_string();
        let table: Table = text.parse().map_err(|e: toml::de::Error| {
            let (line, column) = e
                .span()
                .map(|s| line_column(&text, s.start))
                .unwrap_or((1, 1));
            SuiteError::Syntax {
                origin: origin.clone(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let r = Reader::new(&text, &origin);
        let mut spec = Self::read(&r, &table, path, cli_set)?;
        spec.text = text;
        spec.check_entries()?;
        Ok(spec)
    }

    fn read(
        r: &Reader<'_>,
        top: &Table,
        path: &Path,
        cli_set: &[String],
    ) -> Result<Self, SuiteError> {
        r.only_keys(
            top,
            &[],
            &["suite", "dataset", "eval", "base", "env", "agent"],
        )?;
        let at = |k: &str| vec![Segment::Key(k.to_string())];

        let suite = r.table(top, &[], "suite")?;
        r.only_keys(
            &suite,
            &at("suite"),
            &["name", "output", "base_config", "seeds", "tiers"],
        )?;
        let name = match r.string(&suite, &at("suite"), "name")? {
            Some(n) => n,
            None => path
                .file_stem()
                .map_or("suite".into(), |s| s.to_string_lossy().into_owned()),
        };
        let output = r
            .string(&suite, &at("suite"), "output")?
            .map_or_else(|| Path::new("runs/suite").join(&name), PathBuf::from);
        let folder = path.parent().unwrap_or(Path::new(""));
        let base_config = r
            .string(&suite, &at("suite"), "base_config")?
            .map(|p| folder.join(p));
        let base_text = match &base_config {
            Some(p) => std::fs::read_to_string(p).map_err(|source| {
                r.error(
                    &join(&at("suite"), "base_config"),
                    format!(
                        "cannot read the base experiment config {}: {source}",
                        p.display()
                    ),
                )
            })?,
            None => String::new(),
        };
        let seeds = r.integers(&suite, &at("suite"), "seeds")?.ok_or_else(|| {
            r.error(
                &join(&at("suite"), "seeds"),
                "required: training seeds, e.g. [0, 1, 2]",
            )
        })?;
        let tiers = r.names(&suite, &at("suite"), "tiers", &TIERS)?;

        let dataset = r.table(top, &[], "dataset")?;
        r.only_keys(&dataset, &at("dataset"), &["episodes", "seed"])?;
        let dataset_episodes = r
            .integer(&dataset, &at("dataset"), "episodes", 1)?
            .unwrap_or(DEFAULT_DATASET_EPISODES);
        let dataset_seed = r.integer(&dataset, &at("dataset"), "seed", 0)?.unwrap_or(0);

        let eval = r.table(top, &[], "eval")?;
        r.only_keys(&eval, &at("eval"), &["episodes", "seed"])?;
        let eval_episodes = r
            .integer(&eval, &at("eval"), "episodes", 1)?
            .unwrap_or(DEFAULT_EVAL_EPISODES);
        let eval_seed = r
            .integer(&eval, &at("eval"), "seed", 0)?
            .unwrap_or(DEFAULT_EVAL_SEED);

        let base = settings(r, &r.table(top, &[], "base")?, &at("base"))?;

        let mut envs = Vec::new();
        for (i, t) in r.tables(top, &[], "env")?.iter().enumerate() {
            let p = index(&at("env"), i);
            r.only_keys(
                t,
                &p,
                &[
                    "id",
                    "targets",
                    "tiers",
                    "dataset_episodes",
                    "set",
                    "warm_start",
                ],
            )?;
            let id = r
                .string(t, &p, "id")?
                .ok_or_else(|| r.error(&join(&p, "id"), "required: an environment id"))?;
            if let Err(e) = flowrl_envs::make(&id) {
                return Err(r.error(&join(&p, "id"), e.to_string()));
            }
            if envs.iter().any(|e: &EnvSpec| e.id == id) {
                return Err(r.error(&join(&p, "id"), format!("`{id}` is listed twice")));
            }
            let targets = r.numbers(t, &p, "targets")?.ok_or_else(|| {
                r.error(
                    &join(&p, "targets"),
                    "required: target returns, e.g. [-150, -400]",
                )
            })?;
            let tiers = match (r.names(t, &p, "tiers", &TIERS)?, &tiers) {
                (Some(own), _) => own,
                (None, Some(all)) => all.clone(),
                (None, None) => {
                    return Err(r.error(
                        &join(&p, "tiers"),
                        "required here or as `suite.tiers`: dataset tiers, e.g. [\"medium\"]",
                    ))
                }
            };
            let dataset_episodes = r
                .integer(t, &p, "dataset_episodes", 1)?
                .unwrap_or(dataset_episodes);
            let set = settings(r, &r.table(t, &p, "set")?, &join(&p, "set"))?;
            let warm_start = match r.string(t, &p, "warm_start")? {
                None => None,
                Some(from) => Some(warm_start_source(r, &envs, &p, &from, &tiers)?),
            };
            envs.push(EnvSpec {
                id,
                targets,
                tiers,
                dataset_episodes,
                set,
                warm_start,
            });
        }

        let mut agents = Vec::new();
        for (i, t) in r.tables(top, &[], "agent")?.iter().enumerate() {
            let p = index(&at("agent"), i);
            r.only_keys(
                t,
                &p,
                &[
                    "name",
                    "kind",
                    "context",
                    "context_mode",
                    "eval_context_mode",
                    "set",
                ],
            )?;
            let name = r.string(t, &p, "name")?.ok_or_else(|| {
                r.error(
                    &join(&p, "name"),
                    "required: a column label, e.g. \"dff-k20\"",
                )
            })?;
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
                || name.starts_with('.')
            {
                return Err(r.error(
                    &join(&p, "name"),
                    format!(
                        "expected letters, digits and - _ . + (it names folders), found \"{name}\""
                    ),
                ));
            }
            if agents.iter().any(|a: &AgentSpec| a.name == name) {
                return Err(r.error(&join(&p, "name"), format!("`{name}` is listed twice")));
            }
            let kind_name = r.string(t, &p, "kind")?.ok_or_else(|| {
                r.error(
                    &join(&p, "kind"),
                    format!("required: one of {}", AgentKind::names().join(", ")),
                )
            })?;
            let kind =
                AgentKind::from_str(&kind_name).map_err(|e| r.error(&join(&p, "kind"), e))?;
            let mut set = vec![Setting::new("agent.kind", kind.name())];
            if let Some(k) = r.integer(t, &p, "context", 1)? {
                set.push(Setting::new("agent.context", k as i64));
            }
            for (key, target) in [
                ("context_mode", "agent.context_mode"),
                ("eval_context_mode", "eval.context_mode"),
            ] {
                if let Some(mode) = r.string(t, &p, key)? {
                    let mode =
                        ContextMode::from_str(&mode).map_err(|e| r.error(&join(&p, key), e))?;
                    set.push(Setting::new(target, mode.name()));
                }
            }
            set.extend(settings(r, &r.table(t, &p, "set")?, &join(&p, "set"))?);
            agents.push(AgentSpec { name, kind, set });
        }

        let mut cli = Vec::new();
        for arg in cli_set {
            let o: Override = arg.parse().map_err(|e| SuiteError::Key {
                origin: "command line".into(),
                key: "--set".into(),
                line: None,
                message: format!("{e}"),
            })?;
            let key = o.key();
            if let Some(reserved) = reserved(&key) {
                return Err(SuiteError::Key {
                    origin: "command line".into(),
                    key: format!("--set {arg}"),
                    line: None,
                    message: reserved,
                });
            }
            match o.value() {
                Some(v) => cli.push(Setting::new(&key, v.clone())),
                None => {
                    return Err(SuiteError::Key {
                        origin: "command line".into(),
                        key: format!("--set {arg}"),
                        line: None,
                        message: "expected a value after `=` (a suite cannot remove keys)".into(),
                    })
                }
            }
        }

        Ok(SuiteSpec {
            path: path.to_path_buf(),
            text: String::new(),
            name,
            output,
            base_config,
            base_text,
            seeds,
            dataset_seed,
            eval_episodes,
            eval_seed,
            base,
            cli,
            envs,
            agents,
        })
    }

    /// The experiment config of one entry: the base config file, the suite's dataset
    /// and evaluation facts, `[base]`, the environment's and the agent's keys,
    /// `--set`, then the entry's tier and seed.
    pub fn config(
        &self,
        env: &EnvSpec,
        tier: &str,
        agent: &AgentSpec,
        seed: u64,
    ) -> Result<Config, crate::config::ConfigError> {
        let targets = if agent.kind == AgentKind::MlpBc {
            &env.targets[..1]
        } else {
            &env.targets[..]
        };
        let mut facts = vec![
            Setting::new("eval.episodes", self.eval_episodes as i64),
            Setting::new("eval.seed", self.eval_seed as i64),
            Setting::new("eval.every", 0),
            Setting::new(
                "eval.targets",
                Value::Array(targets.iter().map(|&t| Value::Float(t)).collect()),
            ),
        ];
        facts.extend(self.base.iter().cloned());
        facts.extend(env.set.iter().cloned());
        facts.extend(agent.set.iter().cloned());
        facts.extend(self.cli.iter().cloned());
        facts.extend([
            Setting::new("dataset.env", env.id.as_str()),
            Setting::new("dataset.tier", tier),
            Setting::new("dataset.episodes", env.dataset_episodes as i64),
            Setting::new("dataset.seed", self.dataset_seed as i64),
            Setting::new("seed", seed as i64),
        ]);
        let mut overrides: Vec<Override> = Setting::remove("dataset.path").into_iter().collect();
        for s in &facts {
            overrides.push(s.to_override()?);
        }
        let origin = self
            .base_config
            .as_ref()
            .map_or("(experiment defaults)".into(), |p| p.display().to_string());
        Config::from_toml_str(&self.base_text, &origin, &overrides)
    }

    /// Checks that every part of the matrix gives a valid experiment config, naming
    /// the suite key (`base`, `env[i]`, `agent[j]`) whose settings break it.
    fn check_entries(&self) -> Result<(), SuiteError> {
        let tier = |e: &EnvSpec| e.tiers[0].clone();
        let seed = self.seeds[0];
        let plain = AgentSpec {
            name: String::new(),
            kind: AgentKind::default(),
            set: Vec::new(),
        };
        let bare_env = |e: &EnvSpec| EnvSpec {
            set: Vec::new(),
            ..e.clone()
        };
        let blame = |key: String, path: Vec<Segment>, e| SuiteError::Experiment {
            origin: self.path.display().to_string(),
            line: super::toml_reader::line_of(&self.text, &path),
            key,
            message: super::error::experiment_problems(&e),
        };
        let env_path = |i| index(&[Segment::Key("env".into())], i);
        let first = bare_env(&self.envs[0]);
        let without_cli = SuiteSpec {
            cli: Vec::new(),
            ..self.clone()
        };
        let base_key = if self.base_config.is_some() {
            "suite.base_config + base"
        } else {
            "base"
        };
        without_cli
            .config(&first, &tier(&first), &plain, seed)
            .map_err(|e| blame(base_key.into(), vec![Segment::Key("base".into())], e))?;
        for (i, env) in self.envs.iter().enumerate() {
            without_cli
                .config(env, &tier(env), &plain, seed)
                .map_err(|e| blame(format!("env[{i}]"), env_path(i), e))?;
        }
        for (j, agent) in self.agents.iter().enumerate() {
            without_cli
                .config(&first, &tier(&first), agent, seed)
                .map_err(|e| {
                    blame(
                        format!("agent[{j}]"),
                        index(&[Segment::Key("agent".into())], j),
                        e,
                    )
                })?;
        }
        for (i, env) in self.envs.iter().enumerate() {
            for (j, agent) in self.agents.iter().enumerate() {
                self.config(env, &tier(env), agent, seed).map_err(|e| {
                    let key = if self.cli.is_empty() {
                        format!("env[{i}] with agent[{j}]")
                    } else {
                        format!("env[{i}] with agent[{j}] and --set")
                    };
                    blame(key, env_path(i), e)
                })?;
            }
        }
        Ok(())
    }
}

/// The index of `from`, the `warm_start` of the environment at `p` with `tiers`: an
/// environment listed before it that has every one of those tiers.
fn warm_start_source(
    r: &Reader<'_>,
    earlier: &[EnvSpec],
    p: &[Segment],
    from: &str,
    tiers: &[String],
) -> Result<usize, SuiteError> {
    let key = join(p, "warm_start");
    let Some(i) = earlier.iter().position(|e| e.id == from) else {
        let known: Vec<&str> = earlier.iter().map(|e| e.id.as_str()).collect();
        return Err(r.error(
            &key,
            format!(
                "expected the id of an environment listed before this one (its entries \
                 must be trained first): {}; found \"{from}\"",
                if known.is_empty() {
                    "none is".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    };
    if let Some(missing) = tiers.iter().find(|t| !earlier[i].tiers.contains(t)) {
        return Err(r.error(
            &key,
            format!("`{from}` has no `{missing}` tier to start this environment's `{missing}` entries from"),
        ));
    }
    Ok(i)
}

/// The experiment-config keys of a `[base]` or `set` table.
fn settings(r: &Reader<'_>, table: &Table, path: &[Segment]) -> Result<Vec<Setting>, SuiteError> {
    let mut out = Vec::new();
    for (key, value) in leaves(table) {
        if let Some(message) = reserved(&key) {
            let mut p = path.to_vec();
            p.extend(key.split('.').map(|s| Segment::Key(s.to_string())));
            return Err(r.error(&p, message));
        }
        out.push(Setting { key, value });
    }
    Ok(out)
}

/// Why `key` cannot be set by `[base]`, `set` or `--set`, if it is a matrix key.
fn reserved(key: &str) -> Option<String> {
    if key == "train.init_from" {
        return Some(format!(
            "use `warm_start` (an earlier environment's id, in an [[env]] table) to start \
             entries from trained models: the suite sets `train.init_from` itself; found `{key}`"
        ));
    }
    MATRIX_KEYS
        .iter()
        .find(|m| key == **m || key.starts_with(&format!("{m}.")))
        .map(|m| {
            format!(
                "`{m}` is set by the suite matrix (suite.seeds, suite.tiers, [dataset], \
                 env.targets), not by experiment-config keys; found `{key}`"
            )
        })
}
