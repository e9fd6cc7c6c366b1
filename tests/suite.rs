//! The learning-quality suite end to end: a tiny matrix runs in a temporary folder,
//! writes results.md with one table per environment (rows = tiers, columns = agents)
//! and its charts, records every entry, skips finished entries on rerun, redoes only
//! a missing result, refuses results made with another config, and rejects bad suite
//! configs naming the file, key, expected and found.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use flowrl::suite::{self, EntryRecord, EntryState, SuiteOptions, SuiteSpec};
use flowrl_agents::named::Named;

/// Two environments (one with success), two tiers on one, two agents (one trained
/// and evaluated on whole episodes), one seed: 6 entries of 20 training steps.
const TINY: &str = r#"
[suite]
name = "tiny"
seeds = [0]
tiers = ["medium", "medium-replay"]

[dataset]
episodes = 6
seed = 3

[eval]
episodes = 3
seed = 99

[base]
agent.width = 16
agent.layers = 1
agent.dropout = 0.0
train.steps = 20
train.batch = 4
train.warmup_steps = 2
train.log_every = 10
train.checkpoint_every = 10

[[env]]
id = "Pendulum-v1"
targets = [-150.0, -600.0]

[[env]]
id = "TMaze-Passive-L5"
targets = [1.0]
tiers = ["medium-expert"]
set.train.reward_scale = 1.0

[[agent]]
name = "dff-ep"
kind = "decision-flowformer"
context = 4
context_mode = "episode"
eval_context_mode = "episode"

[[agent]]
name = "mlp-bc"
kind = "mlp-bc"
"#;

fn write_suite(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("tiny.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn options(config: &Path, out: &Path) -> SuiteOptions {
    SuiteOptions {
        config: config.to_path_buf(),
        out: Some(out.to_path_buf()),
        ..SuiteOptions::default()
    }
}

fn result_files(out: &Path) -> Vec<(PathBuf, SystemTime)> {
    let mut found = Vec::new();
    let mut stack = vec![out.join("results")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
                found.push((path, modified));
            }
        }
    }
    found.sort();
    found
}

