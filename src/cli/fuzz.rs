//! `flowrl fuzz <target>`: mutation-fuzz one of flowrl's readers of untrusted input
//! (see [`crate::fuzz`]), with a progress bar; findings are printed and their inputs
//! saved.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::fuzz::{self, Settings, Target};

/// Arguments of `flowrl fuzz`.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// What to fuzz.
    #[arg(value_enum)]
    target: Target,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Seed of the input stream (same seed, same inputs).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folder for the inputs of findings (created on the first one).
    #[arg(long, default_value = "fuzz-findings")]
    out: PathBuf,
    /// Allocation cap per input, in bytes (an input needing more is a finding).
    #[arg(long, default_value_t = fuzz::DEFAULT_CAP)]
    cap: usize,
    /// Internal: run as the worker from this input index.
    #[arg(long, hide = true)]
    worker_from: Option<u64>,
    /// Internal: the worker's running time in milliseconds.
    #[arg(long, hide = true, requires = "worker_from")]
    worker_ms: Option<u64>,
}

/// Runs the subcommand: the supervisor, or the worker it starts.
pub fn run(args: FuzzArgs) -> anyhow::Result<()> {
    if let Some(from) = args.worker_from {
        let until = Instant::now() + Duration::from_millis(args.worker_ms.unwrap_or(0));
        return fuzz::worker(args.target, args.seed, from, until, args.cap);
    }
    if args.seconds == 0 {
        bail!("--seconds: expected at least 1, found 0");
    }
    if args.cap == 0 {
        bail!("--cap: expected a number of bytes >= 1, found 0");
    }
    let settings = Settings {
        target: args.target,
        duration: Duration::from_secs(args.seconds),
        seed: args.seed,
        out: args.out,
        cap: args.cap,
    };
    let started = Instant::now();
    let bar = crate::progress::bar(args.seconds, "s");
    bar.set_message(format!("fuzz {}", args.target.name()));
    let summary = fuzz::run(&settings, |inputs, finding| {
        if let Some(f) = finding {
            bar.suspend(|| {
                eprintln!(
                    "finding: {} seed {} input {}: {}; saved to {}",
                    args.target.name(),
                    args.seed,
                    f.index,
                    f.kind,
                    f.saved.display()
                )
            });
        }
        bar.set_position(started.elapsed().as_secs());
        bar.set_message(format!("fuzz {}: {inputs} inputs", args.target.name()));
    })?;
    bar.finish_and_clear();
    println!(
        "fuzz {}: {} inputs in {:.0} s (seed {}), {} finding(s)",
        args.target.name(),
        summary.inputs,
        started.elapsed().as_secs_f64(),
        args.seed,
        summary.findings.len()
    );
    if !summary.findings.is_empty() {
        bail!(
            "{} finding(s); their inputs are saved under {}",
            summary.findings.len(),
            settings.out.display()
        );
    }
    Ok(())
}
