//! Benchmarks behind `flowrl bench`.

pub mod anchors;
pub mod attention;
pub mod data;
pub mod envs;
pub mod locomotion;
pub mod memory;
pub mod peak;
pub mod rollout;
pub mod train;

/// Seconds as milliseconds for a table cell: whole milliseconds from 100 ms up, one
/// decimal below.
pub(crate) fn ms(seconds: f64) -> String {
    let ms = seconds * 1e3;
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms:.1}")
    }
}
