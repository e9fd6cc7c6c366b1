//! Grouped bar charts with optional error bars (mean ± std).

use std::path::Path;

use anyhow::bail;
use plotters::coord::combinators::BindKeyPoints;
use plotters::prelude::*;

use super::frame::{
    check_size, draw_error, render, tick_label, LegendEntry, Mark, COLOURS, FAMILY,
};
use super::DEFAULT_SIZE;

/// Resolution of the bar chart's x axis: coordinate units per group.
const GROUP_UNITS: f64 = 1000.0;

/// One bar: a mean and an optional standard deviation (drawn as mean ± std).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bar {
    /// Height of the bar.
    pub mean: f64,
    /// Half-length of the error bar; `None` draws none.
    pub std: Option<f64>,
}

impl Bar {
    /// A bar without error bar.
    pub fn new(mean: f64) -> Self {
        Self { mean, std: None }
    }

    /// A bar with error bar mean ± std.
    pub fn with_std(mean: f64, std: f64) -> Self {
        Self {
            mean,
            std: Some(std),
        }
    }
}

/// One series of a bar chart: a bar per group, in group order.
#[derive(Clone, Debug, PartialEq)]
pub struct BarSeries {
    /// Legend label (e.g. the agent).
    pub name: String,
    /// One bar per group.
    pub bars: Vec<Bar>,
}

/// A grouped bar chart: groups along x (e.g. dataset tiers), one bar per series
/// (e.g. agent) in each group.
#[derive(Clone, Debug, PartialEq)]
pub struct BarChart {
    /// Title above the chart.
    pub title: String,
    /// Label of the x axis (what the groups are).
    pub x_label: String,
    /// Label of the y axis.
    pub y_label: String,
    /// Group names, left to right.
    pub groups: Vec<String>,
    /// The series; each has one bar per group.
    pub series: Vec<BarSeries>,
    /// Image size in pixels (width, height).
    pub size: (u32, u32),
}

impl BarChart {
    /// A chart of [`DEFAULT_SIZE`] with these groups and no series yet.
    pub fn new(title: &str, x_label: &str, y_label: &str, groups: &[&str]) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            series: Vec::new(),
            size: DEFAULT_SIZE,
        }
    }

    /// Adds a series with one bar per group.
    pub fn series(mut self, name: &str, bars: Vec<Bar>) -> Self {
        self.series.push(BarSeries {
            name: name.into(),
            bars,
        });
        self
    }

    /// Sets the image size in pixels.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }

    fn validate(&self) -> anyhow::Result<()> {
        check_size(&self.title, self.size)?;
        if self.groups.is_empty() {
            bail!("chart \"{}\": no groups", self.title);
        }
        if self.series.is_empty() {
            bail!("chart \"{}\": no series to draw", self.title);
        }
        for s in &self.series {
            if s.bars.len() != self.groups.len() {
                bail!(
                    "chart \"{}\", series \"{}\": expected {} bars (one per group), found {}",
                    self.title,
                    s.name,
                    self.groups.len(),
                    s.bars.len()
                );
            }
            for (bar, group) in s.bars.iter().zip(&self.groups) {
                let std_ok = bar.std.is_none_or(|d| d.is_finite() && d >= 0.0);
                if !bar.mean.is_finite() || !std_ok {
                    bail!(
                        "chart \"{}\", series \"{}\", group \"{group}\": mean {} std {:?}; \
                         expected a finite mean and a finite std >= 0",
                        self.title,
                        s.name,
                        bar.mean,
                        bar.std
                    );
                }
            }
        }
        Ok(())
    }
}

/// Renders `chart` and writes it to `path` as a PNG, atomically.
pub fn write_bar_chart(path: &Path, chart: &BarChart) -> anyhow::Result<()> {
    let png = bar_chart_png(chart)?;
    crate::atomic::write_bytes_atomic(path, &png)
}

/// `chart` as PNG bytes.
pub fn bar_chart_png(chart: &BarChart) -> anyhow::Result<Vec<u8>> {
    chart.validate()?;
    let legend: Vec<LegendEntry> = chart
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| LegendEntry {
            label: s.name.clone(),
            colour: COLOURS[i % COLOURS.len()],
            mark: Mark::Block,
        })
        .collect();
    let ends = chart.series.iter().flat_map(|s| {
        s.bars.iter().flat_map(|b| {
            let d = b.std.unwrap_or(0.0);
            [b.mean - d, b.mean + d]
        })
    });
    let (y0, y1) = bar_range(ends);
    let groups = chart.groups.len();
    // x in thousandths of a group: group g spans [1000 g, 1000 (g + 1)].
    let at = |v: f64| (v * GROUP_UNITS).round() as i64;
    let centres: Vec<i64> = (0..groups).map(|g| at(g as f64 + 0.5)).collect();
    render(&chart.title, chart.size, &legend, |area| {
        let mut ctx = ChartBuilder::on(area)
            .margin(12)
            .x_label_area_size(52)
            .y_label_area_size(84)
            .build_cartesian_2d((0..at(groups as f64)).with_key_points(centres), y0..y1)
            .map_err(draw_error)?;
        let label_of = |v: &i64| {
            let g = (*v as f64 / GROUP_UNITS).floor().max(0.0) as usize;
            chart.groups.get(g).cloned().unwrap_or_default()
        };
        ctx.configure_mesh()
            .disable_x_mesh()
            .x_desc(chart.x_label.as_str())
            .y_desc(chart.y_label.as_str())
            .x_label_formatter(&label_of)
            .y_label_formatter(&tick_label)
            .label_style((FAMILY, 15))
            .axis_desc_style((FAMILY, 17))
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(draw_error)?;
        let per_group = chart.series.len() as f64;
        let width = 0.8 / per_group;
        for (si, (s, entry)) in chart.series.iter().zip(&legend).enumerate() {
            for (g, bar) in s.bars.iter().enumerate() {
                let left = g as f64 + 0.1 + si as f64 * width;
                let (l, r) = (left + width * 0.06, left + width * 0.94);
                ctx.draw_series(std::iter::once(Rectangle::new(
                    [(at(l), 0.0), (at(r), bar.mean)],
                    entry.colour.filled(),
                )))
                .map_err(draw_error)?;
                if let Some(d) = bar.std.filter(|&d| d > 0.0) {
                    let c = left + width / 2.0;
                    let cap = width * 0.2;
                    let style = BLACK.stroke_width(2);
                    let lines = [
                        vec![(at(c), bar.mean - d), (at(c), bar.mean + d)],
                        vec![(at(c - cap), bar.mean - d), (at(c + cap), bar.mean - d)],
                        vec![(at(c - cap), bar.mean + d), (at(c + cap), bar.mean + d)],
                    ];
                    ctx.draw_series(lines.into_iter().map(|l| PathElement::new(l, style)))
                        .map_err(draw_error)?;
                }
            }
        }
        if y0 < 0.0 {
            ctx.draw_series(std::iter::once(PathElement::new(
                vec![(0, 0.0), (at(groups as f64), 0.0)],
                BLACK.stroke_width(1),
            )))
            .map_err(draw_error)?;
        }
        Ok(())
    })
}

/// The y range of bars reaching `ends`: it holds 0 (the bars' base), and is padded
/// only on the sides away from 0.
pub(super) fn bar_range(ends: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = ends.fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = 0.06 * (hi - lo).max(f64::MIN_POSITIVE);
    let lo = if lo < 0.0 { lo - pad } else { 0.0 };
    let hi = if hi > 0.0 { hi + pad } else { 0.0 };
    if lo == hi {
        (-1.0, 1.0)
    } else {
        (lo, hi)
    }
}