/// The rows of the markdown table following the line `## <env>` (header included).
fn table_of<'a>(md: &'a str, env: &str) -> Vec<Vec<&'a str>> {
    let section = md
        .split(&format!("## {env}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("no section for {env} in:\n{md}"));
    section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter(|l| !l.contains("---"))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect()
}

#[test]
fn tiny_suite_runs_records_reports_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_suite(dir.path(), TINY);
    let out = dir.path().join("out");

    let listed = suite::run(&SuiteOptions {
        dry_run: true,
        ..options(&config, &out)
    })
    .unwrap();
    assert_eq!(listed.selected.len(), 6);
    assert!(listed
        .selected
        .iter()
        .all(|(_, s)| *s == EntryState::Pending));
    assert!(!out.exists(), "a dry run writes nothing");

    let first = suite::run(&options(&config, &out)).unwrap();
    assert_eq!(first.ran, 6);
    let results = result_files(&out);
    assert_eq!(results.len(), 6, "{results:?}");

    // Every entry records what reproduces it.
    let record =
        EntryRecord::read(&out.join("results/Pendulum-v1/medium-replay/dff-ep/seed0.json"))
            .unwrap();
    assert_eq!(record.flowrl_version, env!("CARGO_PKG_VERSION"));
    assert_eq!((record.seed, record.tier.as_str()), (0, "medium-replay"));
    let resolved = record.config().unwrap();
    assert_eq!(resolved.dataset.env.as_deref(), Some("Pendulum-v1"));
    assert_eq!(resolved.dataset.episodes, Some(6));
    assert_eq!(resolved.train.steps, 20);
    assert_eq!(resolved.eval.seed, 99);
    assert_eq!(
        resolved.eval.context_mode.map(|m| m.name()).as_deref(),
        Some("episode")
    );
    assert_eq!(record.train.steps, 20);
    assert_eq!(record.eval.context, "episode");
    assert_eq!(record.eval.targets.len(), 2);
    assert_eq!(record.eval.targets[0].episodes, 3);
    // Behaviour cloning ignores the return: it runs the headline target only.
    let bc = EntryRecord::read(&out.join("results/Pendulum-v1/medium/mlp-bc/seed0.json")).unwrap();
    assert_eq!(bc.eval.targets.len(), 1);

    // One dataset per (env, tier), shared by the agents.
    let datasets = std::fs::read_dir(out.join("datasets")).unwrap().count();
    assert_eq!(datasets, 3);

    let md = std::fs::read_to_string(first.report.unwrap()).unwrap();
    let pendulum = table_of(&md, "Pendulum-v1");
    assert_eq!(pendulum[0], ["tier", "dff-ep", "mlp-bc", "dataset"]);
    assert_eq!(pendulum.len(), 3, "header + 2 tiers: {pendulum:?}");
    assert_eq!(
        (pendulum[1][0], pendulum[2][0]),
        ("medium", "medium-replay")
    );
    for row in &pendulum[1..] {
        assert!(row[1].contains(" ± ") && row[2].contains(" ± "), "{row:?}");
        assert!(!row[1].contains("success"), "{row:?}");
    }
    let tmaze = table_of(&md, "TMaze-Passive-L5");
    assert_eq!(tmaze.len(), 2, "{tmaze:?}");
    assert!(tmaze[1][1].contains("success"), "{tmaze:?}");
    assert!(out.join("plots/Pendulum-v1.png").is_file());
    assert!(out.join("plots/TMaze-Passive-L5-success.png").is_file());
    assert!(out.join("suite.toml").is_file());

    // A rerun skips every finished entry and leaves its result untouched.
    let again = suite::run(&options(&config, &out)).unwrap();
    assert_eq!(again.ran, 0);
    assert!(again.selected.iter().all(|(_, s)| *s == EntryState::Done));
    assert_eq!(result_files(&out), results);

    // A lost result (e.g. interrupted during evaluation) is redone from its trained
    // run, and only it.
    let lost = out.join("results/TMaze-Passive-L5/medium-expert/dff-ep/seed0.json");
    std::fs::remove_file(&lost).unwrap();
    let filtered = suite::run(&SuiteOptions {
        dry_run: true,
        filters: vec!["env=TMaze-Passive-L5".parse().unwrap()],
        ..options(&config, &out)
    })
    .unwrap();
    let states: Vec<EntryState> = filtered.selected.iter().map(|(_, s)| *s).collect();
    assert_eq!(states, [EntryState::Partial, EntryState::Done]);
    let redo = suite::run(&options(&config, &out)).unwrap();
    assert_eq!(redo.ran, 1);
    let now = result_files(&out);
    assert_eq!(now.len(), 6);
    for ((path, before), (_, after)) in results.iter().zip(&now) {
        assert_eq!(path == &lost, before != after, "{}", path.display());
    }

    // Results made with another config are stale: listed as such, never mixed in.
    let changed = SuiteOptions {
        set: vec!["train.steps=30".into()],
        ..options(&config, &out)
    };
    let stale = suite::run(&SuiteOptions {
        dry_run: true,
        ..changed.clone()
    })
    .unwrap();
    assert!(stale.selected.iter().all(|(_, s)| *s == EntryState::Stale));
    let err = format!("{:#}", suite::run(&changed).unwrap_err());
    assert!(err.contains("different config"), "{err}");
}

/// The error of loading `text` as a suite config.
fn load_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write_suite(dir.path(), text);
    let err = SuiteSpec::load(&path, &[]).unwrap_err().to_string();
    assert!(err.contains("tiny.toml"), "names the file: {err}");
    err
}

