//! The anchors of `flowrl bench ... --compare`: scripts in `bench/anchors/` that measure
//! other implementations (Gymnasium and EnvPool, PyTorch) on the same cases, run through
//! `bench/anchors/run.sh` (which builds their pinned Python environments on first use),
//! each printing one JSON object per line.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;

/// Environment variable naming a program to run instead of `bench/anchors/run.sh`; it is
/// called the same way (`PROGRAM SCRIPT ARGS...`), so a stand-in that prints fixed lines
/// can check the plumbing without Python.
pub const RUNNER_ENV: &str = "FLOWRL_BENCH_ANCHORS";

/// Runs anchor scripts through one runner program.
#[derive(Clone, Debug)]
pub struct Anchors {
    runner: PathBuf,
}

impl Anchors {
    /// The program named by [`RUNNER_ENV`] when set, else this repository's
    /// `bench/anchors/run.sh`.
    pub fn from_env() -> Self {
        let runner = std::env::var_os(RUNNER_ENV).map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/anchors/run.sh"),
            PathBuf::from,
        );
        Self { runner }
    }

    /// Runs `script` (a file name in `bench/anchors/`) with `args` and parses every line
    /// of its standard output that starts with `{` as a `T`; other lines are ignored.
    /// Fails, naming the script and showing its standard error, when it cannot start,
    /// exits unsuccessfully, prints a line that does not parse, or prints no result.
    pub fn run<T: DeserializeOwned>(
        &self,
        script: &str,
        args: &[String],
    ) -> anyhow::Result<Vec<T>> {
        let shown = format!("{} {script}", self.runner.display());
        let out = Command::new(&self.runner)
            .arg(script)
            .args(args)
            .output()
            .with_context(|| format!("cannot run the anchor script ({shown})"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!(
                "anchor script {script} failed ({shown}: {}); its stderr:\n{}",
                out.status,
                stderr.trim_end()
            );
        }
        let results = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|line| line.starts_with('{'))
            .map(|line| {
                serde_json::from_str(line)
                    .with_context(|| format!("anchor script {script} printed `{line}`"))
            })
            .collect::<anyhow::Result<Vec<T>>>()?;
        if results.is_empty() {
            bail!(
                "anchor script {script} printed no results ({shown}); its stderr:\n{}",
                stderr.trim_end()
            );
        }
        Ok(results)
    }
}

/// Who measured a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    /// flowrl itself.
    Flowrl,
    /// An anchor script's PyTorch implementation.
    PyTorch,
}

impl Side {
    /// The name in a table's `impl` column.
    pub fn label(self) -> &'static str {
        match self {
            Side::Flowrl => "flowrl",
            Side::PyTorch => "PyTorch",
        }
    }
}

#[cfg(test)]
impl Anchors {
    /// Anchors run through `runner` instead (a test's stand-in).
    pub(crate) fn with_runner(runner: impl Into<PathBuf>) -> Self {
        Self {
            runner: runner.into(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Writes an executable shell script with `body` into `dir` and returns its path.
    pub(crate) fn fake_runner(dir: &tempfile::TempDir, body: &str) -> PathBuf {
        let path = dir.path().join("runner.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Line {
        name: String,
        value: f64,
    }

    #[test]
    fn json_lines_are_parsed_and_other_lines_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let runner = fake_runner(
            &dir,
            r#"echo "script $1 args $2 $3"
echo '{"name": "a", "value": 1.5}'
echo '{"name": "b", "value": 2}'"#,
        );
        let lines: Vec<Line> = Anchors::with_runner(runner)
            .run("x.py", &["--n".into(), "3".into()])
            .unwrap();
        assert_eq!(
            lines,
            [
                Line {
                    name: "a".into(),
                    value: 1.5
                },
                Line {
                    name: "b".into(),
                    value: 2.0
                }
            ]
        );
    }

    #[test]
    fn a_failing_script_is_named_with_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let runner = fake_runner(&dir, "echo 'no module named torch' >&2\nexit 3");
        let err = Anchors::with_runner(runner)
            .run::<Line>("train.py", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("anchor script train.py failed"), "{err}");
        assert!(err.contains("no module named torch"), "{err}");
    }

    #[test]
    fn a_bad_line_or_no_result_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let runner = fake_runner(&dir, r#"echo '{"name": "a"}'"#);
        let err = format!(
            "{:#}",
            Anchors::with_runner(runner)
                .run::<Line>("attention.py", &[])
                .unwrap_err()
        );
        assert!(
            err.contains(r#"attention.py printed `{"name": "a"}`"#),
            "{err}"
        );
        assert!(err.contains("missing field `value`"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let runner = fake_runner(&dir, "echo 'warming up' >&2");
        let err = Anchors::with_runner(runner)
            .run::<Line>("envs.py", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("envs.py printed no results"), "{err}");
        assert!(err.contains("warming up"), "{err}");
    }
}
