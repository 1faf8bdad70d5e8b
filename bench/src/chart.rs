//! The latency chart: one panel per load, one line per configuration,
//! percentiles on the x axis and milliseconds (log scale) on the y axis.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::{load_name, Cell};

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("font {0}: {1} (Debian: apt-get install fonts-dejavu-core)")]
    Font(String, String),
    #[error("drawing {0}: {1}")]
    Draw(String, String),
}

const QUANTILES: [&str; 4] = ["p50", "p90", "p99", "p99.9"];

/// Registers the TTF the chart's text is drawn with. Plotters keeps the
/// bytes for the life of the process, hence the leak (once per run).
pub fn load_font(path: &Path) -> Result<(), ChartError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ChartError::Font(path.display().to_string(), e.to_string()))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| {
        ChartError::Font(
            path.display().to_string(),
            "not a usable TrueType font".into(),
        )
    })
}

pub fn draw(cells: &[Cell], out: &Path) -> Result<(), ChartError> {
    let err =
        |e: &dyn std::fmt::Display| ChartError::Draw(out.display().to_string(), e.to_string());
    let mut loads: Vec<String> = Vec::new();
    for c in cells {
        let n = load_name(c);
        if !loads.contains(&n) {
            loads.push(n);
        }
    }
    let cols = if loads.len() > 1 { 2 } else { 1 };
    let rows = loads.len().div_ceil(cols).max(1);
    let root = BitMapBackend::new(out, (800 * cols as u32, 560 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (lo, hi) = bounds(cells);
    for (area, name) in root.split_evenly((rows, cols)).iter().zip(&loads) {
        let mut chart = ChartBuilder::on(area)
            .caption(format!("latency, {name}"), ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(34)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.2f64..3.2f64, (lo..hi).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_labels(4)
            .x_label_formatter(&|x| quantile_label(*x))
            .y_desc("ms")
            .y_label_formatter(&|y| format!("{y:.2}"))
            .draw()
            .map_err(|e| err(&e))?;
        for c in cells.iter().filter(|c| &load_name(c) == name) {
            let color = Palette99::pick(c.kind as usize).to_rgba();
            let points: Vec<(f64, f64)> = [c.p50_ms, c.p90_ms, c.p99_ms, c.p999_ms]
                .iter()
                .enumerate()
                .map(|(i, v)| (i as f64, v.max(lo)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(format!("{} {}", c.kind, c.label))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, color.filled())),
                )
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}

fn quantile_label(x: f64) -> String {
    let i = x.round();
    if (x - i).abs() < 0.01 && (0.0..4.0).contains(&i) {
        QUANTILES[i as usize].to_string()
    } else {
        String::new()
    }
}

/// The y range: every value in view, on decade-friendly edges.
fn bounds(cells: &[Cell]) -> (f64, f64) {
    let all = cells.iter().flat_map(|c| [c.p50_ms, c.p999_ms]);
    let lo = all.clone().fold(f64::INFINITY, f64::min).max(0.001);
    let hi = all.fold(0.0, f64::max).max(lo * 10.0);
    (lo / 1.5, hi * 1.5)
}

/// One line of a curve chart.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// One panel of a curve chart: a y quantity against the curve's x.
pub struct Panel {
    pub y_desc: String,
    pub series: Vec<Series>,
}

/// How a curve's x values are laid out.
#[derive(Clone, Copy)]
pub enum XScale {
    Linear,
    /// Decades: the points (100 B … 1 MB, 1 … 256 connections) are spread
    /// over orders of magnitude.
    Log,
}

impl XScale {
    fn map(self, x: f64) -> f64 {
        match self {
            XScale::Linear => x,
            XScale::Log => x.max(1e-9).log10(),
        }
    }

    /// Log: decades only (1, 10, 100 …); the mesh's other lines unlabelled.
    fn label(self, x: f64) -> String {
        match self {
            XScale::Linear => short(x),
            XScale::Log if (x - x.round()).abs() < 1e-6 => short(10f64.powf(x.round())),
            XScale::Log => String::new(),
        }
    }
}

/// A scaling curve: panels side by side, one line per series, x on the
/// scale given, y linear from 0. Log x is drawn on a linear axis of
/// log10(x), labelled back in x at the decades.
pub fn curve(
    out: &Path,
    title: &str,
    x_desc: &str,
    scale: XScale,
    panels: &[Panel],
) -> Result<(), ChartError> {
    let err =
        |e: &dyn std::fmt::Display| ChartError::Draw(out.display().to_string(), e.to_string());
    let cols = panels.len().max(1);
    let root = BitMapBackend::new(out, (620 * cols as u32, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| err(&e))?;
    let xs: Vec<f64> = panels
        .iter()
        .flat_map(|p| p.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)))
        .map(|x| scale.map(x))
        .collect();
    let x_lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let x_hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (x_lo, x_hi) = if x_lo.is_finite() && x_hi > x_lo {
        let pad = (x_hi - x_lo) * 0.06;
        (x_lo - pad, x_hi + pad)
    } else {
        (x_lo.min(0.0) - 1.0, x_hi.max(0.0) + 1.0)
    };
    for (area, panel) in root.split_evenly((1, cols)).iter().zip(panels) {
        let y_hi = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max)
            .max(1e-6)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(x_lo..x_hi, 0f64..y_hi)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(panel.y_desc.as_str())
            .x_labels(8)
            .x_label_formatter(&|x| scale.label(*x))
            .y_label_formatter(&|y| short(*y))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, s) in panel.series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let points: Vec<(f64, f64)> =
                s.points.iter().map(|(x, y)| (scale.map(*x), *y)).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(s.label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 4, color.filled())),
                )
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}

/// 1200 → "1.2k", 1048576 → "1M", 0.25 → "0.25".
fn short(v: f64) -> String {
    let a = v.abs();
    let (n, unit) = if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let text = if n.abs() >= 100.0 || (n - n.round()).abs() < 1e-6 {
        format!("{n:.0}")
    } else if n.abs() >= 10.0 {
        format!("{n:.1}")
    } else {
        format!("{n:.2}")
    };
    format!("{text}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_numbers() {
        assert_eq!(short(1200.0), "1.20k");
        assert_eq!(short(1e6), "1M");
        assert_eq!(short(256.0), "256");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(16.0), "16");
    }
}
