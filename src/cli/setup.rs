//! `flowrl setup`: installs what optional environments need at run time.

use flowrl_envs::mujoco::Install;

use crate::setup::{setup_mujoco, Outcome};

/// Arguments of `flowrl setup`.
#[derive(clap::Args)]
pub struct SetupArgs {
    /// What to set up.
    #[command(subcommand)]
    what: SetupTarget,
}

/// The things `flowrl setup` installs.
#[derive(clap::Subcommand)]
enum SetupTarget {
    /// MuJoCo 3.17.0's library and Gymnasium 1.4's model files, fetched with pip
    /// (`pip download` of the pinned wheels, every sha256 checked) into
    /// $FLOWRL_MUJOCO_DIR, or else $XDG_CACHE_HOME/flowrl/mujoco-3.17.0, or else
    /// ~/.cache/flowrl/mujoco-3.17.0. Does nothing when that folder already verifies.
    Mujoco,
}

/// Runs `flowrl setup`.
pub fn run(args: SetupArgs) -> anyhow::Result<()> {
    match args.what {
        SetupTarget::Mujoco => {
            let install = Install::configured()?;
            let dir = install.root().display();
            match setup_mujoco(&install)? {
                Outcome::AlreadySetUp => {
                    println!("MuJoCo 3.17.0 is already set up in {dir} (every file verified)")
                }
                Outcome::Installed => println!("MuJoCo 3.17.0 set up in {dir}"),
            }
            flowrl_envs::mujoco::available()?;
            Ok(())
        }
    }
}
