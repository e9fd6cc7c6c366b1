//! Subcommands of the `flowrl` binary, one module each.

pub mod behaviour;
pub mod bench;
pub mod collect;
pub mod dataset;
pub mod eval;
pub mod fuzz;
pub mod setup;
pub mod suite;
pub mod train;
