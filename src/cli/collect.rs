//! `flowrl collect` (placeholder until its issue lands).

/// Arguments of `flowrl collect`.
#[derive(clap::Args)]
pub struct CollectArgs {}

/// Runs the subcommand.
pub fn run(_args: CollectArgs) -> anyhow::Result<()> {
    anyhow::bail!("flowrl collect is not implemented yet")
}
