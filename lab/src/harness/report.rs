//! Turning samples into a CSV, a Markdown table and PNG + SVG plots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::LabError;
use super::sweep::{Experiment, LabOptions, Sample, System};
use crate::stats::{MeanCi, mean_ci};

/// DejaVu Sans, bundled so that PNG plots render the same on a bare CI machine with no fonts
/// installed (license: lab/assets/DejaVuSans-LICENSE.txt).
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Aggregate of the runs of one system at one point.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The system these runs measured.
    pub system: System,
    /// The point's x value.
    pub x: f64,
    /// The point's label, as in the table.
    pub label: String,
    /// Runs that produced a result (failed and unsupported runs are not counted).
    pub runs: usize,
    /// Throughput in answered images per second over the runs.
    pub images_per_s: MeanCi,
    /// Throughput in Mbit/s of answered image bytes over the runs.
    pub mbit_per_s: MeanCi,
    /// Mean of the runs' median latencies, in ms; runs that answered nothing are left out,
    /// NaN when no run answered anything.
    pub p50_ms: f64,
    /// Mean of the runs' 95th-percentile latencies, in ms, as `p50_ms`.
    pub p95_ms: f64,
    /// Mean of the runs' 99th-percentile latencies, in ms, as `p50_ms`.
    pub p99_ms: f64,
    /// Retries inside the system plus client resubmissions, summed over the runs.
    pub retries: u64,
    /// Submissions that came back as errors, summed over the runs.
    pub failures: u64,
    /// Images with no final answer after all client submissions, summed over the runs.
    pub lost: u64,
    /// Images left unanswered by runs cut at the run limit (not lost).
    pub unfinished: u64,
    /// The first note of the point's samples: why it is unsupported or why a run failed.
    pub note: Option<String>,
}

/// Summaries of one experiment, in point order, for each system.
pub fn summarize(exp: &Experiment, samples: &[Sample], systems: &[System]) -> Vec<Summary> {
    let mut out = Vec::new();
    for p in &exp.points {
        for &sys in systems {
            let mine: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.experiment == exp.id && s.label == p.label && s.system == sys)
                .collect();
            let results: Vec<_> = mine.iter().filter_map(|s| s.result.as_ref()).collect();
            let mean = |f: &dyn Fn(&super::driver::RunResult) -> f64| {
                mean_ci(&results.iter().map(|r| f(r)).collect::<Vec<_>>())
            };
            // Latency exists only for runs that answered something: average those.
            let latency = |f: &dyn Fn(&super::driver::RunResult) -> f64| {
                let v: Vec<f64> = results
                    .iter()
                    .map(|r| f(r))
                    .filter(|x| x.is_finite())
                    .collect();
                mean_ci(&v).mean
            };
            out.push(Summary {
                system: sys,
                x: p.x,
                label: p.label.clone(),
                runs: results.len(),
                images_per_s: mean(&|r| r.images_per_s),
                mbit_per_s: mean(&|r| r.mbit_per_s),
                p50_ms: latency(&|r| r.p50_ms),
                p95_ms: latency(&|r| r.p95_ms),
                p99_ms: latency(&|r| r.p99_ms),
                retries: results.iter().map(|r| r.retries).sum(),
                failures: results.iter().map(|r| r.failures as u64).sum(),
                lost: results.iter().map(|r| r.lost as u64).sum(),
                unfinished: results.iter().map(|r| r.unfinished as u64).sum(),
                note: mine.iter().find_map(|s| s.note.clone()),
            });
        }
    }
    out
}

/// One row per run, every measured field.
pub fn write_raw_csv(path: &Path, samples: &[Sample]) -> Result<(), LabError> {
    let mut s = String::from(
        "experiment,x,label,system,run,images,answered,lost,unfinished,failures,retries,elapsed_s,payload_bytes,images_per_s,mbit_per_s,p50_ms,p95_ms,p99_ms,note\n",
    );
    for x in samples {
        let note = x.note.clone().unwrap_or_default().replace([',', '\n'], ";");
        match &x.result {
            Some(r) => {
                let _ = writeln!(
                    s,
                    "{},{},{},{},{},{},{},{},{},{},{},{:.3},{},{:.3},{:.3},{:.1},{:.1},{:.1},{}",
                    x.experiment,
                    x.x,
                    x.label,
                    x.system,
                    x.run,
                    r.images,
                    r.answered,
                    r.lost,
                    r.unfinished,
                    r.failures,
                    r.retries,
                    r.elapsed_s,
                    r.payload_bytes,
                    r.images_per_s,
                    r.mbit_per_s,
                    r.p50_ms,
                    r.p95_ms,
                    r.p99_ms,
                    note
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "{},{},{},{},{},,,,,,,,,,,,,,{}",
                    x.experiment, x.x, x.label, x.system, x.run, note
                );
            }
        }
    }
    std::fs::write(path, s).map_err(LabError::Io)
}

