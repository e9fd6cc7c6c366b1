//! PNG charts for reports: line charts (training loss, evaluation return per target
//! with reference lines, success rate against memory length) and grouped bar charts
//! with error bars (normalised score per agent and tier).
//!
//! Charts are rendered with plotters into an in-memory RGB buffer, encoded as PNG and
//! written atomically with [`crate::atomic`]. Text uses the DejaVu Sans font shipped in
//! `assets/fonts/` (no system fonts needed). The legend has its own column right of
//! the plot, so it never covers data.

mod bar;
mod frame;
mod line;

pub use bar::{bar_chart_png, write_bar_chart, Bar, BarChart, BarSeries};
pub use line::{line_chart_png, write_line_chart, LineChart, Reference, Series};

/// Default image size in pixels (width, height).
pub const DEFAULT_SIZE: (u32, u32) = (960, 600);
/// Smallest accepted width and height in pixels.
pub const MIN_SIDE: u32 = 240;
/// Largest accepted width and height in pixels.
pub const MAX_SIDE: u32 = 8192;

#[cfg(test)]
mod tests;
