//! The uplink sweep's report: per loss rate and protocol, the burst's time (mean ± 95% CI
//! over the runs) and the per-image latency percentiles of all runs pooled; HTTP/2's time
//! over HTTP/3's; a CSV of every run, a Markdown report and two plots (PNG + SVG).

use std::fmt::Write as _;

use plotters::prelude::*;

use glimpse_transport::CongestionControl;

use super::run::{PROTOCOLS, Run, UplinkOptions};
use crate::harness::LabError;
use crate::harness::report::{error_bars, legend_and_present, register_font};
use crate::load::protocol::HttpVersion;
use crate::stats::{MeanCi, mean_ci, percentile};

/// Aggregate of one protocol's runs at one loss rate.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Loss rate each way.
    pub loss: f64,
    /// HTTP version.
    pub http: HttpVersion,
    /// Runs whose every image was answered (the only ones with a burst time).
    pub complete_runs: usize,
    /// Time until the burst's last answer, seconds, over the complete runs.
    pub total_s: MeanCi,
    /// Median per-image latency over all answered images of all runs, seconds.
    pub p50_s: f64,
    /// 99th percentile of the same.
    pub p99_s: f64,
    /// Images that got no good answer, over all runs.
    pub failed: usize,
    /// Packets the link carried from the client over all runs, and the share it dropped.
    pub packets_up: u64,
    /// The share of `packets_up` dropped.
    pub drop_up: f64,
}

/// One summary per loss rate and protocol, in the order of `losses` then [`PROTOCOLS`].
pub fn summarize(losses: &[f64], runs: &[Run]) -> Vec<Summary> {
    let mut out = Vec::new();
    for &loss in losses {
        for http in PROTOCOLS {
            let mine: Vec<&Run> = runs
                .iter()
                .filter(|r| r.loss == loss && r.http == http)
                .collect();
            let totals: Vec<f64> = mine
                .iter()
                .filter(|r| r.failed == 0)
                .map(|r| r.total_s)
                .collect();
            let packets_up: u64 = mine.iter().map(|r| r.link.packets_up).sum();
            let mut all: Vec<f64> = mine.iter().flat_map(|r| r.latencies_s.clone()).collect();
            all.sort_by(f64::total_cmp);
            out.push(Summary {
                loss,
                http,
                complete_runs: totals.len(),
                total_s: mean_ci(&totals),
                p50_s: percentile(&all, 0.50),
                p99_s: percentile(&all, 0.99),
                failed: mine.iter().map(|r| r.failed).sum(),
                packets_up,
                drop_up: mine.iter().map(|r| r.link.dropped_up).sum::<u64>() as f64
                    / packets_up.max(1) as f64,
            });
        }
    }
    out
}

/// How many times longer HTTP/2's burst took than HTTP/3's at `loss` (NaN if either is
/// missing).
pub fn speedup(rows: &[Summary], loss: f64) -> f64 {
    let mean = |http| {
        rows.iter()
            .find(|r| r.loss == loss && r.http == http)
            .map_or(f64::NAN, |r| r.total_s.mean)
    };
    mean(HttpVersion::Http2) / mean(HttpVersion::Http3)
}

