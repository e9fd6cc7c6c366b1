//! What every chart shares: the shipped font, the frame (background, title, legend
//! column), axis helpers and PNG encoding.

use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use super::{MAX_SIDE, MIN_SIDE};

/// DejaVu Sans (Bitstream Vera licence, `assets/fonts/LICENSE`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
pub(super) const FAMILY: &str = "sans-serif";

/// Series colours (the "tab10" palette).
pub(super) const COLOURS: [RGBColor; 10] = [
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
pub(super) const REFERENCE_COLOURS: [RGBColor; 3] = [
    RGBColor(0, 0, 0),
    RGBColor(110, 110, 110),
    RGBColor(170, 170, 170),
];

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

#[derive(Clone, Copy)]
pub(super) enum Mark {
    Line,
    Dashed,
    Block,
}

pub(super) struct LegendEntry {
    pub(super) label: String,
    pub(super) colour: RGBColor,
    pub(super) mark: Mark,
}

const LEGEND_FONT: u32 = 15;
const LEGEND_ROW: i32 = 24;
const LEGEND_SAMPLE: i32 = 30;

/// Draws the frame (background, title, legend column) and lets `plot` draw the chart
/// into the area left of the legend; returns the PNG bytes.
pub(super) fn render<F>(
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

pub(super) fn draw_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("cannot draw the chart: {e}")
}

pub(super) fn check_size(title: &str, (w, h): (u32, u32)) -> anyhow::Result<()> {
    if !(MIN_SIDE..=MAX_SIDE).contains(&w) || !(MIN_SIDE..=MAX_SIDE).contains(&h) {
        bail!(
            "chart \"{title}\": size {w}x{h} pixels; expected each side in {MIN_SIDE}..={MAX_SIDE}"
        );
    }
    Ok(())
}

/// The range of `values` widened by `pad` of its span on each side (or by a unit
/// around a single value).
pub(super) fn padded_range(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
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
pub(super) fn tick_label(v: &f64) -> String {
    let rounded: f64 = format!("{v:.5e}").parse().unwrap_or(*v);
    if rounded == 0.0 {
        "0".to_string()
    } else {
        rounded.to_string()
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
