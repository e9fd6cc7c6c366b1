//! `flowrl suite slurm`: a suite's unfinished entries as Slurm job arrays, one array
//! task per entry, on a cluster whose nodes share the output folder.
//!
//! It writes, in `<out>/slurm/`:
//!
//! ```text
//! suite.sbatch    the array job: task id = the entry's index (as `--dry-run` lists it),
//!                 running `flowrl suite ... --entry $SLURM_ARRAY_TASK_ID`
//! report.sbatch   the final job: `flowrl suite report`, results.md and the plots
//! submit.sh       the submission: the array (warm-started entries as later arrays that
//!                 wait for their sources' array), then the report job after all of
//!                 them (`afterany`, so it runs whatever failed); prints the job ids
//! entries.tsv     index, entry id and log file of every submitted entry
//! logs/           entry-<index>.log per task (appended to by later attempts), report-<job>.log
//! ```
//!
//! Workers coordinate through the folder (see [`super::runner::run`]), so resubmitting
//! while tasks still run is safe: an entry is never run twice at once.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use super::entry::{Entry, EntryState};
use super::runner::{Selection, SuiteOptions};
use crate::suite::Pick;

/// The folder of the Slurm files, in the output folder.
const SLURM_DIR: &str = "slurm";
/// The entry-to-log table.
const ENTRIES_FILE: &str = "entries.tsv";

/// What the tasks ask of the scheduler.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time` of each task and of the report job.
    pub time: Option<String>,
    /// `--cpus-per-task` (the entry's threads).
    pub cpus_per_task: u32,
    /// `--mem` of each task.
    pub mem: Option<String>,
    /// At most this many tasks at once (`--array=...%P`).
    pub throttle: Option<u32>,
    /// Further `#SBATCH` lines, e.g. `--account=rl` or `--qos=long`.
    pub extra: Vec<String>,
}

/// What `flowrl suite slurm` is asked to do.
#[derive(Clone, Debug)]
pub struct SlurmOptions {
    /// The suite and its selection (`--entry`/`--shard` are not used).
    pub suite: SuiteOptions,
    /// The flowrl program the jobs run (on the nodes, at this path).
    pub flowrl: PathBuf,
    /// The scheduler request.
    pub resources: Resources,
    /// Submit the jobs.
    pub submit: bool,
    /// After submitting, wait until every job has ended.
    pub wait: bool,
    /// Seconds between two looks at the queue while waiting.
    pub poll_seconds: f64,
}

/// What `flowrl suite slurm` did.
#[derive(Clone, Debug, PartialEq)]
pub struct SlurmOutcome {
    /// Indices of the entries submitted, by warm-start depth (arrays in order).
    pub arrays: Vec<Vec<usize>>,
    /// Job ids printed by `sbatch`, when submitted: the arrays', then the report's.
    pub jobs: Vec<String>,
}

