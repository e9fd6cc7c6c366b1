//! The learning-quality suite (`flowrl suite`): a matrix of environments × dataset
//! tiers × agents × seeds over a base experiment config. Each entry collects its
//! dataset (cached and shared between entries), trains through [`crate::train`],
//! evaluates its final checkpoint through [`crate::eval`] and records its result.
//! Reruns skip finished entries and continue interrupted training from its last
//! checkpoint. The format of suite configs is in `configs/suite/README.md`.
//!
//! # Output folder
//!
//! ```text
//! <out>/
//!   suite.toml                          copy of the suite config of the last run
//!   results.md                          one table per environment, with the plots
//!   plots/<env>.png                     normalised score per tier and agent
//!   plots/<env>-success.png             success rate, for tasks that define success
//!   plots/<family>-success-vs-memory.png   success rate against memory length (`-L<n>` ids)
//!   results/<env>/<tier>/<agent>/seed<N>.json   one finished entry (see [`record`])
//!   runs/<env>/<tier>/<agent>/seed<N>/  the training run folder (see [`crate::train`])
//!   datasets/<env>-<tier>-<episodes>ep-seed<S>.safetensors   cached datasets
//!   locks/<env>/<tier>/<agent>/seed<N>.lock   held by the worker running that entry
//!   locks/datasets/<file>.lock          held by the worker collecting that dataset
//!   failures/<env>/<tier>/<agent>/seed<N>.txt the error of an entry's failed attempt
//!   slurm/                              `flowrl suite slurm`'s files (see [`slurm`])
//! ```

pub mod entry;
pub mod error;
mod file;
pub mod pick;
pub mod record;
pub mod report;
pub mod runner;
pub mod slurm;
pub mod spec;

pub use entry::{Entry, EntryState, Filter};
pub use error::SuiteError;
pub use pick::{Pick, Shard};
pub use record::EntryRecord;
pub use runner::{report, run, SuiteOptions, SuiteOutcome};
pub use slurm::{Resources, SlurmOptions, SlurmOutcome};
pub use spec::SuiteSpec;
