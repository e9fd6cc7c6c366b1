//! PNG charts for reports: line charts (training loss, evaluation return per target
//! with reference lines, success rate against memory length) and grouped bar charts
//! with error bars (normalised score per agent and tier).
//!
//! Charts are rendered with plotters into an in-memory RGB buffer, encoded as PNG and
//! written atomically with [`crate::atomic`]. Text uses the DejaVu Sans font shipped in
//! `assets/fonts/` (no system fonts needed). The legend has its own column right of
//! the plot, so it never covers data.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context};
use plotters::coord::combinators::BindKeyPoints;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

/// DejaVu Sans (Bitstream Vera licence, `assets/fonts/LICENSE`).
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Default image size in pixels (width, height).
pub const DEFAULT_SIZE: (u32, u32) = (960, 600);
/// Smallest accepted width and height in pixels.
pub const MIN_SIDE: u32 = 240;
/// Largest accepted width and height in pixels.
pub const MAX_SIDE: u32 = 8192;

/// Series colours (the "tab10" palette).
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
/// Reference-line colours (greys and black, dashed).
const REFERENCE_COLOURS: [RGBColor; 3] = [
    RGBColor(0, 0, 0),
    RGBColor(110, 110, 110),
    RGBColor(170, 170, 170),
];

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
    /// are also marked with dots.
    pub series: Vec<Series>,
    /// Horizontal reference lines, dashed.
    pub references: Vec<Reference>,
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
pub fn write_line_chart(path: &Path, chart: &LineChart) -> anyhow::Result<()> {
    let png = line_chart_png(chart)?;
    crate::atomic::write_bytes_atomic(path, &png)
}

/// Renders `chart` and writes it to `path` as a PNG, atomically.
pub fn write_bar_chart(path: &Path, chart: &BarChart) -> anyhow::Result<()> {
    let png = bar_chart_png(chart)?;
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
    let (y0, y1) = padded_range(ys, 0.06);
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
        for (s, entry) in chart.series.iter().zip(&legend) {
            let style = entry.colour.stroke_width(2);
            ctx.draw_series(LineSeries::new(s.points.iter().copied(), style))
                .map_err(draw_error)?;
            if s.points.len() <= LineChart::MARKER_LIMIT {
                ctx.draw_series(
                    s.points
                        .iter()
                        .map(|&p| Circle::new(p, 4, entry.colour.filled())),
                )
                .map_err(draw_error)?;
            }
        }
        Ok(())
    })
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

/// Resolution of the bar chart's x axis: coordinate units per group.
const GROUP_UNITS: f64 = 1000.0;

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

#[derive(Clone, Copy)]
enum Mark {
    Line,
    Dashed,
    Block,
}

struct LegendEntry {
    label: String,
    colour: RGBColor,
    mark: Mark,
}

const LEGEND_FONT: u32 = 15;
const LEGEND_ROW: i32 = 24;
const LEGEND_SAMPLE: i32 = 30;

/// Draws the frame (background, title, legend column) and lets `plot` draw the chart
/// into the area left of the legend; returns the PNG bytes.
fn render<F>(
    title: &str,
    (w, h): (u32, u32),
    legend: &[LegendEntry],
    plot: F,
) -> anyhow::Result<Vec<u8>>
where
    F: FnOnce(&Area<'_>) -> anyhow::Result<()>,
{
    ensure_font()?;
    let mut rgb = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let body = root.titled(title, (FAMILY, 22)).map_err(draw_error)?;
        let font = (FAMILY, LEGEND_FONT).into_font();
        let mut text_w = 0u32;
        for e in legend {
            let (tw, _) = body
                .estimate_text_size(&e.label, &font.clone().into())
                .map_err(draw_error)?;
            text_w = text_w.max(tw);
        }
        let legend_w = (text_w + LEGEND_SAMPLE as u32 + 34).min(w * 2 / 5);
        let (plot_area, legend_area) = body.split_horizontally(w - legend_w);
        plot(&plot_area)?;
        draw_legend(&legend_area, legend, &font)?;
        root.present().map_err(draw_error)?;
    }
    encode_png(&rgb, w, h)
}