#[test]
fn bad_suite_configs_are_rejected_with_file_key_expected_and_found() {
    let cases: [(&str, &str, &[&str]); 9] = [
        (
            "seeds = [0]",
            "seeds = [0, \"one\"]",
            &[
                "`suite.seeds[1]` (line 4)",
                "expected an integer >= 0",
                "\"one\"",
            ],
        ),
        (
            "tiers = [\"medium\", \"medium-replay\"]",
            "tiers = [\"medium\", \"great\"]",
            &[
                "`suite.tiers[1]`",
                "expected one of random, medium",
                "\"great\"",
            ],
        ),
        (
            "[eval]\nepisodes = 3",
            "[eval]\nepisodes = 0",
            &[
                "`eval.episodes`",
                "expected an integer >= 1",
                "found the integer 0",
            ],
        ),
        (
            "id = \"Pendulum-v1\"",
            "id = \"Pendulum-v7\"",
            &["`env[0].id`", "unknown environment id `Pendulum-v7`"],
        ),
        (
            "kind = \"mlp-bc\"",
            "kind = \"mlp\"",
            &["`agent[1].kind`", "expected an agent kind", "found `mlp`"],
        ),
        (
            "agent.width = 16",
            "agent.width = 16\ncolour = \"blue\"",
            &["`base`", "`colour`: unknown key"],
        ),
        (
            "targets = [1.0]",
            "targets = [1.0]\nflavour = 1",
            &[
                "`env[1].flavour`",
                "unknown key; valid keys in `env[1]`: id, targets",
            ],
        ),
        (
            "context = 4",
            "context = 4\nset.dataset.tier = \"expert\"",
            &["`agent[0].set.dataset.tier`", "set by the suite matrix"],
        ),
        (
            "agent.layers = 1",
            "agent.layers = 0",
            &[
                "`base`",
                "invalid experiment config",
                "`agent.layers`",
                "found 0",
            ],
        ),
    ];
    for (from, to, expected) in cases {
        assert!(TINY.contains(from), "{from}");
        let err = load_error(&TINY.replacen(from, to, 1));
        for part in expected {
            assert!(err.contains(part), "expected `{part}` in: {err}");
        }
    }
    let err = load_error("[suite\nseeds = [0]");
    assert!(
        err.contains("tiny.toml:1:") && err.contains("invalid TOML"),
        "{err}"
    );
    let err = load_error(&TINY.replace("[[agent]]", "[[agents]]"));
    assert!(
        err.contains("`agents`") && err.contains("unknown key"),
        "{err}"
    );
}

/// Errors found while the file is read name the key with the line of the key or
/// value at fault, even inside arrays of tables.
#[test]
fn bad_values_are_located_at_their_line() {
    let cases = [
        (
            "targets = [1.0]\n",
            "targets = [1.0]\nflavour = 1\n",
            "`env[1].flavour` (line 32): unknown key; valid keys in `env[1]`: id, targets, \
             tiers, dataset_episodes, set, warm_start",
        ),
        (
            "episodes = 6",
            "episodes = -1",
            "`dataset.episodes` (line 8): expected an integer >= 1, found the integer -1",
        ),
        (
            "targets = [1.0]",
            "targets = []",
            "`env[1].targets` (line 31): expected a non-empty array of numbers, found an \
             empty array",
        ),
        (
            "tiers = [\"medium-expert\"]",
            "tiers = [\"medium-expert\", \"medium-expert\"]",
            "`env[1].tiers` (line 32): `medium-expert` is listed twice",
        ),
        (
            "seeds = [0]",
            "seeds = [0, 1, 0]",
            "`suite.seeds` (line 4): 0 is listed twice",
        ),
        (
            "set.train.reward_scale = 1.0",
            "set = 3",
            "`env[1].set` (line 33): expected a table of keys, found the integer 3",
        ),
        (
            "context = 4",
            "context = 4.5",
            "`agent[0].context` (line 38): expected an integer >= 1, found the number 4.5",
        ),
        (
            "eval_context_mode = \"episode\"",
            "eval_context_mode = true",
            "`agent[0].eval_context_mode` (line 40): expected a non-empty string, found the \
             boolean true",
        ),
    ];
    for (from, to, expected) in cases {
        assert!(TINY.contains(from), "{from}");
        let err = load_error(&TINY.replacen(from, to, 1));
        assert!(err.ends_with(expected), "expected `{expected}` in: {err}");
    }
}

