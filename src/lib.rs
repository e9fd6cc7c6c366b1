//! flowrl: the toolkit around the models (`flowrl-agents`) and the environments
//! (`flowrl-envs`): trajectory datasets, collection, benchmarks and the command line.

pub mod allocator;
pub mod atomic;
pub mod behaviour;
pub mod bench;
pub mod cli;
pub mod collect;
pub mod config;
pub mod cpu_time;
pub mod data;
pub mod digest;
pub mod eval;
pub mod fuzz;
pub mod limits;
pub mod lock;
pub mod logging;
pub mod plot;
pub mod progress;
pub mod quickstart;
pub mod setup;
pub mod suite;
pub mod train;