/// Writes the Slurm files and, as asked, submits them and waits.
pub fn run(opts: &SlurmOptions) -> anyhow::Result<SlurmOutcome> {
    if opts.resources.cpus_per_task == 0 {
        bail!("--cpus-per-task: expected at least 1, found 0");
    }
    let suite = SuiteOptions {
        pick: Pick::All,
        ..opts.suite.clone()
    };
    let selection = Selection::of(&suite)?;
    selection.refuse_stale()?;
    selection.write_suite_copy()?;
    let arrays = arrays(&selection);
    let dir = selection.out.join(SLURM_DIR);
    let submit_script = dir.join("submit.sh");
    let mut outcome = SlurmOutcome {
        arrays: arrays.clone(),
        jobs: Vec::new(),
    };
    if arrays.is_empty() {
        println!(
            "suite {}: every selected entry is done; nothing to submit",
            selection.spec.name
        );
        selection.write_report()?;
        return Ok(outcome);
    }
    let files = Files::new(opts, &selection, &suite)?;
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("cannot create {}", dir.join("logs").display()))?;
    let write = |name: &str, text: &str| {
        crate::atomic::write_bytes_atomic(&dir.join(name), text.as_bytes())
    };
    write("suite.sbatch", &files.array_script(&arrays[0]))?;
    write("report.sbatch", &files.report_script())?;
    write("submit.sh", &files.submit_script(&arrays))?;
    write(ENTRIES_FILE, &files.entries_table(&selection))?;
    let pending: usize = arrays.iter().map(Vec::len).sum();
    println!(
        "suite {}: {pending} unfinished entries in {} array(s); wrote {}",
        selection.spec.name,
        arrays.len(),
        dir.display()
    );
    if !opts.submit {
        println!("submit with: bash {}", submit_script.display());
        return Ok(outcome);
    }
    check_array_size(&arrays)?;
    outcome.jobs = submit(&submit_script)?;
    println!(
        "submitted job(s) {} (the last writes the report)",
        outcome.jobs.join(", ")
    );
    if opts.wait {
        wait_for(&outcome.jobs, opts.poll_seconds)?;
        let after = Selection::of(&suite)?;
        let left = after
            .picked
            .iter()
            .filter(|(_, _, _, s)| *s != EntryState::Done)
            .count();
        let report = after.out.join("results.md");
        if left > 0 {
            bail!(
                "{left} entries are unfinished after the Slurm jobs ended: see their logs in \
                 {} ({}); `flowrl suite slurm --submit` submits them again",
                report.display(),
                dir.join("logs").display()
            );
        }
        println!("every entry is done: {}", report.display());
    }
    Ok(outcome)
}

/// The unfinished entries' indices in arrays: entries whose warm-start source is itself
/// unfinished go one array later than it.
fn arrays(selection: &Selection) -> Vec<Vec<usize>> {
    let mut depth: Vec<(&Entry, usize)> = Vec::new();
    let mut arrays: Vec<Vec<usize>> = Vec::new();
    for (index, entry, _, state) in &selection.picked {
        if *state == EntryState::Done {
            continue;
        }
        let d = entry
            .warm_start(&selection.spec)
            .and_then(|source| depth.iter().find(|(e, _)| **e == source))
            .map_or(0, |(_, d)| d + 1);
        depth.push((entry, d));
        if arrays.len() <= d {
            arrays.push(Vec::new());
        }
        arrays[d].push(*index);
    }
    arrays
}

/// The text of the Slurm files of one call.
struct Files {
    /// The suite's name.
    name: String,
    /// `#SBATCH` lines common to every job.
    common: String,
    /// The flowrl command line up to the subcommand's own flags, shell-quoted.
    flowrl: String,
    /// `--config ... --out ... --filter ... --set ...`, shell-quoted.
    selection: String,
    /// The logs folder.
    logs: PathBuf,
    /// At most this many tasks of an array at once.
    throttle: Option<u32>,
}

