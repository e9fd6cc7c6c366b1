//! `flowrl bench data` (placeholder until its issue lands).

/// Arguments of `flowrl bench data`.
#[derive(clap::Args)]
pub struct DataArgs {}

/// Runs the benchmark.
pub fn run(_args: DataArgs) -> anyhow::Result<()> {
    anyhow::bail!("flowrl bench data is not implemented yet")
}
