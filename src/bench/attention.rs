//! `flowrl bench attention` (placeholder until its issue lands).

/// Arguments of `flowrl bench attention`.
#[derive(clap::Args)]
pub struct AttentionArgs {}

/// Runs the benchmark.
pub fn run(_args: AttentionArgs) -> anyhow::Result<()> {
    anyhow::bail!("flowrl bench attention is not implemented yet")
}