#[test]
fn entries_by_index_and_shards() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_suite(dir.path(), TINY);
    let out = dir.path().join("out");
    let ids = |pick: suite::Pick| -> Vec<String> {
        let listed = suite::run(&SuiteOptions {
            dry_run: true,
            pick,
            ..options(&config, &out)
        })
        .unwrap();
        listed.selected.into_iter().map(|(id, _)| id).collect()
    };
    let all = ids(suite::Pick::All);
    assert_eq!(all.len(), 6);
    assert_eq!(ids(suite::Pick::Entry(4)), [all[4].clone()]);
    // Two shards split the entries between them, each once.
    let first = ids("0/2".parse::<suite::Shard>().unwrap().into());
    let second = ids("1/2".parse::<suite::Shard>().unwrap().into());
    assert_eq!(first, [all[0].clone(), all[2].clone(), all[4].clone()]);
    assert_eq!(second, [all[1].clone(), all[3].clone(), all[5].clone()]);
    // Indices count the entries left after --filter.
    let filtered = suite::run(&SuiteOptions {
        dry_run: true,
        filters: vec!["agent=mlp-bc".parse().unwrap()],
        pick: suite::Pick::Entry(1),
        ..options(&config, &out)
    })
    .unwrap();
    assert_eq!(filtered.selected[0].0, all[3]);
    let err = suite::run(&SuiteOptions {
        pick: suite::Pick::Entry(6),
        ..options(&config, &out)
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("--entry 6") && err.contains("from 0 to 5"),
        "{err}"
    );
    // Running one entry runs it alone; running it again does nothing.
    let one = SuiteOptions {
        pick: suite::Pick::Entry(4),
        ..options(&config, &out)
    };
    assert_eq!(suite::run(&one).unwrap().ran, 1);
    assert_eq!(result_files(&out).len(), 1);
    assert_eq!(suite::run(&one).unwrap().ran, 0);
}

#[test]
fn agents_restricted_to_some_environments_and_tiers() {
    let restricted = format!(
        "{TINY}\n[[agent]]\nname = \"dt-mr\"\nkind = \"decision-transformer\"\n\
         envs = [\"Pendulum-v1\"]\ntiers = [\"medium-replay\"]\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let spec = SuiteSpec::load(&write_suite(dir.path(), &restricted), &[]).unwrap();
    let entries = suite::entry::entries(&spec);
    let names: Vec<String> = entries
        .iter()
        .map(|e| {
            let env = &spec.envs[e.env].id;
            format!("{env}/{}/{}", e.tier, spec.agents[e.agent].name)
        })
        .collect();
    // TINY's 6 entries and the restricted agent's one cell.
    assert_eq!(entries.len(), 7, "{names:?}");
    assert_eq!(
        names
            .iter()
            .filter(|n| n.ends_with("/dt-mr"))
            .collect::<Vec<_>>(),
        ["Pendulum-v1/medium-replay/dt-mr"]
    );
    // An id that is not an environment of the suite, a tier none of them has.
    let err = load_error(&restricted.replace("envs = [\"Pendulum-v1\"]", "envs = [\"Nope-v0\"]"));
    assert!(
        err.contains("`agent[2].envs`")
            && err.contains("Pendulum-v1, TMaze-Passive-L5")
            && err.contains("found `Nope-v0`"),
        "{err}"
    );
    let err =
        load_error(&restricted.replace("tiers = [\"medium-replay\"]\n", "tiers = [\"expert\"]\n"));
    assert!(
        err.contains("`agent[2].tiers`") && err.contains("found `expert`"),
        "{err}"
    );
}

#[test]
fn cli_reports_a_bad_suite_config_and_a_bad_filter() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_suite(dir.path(), &TINY.replace("seeds = [0]", "seeds = 0"));
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_flowrl"))
            .arg("suite")
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["--dry-run"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("`suite.seeds` (line 4): expected a non-empty array of integers >= 0, found the integer 0"),
        "{stderr}"
    );
    std::fs::write(&config, TINY).unwrap();
    let (code, stderr) = run(&["--dry-run", "--filter", "env=CartPole-v1"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("`CartPole-v1` matches no entry") && stderr.contains("Pendulum-v1"),
        "{stderr}"
    );
    let (code, stderr) = run(&["--dry-run", "--filter", "colour=red"]);
    assert_eq!(code, Some(2), "clap rejects the argument: {stderr}");
    assert!(
        stderr.contains("expected the key env, tier, agent or seed"),
        "{stderr}"
    );
}

/// Every shipped suite (`configs/suite/*.toml`) loads, and every one of its entries
/// resolves to a valid experiment config.
#[test]
fn every_ready_suite_loads_and_its_entries_resolve() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/suite");
    let mut suites = 0;
    for file in std::fs::read_dir(&dir).unwrap() {
        let path = file.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let spec = SuiteSpec::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
        let entries = suite::entry::entries(&spec);
        assert!(!entries.is_empty(), "{}: no entries", path.display());
        for entry in &entries {
            let (env, agent) = (&spec.envs[entry.env], &spec.agents[entry.agent]);
            spec.config(env, &entry.tier, agent, entry.seed)
                .unwrap_or_else(|e| panic!("{} entry {}: {e}", path.display(), env.id));
        }
        suites += 1;
    }
    assert!(
        suites >= 2,
        "expected the classic and long-memory suites in {}",
        dir.display()
    );
}

