//! The placement experiment's report: per placement, the measured runs summarised, the
//! simulated twin beside them, each node's share, as CSV, Markdown and a plot.

use std::fmt::Write as _;

use glimpse_transport::dispatcher::Placement;
use plotters::prelude::*;
use serde::Serialize;

use super::fleet::{PlacementOptions, Run};
use super::twin::TwinRow;
use crate::harness::LabError;
use crate::harness::report::{error_bars, legend_and_present, register_font};
use crate::stats::{MeanCi, mean_ci};

/// The measured runs of one placement.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The placement.
    pub placement: Placement,
    /// Runs measured.
    pub runs: usize,
    /// Answers per second in the window.
    pub images_per_s: MeanCi,
    /// Latency percentiles per run, ms.
    pub p50_ms: MeanCi,
    /// See `p50_ms`.
    pub p95_ms: MeanCi,
    /// See `p50_ms`.
    pub p99_ms: MeanCi,
    /// Slowest answer of all runs, ms.
    pub max_ms: f64,
    /// Images served per slow node ÷ per full-speed node.
    pub slow_share: MeanCi,
    /// Failed requests over all runs.
    pub failed: u64,
    /// Arrivals skipped over all runs.
    pub skipped: u64,
    /// Images each node served, mean over the runs, in the fleet's order.
    pub served_per_node: Vec<f64>,
}

/// One placement's measured p99 against its simulated twin's.
#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    /// The placement.
    pub placement: Placement,
    /// Measured p99, mean over the runs, ms.
    pub measured_p99_ms: f64,
    /// Simulated p99, mean over the runs, ms.
    pub simulated_p99_ms: f64,
    /// (simulated − measured) ÷ measured, percent.
    pub error_pct: f64,
    /// Within the ±10% the experiment aims for.
    pub within_target: bool,
}

/// The twin's target, percent of the measured p99.
pub const TARGET_PCT: f64 = 10.0;