/// Writes `uplink.csv`, `uplink.md`, `uplink-total.{png,svg}` and `uplink-p99.{png,svg}` into
/// `o.out`, and prints the Markdown table.
pub fn write_report(o: &UplinkOptions, runs: &[Run]) -> Result<(), LabError> {
    let rows = summarize(&o.losses, runs);
    let mut csv = String::from(
        "loss,http,run,total_s,answered,failed,p50_s,max_s,packets_up,dropped_up,packets_down,dropped_down\n",
    );
    for r in runs {
        let _ = writeln!(
            csv,
            "{},{},{},{:.4},{},{},{:.4},{:.4},{},{},{},{}",
            r.loss,
            http_name(r.http),
            r.run,
            r.total_s,
            r.latencies_s.len(),
            r.failed,
            percentile(&r.latencies_s, 0.5),
            r.latencies_s.last().copied().unwrap_or(f64::NAN),
            r.link.packets_up,
            r.link.dropped_up,
            r.link.packets_down,
            r.link.dropped_down
        );
    }
    std::fs::write(o.out.join("uplink.csv"), csv)?;
    let md = markdown(o, &rows);
    std::fs::write(o.out.join("uplink.md"), &md)?;
    print!("{md}");
    register_font()?;
    let total = |r: &Summary| (r.total_s.mean, r.total_s.ci95);
    let p99 = |r: &Summary| (r.p99_s, 0.0);
    for (stem, title, y, value) in [
        (
            "uplink-total",
            "Time until all answers arrive",
            "burst time (s), mean ± 95% CI",
            &total as &dyn Fn(&Summary) -> (f64, f64),
        ),
        (
            "uplink-p99",
            "Per-image latency, 99th percentile",
            "p99 latency per image (s)",
            &p99,
        ),
    ] {
        let png = o.out.join(format!("{stem}.png"));
        let svg = o.out.join(format!("{stem}.svg"));
        let title = format!(
            "{title}: {} images at once, {} ms RTT",
            o.burst,
            o.rtt.as_millis()
        );
        plot(
            BitMapBackend::new(&png, (900, 560)).into_drawing_area(),
            &title,
            y,
            &rows,
            value,
        )?;
        plot(
            SVGBackend::new(&svg, (900, 560)).into_drawing_area(),
            &title,
            y,
            &rows,
            value,
        )?;
    }
    Ok(())
}

/// `net.ipv4.tcp_congestion_control`: the controller of HTTP/2's uploads.
fn kernel_tcp_congestion() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The label the CSV and tables use for a protocol (the ALPN names).
fn http_name(http: HttpVersion) -> &'static str {
    match http {
        HttpVersion::Http1 => "http/1.1",
        HttpVersion::Http2 => "h2",
        HttpVersion::Http3 => "h3",
    }
}

/// The report: how it was measured, then one row per loss rate.
fn markdown(o: &UplinkOptions, rows: &[Summary]) -> String {
    let mut s = format!(
        "# Uplink: {} images uploaded at once over one connection, HTTP/2 vs HTTP/3\n\n\
         Link: a TUN link into the front-end's network namespace, {} ms RTT (half each way), \
         the loss rate each way; {} runs per protocol and loss rate, alternating; a fresh \
         connection per run, opened with one image before the burst. Front-end: 2 synthetic \
         local workers, {} ms per image. Images: {} of {:.0} KB on average. Congestion control \
         of the uploads: HTTP/2 the kernel TCP's `{}`, HTTP/3 quinn's `{}`.\n\n\
         | loss each way | HTTP/2 burst (s) | HTTP/3 burst (s) | HTTP/2 ÷ HTTP/3 | HTTP/2 p50 / p99 per image (s) | HTTP/3 p50 / p99 per image (s) | failed (h2 / h3) | dropped client→server (h2 / h3) |\n\
         |---|---|---|---|---|---|---|---|\n",
        o.burst,
        o.rtt.as_millis(),
        o.runs,
        o.service_ms,
        o.images.len(),
        o.images.iter().map(|i| i.len()).sum::<usize>() as f64 / o.images.len().max(1) as f64 / 1e3,
        kernel_tcp_congestion(),
        match o.congestion {
            CongestionControl::Cubic => "cubic",
            CongestionControl::Bbr => "bbr",
        },
    );
    for &loss in &o.losses {
        let find = |http| rows.iter().find(|r| r.loss == loss && r.http == http);
        let (Some(h2), Some(h3)) = (find(HttpVersion::Http2), find(HttpVersion::Http3)) else {
            continue;
        };
        let _ = writeln!(
            s,
            "| {:.0}% | {:.3} ± {:.3} | {:.3} ± {:.3} | {:.2}× | {:.3} / {:.3} | {:.3} / {:.3} | {} / {} | {:.1}% / {:.1}% of {} / {} |",
            loss * 100.0,
            h2.total_s.mean,
            h2.total_s.ci95,
            h3.total_s.mean,
            h3.total_s.ci95,
            speedup(rows, loss),
            h2.p50_s,
            h2.p99_s,
            h3.p50_s,
            h3.p99_s,
            h2.failed,
            h3.failed,
            h2.drop_up * 100.0,
            h3.drop_up * 100.0,
            h2.packets_up,
            h3.packets_up
        );
    }
    s.push_str(
        "\nBurst time: from the burst's first request to its last answer, over the runs whose \
         every image was answered. Per image: from the burst's start to that image's answer, \
         all runs pooled.\n",
    );
    s
}

