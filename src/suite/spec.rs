//! The suite config: a matrix of environments × dataset tiers × agents × seeds over a
//! base experiment config (format in `configs/suite/README.md`).

use std::path::{Path, PathBuf};

use flowrl_agents::named::Named;
use toml::{Table, Value};

use super::error::{Keys, SuiteError};
use super::file::{Int, List, Number, SuiteFile, Text, Tier};
use crate::config::locate::Document;
use crate::config::{AgentKind, Config, ContextMode, Override};

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
    /// The environment ids it runs on (`None`: every one).
    pub envs: Option<Vec<String>>,
    /// The tiers it runs on (`None`: every one of each environment).
    pub tiers: Option<Vec<String>>,
}

impl AgentSpec {
    /// Whether the matrix has this agent on `env`'s `tier` dataset.
    pub fn runs(&self, env: &str, tier: &str) -> bool {
        let allows = |only: &Option<Vec<String>>, v: &str| {
            only.as_ref().is_none_or(|o| o.iter().any(|x| x == v))
        };
        allows(&self.envs, env) && allows(&self.tiers, tier)
    }
}

/// A whole suite config.
#[derive(Clone, Debug)]
pub struct SuiteSpec {
    /// The suite file.
    pub path: PathBuf,
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
        let doc = Document::parse(&text).map_err(|e| SuiteError::Syntax {
            origin: origin.clone(),
            line: e.line,
            column: e.column,
            message: e.message,
        })?;
        let keys = Keys {
            doc: &doc,
            origin: &origin,
        };
        let file = doc.deserialize().map_err(|e| keys.serde_error(&e))?;
        let spec = Self::read(&keys, file, path, cli_set)?;
        spec.check_entries(&keys)?;
        Ok(spec)
    }

    fn read(
        keys: &Keys<'_>,
        file: SuiteFile,
        path: &Path,
        cli_set: &[String],
    ) -> Result<Self, SuiteError> {
        let SuiteFile {
            suite,
            dataset,
            eval,
            base,
            env,
            agent,
        } = file;
        let name = match suite.name {
            Some(Text(n)) => n,
            None => path
                .file_stem()
                .map_or("suite".into(), |s| s.to_string_lossy().into_owned()),
        };
        let output = suite
            .output
            .map_or_else(|| Path::new("runs/suite").join(&name), |Text(o)| o.into());
        let folder = path.parent().unwrap_or(Path::new(""));
        let base_config = suite.base_config.map(|Text(p)| folder.join(p));
        let base_text = match &base_config {
            Some(p) => std::fs::read_to_string(p).map_err(|source| {
                keys.error(
                    "suite.base_config",
                    format!(
                        "cannot read the base experiment config {}: {source}",
                        p.display()
                    ),
                )
            })?,
            None => String::new(),
        };
        let List(seeds) =
            keys.required("suite.seeds", suite.seeds, "training seeds, e.g. [0, 1, 2]")?;
        let seeds: Vec<u64> = seeds.into_iter().map(|Int(s)| s).collect();
        let tiers = suite.tiers.map(tier_names);
        let dataset_episodes = dataset
            .episodes
            .map_or(DEFAULT_DATASET_EPISODES, |Int(n)| n);
        let dataset_seed = dataset.seed.map_or(0, |Int(s)| s);
        let eval_episodes = eval.episodes.map_or(DEFAULT_EVAL_EPISODES, |Int(n)| n);
        let eval_seed = eval.seed.map_or(DEFAULT_EVAL_SEED, |Int(s)| s);
        let base = settings(keys, "base", &base)?;

        let mut envs = Vec::new();
        let env = env.filter(|s| !s.is_empty());
        let env = keys.required("env", env, "one or more `[[env]]` sections")?;
        for (i, e) in env.into_iter().enumerate() {
            let key = |k: &str| format!("env[{i}].{k}");
            let Text(id) = keys.required(&key("id"), e.id, "an environment id")?;
            if let Err(err) = flowrl_envs::make(&id) {
                return Err(keys.error(&key("id"), err.to_string()));
            }
            if envs.iter().any(|e: &EnvSpec| e.id == id) {
                return Err(keys.error(&key("id"), format!("`{id}` is listed twice")));
            }
            let List(targets) = keys.required(
                &key("targets"),
                e.targets,
                "target returns, e.g. [-150, -400]",
            )?;
            let tiers = match (e.tiers.map(tier_names), &tiers) {
                (Some(own), _) => own,
                (None, Some(all)) => all.clone(),
                (None, None) => {
                    return Err(keys.error(
                        &key("tiers"),
                        "required here or as `suite.tiers`: dataset tiers, e.g. [\"medium\"]",
                    ))
                }
            };
            let set = settings(keys, &key("set"), &e.set)?;
            let warm_start = match e.warm_start {
                None => None,
                Some(Text(from)) => Some(warm_start_source(
                    keys,
                    &envs,
                    &key("warm_start"),
                    &from,
                    &tiers,
                )?),
            };
            envs.push(EnvSpec {
                id,
                targets: targets.into_iter().map(|Number(t)| t).collect(),
                tiers,
                dataset_episodes: e.dataset_episodes.map_or(dataset_episodes, |Int(n)| n),
                set,
                warm_start,
            });
        }

        let mut agents = Vec::new();
        let agent = agent.filter(|s| !s.is_empty());
        let agent = keys.required("agent", agent, "one or more `[[agent]]` sections")?;
        for (i, a) in agent.into_iter().enumerate() {
            let key = |k: &str| format!("agent[{i}].{k}");
            let Text(name) =
                keys.required(&key("name"), a.name, "a column label, e.g. \"dff-k20\"")?;
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
                || name.starts_with('.')
            {
                return Err(keys.error(
                    &key("name"),
                    format!(
                        "expected letters, digits and - _ . + (it names folders), found \"{name}\""
                    ),
                ));
            }
            if agents.iter().any(|a: &AgentSpec| a.name == name) {
                return Err(keys.error(&key("name"), format!("`{name}` is listed twice")));
            }
            let one_of = format!("one of {}", AgentKind::names().join(", "));
            let Text(kind) = keys.required(&key("kind"), a.kind, one_of)?;
            let kind: AgentKind = kind.parse().map_err(|e| keys.error(&key("kind"), e))?;
            let mut set = vec![Setting::new("agent.kind", kind.name())];
            if let Some(Int(k)) = a.context {
                set.push(Setting::new("agent.context", k as i64));
            }
            for (mode, field, target) in [
                (a.context_mode, "context_mode", "agent.context_mode"),
                (
                    a.eval_context_mode,
                    "eval_context_mode",
                    "eval.context_mode",
                ),
            ] {
                if let Some(Text(mode)) = mode {
                    let mode: ContextMode = mode.parse().map_err(|e| keys.error(&key(field), e))?;
                    set.push(Setting::new(target, mode.name()));
                }
            }
            set.extend(settings(keys, &key("set"), &a.set)?);
            let only_envs = a.envs.map(|List(ids)| ids.into_iter().map(|Text(id)| id));
            let only_envs: Option<Vec<String>> = only_envs.map(Iterator::collect);
            for id in only_envs.iter().flatten() {
                if !envs.iter().any(|e: &EnvSpec| &e.id == id) {
                    let ids: Vec<&str> = envs.iter().map(|e| e.id.as_str()).collect();
                    return Err(keys.error(
                        &key("envs"),
                        format!(
                            "expected ids of `[[env]]` sections ({}), found `{id}`",
                            ids.join(", ")
                        ),
                    ));
                }
            }
            let only_tiers = a.tiers.map(tier_names);
            for tier in only_tiers.iter().flatten() {
                let has = |e: &&EnvSpec| {
                    only_envs.as_ref().is_none_or(|o| o.contains(&e.id)) && e.tiers.contains(tier)
                };
                if !envs.iter().any(|e| has(&e)) {
                    return Err(keys.error(
                        &key("tiers"),
                        format!("expected tiers of its environments, found `{tier}`, which none of them has"),
                    ));
                }
            }
            agents.push(AgentSpec {
                name,
                kind,
                set,
                envs: only_envs,
                tiers: only_tiers,
            });
        }

        let mut cli = Vec::new();
        for arg in cli_set {
            let cli_error = |key: String, message: String| SuiteError::Key {
                origin: "command line".into(),
                key,
                line: None,
                message,
            };
            let o: Override = arg
                .parse()
                .map_err(|e| cli_error("--set".into(), format!("{e}")))?;
            let key = o.key();
            if let Some(reserved) = reserved(&key) {
                return Err(cli_error(format!("--set {arg}"), reserved));
            }
            let Some(value) = o.value() else {
                return Err(cli_error(
                    format!("--set {arg}"),
                    "expected a value after `=` (a suite cannot remove keys)".into(),
                ));
            };
            cli.push(Setting::new(&key, value.clone()));
        }

        Ok(SuiteSpec {
            path: path.to_path_buf(),
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
    fn check_entries(&self, keys: &Keys<'_>) -> Result<(), SuiteError> {
        let tier = |e: &EnvSpec| e.tiers[0].clone();
        let seed = self.seeds[0];
        let plain = AgentSpec {
            name: String::new(),
            kind: AgentKind::default(),
            set: Vec::new(),
            envs: None,
            tiers: None,
        };
        let bare_env = |e: &EnvSpec| EnvSpec {
            set: Vec::new(),
            ..e.clone()
        };
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
            .map_err(|e| keys.experiment(base_key.into(), "base", &e))?;
        for (i, env) in self.envs.iter().enumerate() {
            without_cli
                .config(env, &tier(env), &plain, seed)
                .map_err(|e| keys.experiment(format!("env[{i}]"), &format!("env[{i}]"), &e))?;
        }
        for (j, agent) in self.agents.iter().enumerate() {
            without_cli
                .config(&first, &tier(&first), agent, seed)
                .map_err(|e| keys.experiment(format!("agent[{j}]"), &format!("agent[{j}]"), &e))?;
        }
        for (i, env) in self.envs.iter().enumerate() {
            for (j, agent) in self.agents.iter().enumerate() {
                self.config(env, &tier(env), agent, seed).map_err(|e| {
                    let blamed = if self.cli.is_empty() {
                        format!("env[{i}] with agent[{j}]")
                    } else {
                        format!("env[{i}] with agent[{j}] and --set")
                    };
                    keys.experiment(blamed, &format!("env[{i}]"), &e)
                })?;
            }
        }
        Ok(())
    }
}

/// The index of `from`, the `warm_start` (at `key`) of an environment with `tiers`:
/// an environment listed before it that has every one of those tiers.
fn warm_start_source(
    keys: &Keys<'_>,
    earlier: &[EnvSpec],
    key: &str,
    from: &str,
    tiers: &[String],
) -> Result<usize, SuiteError> {
    let Some(i) = earlier.iter().position(|e| e.id == from) else {
        let known: Vec<&str> = earlier.iter().map(|e| e.id.as_str()).collect();
        return Err(keys.error(
            key,
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
        return Err(keys.error(
            key,
            format!("`{from}` has no `{missing}` tier to start this environment's `{missing}` entries from"),
        ));
    }
    Ok(i)
}

/// The names of a list of tiers.
fn tier_names(List(tiers): List<Tier>) -> Vec<String> {
    tiers.into_iter().map(|Tier(t)| t).collect()
}

/// The experiment-config keys of the `[base]` or `set` table at `key`.
fn settings(keys: &Keys<'_>, key: &str, table: &Table) -> Result<Vec<Setting>, SuiteError> {
    let mut out = Vec::new();
    for (name, value) in leaves(table) {
        if let Some(message) = reserved(&name) {
            return Err(keys.error(&format!("{key}.{name}"), message));
        }
        out.push(Setting { key: name, value });
    }
    Ok(out)
}

/// Every leaf of `table` as (dotted key, value); a key written with dots inside
/// quotes (`"agent.width" = 64`) is split like a dotted key.
fn leaves(table: &Table) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (key, value) in table {
        match value {
            Value::Table(inner) => {
                for (k, v) in leaves(inner) {
                    out.push((format!("{key}.{k}"), v));
                }
            }
            other => out.push((key.clone(), other.clone())),
        }
    }
    out
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
