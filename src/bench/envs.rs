//! `flowrl bench envs` (placeholder until its issue lands).

/// Arguments of `flowrl bench envs`.
#[derive(clap::Args)]
pub struct EnvsArgs {}

/// Runs the benchmark.
pub fn run(_args: EnvsArgs) -> anyhow::Result<()> {
    anyhow::bail!("flowrl bench envs is not implemented yet")
}