// Over 80 lines on purpose: one plotters chart: axes, a series per protocol and the legend.
fn plot<DB: DrawingBackend>(
    area: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    rows: &[Summary],
    value: &dyn Fn(&Summary) -> (f64, f64),
) -> Result<(), LabError>
where
    DB::ErrorType: 'static,
{
    let e = |x: &dyn std::fmt::Display| LabError::Report(format!("plotting {title}: {x}"));
    area.fill(&WHITE).map_err(|x| e(&x))?;
    let valid: Vec<&Summary> = rows.iter().filter(|r| value(r).0.is_finite()).collect();
    let xmax = rows.iter().map(|r| r.loss * 100.0).fold(0.0f64, f64::max);
    let ymax = valid
        .iter()
        .map(|r| {
            let (v, ci) = value(r);
            v + ci
        })
        .fold(0.0f64, f64::max)
        .max(0.01)
        * 1.15;
    let pad = (xmax * 0.05).max(0.25);
    let mut chart = ChartBuilder::on(&area)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(-pad..(xmax + pad), 0.0..ymax)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("packet loss each way (%)")
        .y_desc(y_desc)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(|x| e(&x))?;
    for (http, color, name) in [
        (HttpVersion::Http2, RED, "HTTP/2 (one TCP connection)"),
        (HttpVersion::Http3, BLUE, "HTTP/3 (one QUIC connection)"),
    ] {
        let pts: Vec<&&Summary> = valid.iter().filter(|r| r.http == http).collect();
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|r| (r.loss * 100.0, value(r).0)),
                color.stroke_width(2),
            ))
            .map_err(|x| e(&x))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(error_bars(
                pts.iter().map(|r| {
                    let (v, ci) = value(r);
                    (r.loss * 100.0, v, ci)
                }),
                color,
            ))
            .map_err(|x| e(&x))?;
    }
    legend_and_present(&mut chart, &area, SeriesLabelPosition::UpperLeft).map_err(|x| e(&x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(http: HttpVersion, loss: f64, total_s: f64, failed: usize) -> Run {
        Run {
            http,
            loss,
            run: 0,
            total_s,
            latencies_s: (1..=4).map(|i| total_s * f64::from(i) / 4.0).collect(),
            failed,
            first_error: None,
            link: super::super::run::LinkCount {
                packets_up: 100,
                dropped_up: 5,
                ..Default::default()
            },
        }
    }

    #[test]
    fn summaries_pair_the_protocols_and_skip_incomplete_bursts() {
        let runs = [
            run(HttpVersion::Http2, 0.05, 3.0, 0),
            run(HttpVersion::Http2, 0.05, 5.0, 0),
            run(HttpVersion::Http3, 0.05, 2.0, 0),
            run(HttpVersion::Http3, 0.05, 99.0, 1),
        ];
        let rows = summarize(&[0.05], &runs);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].http, rows[1].http),
            (HttpVersion::Http2, HttpVersion::Http3)
        );
        assert_eq!(rows[0].total_s.mean, 4.0);
        assert_eq!(
            rows[1].complete_runs, 1,
            "the run with a failure has no burst time"
        );
        assert_eq!(rows[1].total_s.mean, 2.0);
        assert_eq!(rows[1].failed, 1);
        assert_eq!((rows[1].packets_up, rows[1].drop_up), (200, 0.05));
        assert_eq!(speedup(&rows, 0.05), 2.0);
        assert!(speedup(&rows, 0.10).is_nan(), "no runs at 10%");
        // Pooled over both runs: 8 latencies, the 99th percentile between the two largest.
        assert!((rows[0].p99_s - 4.9125).abs() < 1e-9, "{}", rows[0].p99_s);
    }
}