/// A curriculum: the second T-Maze starts each agent from its model on the first.
const CURRICULUM: &str = r#"
[suite]
seeds = [0]
tiers = ["medium-expert"]

[dataset]
episodes = 6

[eval]
episodes = 2

[base]
agent.width = 16
agent.layers = 1
agent.dropout = 0.0
agent.context = 4
train.steps = 6
train.batch = 4
train.warmup_steps = 2
train.reward_scale = 1.0

[[env]]
id = "TMaze-Passive-L4"
targets = [1.0]

[[env]]
id = "TMaze-Passive-L9"
targets = [1.0]
warm_start = "TMaze-Passive-L4"

[[agent]]
name = "dff-ep"
kind = "decision-flowformer"
context_mode = "episode"

[[agent]]
name = "dt"
kind = "decision-transformer"
"#;

#[test]
fn warm_start_entries_start_from_the_earlier_environments_trained_models() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_suite(dir.path(), CURRICULUM);
    let out = dir.path().join("out");

    // The warm-started entries alone cannot run before their sources.
    let alone = SuiteOptions {
        filters: vec!["env=TMaze-Passive-L9".parse().unwrap()],
        ..options(&config, &out)
    };
    let err = format!("{:#}", suite::run(&alone).unwrap_err());
    assert!(
        err.contains("TMaze-Passive-L4/medium-expert/dff-ep/seed0") && err.contains("not finished"),
        "{err}"
    );

    // The failure is recorded, and the report lists the entry as failed with its error.
    let failed = "TMaze-Passive-L9/medium-expert/dff-ep/seed0";
    let failure = out.join(format!("failures/{failed}.txt"));
    assert!(std::fs::read_to_string(&failure)
        .unwrap()
        .contains("not finished"));
    let md = std::fs::read_to_string(suite::report(&options(&config, &out)).unwrap()).unwrap();
    let row = format!("| {failed} | failed | suite entry {failed} starts from");
    assert!(md.contains(&row), "no `{row}` in:\n{md}");

    let done = suite::run(&options(&config, &out)).unwrap();
    assert_eq!(done.ran, 4);
    assert!(!failure.exists(), "a finished entry's failure is forgotten");
    let md = std::fs::read_to_string(done.report.unwrap()).unwrap();
    assert!(!md.contains("Unfinished"), "{md}");
    // The same output folder by another name: warm starts name run folders in it, yet
    // nothing is stale or run again.
    #[cfg(unix)]
    {
        let link = dir.path().join("out-link");
        std::os::unix::fs::symlink(&out, &link).unwrap();
        assert_eq!(suite::run(&options(&config, &link)).unwrap().ran, 0);
    }
    for agent in ["dff-ep", "dt"] {
        let source = out.join(format!("runs/TMaze-Passive-L4/medium-expert/{agent}/seed0"));
        let first = EntryRecord::read(&out.join(format!(
            "results/TMaze-Passive-L4/medium-expert/{agent}/seed0.json"
        )))
        .unwrap();
        assert_eq!(first.config().unwrap().train.init_from, None);
        let record = EntryRecord::read(&out.join(format!(
            "results/TMaze-Passive-L9/medium-expert/{agent}/seed0.json"
        )))
        .unwrap();
        assert_eq!(
            record.config().unwrap().train.init_from,
            Some(source.clone())
        );
        // The L9 run's timestep table (10 rows) is the trained L4 table (5 rows)
        // stretched, moved by 6 small steps only.
        let (old, new) = (
            flowrl::train::load(&source, None).unwrap(),
            flowrl::train::load(
                &out.join(format!("runs/TMaze-Passive-L9/medium-expert/{agent}/seed0")),
                None,
            )
            .unwrap(),
        );
        let table = |run: &flowrl::train::LoadedRun| {
            let p = run.agent.params();
            let id = p.id("embed_timestep.weight").unwrap();
            (p.shape(id).to_vec(), p.values(id))
        };
        let ((old_shape, old_rows), (new_shape, new_rows)) = (table(&old), table(&new));
        assert_eq!((old_shape[0], new_shape[0]), (5, 10), "{agent}");
        let w = old_shape[1];
        let row = |v: &[f32], r: usize| v[r * w..(r + 1) * w].to_vec();
        let dist = |a: Vec<f32>, b: Vec<f32>| {
            a.iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max)
        };
        // Row 9 (the junction) comes from row 4, not from a fresh random row.
        assert!(dist(row(&new_rows, 9), row(&old_rows, 4)) < 0.1, "{agent}");
        assert!(dist(row(&new_rows, 0), row(&old_rows, 0)) < 0.1, "{agent}");
    }

    // Rerunning with the same output folder finds every entry done.
    let again = suite::run(&options(&config, &out)).unwrap();
    assert_eq!(again.ran, 0);

    // The report plots success against memory length for the T-Maze family.
    let md = std::fs::read_to_string(again.report.unwrap()).unwrap();
    let section = md
        .split("### TMaze-Passive\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no memory-length section in:\n{md}"));
    let rows: Vec<Vec<&str>> = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter(|l| !l.contains("---"))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 3, "{section}");
    assert_eq!(rows[0], ["medium-expert: memory length", "dff-ep", "dt"]);
    assert_eq!((rows[1][0], rows[2][0]), ("4", "9"));
    assert!(
        rows[1..]
            .iter()
            .flatten()
            .skip(1)
            .all(|c| c.ends_with('%') || c.parse::<u32>().is_ok()),
        "{rows:?}"
    );
    assert!(md.contains("](plots/TMaze-Passive-success-vs-memory.png)"));
    let l9 = md.split("## TMaze-Passive-L9\n").nth(1).unwrap();
    assert!(
        l9.split("## ")
            .next()
            .unwrap()
            .contains("trained model of the same agent, tier and seed on TMaze-Passive-L4"),
        "{l9}"
    );
    let l4 = md.split("## TMaze-Passive-L4\n").nth(1).unwrap();
    assert!(
        !l4.split("## ").next().unwrap().contains("Curriculum"),
        "{l4}"
    );
    assert!(out
        .join("plots/TMaze-Passive-success-vs-memory.png")
        .is_file());

    // Bad warm starts are rejected when the suite loads.
    for (to, expected) in [
        (
            "warm_start = \"TMaze-Passive-L9\"",
            "listed before this one",
        ),
        ("warm_start = \"Pendulum-v1\"", "listed before this one"),
        ("set.train.init_from = \"x\"", "use `warm_start`"),
    ] {
        let text = CURRICULUM.replace("warm_start = \"TMaze-Passive-L4\"", to);
        let err = load_error(&text);
        assert!(err.contains("env[1]") && err.contains(expected), "{err}");
    }
    // ... wherever experiment keys are set.
    let text = CURRICULUM.replacen("[base]\n", "[base]\ntrain.init_from = \"x\"\n", 1);
    assert!(load_error(&text).contains("use `warm_start`"));
    let dir = tempfile::tempdir().unwrap();
    let path = write_suite(dir.path(), CURRICULUM);
    let err = SuiteSpec::load(&path, &["train.init_from=\"x\"".into()]).unwrap_err();
    assert!(err.to_string().contains("use `warm_start`"), "{err}");
    let text = CURRICULUM.replacen(
        "targets = [1.0]\n",
        "targets = [1.0]\ntiers = [\"expert\"]\n",
        1,
    );
    let err = load_error(&text);
    assert!(err.contains("no `medium-expert` tier"), "{err}");
}