fn draw_legend(area: &Area<'_>, legend: &[LegendEntry], font: &FontDesc<'_>) -> anyhow::Result<()> {
    let style = font.color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, e) in legend.iter().enumerate() {
        let y = 32 + i as i32 * LEGEND_ROW;
        let (x0, x1) = (6, 6 + LEGEND_SAMPLE);
        match e.mark {
            Mark::Line => area.draw(&PathElement::new(
                vec![(x0, y), (x1, y)],
                e.colour.stroke_width(3),
            )),
            Mark::Dashed => area
                .draw(&PathElement::new(
                    vec![(x0, y), (x0 + 11, y)],
                    e.colour.stroke_width(2),
                ))
                .and_then(|()| {
                    area.draw(&PathElement::new(
                        vec![(x1 - 11, y), (x1, y)],
                        e.colour.stroke_width(2),
                    ))
                }),
            Mark::Block => area.draw(&Rectangle::new(
                [(x0 + 6, y - 7), (x1 - 6, y + 7)],
                e.colour.filled(),
            )),
        }
        .map_err(draw_error)?;
        area.draw(&Text::new(e.label.as_str(), (x1 + 8, y), style.clone()))
            .map_err(draw_error)?;
    }
    Ok(())
}

/// Registers the shipped font once per process.
fn ensure_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(anyhow!(
            "the shipped font assets/fonts/DejaVuSans.ttf cannot be loaded"
        ))
    }
}

fn draw_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("cannot draw the chart: {e}")
}

fn check_size(title: &str, (w, h): (u32, u32)) -> anyhow::Result<()> {
    if !(MIN_SIDE..=MAX_SIDE).contains(&w) || !(MIN_SIDE..=MAX_SIDE).contains(&h) {
        bail!(
            "chart \"{title}\": size {w}x{h} pixels; expected each side in {MIN_SIDE}..={MAX_SIDE}"
        );
    }
    Ok(())
}

/// The range of `values` widened by `pad` of its span on each side (or by a unit
/// around a single value).
fn padded_range(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let span = hi - lo;
    if span > 0.0 {
        (lo - pad * span, hi + pad * span)
    } else {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - d, hi + d)
    }
}

/// A tick value without float noise: integers without decimals, other values to six
/// significant digits.
fn tick_label(v: &f64) -> String {
    let rounded: f64 = format!("{v:.5e}").parse().unwrap_or(*v);
    if rounded == 0.0 {
        "0".to_string()
    } else {
        rounded.to_string()
    }
}