/// One summary per placement, in the order given.
pub fn summarize(placements: &[Placement], runs: &[Run]) -> Vec<Summary> {
    placements
        .iter()
        .map(|&placement| {
            let mine: Vec<&Run> = runs.iter().filter(|r| r.placement == placement).collect();
            let ci = |f: fn(&Run) -> f64| mean_ci(&mine.iter().map(|r| f(r)).collect::<Vec<_>>());
            let nodes = mine.first().map_or(0, |r| r.nodes.len());
            Summary {
                placement,
                runs: mine.len(),
                images_per_s: ci(|r| r.images_per_s),
                p50_ms: ci(|r| r.p50_ms),
                p95_ms: ci(|r| r.p95_ms),
                p99_ms: ci(|r| r.p99_ms),
                max_ms: mine.iter().map(|r| r.max_ms).fold(f64::NAN, f64::max),
                slow_share: ci(Run::slow_share),
                failed: mine.iter().map(|r| r.failed).sum(),
                skipped: mine.iter().map(|r| r.skipped).sum(),
                served_per_node: (0..nodes)
                    .map(|i| {
                        mine.iter()
                            .filter_map(|r| r.nodes.get(i))
                            .map(|n| n.served as f64)
                            .sum::<f64>()
                            / mine.len() as f64
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Each placement's measured p99 against the twin's (placements without a twin are left out).
pub fn validate(rows: &[Summary], twin: &[TwinRow]) -> Vec<Validation> {
    rows.iter()
        .filter_map(|m| {
            let t = twin.iter().find(|t| t.placement == m.placement)?;
            let error_pct = (t.p99_ms.mean - m.p99_ms.mean) / m.p99_ms.mean * 100.0;
            Some(Validation {
                placement: m.placement,
                measured_p99_ms: m.p99_ms.mean,
                simulated_p99_ms: t.p99_ms.mean,
                error_pct,
                within_target: error_pct.abs() <= TARGET_PCT,
            })
        })
        .collect()
}

/// Writes `placement.csv` (every run), `placement.md` and `placement.{png,svg}` into
/// `o.out`, and prints the Markdown.
pub(super) fn write_report(
    o: &PlacementOptions,
    runs: &[Run],
    twin: &[TwinRow],
) -> Result<(), LabError> {
    let rows = summarize(&o.placements, runs);
    let mut csv = String::from(
        "placement,run,sent,ok,failed,skipped,images_per_s,p50_ms,p95_ms,p99_ms,max_ms,slow_share,served_per_node,placement_share_per_node,service_ms_per_node\n",
    );
    for r in runs {
        let join = |f: &dyn Fn(&super::fleet::NodeSeen) -> String| {
            r.nodes.iter().map(f).collect::<Vec<_>>().join(" ")
        };
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{:.2},{:.1},{:.1},{:.1},{:.1},{:.4},{},{},{}",
            r.placement,
            r.run,
            r.sent,
            r.ok,
            r.failed,
            r.skipped,
            r.images_per_s,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            r.max_ms,
            r.slow_share(),
            join(&|n| n.served.to_string()),
            join(&|n| format!("{:.3}", n.placement_share)),
            join(&|n| n.service_ms.map_or("-".into(), |s| format!("{s:.1}"))),
        );
    }
    std::fs::write(o.out.join("placement.csv"), csv)?;
    let md = markdown(o, &rows, twin);
    std::fs::write(o.out.join("placement.md"), &md)?;
    print!("{md}");
    register_font()?;
    let png = o.out.join("placement.png");
    let svg = o.out.join("placement.svg");
    plot(
        BitMapBackend::new(&png, (900, 560)).into_drawing_area(),
        o,
        &rows,
        twin,
    )?;
    plot(
        SVGBackend::new(&svg, (900, 560)).into_drawing_area(),
        o,
        &rows,
        twin,
    )?;
    Ok(())
}

/// `/proc/loadavg`'s three averages, for the report's header.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn ci(x: &MeanCi) -> String {
    format!("{:.0} ± {:.0}", x.mean, x.ci95)
}

// Over 80 lines on purpose: one report, its header, the measured table, the per-node table
// and the twin's table in the order a reader needs them.
fn markdown(o: &PlacementOptions, rows: &[Summary], twin: &[TwinRow]) -> String {
    let load = match o.fleet.nominal_per_s() {
        Some(n) => format!(
            "{:.1} images/s, Poisson ({:.0}% of the fleet's nominal {n:.1})",
            o.rate,
            o.rate / n * 100.0
        ),
        None => format!("{:.1} images/s, Poisson", o.rate),
    };
    let mut s = format!(
        "# Placement around a slow node, measured with real processes\n\n\
         Fleet: {}, `--capacity {}` each, on 127.0.0.1 (QUIC + mutual TLS), behind one \
         `glimpse` front-end. Load: {load} through `POST /api/v1/classify?wait=true` over \
         HTTPS; {} s of warm-up, then a {} s window. {} runs per placement, alternating, a fresh \
         fleet each; the n-th run of every placement replays the same arrival times. {} images \
         of {:.0} KB on average. Load average (1/5/15 min) when the report was written: {}.\n\n\
         | placement | images/s | p50 ms | p95 ms | p99 ms | max ms | slow node's share | failed / skipped |\n\
         |---|---|---|---|---|---|---|---|\n",
        o.fleet.describe(),
        o.capacity,
        o.warmup.as_secs_f64(),
        o.duration.as_secs_f64(),
        o.runs,
        o.images.len(),
        o.images.iter().map(|i| i.len()).sum::<usize>() as f64 / o.images.len().max(1) as f64 / 1e3,
        load_average(),
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {:.1} ± {:.1} | {} | {} | {} | {:.0} | {:.3} ± {:.3} | {} / {} |",
            r.placement,
            r.images_per_s.mean,
            r.images_per_s.ci95,
            ci(&r.p50_ms),
            ci(&r.p95_ms),
            ci(&r.p99_ms),
            r.max_ms,
            r.slow_share.mean,
            r.slow_share.ci95,
            r.failed,
            r.skipped
        );
    }
    let find = |p| rows.iter().find(|r| r.placement == p);
    if let (Some(lo), Some(ef)) = (
        find(Placement::LeastOutstanding),
        find(Placement::ExpectedFinish),
    ) {
        let _ = writeln!(
            s,
            "\np99, least-outstanding ÷ expected-finish: **{:.2}×**. The slow node's share is \
             the images it served ÷ the images a full-speed node served (1 = no difference).",
            lo.p99_ms.mean / ef.p99_ms.mean
        );
    }
    s.push_str(
        "\nImages served per node, mean over the runs (slowdown in brackets):\n\n| placement |",
    );
    for i in 0..o.fleet.len() {
        let _ = write!(s, " n{} ({}×) |", i + 1, o.fleet.slowdown(i));
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(o.fleet.len()));
    s.push('\n');
    for r in rows {
        let _ = write!(s, "| {} |", r.placement);
        for v in &r.served_per_node {
            let _ = write!(s, " {v:.0} |");
        }
        s.push('\n');
    }
    if twin.is_empty() {
        s.push_str(
            "\nNo simulated twin: the simulator has a calibrated model of synthetic nodes only.\n",
        );
        return s;
    }
    let _ = write!(
        s,
        "\n## The simulated twin\n\nThe same fleet and arrivals rate in `glimpse-lab simulate`'s \
         engine (the dispatcher's real core; the node model calibrated in EXPERIMENTS.md §1), \
         {} runs per placement.\n\n\
         | placement | measured p50 / p99 ms | simulated p50 / p99 ms | p99 error | within ±{TARGET_PCT:.0}% | simulated slow share | simulated extra attempts | lost |\n\
         |---|---|---|---|---|---|---|---|\n",
        o.sim_runs
    );
    for v in validate(rows, twin) {
        let (Some(m), Some(t)) = (
            find(v.placement),
            twin.iter().find(|t| t.placement == v.placement),
        ) else {
            continue;
        };
        let _ = writeln!(
            s,
            "| {} | {:.0} / {:.0} | {:.0} / {:.0} | {:+.1}% | {} | {:.3} | {} | {} |",
            v.placement,
            m.p50_ms.mean,
            v.measured_p99_ms,
            t.p50_ms.mean,
            v.simulated_p99_ms,
            v.error_pct,
            if v.within_target { "yes" } else { "no" },
            t.slow_share.mean,
            t.extra_attempts,
            t.lost
        );
    }
    s
}

/// The x position of each percentile on the plot.
const PERCENTILES: [f64; 3] = [50.0, 95.0, 99.0];

// Over 80 lines on purpose: one plotters chart: axes, measured and simulated series per
// placement, and the legend.
fn plot<DB: DrawingBackend>(
    area: DrawingArea<DB, plotters::coord::Shift>,
    o: &PlacementOptions,
    rows: &[Summary],
    twin: &[TwinRow],
) -> Result<(), LabError>
where
    DB::ErrorType: 'static,
{
    let e = |x: &dyn std::fmt::Display| LabError::Report(format!("plotting placement: {x}"));
    area.fill(&WHITE).map_err(|x| e(&x))?;
    let measured = |r: &Summary| [r.p50_ms, r.p95_ms, r.p99_ms];
    let simulated = |t: &TwinRow| [t.p50_ms, t.p95_ms, t.p99_ms];
    let ymax = rows
        .iter()
        .flat_map(|r| measured(r).map(|m| m.mean + m.ci95))
        .chain(twin.iter().flat_map(|t| simulated(t).map(|m| m.mean)))
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max)
        * 1.15;
    let title = format!("Latency by percentile: {}", o.fleet.describe());
    let mut chart = ChartBuilder::on(&area)
        .caption(title, ("sans-serif", 17))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(45.0..100.5, 0.0..ymax)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms), mean ± 95% CI over runs")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(|x| e(&x))?;
    for r in rows {
        let color = match r.placement {
            Placement::LeastOutstanding => RED,
            Placement::ExpectedFinish => BLUE,
        };
        let values = measured(r);
        chart
            .draw_series(LineSeries::new(
                PERCENTILES.iter().zip(values).map(|(&x, m)| (x, m.mean)),
                color.stroke_width(2),
            ))
            .map_err(|x| e(&x))?
            .label(format!("{} (measured)", r.placement))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(error_bars(
                PERCENTILES
                    .iter()
                    .zip(values)
                    .map(|(&x, m)| (x, m.mean, m.ci95)),
                color,
            ))
            .map_err(|x| e(&x))?;
        if let Some(t) = twin.iter().find(|t| t.placement == r.placement) {
            let faint = color.mix(0.45);
            chart
                .draw_series(
                    PERCENTILES
                        .iter()
                        .zip(simulated(t))
                        .map(|(&x, m)| Circle::new((x, m.mean), 5, faint.filled())),
                )
                .map_err(|x| e(&x))?
                .label(format!("{} (simulated twin)", r.placement))
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, faint.filled()));
        }
    }
    legend_and_present(&mut chart, &area, SeriesLabelPosition::UpperLeft).map_err(|x| e(&x))
}

