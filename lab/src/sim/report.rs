//! Results as the lab's other sweeps write them: CSV, Markdown tables, and PNG + SVG plots
//! (with the bundled font, so a bare CI machine renders them the same).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::SimError;
use super::project::{Projection, SCENARIOS};
use super::validate::{Check, TARGET_PCT};

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

fn io_err(path: &Path, e: impl std::fmt::Display) -> SimError {
    SimError::Output {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Writes `text` to `dir/name`, creating `dir`.
pub(super) fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, SimError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| io_err(&path, e))?;
    Ok(path)
}

/// The validation as CSV.
pub(super) fn validation_csv(checks: &[Check]) -> String {
    let mut s = String::from(
        "experiment,x,measured_images_per_s,simulated_images_per_s,images_per_s_error_pct,\
         measured_p50_ms,simulated_p50_ms,p50_error_pct,measured_p99_ms,simulated_p99_ms,lost,within_target\n",
    );
    for c in checks {
        let _ = writeln!(
            s,
            "{},{},{:.3},{:.3},{:.2},{:.1},{:.1},{:.2},{:.1},{:.1},{},{}",
            c.experiment,
            c.x,
            c.measured_images_per_s,
            c.simulated_images_per_s,
            c.images_per_s_error_pct,
            c.measured_p50_ms,
            c.simulated_p50_ms,
            c.p50_error_pct,
            c.measured_p99_ms,
            c.simulated_p99_ms,
            c.lost,
            c.within_target
        );
    }
    s
}

/// The validation as a Markdown table.
pub(super) fn validation_markdown(checks: &[Check]) -> String {
    let mut s = String::from(
        "| experiment | x | images/s measured | images/s simulated | error | p50 ms measured | p50 ms simulated | error | p99 ms measured / simulated | within ±10% |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for c in checks {
        let x = match c.experiment {
            "workers" => format!("{} worker(s)", c.x),
            _ => format!("p = {}", c.x),
        };
        let _ = writeln!(
            s,
            "| {} | {x} | {:.1} | {:.1} | {:+.1}% | {:.0} | {:.0} | {:+.1}% | {:.0} / {:.0} | {} |",
            c.experiment,
            c.measured_images_per_s,
            c.simulated_images_per_s,
            c.images_per_s_error_pct,
            c.measured_p50_ms,
            c.simulated_p50_ms,
            c.p50_error_pct,
            c.measured_p99_ms,
            c.simulated_p99_ms,
            if c.within_target { "yes" } else { "**no**" }
        );
    }
    let misses = checks.iter().filter(|c| !c.within_target).count();
    let _ = writeln!(
        s,
        "\n{} of {} points within ±{TARGET_PCT}% on both images/s and p50.",
        checks.len() - misses,
        checks.len()
    );
    s
}

/// The projections as CSV, one row per scenario and fleet size.
pub(super) fn projections_csv(points: &[Projection]) -> String {
    let mut s = String::from(
        "scenario,hedge,nodes,images,answered,lost,offered_per_s,images_per_s,drain_s,p50_ms,p95_ms,p99_ms,\
         attempts,wasted,cancelled,retries,hedges,hedge_wins,timeouts,unstarted_cancels,silences,\
         connection_losses,crashes,stalls,lost_answers,overloaded,core_us_per_image,core_calls_per_image,sim_s,wall_s,events,\
         p99_second_half_ms,slow_share,placement\n",
    );
    for p in points {
        let r = &p.report;
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{:.1},{:.1},{:.2},{:.1},{:.1},{:.1},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.3},{:.1},{:.2},{:.2},{},{:.1},{},{}",
            p.scenario,
            p.hedge,
            r.nodes,
            r.images,
            r.answered,
            r.lost,
            p.offered_per_s,
            r.images_per_s,
            r.drain_s,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            r.attempts,
            r.wasted,
            r.cancelled,
            r.retries,
            r.hedges,
            r.hedge_wins,
            r.timeouts,
            r.unstarted_cancels,
            r.silences,
            r.connection_losses,
            r.crashes,
            r.stalls,
            r.lost_answers,
            r.overloaded,
            r.core_us_per_image,
            r.core_calls_per_image,
            r.sim_s,
            r.wall_s,
            r.events,
            r.p99_second_half_ms,
            r.slow_share.map_or(String::new(), |x| format!("{x:.4}")),
            p.placement
        );
    }
    s
}

