//! Learning curves: validation BLEU, perplexity and learning rate, against updates (top row)
//! and against minutes of training (bottom row), drawn from `metrics.csv`. Every validation
//! is one marked point (`<circle>`) on each of the six panels.
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::plot_err;
use crate::error::Result;

/// One row of `metrics.csv` as plotted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Updates done at the validation.
    pub step: f64,
    /// Seconds spent in updates (validations excluded), over all runs, in minutes.
    pub minutes: f64,
    pub bleu: f64,
    pub ppl: f64,
    pub lr: f64,
}

/// `[lo, hi]` of `values`, widened so that it is never empty.
fn range(values: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if from_zero {
        lo = lo.min(0.0);
        hi = hi.max(1.0);
    }
    if hi - lo < 1e-12 {
        let pad = (hi.abs() * 0.1).max(1e-6);
        (lo, hi) = (lo - pad, hi + pad);
    }
    let pad = (hi - lo) * 0.05;
    (if from_zero && lo >= 0.0 { lo } else { lo - pad }, hi + pad)
}

/// A plotted quantity: its axis name and how to read it from a point.
type Axis = (&'static str, fn(&Point) -> f64);

/// One panel: `y` of every point against `x`, as a line with a marker per point.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    points: &[Point],
    (x_name, x): Axis,
    (y_name, y): Axis,
    color: RGBColor,
) -> Result<()> {
    let err = plot_err("learning curves");
    let xs = range(points.iter().map(x), true);
    let ys = range(points.iter().map(y), y_name == "validation BLEU");
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{y_name} / {x_name}"), ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(56)
        .build_cartesian_2d(xs.0..xs.1, ys.0..ys.1)
        .map_err(&err)?;
    chart
        .configure_mesh()
        .x_desc(x_name)
        .y_desc(y_name)
        .x_labels(6)
        .y_labels(6)
        .max_light_lines(0)
        .y_label_formatter(&|v| {
            if v.abs() > 0.0 && v.abs() < 0.01 {
                format!("{v:.1e}")
            } else {
                format!("{v:.1}")
            }
        })
        .draw()
        .map_err(&err)?;
    let series: Vec<(f64, f64)> = points.iter().map(|p| (x(p), y(p))).collect();
    chart
        .draw_series(LineSeries::new(
            series.iter().copied(),
            color.stroke_width(2),
        ))
        .map_err(&err)?;
    chart
        .draw_series(
            series
                .iter()
                .map(|&(a, b)| Circle::new((a, b), 3, color.filled())),
        )
        .map_err(&err)?;
    Ok(())
}

/// The SVG document of the curves of `points`.
pub fn curves_svg(points: &[Point]) -> Result<String> {
    let err = plot_err("learning curves");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1200, 640)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let panels = root.split_evenly((2, 3));
        let xs: [Axis; 2] = [
            ("updates", |p| p.step),
            ("minutes of training", |p| p.minutes),
        ];
        let ys: [(Axis, RGBColor); 3] = [
            (("validation BLEU", |p| p.bleu), RGBColor(31, 119, 180)),
            (("validation perplexity", |p| p.ppl), RGBColor(214, 39, 40)),
            (("learning rate", |p| p.lr), RGBColor(44, 160, 44)),
        ];
        for (r, &x) in xs.iter().enumerate() {
            for (c, &(y, color)) in ys.iter().enumerate() {
                panel(&panels[r * 3 + c], points, x, y, color)?;
            }
        }
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// Draws `points` (read from `metrics.csv` by [`crate::train::MetricsCsv::points`]) into
/// `out`, written atomically.
pub fn write_curves(points: &[Point], out: &Path) -> Result<()> {
    crate::atomic::write_atomic(out, curves_svg(points)?.as_bytes())
}
