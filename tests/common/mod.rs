//! Helpers shared by the flowrl integration tests that run the binary.

use std::path::Path;
use std::process::Command;

/// Runs the `flowrl` binary with `args` in `cwd` and extra environment variables
/// (no backtraces); returns success, stdout and stderr.
pub fn flowrl(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flowrl"))
        .args(args)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the flowrl binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
