//! Suites past one process: several workers on one output folder run every entry
//! exactly once, collect every dataset once and wait for warm-start sources; `flowrl
//! suite slurm` writes job arrays for the unfinished entries only; and, on a real
//! single-node Slurm (`scripts/slurm-local.sh`), a submitted suite, with one task
//! killed mid-training and resubmitted, ends with the numbers of a local run.
//!
//! The Slurm test skips with the reason when Slurm is not installed or cannot start,
//! unless `FLOWRL_REQUIRE_SLURM=1` (as in `.ci/run`), which turns the skip into a
//! failure.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flowrl::suite::{self, EntryRecord, Resources, SlurmOptions, SuiteOptions, SuiteSpec};

/// Six entries: two T-Mazes (the longer warm-started from the shorter's models) and
/// Pendulum, each with two agents sharing the dataset. Pendulum trains longer, so a
/// task can be killed mid-training.
const SUITE: &str = r#"
[suite]
name = "cluster"
seeds = [0]
tiers = ["medium-expert"]

[dataset]
episodes = 6
seed = 3

[eval]
episodes = 2
seed = 99

[base]
agent.width = 16
agent.layers = 1
agent.dropout = 0.0
agent.context = 4
train.steps = 8
train.batch = 4
train.warmup_steps = 2
train.log_every = 4
train.checkpoint_every = 4
train.reward_scale = 1.0

[[env]]
id = "TMaze-Passive-L4"
targets = [1.0]

[[env]]
id = "TMaze-Passive-L9"
targets = [1.0]
warm_start = "TMaze-Passive-L4"

[[env]]
id = "Pendulum-v1"
targets = [-150.0]
tiers = ["medium"]
set.train.steps = 1500
set.train.checkpoint_every = 25

[[agent]]
name = "dff-ep"
kind = "decision-flowformer"
context_mode = "episode"

[[agent]]
name = "mlp-bc"
kind = "mlp-bc"
"#;

/// The entry a chaos check kills mid-training.
const VICTIM: &str = "Pendulum-v1/medium/dff-ep/seed0";

/// Writes the suite config into `dir`.
fn write_suite(dir: &Path) -> PathBuf {
    let path = dir.join("cluster.toml");
    std::fs::write(&path, SUITE).unwrap();
    path
}

/// Every result of a finished suite folder by entry id, without the timings (which
/// differ between runs by nature) and with the output folder's path as `<out>`.
fn numbers(out: &Path) -> BTreeMap<String, serde_json::Value> {
    let spec = SuiteSpec::load(&out.join("suite.toml"), &[]).unwrap();
    let mut found = BTreeMap::new();
    for entry in suite::entry::entries(&spec) {
        let path = entry.result_file(out, &spec);
        let record =
            EntryRecord::read(&path).unwrap_or_else(|e| panic!("{}: {e:#}", entry.id(&spec)));
        let mut value = serde_json::to_value(&record).unwrap();
        // Warm starts name a run folder inside the output folder.
        let config = record
            .config_toml
            .replace(&out.display().to_string(), "<out>");
        value["config_toml"] = config.into();
        value["train"]["seconds"] = 0.into();
        value["train"]["cpu_seconds"] = 0.into();
        value["eval_seconds"] = 0.into();
        value["eval_cpu_seconds"] = 0.into();
        found.insert(entry.id(&spec), value);
    }
    assert_eq!(found.len(), 6);
    found
}

/// The suite run locally by one process (computed once per test binary).
fn reference() -> &'static BTreeMap<String, serde_json::Value> {
    static REFERENCE: OnceLock<BTreeMap<String, serde_json::Value>> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let config = write_suite(dir.path());
        let out = dir.path().join("out");
        let (ok, stdout, stderr) = common::flowrl(
            &[
                "suite",
                "--config",
                config.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            dir.path(),
            &[],
        );
        assert!(ok, "{stdout}\n{stderr}");
        numbers(&out)
    })
}

