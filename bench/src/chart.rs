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
