//! `flowrl dataset` (placeholder until its issue lands).

/// Arguments of `flowrl dataset`.
#[derive(clap::Args)]
pub struct DatasetArgs {}

/// Runs the subcommand.
pub fn run(_args: DatasetArgs) -> anyhow::Result<()> {
    anyhow::bail!("flowrl dataset is not implemented yet")
}