/// `flowrl suite` on the same folder as a second process, started now.
fn spawn_worker(config: &Path, out: &Path, cwd: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_flowrl"))
        .args(["suite", "--config"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .current_dir(cwd)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn two_workers_on_one_folder_run_each_entry_once_with_one_process_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_suite(dir.path());
    let out = dir.path().join("out");
    let workers = [
        spawn_worker(&config, &out, dir.path()),
        spawn_worker(&config, &out, dir.path()),
    ];
    let mut stdout = String::new();
    for worker in workers {
        let output = worker.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout.push_str(&text);
    }
    // Every entry was run by exactly one of them, every dataset collected once.
    let spec = SuiteSpec::load(&config, &[]).unwrap();
    for entry in suite::entry::entries(&spec) {
        let runs = stdout
            .matches(&format!("entry {} (", entry.id(&spec)))
            .count();
        assert_eq!(runs, 1, "{} ran {runs} times:\n{stdout}", entry.id(&spec));
    }
    assert_eq!(stdout.matches("  collected ").count(), 3, "{stdout}");
    assert_eq!(&numbers(&out), reference());
}

/// `flowrl suite slurm` without submitting, with every flag.
fn slurm_options(config: &Path, out: &Path) -> SlurmOptions {
    SlurmOptions {
        suite: SuiteOptions {
            config: config.to_path_buf(),
            out: Some(out.to_path_buf()),
            ..SuiteOptions::default()
        },
        flowrl: PathBuf::from(env!("CARGO_BIN_EXE_flowrl")),
        resources: Resources {
            partition: Some("debug".into()),
            time: Some("0:30:00".into()),
            cpus_per_task: 1,
            mem: Some("2G".into()),
            throttle: Some(2),
            extra: vec!["--account=rl".into(), "#SBATCH --qos=short".into()],
        },
        submit: false,
        wait: false,
        poll_seconds: 0.5,
    }
}

#[test]
fn slurm_files_hold_one_task_per_unfinished_entry_and_arrays_after_their_sources() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_suite(dir.path());
    let out = dir.path().join("out");
    let outcome = suite::slurm::run(&slurm_options(&config, &out)).unwrap();
    // Indices 0 1 | 2 3 | 4 5 = L4, L9 (warm-started from L4), Pendulum.
    assert_eq!(outcome.arrays, vec![vec![0, 1, 4, 5], vec![2, 3]]);
    assert!(outcome.jobs.is_empty());
    let slurm = out.join("slurm");
    let sbatch = std::fs::read_to_string(slurm.join("suite.sbatch")).unwrap();
    let out_abs = std::path::absolute(&out).unwrap();
    for line in [
        "#SBATCH --array=0-1,4-5%2".to_string(),
        format!(
            "#SBATCH --output={}/slurm/logs/entry-%a.log",
            out_abs.display()
        ),
        "#SBATCH --cpus-per-task=1".into(),
        "#SBATCH --partition=debug".into(),
        "#SBATCH --time=0:30:00".into(),
        "#SBATCH --mem=2G".into(),
        "#SBATCH --account=rl".into(),
        "#SBATCH --qos=short".into(),
        format!(
            "exec {} suite --config {} --out {} --entry \"$SLURM_ARRAY_TASK_ID\"",
            env!("CARGO_BIN_EXE_flowrl"),
            std::path::absolute(&config).unwrap().display(),
            out_abs.display()
        ),
    ] {
        assert!(
            sbatch.lines().any(|l| l == line),
            "no `{line}` in:\n{sbatch}"
        );
    }
    let submit = std::fs::read_to_string(slurm.join("submit.sh")).unwrap();
    for line in [
        "a0=$(submit --array=0-1,4-5%2 suite.sbatch)",
        "a1=$(submit --array=2-3%2 --dependency=afterany:$a0 suite.sbatch)",
        "submit --dependency=afterany:$a0:$a1 report.sbatch",
    ] {
        assert!(
            submit.lines().any(|l| l == line),
            "no `{line}` in:\n{submit}"
        );
    }
    let report = std::fs::read_to_string(slurm.join("report.sbatch")).unwrap();
    assert!(report.contains(" suite report --config "), "{report}");
    let table = std::fs::read_to_string(slurm.join("entries.tsv")).unwrap();
    assert!(
        table.contains("4\tPendulum-v1/medium/dff-ep/seed0\tslurm/logs/entry-4.log"),
        "{table}"
    );

    // Once the T-Maze L4 entries are done, only the others are submitted, the
    // warm-started ones now in the first array.
    let l4 = SuiteOptions {
        filters: vec!["env=TMaze-Passive-L4".parse().unwrap()],
        ..slurm_options(&config, &out).suite
    };
    assert_eq!(suite::run(&l4).unwrap().ran, 2);
    let again = suite::slurm::run(&slurm_options(&config, &out)).unwrap();
    assert_eq!(again.arrays, vec![vec![2, 3, 4, 5]]);
    // A filter narrows the arrays and is passed on to the tasks.
    let filtered = SlurmOptions {
        suite: SuiteOptions {
            filters: vec!["agent=mlp-bc".parse().unwrap()],
            ..slurm_options(&config, &out).suite
        },
        ..slurm_options(&config, &out)
    };
    assert_eq!(
        suite::slurm::run(&filtered).unwrap().arrays,
        vec![vec![1, 2]]
    );
    let sbatch = std::fs::read_to_string(slurm.join("suite.sbatch")).unwrap();
    assert!(
        sbatch.contains(" --filter agent=mlp-bc --entry "),
        "{sbatch}"
    );
}

/// A single-node Slurm started by `scripts/slurm-local.sh`, stopped when dropped.
struct LocalSlurm {
    state: tempfile::TempDir,
    conf: String,
}

impl LocalSlurm {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-local.sh")
    }

    /// Starts it, or says why it cannot.
    fn start() -> Result<LocalSlurm, String> {
        if !Command::new("sh")
            .args([
                "-c",
                "command -v sbatch && command -v slurmctld && command -v munged",
            ])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return Err("Slurm (slurm-wlm) is not installed".into());
        }
        let state = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg(Self::script())
            .arg("start")
            .arg(state.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let conf = stdout
            .lines()
            .last()
            .and_then(|l| l.strip_prefix("export SLURM_CONF="))
            .map(str::to_string);
        match conf {
            Some(conf) if out.status.success() => Ok(LocalSlurm { state, conf }),
            _ => Err(format!(
                "scripts/slurm-local.sh start failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    }
}

impl Drop for LocalSlurm {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(Self::script())
            .arg("stop")
            .arg(self.state.path())
            .status();
    }
}

/// `flowrl suite slurm --submit --wait` with 1 CPU per task, started now.
fn submit(config: &Path, out: &Path, cwd: &Path, slurm: &LocalSlurm) -> Child {
    Command::new(env!("CARGO_BIN_EXE_flowrl"))
        .args(["suite", "slurm", "--config"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .args(["--cpus-per-task", "1", "--mem", "1G", "--submit", "--wait"])
        .current_dir(cwd)
        .env("SLURM_CONF", &slurm.conf)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The process ids of `flowrl suite ... --entry <index>` tasks writing into `out`.
fn task_pids(out: &Path, index: usize) -> Vec<u32> {
    let mut pids = Vec::new();
    for proc_entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = proc_entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(proc_entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let names_out = args.iter().any(|a| Path::new(a) == out);
        let entry = args
            .windows(2)
            .any(|w| w[0] == "--entry" && w[1] == index.to_string());
        if names_out && entry {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn a_slurm_submitted_suite_survives_a_killed_task_and_matches_a_local_run() {
    let slurm = match LocalSlurm::start() {
        Ok(slurm) => slurm,
        Err(why) if std::env::var("FLOWRL_REQUIRE_SLURM").as_deref() != Ok("1") => {
            eprintln!("skipped: {why}");
            return;
        }
        Err(why) => panic!("FLOWRL_REQUIRE_SLURM=1 but {why}"),
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let config = write_suite(dir.path());
    let out = std::path::absolute(dir.path().join("out")).unwrap();
    let spec = SuiteSpec::load(&config, &[]).unwrap();
    let all = suite::entry::entries(&spec);
    let victim = all.iter().position(|e| e.id(&spec) == VICTIM).unwrap();
    let victim_run = all[victim].run_dir(&out, &spec);

    // Chaos: once the victim's task has written a checkpoint, kill its process.
    let first = submit(&config, &out, dir.path(), &slurm);
    let deadline = Instant::now() + Duration::from_secs(600);
    while !victim_run.join("checkpoints/latest").exists() {
        assert!(
            Instant::now() < deadline,
            "the victim never wrote a checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids = task_pids(&out, victim);
    assert_eq!(pids.len(), 1, "expected one task process, found {pids:?}");
    let killed = Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = first.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("1 entries are unfinished"),
        "{stdout}\n{stderr}"
    );
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    let row = format!("| {VICTIM} | interrupted |  | [slurm/logs/entry-{victim}.log]");
    assert!(md.contains(&row), "no `{row}` in:\n{md}");
    assert!(md.contains("5 of 6 entries done"), "{md}");

    // Resubmitting runs only the victim, from its checkpoint.
    let second = submit(&config, &out, dir.path(), &slurm)
        .wait_with_output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(
        second.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        stdout.contains("1 unfinished entries in 1 array(s)"),
        "{stdout}"
    );
    let log = std::fs::read_to_string(out.join(format!("slurm/logs/entry-{victim}.log"))).unwrap();
    assert!(log.contains(&format!("entry {VICTIM} (partial)")), "{log}");
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        md.contains("6 of 6 entries done") && !md.contains("Unfinished"),
        "{md}"
    );
    assert_eq!(&numbers(&out), reference());
    eprintln!(
        "the Slurm suite, killed task and resubmission took {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
