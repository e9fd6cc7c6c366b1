//! The entries of a suite (one training run and its evaluation each), their folders
//! in the output, their state, and `--filter` selection.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::record::EntryRecord;
use super::spec::SuiteSpec;
use crate::config::Config;

/// One (environment, tier, agent, seed) cell of the matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Index into [`SuiteSpec::envs`].
    pub env: usize,
    /// Dataset tier.
    pub tier: String,
    /// Index into [`SuiteSpec::agents`].
    pub agent: usize,
    /// Training seed.
    pub seed: u64,
}

/// Where an entry stands in the output folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryState {
    /// Its result is recorded (for the same resolved config).
    Done,
    /// Training has a checkpoint; the run continues from it.
    Partial,
    /// Nothing of it yet.
    Pending,
    /// A result or run of it exists, but for a different resolved config.
    Stale,
}

impl EntryState {
    /// The state's name in listings.
    pub fn name(self) -> &'static str {
        match self {
            EntryState::Done => "done",
            EntryState::Partial => "partial",
            EntryState::Pending => "pending",
            EntryState::Stale => "stale",
        }
    }
}

/// Every entry of the suite in run order: seeds outermost (an interrupted run has
/// whole tables for its first seeds), then environments, tiers and agents.
pub fn entries(spec: &SuiteSpec) -> Vec<Entry> {
    let mut out = Vec::new();
    for &seed in &spec.seeds {
        for (e, env) in spec.envs.iter().enumerate() {
            for tier in &env.tiers {
                for (a, agent) in spec.agents.iter().enumerate() {
                    if !agent.runs(&env.id, tier) {
                        continue;
                    }
                    out.push(Entry {
                        env: e,
                        tier: tier.clone(),
                        agent: a,
                        seed,
                    });
                }
            }
        }
    }
    out
}

impl Entry {
    /// `env/tier/agent/seedN`, the entry's name and relative folder.
    pub fn id(&self, spec: &SuiteSpec) -> String {
        format!(
            "{}/{}/{}/seed{}",
            spec.envs[self.env].id, self.tier, spec.agents[self.agent].name, self.seed
        )
    }

    /// The entry's resolved experiment config: the suite's keys. What depends on the
    /// output folder (the dataset file, and `train.init_from` = the run folder of the
    /// [`Entry::warm_start`] entry) is set when the entry runs.
    pub fn config(&self, spec: &SuiteSpec) -> anyhow::Result<Config> {
        spec.config(
            &spec.envs[self.env],
            &self.tier,
            &spec.agents[self.agent],
            self.seed,
        )
        .with_context(|| format!("entry {}: invalid experiment config", self.id(spec)))
    }

    /// The entry whose trained model initialises this one: the same tier, agent and
    /// seed on the environment's `warm_start` environment.
    pub fn warm_start(&self, spec: &SuiteSpec) -> Option<Entry> {
        spec.envs[self.env].warm_start.map(|env| Entry {
            env,
            ..self.clone()
        })
    }

    /// The training run folder.
    pub fn run_dir(&self, out: &Path, spec: &SuiteSpec) -> PathBuf {
        out.join("runs").join(self.id(spec))
    }

    /// The result file.
    pub fn result_file(&self, out: &Path, spec: &SuiteSpec) -> PathBuf {
        out.join("results").join(format!("{}.json", self.id(spec)))
    }

    /// The lock its worker holds while it runs the entry (see [`crate::lock`]).
    pub fn lock_file(&self, out: &Path, spec: &SuiteSpec) -> PathBuf {
        out.join("locks").join(format!("{}.lock", self.id(spec)))
    }

    /// The error of its last failed attempt (removed when the entry finishes).
    pub fn failure_file(&self, out: &Path, spec: &SuiteSpec) -> PathBuf {
        out.join("failures").join(format!("{}.txt", self.id(spec)))
    }