#[cfg(test)]
mod tests {
    use super::super::fleet::NodeSeen;
    use super::*;

    fn run(placement: Placement, p99_ms: f64, slow_served: u64) -> Run {
        let node = NodeSeen::served;
        Run {
            placement,
            run: 0,
            sent: 100,
            ok: 99,
            failed: 1,
            skipped: 0,
            images_per_s: 10.0,
            p50_ms: 50.0,
            p95_ms: 80.0,
            p99_ms,
            max_ms: p99_ms + 1.0,
            nodes: vec![node(1.0, 100), node(5.0, slow_served)],
            first_error: None,
        }
    }

    fn row(placement: Placement, p99: f64) -> TwinRow {
        let m = |mean| MeanCi {
            mean,
            ci95: 0.0,
            n: 1,
        };
        TwinRow {
            placement,
            p50_ms: m(50.0),
            p95_ms: m(80.0),
            p99_ms: m(p99),
            images_per_s: m(10.0),
            slow_share: m(0.1),
            extra_attempts: 0,
            lost: 0,
        }
    }

    #[test]
    fn summaries_keep_the_placements_apart_and_validate_against_the_twin() {
        let runs = [
            run(Placement::LeastOutstanding, 800.0, 40),
            run(Placement::ExpectedFinish, 200.0, 10),
            run(Placement::LeastOutstanding, 600.0, 60),
            run(Placement::ExpectedFinish, 220.0, 0),
        ];
        let order = [Placement::LeastOutstanding, Placement::ExpectedFinish];
        let rows = summarize(&order, &runs);
        assert_eq!(rows[0].placement, Placement::LeastOutstanding);
        assert_eq!((rows[0].runs, rows[0].p99_ms.mean), (2, 700.0));
        assert_eq!(rows[1].p99_ms.mean, 210.0);
        assert_eq!(rows[1].max_ms, 221.0);
        assert!((rows[0].slow_share.mean - 0.5).abs() < 1e-12);
        assert!((rows[1].slow_share.mean - 0.05).abs() < 1e-12);
        assert_eq!(rows[1].served_per_node, vec![100.0, 5.0]);
        assert_eq!(rows[0].failed, 2);
        // 700 → 630 is −10% (in), 210 → 240 is +14.3% (out).
        let v = validate(
            &rows,
            &[
                row(Placement::LeastOutstanding, 630.0),
                row(Placement::ExpectedFinish, 240.0),
            ],
        );
        assert!(v[0].within_target && (v[0].error_pct + 10.0).abs() < 1e-9);
        assert!(!v[1].within_target && v[1].error_pct > 14.0);
        assert!(validate(&rows, &[]).is_empty());
    }
}
