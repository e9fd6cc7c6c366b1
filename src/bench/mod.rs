//! Benchmarks behind `flowrl bench`.

pub mod attention;
pub mod data;
pub mod envs;
pub mod memory;
pub mod rollout;
pub mod train;