    /// The entry's state given its resolved `config`.
    pub fn state(
        &self,
        out: &Path,
        spec: &SuiteSpec,
        config: &Config,
    ) -> anyhow::Result<EntryState> {
        let result = self.result_file(out, spec);
        if result.exists() {
            let record = EntryRecord::read(&result)?;
            return Ok(if same_config(&record.config()?, config) {
                EntryState::Done
            } else {
                EntryState::Stale
            });
        }
        let run = self.run_dir(out, spec);
        if crate::train::run_dir::latest_step(&run).is_err() {
            return Ok(EntryState::Pending);
        }
        let saved = Config::load(
            &run.join(crate::train::run_dir::CONFIG_FILE),
            &[] as &[&str],
        )
        .with_context(|| format!("run folder {}: cannot load its config", run.display()))?;
        Ok(if same_training(&saved, config) {
            EntryState::Partial
        } else {
            EntryState::Stale
        })
    }
}

/// Whether a recorded config is the entry's `config`, wherever the output folder lies
/// (a warm start's `train.init_from` names a run folder in it).
pub fn same_config(recorded: &Config, config: &Config) -> bool {
    let strip = |c: &Config| {
        let mut c = c.clone();
        c.train.init_from = None;
        c
    };
    strip(recorded) == strip(config)
}

/// Whether a run folder's saved config trains the same as `config` (whose dataset is
/// collected; the run's names the cached file instead).
pub fn same_training(saved: &Config, config: &Config) -> bool {
    let strip = |c: &Config| Config {
        dataset: Default::default(),
        ..c.clone()
    };
    same_config(&strip(saved), &strip(config))
}

/// One `--filter key=value[,value...]` condition.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    key: FilterKey,
    values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum FilterKey {
    Env,
    Tier,
    Agent,
    Seed,
}

/// The `--filter` keys by name.
const FILTER_KEYS: [(&str, FilterKey); 4] = [
    ("env", FilterKey::Env),
    ("tier", FilterKey::Tier),
    ("agent", FilterKey::Agent),
    ("seed", FilterKey::Seed),
];

impl std::str::FromStr for Filter {
    type Err = anyhow::Error;

    fn from_str(arg: &str) -> anyhow::Result<Self> {
        let Some((key, values)) = arg.split_once('=') else {
            bail!("--filter {arg}: expected key=value (e.g. env=Pendulum-v1), found no `=`");
        };
        let key = match FILTER_KEYS.iter().find(|(name, _)| *name == key.trim()) {
            Some(&(_, key)) => key,
            None => bail!(
                "--filter {arg}: expected the key env, tier, agent or seed, found `{}`",
                key.trim()
            ),
        };
        let values: Vec<String> = values
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        if values.is_empty() {
            bail!("--filter {arg}: expected one or more values separated by commas, found none");
        }
        Ok(Filter { key, values })
    }
}

impl std::fmt::Display for Filter {
    /// The `--filter` argument that parses back to this condition.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (key, _) = FILTER_KEYS
            .iter()
            .find(|(_, k)| *k == self.key)
            .expect("every key is named");
        write!(f, "{key}={}", self.values.join(","))
    }
}

impl Filter {
    /// Whether `entry` passes.
    pub fn accepts(&self, spec: &SuiteSpec, entry: &Entry) -> bool {
        let value = match self.key {
            FilterKey::Env => spec.envs[entry.env].id.clone(),
            FilterKey::Tier => entry.tier.clone(),
            FilterKey::Agent => spec.agents[entry.agent].name.clone(),
            FilterKey::Seed => entry.seed.to_string(),
        };
        self.values.contains(&value)
    }

    /// Fails when a value matches nothing in the suite (most likely a typo).
    pub fn check(&self, spec: &SuiteSpec, all: &[Entry]) -> anyhow::Result<()> {
        for v in &self.values {
            let one = Filter {
                key: self.key,
                values: vec![v.clone()],
            };
            if !all.iter().any(|e| one.accepts(spec, e)) {
                let known: Vec<String> = match self.key {
                    FilterKey::Env => spec.envs.iter().map(|e| e.id.clone()).collect(),
                    FilterKey::Tier => {
                        let mut t: Vec<String> =
                            spec.envs.iter().flat_map(|e| e.tiers.clone()).collect();
                        t.dedup();
                        t
                    }
                    FilterKey::Agent => spec.agents.iter().map(|a| a.name.clone()).collect(),
                    FilterKey::Seed => spec.seeds.iter().map(u64::to_string).collect(),
                };
                bail!(
                    "--filter: `{v}` matches no entry of {}; expected one of {}",
                    spec.path.display(),
                    known.join(", ")
                );
            }
        }
        Ok(())
    }
}
