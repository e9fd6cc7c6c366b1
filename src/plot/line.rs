//! Line charts: named series of points and dashed horizontal reference lines.

use std::path::Path;

use anyhow::bail;
use plotters::prelude::*;

use super::frame::{
    check_size, draw_error, padded_range, render, tick_label, LegendEntry, Mark, COLOURS, FAMILY,
    REFERENCE_COLOURS,
};
use super::DEFAULT_SIZE;

/// A named line of (x, y) points.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// The points, drawn in order.
    pub points: Vec<(f64, f64)>,
}

/// A labelled horizontal line, e.g. "behaviour average" or "expert".
#[derive(Clone, Debug, PartialEq)]
pub struct Reference {
    /// Legend label.
    pub label: String,
    /// Height of the line.
    pub y: f64,
}

/// A line chart: several series and optional horizontal reference lines.
#[derive(Clone, Debug, PartialEq)]
pub struct LineChart {
    /// Title above the chart.
    pub title: String,
    /// Label of the x axis.
    pub x_label: String,
    /// Label of the y axis.
    pub y_label: String,
    /// The lines; points of a series with at most [`LineChart::MARKER_LIMIT`] points
    /// are also marked with dots, and such a series is drawn wider (line and dots) than
    /// the ones after it, so that series that coincide (e.g. two agents at the same
    /// success rate) stay visible as nested lines.
    pub series: Vec<Series>,
    /// Horizontal reference lines, dashed.
    pub references: Vec<Reference>,
    /// Fixed y range `(low, high)` (e.g. 0 to 100 for a rate), widened by 2% on each
    /// side so that points on its ends stay visible; `None` fits the data.
    pub y_range: Option<(f64, f64)>,
    /// Image size in pixels (width, height).
    pub size: (u32, u32),
}

impl LineChart {
    /// Series with at most this many points get a dot on each point.
    pub const MARKER_LIMIT: usize = 40;

    /// An empty chart of [`DEFAULT_SIZE`].
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series: Vec::new(),
            references: Vec::new(),
            y_range: None,
            size: DEFAULT_SIZE,
        }
    }

    /// Adds a series.
    pub fn series(mut self, name: &str, points: Vec<(f64, f64)>) -> Self {
        self.series.push(Series {
            name: name.into(),
            points,
        });
        self
    }

    /// Adds a horizontal reference line.
    pub fn reference(mut self, label: &str, y: f64) -> Self {
        self.references.push(Reference {
            label: label.into(),
            y,
        });
        self
    }

    /// Fixes the y axis to `low..high` (see [`LineChart::y_range`]).
    pub fn y_range(mut self, low: f64, high: f64) -> Self {
        self.y_range = Some((low, high));
        self
    }

    /// Sets the image size in pixels.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }

    fn validate(&self) -> anyhow::Result<()> {
        check_size(&self.title, self.size)?;
        if self.series.is_empty() {
            bail!("chart \"{}\": no series to draw", self.title);
        }
        for s in &self.series {
            if s.points.is_empty() {
                bail!("chart \"{}\", series \"{}\": no points", self.title, s.name);
            }
            if let Some((i, (x, y))) = s
                .points
                .iter()
                .enumerate()
                .find(|(_, (x, y))| !x.is_finite() || !y.is_finite())
            {
                bail!(
                    "chart \"{}\", series \"{}\": point {i} is ({x}, {y}); expected finite numbers",
                    self.title,
                    s.name
                );
            }
        }
        if let Some((lo, hi)) = self.y_range {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                bail!(
                    "chart \"{}\": y range {lo}..{hi}; expected finite bounds, low < high",
                    self.title
                );
            }
        }
        for r in &self.references {
            if !r.y.is_finite() {
                bail!(
                    "chart \"{}\", reference line \"{}\": y is {}; expected a finite number",
                    self.title,
                    r.label,
                    r.y
                );
            }
        }
        Ok(())
    }
}

/// Renders `chart` and writes it to `path` as a PNG, atomically.
pub fn write_line_chart(path: &Path, chart: &LineChart) -> anyhow::Result<()> {
    let png = line_chart_png(chart)?;
    crate::atomic::write_bytes_atomic(path, &png)
}

/// `chart` as PNG bytes.
pub fn line_chart_png(chart: &LineChart) -> anyhow::Result<Vec<u8>> {
    chart.validate()?;
    let legend: Vec<LegendEntry> = chart
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| LegendEntry {
            label: s.name.clone(),
            colour: COLOURS[i % COLOURS.len()],
            mark: Mark::Line,
        })
        .chain(
            chart
                .references
                .iter()
                .enumerate()
                .map(|(i, r)| LegendEntry {
                    label: r.label.clone(),
                    colour: REFERENCE_COLOURS[i % REFERENCE_COLOURS.len()],
                    mark: Mark::Dashed,
                }),
        )
        .collect();
    let xs = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0));
    let (x0, x1) = padded_range(xs, 0.02);
    let ys = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(chart.references.iter().map(|r| r.y));
    let (y0, y1) = match chart.y_range {
        Some((lo, hi)) => padded_range([lo, hi].into_iter(), 0.02),
        None => padded_range(ys, 0.06),
    };
    render(&chart.title, chart.size, &legend, |area| {
        let mut ctx = ChartBuilder::on(area)
            .margin(12)
            .x_label_area_size(52)
            .y_label_area_size(84)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(draw_error)?;
        ctx.configure_mesh()
            .x_desc(chart.x_label.as_str())
            .y_desc(chart.y_label.as_str())
            .x_label_formatter(&tick_label)
            .y_label_formatter(&tick_label)
            .label_style((FAMILY, 15))
            .axis_desc_style((FAMILY, 17))
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(draw_error)?;
        for (r, entry) in chart.references.iter().zip(&legend[chart.series.len()..]) {
            ctx.draw_series(DashedLineSeries::new(
                [(x0, r.y), (x1, r.y)],
                10,
                6,
                entry.colour.stroke_width(2),
            ))
            .map_err(draw_error)?;
        }
        let n = chart.series.len();
        for (i, (s, entry)) in chart.series.iter().zip(&legend).enumerate() {
            let marked = s.points.len() <= LineChart::MARKER_LIMIT;
            // Marked series: each one wider than the ones drawn over it (coinciding
            // lines stay visible), by at most 6 pixels.
            let extra = if marked {
                2 * (n - 1 - i).min(3) as u32
            } else {
                0
            };
            let style = entry.colour.stroke_width(2 + extra);
            ctx.draw_series(LineSeries::new(s.points.iter().copied(), style))
                .map_err(draw_error)?;
            if marked {
                ctx.draw_series(
                    s.points
                        .iter()
                        .map(|&p| Circle::new(p, 4 + extra, entry.colour.filled())),
                )
                .map_err(draw_error)?;
            }
        }
        Ok(())
    })
}
