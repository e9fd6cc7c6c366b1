//! Trajectory datasets: the native store, importers, statistics and training windows.
//!
//! - [`Dataset`]: episode-structured arrays plus [`Metadata`], validated on construction.
//! - [`store`]: the native safetensors file ([`store::save`], [`store::load`]).
//! - [`import`]: D4RL and Minari HDF5 importers (pure Rust, no libhdf5).
//! - [`stats`]: summaries for `flowrl dataset info` and normalisation statistics.
//! - [`windows`]: returns-to-go and the seeded training-window sampler.

pub mod dataset;
pub mod error;
pub mod import;
pub mod space;
pub mod stats;
pub mod store;
pub mod windows;

pub use dataset::{
    Actions, BehaviourSetProvenance, Dataset, DatasetBuilder, DatasetParts, Ending, Metadata,
    Provenance, ReferenceReturns,
};
pub use error::{DataError, Problem};
pub use space::Space;