/// One row per point and system: mean and 95% CI half-width.
pub fn write_summary_csv(path: &Path, exp: &Experiment, rows: &[Summary]) -> Result<(), LabError> {
    let mut s = String::from(
        "experiment,x,label,system,runs,images_per_s,images_per_s_ci95,mbit_per_s,mbit_per_s_ci95,p50_ms,p95_ms,p99_ms,retries,failures,lost,unfinished\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.1},{:.1},{:.1},{},{},{},{}",
            exp.id,
            r.x,
            r.label,
            r.system,
            r.runs,
            r.images_per_s.mean,
            r.images_per_s.ci95,
            r.mbit_per_s.mean,
            r.mbit_per_s.ci95,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            r.retries,
            r.failures,
            r.lost,
            r.unfinished
        );
    }
    std::fs::write(path, s).map_err(LabError::Io)
}

/// p50 / p95 / p99, or dashes when no image was answered (there is no latency to show).
fn latency_cell(r: &Summary) -> String {
    let ms = |v: f64| {
        if v.is_finite() {
            format!("{v:.0}")
        } else {
            "–".to_string()
        }
    };
    format!("{} / {} / {}", ms(r.p50_ms), ms(r.p95_ms), ms(r.p99_ms))
}

fn cell(r: Option<&Summary>) -> [String; 4] {
    match r {
        Some(r) if r.runs > 0 => [
            format!("{:.1} ± {:.1}", r.images_per_s.mean, r.images_per_s.ci95),
            format!("{:.2} ± {:.2}", r.mbit_per_s.mean, r.mbit_per_s.ci95),
            latency_cell(r),
            if r.unfinished > 0 {
                format!(
                    "{} / {} / {} ({} unfinished at the run limit)",
                    r.retries, r.failures, r.lost, r.unfinished
                )
            } else {
                format!("{} / {} / {}", r.retries, r.failures, r.lost)
            },
        ],
        Some(r) => {
            let why = r.note.clone().unwrap_or_else(|| "not run".into());
            [format!("n/a ({why})"), "".into(), "".into(), "".into()]
        }
        None => ["not run".into(), "".into(), "".into(), "".into()],
    }
}

/// The Markdown table: Glimpse and baseline side by side.
pub fn markdown(exp: &Experiment, rows: &[Summary], header_note: &str) -> String {
    let mut s = format!("### {}\n\n{}\n\n", exp.title, header_note);
    s.push_str(&format!(
        "| {} | Glimpse images/s | Glimpse Mbit/s | Glimpse p50/p95/p99 ms | Glimpse retries/failures/lost | Baseline images/s | Baseline Mbit/s | Baseline p50/p95/p99 ms | Baseline retries/failures/lost |\n|---|---|---|---|---|---|---|---|---|\n",
        exp.x_label
    ));
    for p in &exp.points {
        let g = rows
            .iter()
            .find(|r| r.label == p.label && r.system == System::Glimpse);
        let b = rows
            .iter()
            .find(|r| r.label == p.label && r.system == System::Baseline);
        let [g1, g2, g3, g4] = cell(g);
        let [b1, b2, b3, b4] = cell(b);
        s.push_str(&format!(
            "| {} | {g1} | {g2} | {g3} | {g4} | {b1} | {b2} | {b3} | {b4} |\n",
            p.label
        ));
    }
    s.push_str(&format!("\n{}\n", exp.method));
    s
}

/// Registers the bundled font as `sans-serif` for plotters (every plot of the lab uses it).
pub(crate) fn register_font() -> Result<(), LabError> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| LabError::Report("bundled font could not be parsed".into()))
}