/// The y range of bars reaching `ends`: it holds 0 (the bars' base), and is padded
/// only on the sides away from 0.
fn bar_range(ends: impl Iterator<Item = f64>) -> (f64, f64) {
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

fn encode_png(rgb: &[u8], w: u32, h: u32) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Best);
        encoder.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
        let mut writer = encoder.write_header().context("cannot encode the PNG")?;
        writer
            .write_image_data(rgb)
            .context("cannot encode the PNG")?;
        writer.finish().context("cannot encode the PNG")?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a PNG: (width, height, RGB bytes).
    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn count(rgb: &[u8], colour: RGBColor) -> usize {
        rgb.chunks(3)
            .filter(|p| p == &[colour.0, colour.1, colour.2])
            .count()
    }

    fn return_chart() -> LineChart {
        LineChart::new("Evaluation return", "training step", "return")
            .series(
                "target 1000",
                (0..20)
                    .map(|i| (i as f64 * 500.0, -900.0 + 40.0 * i as f64))
                    .collect(),
            )
            .series(
                "target 500",
                (0..20)
                    .map(|i| (i as f64 * 500.0, -1000.0 + 25.0 * i as f64))
                    .collect(),
            )
            .reference("behaviour average", -700.0)
            .reference("expert", -150.0)
    }

    #[test]
    fn line_chart_is_a_png_of_the_requested_size_with_the_data_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plots/return.png");
        write_line_chart(&path, &return_chart().size(800, 500)).unwrap();
        let (w, h, rgb) = decode(&std::fs::read(&path).unwrap());
        assert_eq!((w, h), (800, 500));
        let white = count(&rgb, WHITE);
        assert!(white < rgb.len() / 3 * 97 / 100, "nearly blank image");
        assert!(count(&rgb, COLOURS[0]) > 300, "first series not drawn");
        assert!(count(&rgb, COLOURS[1]) > 300, "second series not drawn");
        assert!(
            count(&rgb, REFERENCE_COLOURS[1]) > 50,
            "second reference not drawn"
        );
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn bar_chart_is_a_png_with_bars_and_error_bars() {
        let chart = BarChart::new(
            "Normalised score",
            "dataset tier",
            "score",
            &["medium", "medium-expert", "expert"],
        )
        .series(
            "decision-flowformer",
            vec![
                Bar::with_std(45.0, 5.0),
                Bar::with_std(80.0, 12.0),
                Bar::new(101.0),
            ],
        )
        .series(
            "decision-transformer",
            vec![
                Bar::with_std(42.0, 3.0),
                Bar::with_std(-10.0, 8.0),
                Bar::new(99.0),
            ],
        )
        .series(
            "mlp-bc",
            vec![Bar::new(40.0), Bar::new(60.0), Bar::new(95.0)],
        );
        let bytes = bar_chart_png(&chart).unwrap();
        let (w, h, rgb) = decode(&bytes);
        assert_eq!((w, h), DEFAULT_SIZE);
        for colour in &COLOURS[..3] {
            assert!(count(&rgb, *colour) > 2000, "a series' bars are missing");
        }
        assert!(count(&rgb, BLACK) > 500, "error bars and text missing");
    }

    #[test]
    fn bad_input_errors_name_the_chart_and_the_series() {
        let err = line_chart_png(&LineChart::new("Loss", "step", "loss")).unwrap_err();
        assert_eq!(err.to_string(), "chart \"Loss\": no series to draw");
        let chart = LineChart::new("Loss", "step", "loss").series("train", vec![]);
        let err = line_chart_png(&chart).unwrap_err().to_string();
        assert!(err.contains("series \"train\": no points"), "{err}");
        let chart = LineChart::new("Loss", "step", "loss")
            .series("train", vec![(0.0, 1.0), (1.0, f64::NAN)]);
        let err = line_chart_png(&chart).unwrap_err().to_string();
        assert!(
            err.contains("\"Loss\", series \"train\": point 1 is (1, NaN)"),
            "{err}"
        );
        let err = line_chart_png(&return_chart().reference("broken", f64::INFINITY))
            .unwrap_err()
            .to_string();
        assert!(err.contains("reference line \"broken\": y is inf"), "{err}");
        let err = line_chart_png(&return_chart().size(10, 500))
            .unwrap_err()
            .to_string();
        assert!(err.contains("size 10x500"), "{err}");

        let bars = BarChart::new("Score", "tier", "score", &["a", "b"]);
        let err = bar_chart_png(&bars).unwrap_err().to_string();
        assert!(err.contains("\"Score\": no series"), "{err}");
        let err = bar_chart_png(&bars.clone().series("dt", vec![Bar::new(1.0)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("series \"dt\": expected 2 bars (one per group), found 1"),
            "{err}"
        );
        let err = bar_chart_png(
            &bars
                .clone()
                .series("dt", vec![Bar::new(1.0), Bar::with_std(2.0, -1.0)]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("series \"dt\", group \"b\""), "{err}");
        let err = bar_chart_png(&BarChart::new("Empty", "tier", "score", &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no groups"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        assert!(write_bar_chart(&path, &bars).is_err());
        assert!(!path.exists());
    }

    #[test]
    fn tick_labels_drop_float_noise() {
        let labels: Vec<String> = [0.30000000000000004, 20000.0, -0.0, -150.0, 1e-5, 2.5]
            .iter()
            .map(tick_label)
            .collect();
        assert_eq!(labels, ["0.3", "20000", "0", "-150", "0.00001", "2.5"]);
    }

    #[test]
    fn ranges_hold_the_data() {
        assert_eq!(padded_range([1.0, 3.0].into_iter(), 0.5), (0.0, 4.0));
        assert_eq!(padded_range([2.0].into_iter(), 0.5), (1.8, 2.2));
        assert_eq!(padded_range([0.0].into_iter(), 0.5), (-1.0, 1.0));
        assert_eq!(bar_range([50.0, 100.0].into_iter()), (0.0, 106.0));
        let (lo, hi) = bar_range([-10.0, 90.0].into_iter());
        assert!((lo + 16.0).abs() < 1e-9 && (hi - 96.0).abs() < 1e-9);
        assert_eq!(bar_range([0.0].into_iter()), (-1.0, 1.0));
    }
}
