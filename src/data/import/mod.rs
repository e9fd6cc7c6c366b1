//! Importers of public dataset layouts (HDF5 read in pure Rust, no libhdf5).

pub mod d4rl;
mod hdf5;
pub mod minari;

use super::dataset::{Dataset, ReferenceReturns};

/// An imported dataset and what the importer has to say about the source.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The validated dataset.
    pub dataset: Dataset,
    /// Things the user should know (data dropped, fallbacks used), one line each.
    pub warnings: Vec<String>,
    /// Arrays of the source that the native format does not keep.
    pub ignored: Vec<String>,
}

/// Reference returns known for an environment id: D4RL's locomotion table, else
/// flowrl's own environments.
pub fn known_reference_returns(env_id: &str) -> Option<ReferenceReturns> {
    d4rl::d4rl_reference_returns(env_id).or_else(|| {
        flowrl_envs::reference_returns(env_id).map(|r| ReferenceReturns {
            random: r.random,
            expert: r.expert,
        })
    })
}
