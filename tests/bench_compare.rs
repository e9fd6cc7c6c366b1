//! `flowrl bench attention --compare` end to end with a stand-in for the anchors' runner
//! (named by `FLOWRL_BENCH_ANCHORS`), so neither Python nor PyTorch is needed: the
//! stand-in's figures must reach the comparison table, and a failing anchor script must
//! be named with its stderr. Only the tiniest sizes run; no timing is checked.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use flowrl::bench::anchors::RUNNER_ENV;

/// Writes an executable runner script with `body` into `dir`.
fn runner(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("runner.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `flowrl bench attention` at L 64 (one rep, a short step table) with `--compare`,
/// through the runner `body`.
fn bench_attention(body: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_flowrl"))
        .args(
            "bench attention --lengths 64 --reps 1 --heads 1 --head-dim 4 --step-positions 4 --step-window 2 --compare --rounds 1"
                .split_whitespace(),
        )
        .env(RUNNER_ENV, runner(dir.path(), body))
        .output()
        .unwrap()
}

#[test]
fn attention_compare_prints_the_anchor_figures() {
    let out = bench_attention(
        r#"test "$1" = attention.py || exit 9
echo '{"impl": "flow", "l": 64, "seconds": 12.5, "runs": 1, "cpu": 20.0, "peak_bytes": 3.5e9}'
echo '{"impl": "sdpa", "l": 64, "seconds": 0.25, "runs": 30, "cpu": 0.4, "peak_bytes": 1e6}'"#,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("|     64 |     1 |"))
        .unwrap_or_else(|| panic!("no comparison row:\n{stdout}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // L, round, flowrl flow ms, PyTorch flow ms, ratio, flowrl MB, PyTorch MB,
    // flowrl softmax ms, SDPA ms, ratio.
    assert_eq!(cells[4], "12500", "{row}");
    assert!(cells[5].ends_with('x'), "{row}");
    assert_eq!(cells[7], "3500", "{row}");
    assert_eq!(cells[9], "250", "{row}");
    assert!(cells[10].ends_with('x'), "{row}");
}

#[test]
fn a_failing_anchor_script_is_named_with_its_stderr() {
    let out = bench_attention("echo 'ModuleNotFoundError: torch' >&2; exit 1");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("anchor script attention.py failed"),
        "{stderr}"
    );
    assert!(stderr.contains("ModuleNotFoundError: torch"), "{stderr}");
}
