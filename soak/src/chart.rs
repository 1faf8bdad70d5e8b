//! soak.png: the proxy's RSS (left axis) and open fds (right axis) over
//! the run with the upstream restarts marked, and p50/p99 per window below.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Summary;

#[derive(Debug, thiserror::Error)]
#[error("drawing {0}: {1}")]
pub struct ChartError(String, String);

const MIB: f64 = 1024.0 * 1024.0;

pub fn draw(s: &Summary, out: &Path) -> Result<(), ChartError> {
    let err = |e: &dyn std::fmt::Display| ChartError(out.display().to_string(), e.to_string());
    let root = BitMapBackend::new(out, (1100, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(540);
    resources(s, &top).map_err(|e| err(&e))?;
    latency(s, &bottom).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type DrawResult<'a> =
    Result<(), DrawingAreaErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>>;

fn resources<'a>(s: &Summary, area: &Area<'a>) -> DrawResult<'a> {
    let x_max = (s.duration_s / 60.0).max(0.1);
    let rss: Vec<(f64, f64)> = s
        .samples
        .iter()
        .map(|p| (p.t_s / 60.0, p.rss_bytes as f64 / MIB))
        .collect();
    let fds: Vec<(f64, f64)> = s
        .samples
        .iter()
        .map(|p| (p.t_s / 60.0, p.fds as f64))
        .collect();
    let top = |v: &[(f64, f64)]| v.iter().map(|p| p.1).fold(1.0, f64::max) * 1.25;
    let (rss_top, fd_top) = (top(&rss), top(&fds));
    let mut chart = ChartBuilder::on(area)
        .caption(
            "portcullis RSS and open fds (red lines: upstream restarts)",
            ("sans-serif", 22),
        )
        .margin(14)
        .x_label_area_size(34)
        .y_label_area_size(64)
        .right_y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, 0f64..rss_top)?
        .set_secondary_coord(0f64..x_max, 0f64..fd_top);
    chart
        .configure_mesh()
        .x_desc("minutes")
        .y_desc("RSS MiB")
        .draw()?;
    chart.configure_secondary_axes().y_desc("open fds").draw()?;
    for r in &s.restart_spans {
        let x = r.start_s / 60.0;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(x, 0.0), (x, rss_top)],
            RED.mix(0.5).stroke_width(1),
        )))?;
    }
    chart
        .draw_series(LineSeries::new(rss, BLUE.stroke_width(2)))?
        .label("RSS MiB (left)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
    chart
        .draw_secondary_series(LineSeries::new(fds, GREEN.stroke_width(2)))?
        .label("open fds (right)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], GREEN.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
}

fn latency<'a>(s: &Summary, area: &Area<'a>) -> DrawResult<'a> {
    let x_max = (s.duration_s / 60.0).max(0.1);
    let mid = |w: &crate::stats::WindowRow| (w.start_s + w.end_s) / 120.0;
    let p99: Vec<(f64, f64)> = s.windows.iter().map(|w| (mid(w), w.p99_ms)).collect();
    let p50: Vec<(f64, f64)> = s.windows.iter().map(|w| (mid(w), w.p50_ms)).collect();
    let y_top = p99.iter().map(|p| p.1).fold(1.0, f64::max) * 1.25;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "latency per window (from when each call was due)",
            ("sans-serif", 22),
        )
        .margin(14)
        .x_label_area_size(34)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, 0f64..y_top)?;
    chart
        .configure_mesh()
        .x_desc("minutes")
        .y_desc("ms")
        .draw()?;
    for (points, color, name) in [(p99, RED, "p99"), (p50, BLUE, "p50")] {
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
}