impl Files {
    fn new(
        opts: &SlurmOptions,
        selection: &Selection,
        suite: &SuiteOptions,
    ) -> anyhow::Result<Self> {
        let absolute = |p: &Path| {
            std::path::absolute(p).with_context(|| format!("cannot make {} absolute", p.display()))
        };
        let out = absolute(&selection.out)?;
        let cwd = std::env::current_dir().context("cannot read the current folder")?;
        let r = &opts.resources;
        let mut common = String::new();
        let _ = writeln!(common, "#SBATCH --chdir={}", cwd.display());
        let _ = writeln!(common, "#SBATCH --cpus-per-task={}", r.cpus_per_task);
        for (flag, value) in [
            ("partition", &r.partition),
            ("time", &r.time),
            ("mem", &r.mem),
        ] {
            if let Some(v) = value {
                let _ = writeln!(common, "#SBATCH --{flag}={v}");
            }
        }
        for line in &r.extra {
            let line = line.trim();
            let line = line.strip_prefix("#SBATCH").unwrap_or(line).trim();
            let _ = writeln!(common, "#SBATCH {line}");
        }
        let mut args = vec![
            "--config".to_string(),
            absolute(&suite.config)?.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        for f in &suite.filters {
            args.extend(["--filter".into(), f.to_string()]);
        }
        for s in &suite.set {
            args.extend(["--set".into(), s.clone()]);
        }
        Ok(Files {
            name: selection.spec.name.clone(),
            common,
            flowrl: quote(&absolute(&opts.flowrl)?.display().to_string()),
            selection: args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "),
            logs: out.join(SLURM_DIR).join("logs"),
            throttle: r.throttle,
        })
    }

    /// `suite.sbatch`: one task per entry of `first` (later arrays are the same file
    /// with their own `--array` on the `sbatch` command line).
    fn array_script(&self, first: &[usize]) -> String {
        format!(
            "#!/bin/bash\n\
             # Suite `{name}`: one array task per entry, written by `flowrl suite slurm`.\n\
             # The task id is the entry's index (`flowrl suite --dry-run` lists them).\n\
             #SBATCH --job-name=flowrl-{name}\n\
             #SBATCH --array={array}\n\
             #SBATCH --output={logs}/entry-%a.log\n\
             #SBATCH --open-mode=append\n\
             {common}\
             export RAYON_NUM_THREADS=\"${{SLURM_CPUS_PER_TASK:-1}}\"\n\
             exec {flowrl} suite {selection} --entry \"$SLURM_ARRAY_TASK_ID\"\n",
            name = self.name,
            array = array_spec(first, self.throttle),
            logs = self.logs.display(),
            common = self.common,
            flowrl = self.flowrl,
            selection = self.selection,
        )
    }

    /// `report.sbatch`: results.md and the plots from whatever finished.
    fn report_script(&self) -> String {
        format!(
            "#!/bin/bash\n\
             # Suite `{name}`: the report after the array jobs, written by `flowrl suite slurm`.\n\
             #SBATCH --job-name=flowrl-{name}-report\n\
             #SBATCH --output={logs}/report-%j.log\n\
             {common}\
             exec {flowrl} suite report {selection}\n",
            name = self.name,
            logs = self.logs.display(),
            common = self.common,
            flowrl = self.flowrl,
            selection = self.selection,
        )
    }

    /// `submit.sh`: submits the arrays in order, each after the one before, then the
    /// report; prints each job id on its own line.
    fn submit_script(&self, arrays: &[Vec<usize>]) -> String {
        let mut s = String::from(
            "#!/bin/bash\n\
             # Submits the suite's jobs; prints their ids (the report job's last).\n\
             set -euo pipefail\n\
             cd \"$(dirname \"$0\")\"\n\
             submit() { local id; id=$(sbatch --parsable \"$@\"); echo \"${id%%;*}\"; }\n",
        );
        for (d, array) in arrays.iter().enumerate() {
            let after = if d == 0 {
                String::new()
            } else {
                format!(" --dependency=afterany:$a{}", d - 1)
            };
            let _ = writeln!(
                s,
                "a{d}=$(submit --array={}{after} suite.sbatch)\necho \"$a{d}\"",
                array_spec(array, self.throttle)
            );
        }
        let all: Vec<String> = (0..arrays.len()).map(|d| format!("$a{d}")).collect();
        let _ = writeln!(
            s,
            "submit --dependency=afterany:{} report.sbatch",
            all.join(":")
        );
        s
    }

    /// `entries.tsv`: index, entry id and log of each unfinished entry.
    fn entries_table(&self, selection: &Selection) -> String {
        let mut s = String::from("index\tentry\tlog\n");
        for (index, entry, _, state) in &selection.picked {
            if *state != EntryState::Done {
                let _ = writeln!(
                    s,
                    "{index}\t{}\t{SLURM_DIR}/logs/entry-{index}.log",
                    entry.id(&selection.spec)
                );
            }
        }
        s
    }
}

/// An `--array` value: ranges of consecutive indices, then `%throttle`.
fn array_spec(indices: &[usize], throttle: Option<u32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let mut j = i;
        while j + 1 < indices.len() && indices[j + 1] == indices[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            indices[i].to_string()
        } else {
            format!("{}-{}", indices[i], indices[j])
        });
        i = j + 1;
    }
    let throttle = throttle.map_or(String::new(), |p| format!("%{p}"));
    format!("{}{throttle}", parts.join(","))
}