/// The projections as Markdown: the dispatcher's CPU per image against fleet size first,
/// then one table per scenario.
pub(super) fn projections_markdown(points: &[Projection]) -> String {
    let mut s = String::new();
    let mut nodes: Vec<usize> = points.iter().map(|p| p.report.nodes).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let scenarios: Vec<_> = SCENARIOS
        .iter()
        .filter(|sc| points.iter().any(|p| p.scenario == sc.id))
        .collect();
    s.push_str("Dispatcher CPU time per image (µs, time inside the core's calls / images answered):\n\n| nodes |");
    for sc in &scenarios {
        let _ = write!(s, " {} |", sc.id);
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(scenarios.len()));
    s.push('\n');
    for n in &nodes {
        let _ = write!(s, "| {n} |");
        for sc in &scenarios {
            match points
                .iter()
                .find(|p| p.scenario == sc.id && p.report.nodes == *n)
            {
                Some(p) => {
                    let _ = write!(s, " {:.2} |", p.report.core_us_per_image);
                }
                None => s.push_str(" – |"),
            }
        }
        s.push('\n');
    }
    for sc in scenarios {
        let _ = write!(
            s,
            "\n**{}** ({}):\n\n| nodes | images | offered/s | images/s | p50 / p99 ms | p99 2nd half | slow share | attempts − images | cancelled | hedges (won) | timeouts / silences / conn. lost | crashes / stalls | lost | core µs/image | wall s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            sc.id, sc.title
        );
        for p in points.iter().filter(|p| p.scenario == sc.id) {
            let r = &p.report;
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {:.0} | {:.0} / {:.0} | {:.0} | {} | {} ({:.2}%) | {} | {} ({}) | {} / {} / {} | {} / {} | {} | {:.2} | {:.1} |",
                r.nodes,
                r.images,
                p.offered_per_s,
                r.images_per_s,
                r.p50_ms,
                r.p99_ms,
                r.p99_second_half_ms,
                r.slow_share.map_or("–".to_string(), |x| format!("{x:.3}")),
                r.wasted,
                r.wasted as f64 * 100.0 / r.answered.max(1) as f64,
                r.cancelled,
                r.hedges,
                r.hedge_wins,
                r.timeouts,
                r.silences,
                r.connection_losses,
                r.crashes,
                r.stalls,
                r.lost,
                r.core_us_per_image,
                r.wall_s
            );
        }
    }
    s
}

/// One series of a plot.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// A line plot with a logarithmic x axis (fleet size), as PNG and SVG.
fn plot(
    dir: &Path,
    id: &str,
    title: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), SimError> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| io_err(dir, "bundled font could not be parsed"))?;
    let png = dir.join(format!("{id}.png"));
    let svg = dir.join(format!("{id}.svg"));
    draw(
        BitMapBackend::new(&png, (900, 560)).into_drawing_area(),
        title,
        y_label,
        series,
    )
    .map_err(|e| io_err(&png, e))?;
    draw(
        SVGBackend::new(&svg, (900, 560)).into_drawing_area(),
        title,
        y_label,
        series,
    )
    .map_err(|e| io_err(&svg, e))?;
    Ok(())
}

fn draw<DB: DrawingBackend>(
    area: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |x: &dyn std::fmt::Display| x.to_string();
    area.fill(&WHITE).map_err(|x| e(&x))?;
    let all = series.iter().flat_map(|s| s.points.iter());
    let (xmin, xmax, ymax) = all.fold((f64::INFINITY, 0.0f64, 0.0f64), |(a, b, c), &(x, y)| {
        (a.min(x), b.max(x), c.max(y))
    });
    if !xmin.is_finite() {
        return Ok(());
    }
    let mut chart = ChartBuilder::on(&area)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(
            ((xmin * 0.8)..(xmax * 1.25)).log_scale(),
            0.0..(ymax.max(1e-9) * 1.15),
        )
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("nodes (log scale)")
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(|x| e(&x))?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|x| e(&x))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|x| e(&x))?;
    area.present().map_err(|x| e(&x))?;
    Ok(())
}

/// The projection plots: dispatcher CPU per image, p99 latency, and throughput per node,
/// against fleet size, one line per scenario.
pub(super) fn projection_plots(dir: &Path, points: &[Projection]) -> Result<(), SimError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let series = |f: fn(&Projection) -> f64| -> Vec<Series> {
        SCENARIOS
            .iter()
            .map(|sc| Series {
                name: sc.id.to_string(),
                points: points
                    .iter()
                    .filter(|p| p.scenario == sc.id)
                    .map(|p| (p.report.nodes as f64, f(p)))
                    .collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect()
    };
    plot(
        dir,
        "core-cpu",
        "Dispatcher core CPU time per image",
        "µs per image",
        &series(|p| p.report.core_us_per_image),
    )?;
    plot(
        dir,
        "p99",
        "p99 latency (open loop)",
        "p99 latency (ms)",
        &series(|p| p.report.p99_ms),
    )?;
    plot(
        dir,
        "throughput-per-node",
        "Answered images/s per node",
        "images/s per node",
        &series(|p| p.report.images_per_s / p.report.nodes.max(1) as f64),
    )
}