/// Plots payload Mbit/s (mean ± 95% CI) against the experiment's x for each system, as
/// `DIR/ID.png` and `DIR/ID.svg`. Returns the two paths.
pub fn plot(
    dir: &Path,
    exp: &Experiment,
    rows: &[Summary],
) -> Result<(PathBuf, PathBuf), LabError> {
    register_font()?;
    let png = dir.join(format!("{}.png", exp.id));
    let svg = dir.join(format!("{}.svg", exp.id));
    draw(
        BitMapBackend::new(&png, (900, 560)).into_drawing_area(),
        exp,
        rows,
    )?;
    draw(
        SVGBackend::new(&svg, (900, 560)).into_drawing_area(),
        exp,
        rows,
    )?;
    Ok((png, svg))
}

// Over 80 lines on purpose: one plotters chart: axes, one series per system and the legend.
fn draw<DB: DrawingBackend>(
    area: DrawingArea<DB, plotters::coord::Shift>,
    exp: &Experiment,
    rows: &[Summary],
) -> Result<(), LabError>
where
    DB::ErrorType: 'static,
{
    let e = |x: &dyn std::fmt::Display| LabError::Report(format!("plotting {}: {x}", exp.id));
    area.fill(&WHITE).map_err(|x| e(&x))?;
    let valid: Vec<&Summary> = rows
        .iter()
        .filter(|r| r.runs > 0 && r.mbit_per_s.mean.is_finite())
        .collect();
    let xmin = exp.points.iter().map(|p| p.x).fold(f64::INFINITY, f64::min);
    let xmax = exp
        .points
        .iter()
        .map(|p| p.x)
        .fold(f64::NEG_INFINITY, f64::max);
    let pad = ((xmax - xmin) * 0.05).max(0.05);
    let ymax = valid
        .iter()
        .map(|r| r.mbit_per_s.mean + r.mbit_per_s.ci95)
        .fold(0.0f64, f64::max)
        .max(0.1)
        * 1.15;
    let mut chart = ChartBuilder::on(&area)
        .caption(&exp.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d((xmin - pad)..(xmax + pad), 0.0..ymax)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc(exp.x_label.as_str())
        .y_desc("payload throughput (Mbit/s)")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(|x| e(&x))?;
    for (sys, color) in [(System::Glimpse, BLUE), (System::Baseline, RED)] {
        let pts: Vec<&&Summary> = valid.iter().filter(|r| r.system == sys).collect();
        if pts.is_empty() {
            continue;
        }
        let name = match sys {
            System::Glimpse => "Glimpse (QUIC, per-image streams)",
            System::Baseline => "baseline (seed design: TCP, 1 in flight, 5 s resend)",
        };
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|r| (r.x, r.mbit_per_s.mean)),
                color.stroke_width(2),
            ))
            .map_err(|x| e(&x))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(error_bars(
                pts.iter()
                    .map(|r| (r.x, r.mbit_per_s.mean, r.mbit_per_s.ci95)),
                color,
            ))
            .map_err(|x| e(&x))?;
    }
    legend_and_present(&mut chart, &area, SeriesLabelPosition::UpperRight).map_err(|x| e(&x))
}

/// Vertical bars of ± `ci` around each `(x, mean, ci)`, never below 0: every lab plot's
/// confidence intervals.
pub(crate) fn error_bars(
    points: impl Iterator<Item = (f64, f64, f64)>,
    color: RGBColor,
) -> impl Iterator<Item = ErrorBar<f64, f64, plotters::element::ErrorBarOrientV<f64, f64>>> {
    points.map(move |(x, mean, ci)| {
        ErrorBar::new_vertical(x, (mean - ci).max(0.0), mean, mean + ci, color.filled(), 10)
    })
}

/// The legend at `position` and the rendering: how every lab plot ends.
pub(crate) fn legend_and_present<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<
        'a,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    area: &DrawingArea<DB, plotters::coord::Shift>,
    position: SeriesLabelPosition,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(position)
        .draw()
        .map_err(|x| x.to_string())?;
    area.present().map_err(|x| x.to_string())
}

/// The kernel TCP settings the baseline runs with (they differ between machines and decide
/// much of its behaviour under loss and delay), as read from /proc.
fn kernel_tcp() -> String {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|_| "unknown".into())
    };
    format!(
        "`tcp_congestion_control = {}`, `tcp_slow_start_after_idle = {}`",
        read("tcp_congestion_control"),
        read("tcp_slow_start_after_idle")
    )
}

