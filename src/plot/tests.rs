use plotters::prelude::*;

use super::bar::bar_range;
use super::frame::{padded_range, tick_label, COLOURS, REFERENCE_COLOURS};
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
    let chart =
        LineChart::new("Loss", "step", "loss").series("train", vec![(0.0, 1.0), (1.0, f64::NAN)]);
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

#[test]
fn fixed_y_range_is_validated_and_drawn() {
    let rates = LineChart::new("Success", "memory length", "success rate (%)")
        .series("a", vec![(50.0, 100.0), (250.0, 100.0), (1000.0, 100.0)])
        .series("b", vec![(50.0, 52.0), (250.0, 52.0), (1000.0, 52.0)]);
    // Fitted to the data, the axis spans 52..100; fixed, 0..100: the flat lines move.
    let fitted = decode(&line_chart_png(&rates).unwrap()).2;
    let fixed = decode(&line_chart_png(&rates.clone().y_range(0.0, 100.0)).unwrap()).2;
    assert_ne!(fitted, fixed);
    assert!(count(&fixed, COLOURS[0]) > 300 && count(&fixed, COLOURS[1]) > 300);
    // Two coinciding series: the first, drawn wider, still shows around the second.
    let same = LineChart::new("Success", "memory length", "success rate (%)")
        .series("a", vec![(50.0, 52.0), (1000.0, 52.0)])
        .series("b", vec![(50.0, 52.0), (1000.0, 52.0)])
        .y_range(0.0, 100.0);
    let rgb = decode(&line_chart_png(&same).unwrap()).2;
    assert!(count(&rgb, COLOURS[0]) > 300, "the first series is hidden");
    assert!(count(&rgb, COLOURS[1]) > 300, "the second series is hidden");
    let err = line_chart_png(&rates.y_range(100.0, 0.0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("y range 100..0"), "{err}");
}