/// A word for the shell, in single quotes where needed.
fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=,:%+@".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Fails when an entry's index is not below the cluster's `MaxArraySize` (array task
/// ids must be); without `scontrol` there is nothing to check.
fn check_array_size(arrays: &[Vec<usize>]) -> anyhow::Result<()> {
    let Ok(output) = Command::new("scontrol").args(["show", "config"]).output() else {
        return Ok(());
    };
    let config = String::from_utf8_lossy(&output.stdout);
    let (Some(max), Some(&index)) = (max_array_size(&config), arrays.iter().flatten().max()) else {
        return Ok(());
    };
    if index >= max {
        bail!(
            "entry index {index} is not below the cluster's MaxArraySize {max} (Slurm array \
             task ids must be): narrow the suite with --filter, whose entries are indexed \
             from 0, or ask for a larger MaxArraySize"
        );
    }
    Ok(())
}

/// `MaxArraySize` from the text of `scontrol show config`.
fn max_array_size(config: &str) -> Option<usize> {
    config.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "MaxArraySize").then(|| value.trim().parse().ok())?
    })
}

/// Runs `submit.sh`; returns the job ids it printed.
fn submit(script: &Path) -> anyhow::Result<Vec<String>> {
    let output = Command::new("bash")
        .arg(script)
        .output()
        .with_context(|| format!("cannot run bash {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "submitting the suite failed (bash {}): {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let ids: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if ids.is_empty() || !ids.iter().all(|id| id.bytes().all(|b| b.is_ascii_digit())) {
        bail!(
            "bash {}: expected job ids from sbatch --parsable, found {ids:?}",
            script.display()
        );
    }
    Ok(ids)
}

/// Slurm's job states of jobs that have ended.
const ENDED: [&str; 9] = [
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
];

/// Waits until every one of `jobs` has ended.
fn wait_for(jobs: &[String], poll_seconds: f64) -> anyhow::Result<()> {
    let mut last = None;
    loop {
        let output = Command::new("squeue")
            .args(["--noheader", "--format=%i %T", "--jobs"])
            .arg(jobs.join(","))
            .output()
            .context("cannot run squeue (is Slurm's client on the PATH?)")?;
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            // Jobs that ended long enough ago are no longer known to squeue.
            if stderr.contains("Invalid job id") {
                return Ok(());
            }
            bail!("squeue failed: {}", stderr.trim());
        }
        // With --jobs, squeue also lists jobs that ended a moment ago.
        let queued = stdout
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|state| !ENDED.contains(state))
            .count();
        if queued == 0 {
            return Ok(());
        }
        if last != Some(queued) {
            println!("waiting: {queued} job(s) or task(s) queued or running");
            last = Some(queued);
        }
        std::thread::sleep(Duration::from_secs_f64(poll_seconds));
    }
}

/// The log file of each submitted entry (relative to the output folder), by entry id,
/// from the last `flowrl suite slurm` call; empty without one.
pub(super) fn task_logs(out: &Path) -> anyhow::Result<HashMap<String, String>> {
    let path = out.join(SLURM_DIR).join(ENTRIES_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split('\t').skip(1);
            Some((fields.next()?.to_string(), fields.next()?.to_string()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_shell_only_when_needed() {
        assert_eq!(quote("/a/b-c.toml"), "/a/b-c.toml");
        assert_eq!(
            quote("env=Hopper-v5,Walker2d-v5"),
            "env=Hopper-v5,Walker2d-v5"
        );
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn max_array_size_is_read_from_scontrol_show_config() {
        let config = "Configuration data as of 2026-12-03T12:00:00\n\
                      MailProg                = /bin/true\n\
                      MaxArraySize            = 1001\n\
                      MaxJobCount             = 10000\n";
        assert_eq!(max_array_size(config), Some(1001));
        assert_eq!(max_array_size("MaxJobCount = 5\n"), None);
    }

    #[test]
    fn array_values_join_consecutive_indices_into_ranges() {
        assert_eq!(array_spec(&[0, 1, 2, 4, 6, 7], None), "0-2,4,6-7");
        assert_eq!(array_spec(&[5], Some(3)), "5%3");
    }
}