/// The head of a sweep's report: how it was run (model, runs, concurrency, network, the
/// baseline's TCP settings).
pub fn sweep_header(sweep_name: &str, o: &LabOptions) -> String {
    format!(
        "## Sweep `{sweep_name}`\n\nModel: {} ({}), {} run(s) per point, concurrency {}, {} ms service time, worker capacity {}{}. Network: `--net {}`. Baseline TCP: {}.\n\n",
        o.model,
        if o.model == "synthetic" {
            "a fixed service time stands in for GoogLeNet on this 2-core machine; rerun with --model googlenet on real hosts"
        } else {
            "GoogLeNet on the nodes; the baseline keeps the synthetic service time"
        },
        o.runs,
        o.concurrency,
        o.service_ms,
        o.capacity,
        if o.quick {
            ", --quick (reduced points)"
        } else {
            ""
        },
        o.net,
        kernel_tcp()
    )
}

/// Writes one experiment's `OUT/<id>.{csv,md,png,svg}` from the sweep's samples, and returns
/// its section of the sweep's report (the table and the plot).
pub fn write_experiment(
    exp: &Experiment,
    samples: &[Sample],
    o: &LabOptions,
) -> Result<String, LabError> {
    let rows = summarize(exp, samples, &o.systems);
    write_summary_csv(&o.out.join(format!("{}.csv", exp.id)), exp, &rows)?;
    let (png, svg) = plot(&o.out, exp, &rows)?;
    let table = markdown(
        exp,
        &rows,
        &format!(
            "Network `--net {}`. Mean ± 95% CI (Student t) over the runs; retries/failures/lost are totals over the runs (lost: no final answer after {} client submission(s); unfinished: still unanswered when a run hit its {} s limit).",
            o.net,
            o.client_attempts,
            o.run_limit.as_secs()
        ),
    );
    std::fs::write(o.out.join(format!("{}.md", exp.id)), &table)?;
    let file = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string()
    };
    Ok(format!(
        "{table}\n![{}]({})  ([SVG]({}))\n\n",
        exp.title,
        file(&png),
        file(&svg)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::driver::RunResult;
    use crate::harness::sweep::{ClusterSpec, Point};

    fn run(answered: usize, p50: f64) -> RunResult {
        RunResult {
            images: 10,
            answered,
            lost: 0,
            unfinished: 10 - answered,
            failures: 0,
            retries: 0,
            elapsed_s: 60.0,
            payload_bytes: answered as u64 * 1000,
            images_per_s: answered as f64 / 60.0,
            mbit_per_s: answered as f64 * 8000.0 / 60.0 / 1e6,
            p50_ms: p50,
            p95_ms: p50,
            p99_ms: p50,
            errors: vec![],
        }
    }

    fn sample(r: RunResult, i: usize) -> Sample {
        Sample {
            experiment: "e".into(),
            x: 80.0,
            label: "80%".into(),
            system: System::Glimpse,
            run: i,
            result: Some(r),
            note: None,
        }
    }

    /// A run that answered nothing has no latency: it must not turn the point's latency into
    /// NaN, and a point with no answer at all shows dashes, not "NaN".
    #[test]
    fn runs_without_answers_have_no_latency_and_show_dashes() {
        let exp = Experiment {
            id: "e".into(),
            title: "t".into(),
            x_label: "loss".into(),
            points: vec![Point {
                x: 80.0,
                label: "80%".into(),
                cluster: ClusterSpec::plain(3),
            }],
            images: 10,
            method: String::new(),
        };
        let some = [sample(run(0, f64::NAN), 0), sample(run(2, 900.0), 1)];
        let rows = summarize(&exp, &some, &[System::Glimpse]);
        assert_eq!(rows[0].p50_ms, 900.0);
        assert_eq!(rows[0].unfinished, 18);
        let md = markdown(&exp, &rows, "");
        assert!(md.contains("900 / 900 / 900"), "{md}");
        assert!(md.contains("(18 unfinished at the run limit)"), "{md}");

        let none = [sample(run(0, f64::NAN), 0), sample(run(0, f64::NAN), 1)];
        let md = markdown(&exp, &summarize(&exp, &none, &[System::Glimpse]), "");
        assert!(md.contains("– / – / –"), "{md}");
        assert!(!md.contains("NaN"), "{md}");
    }
}
