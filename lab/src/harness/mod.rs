//! `glimpse-lab`: the seed's four experiments, run against Glimpse and against a baseline of
//! the seed's own design in the same invocation, with confidence intervals and plots.
//!
//! Glimpse is driven strictly from outside: certificates from `glimpse-certs init`, nodes from
//! `glimpse-node serve`, the `glimpse` front-end, and images through its public HTTPS API. The
//! lab links none of those crates, so it measures what an operator deploys.

pub mod baseline;
pub mod catalogue;
pub mod driver;
mod error;
pub mod images;
pub mod net;
pub mod procs;
pub mod report;
pub mod sweep;
pub mod testbed;

use std::sync::Arc;

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};

pub use error::LabError;
use sweep::{LabOptions, Sample, System};

/// What a finished sweep produced.
#[derive(Debug)]
pub struct SweepOutcome {
    /// One sample per run and system at every point (a single one for a point a system
    /// does not support), in the order they ran; also written to `OUT/raw.csv`.
    pub samples: Vec<Sample>,
    /// Images without a final answer, over all runs: the smoke test fails when this is not 0.
    pub lost: u64,
    /// Runs that could not be set up or failed outright (not counting unsupported points).
    pub failed_runs: usize,
    /// The sweep's report (every experiment's table and plot links), as written to
    /// `OUT/<sweep>.md`.
    pub markdown: String,
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

/// Runs every experiment of `sweep`, writes `OUT/<experiment>.{csv,md,png,svg}`, `OUT/raw.csv`
/// and `OUT/<sweep>.md`, and returns the samples.
pub async fn run_sweep(
    sweep_name: &str,
    o: &LabOptions,
    images: Vec<Bytes>,
) -> Result<SweepOutcome, LabError> {
    let experiments = catalogue::experiments(sweep_name, o)?;
    o.net.check()?;
    std::fs::create_dir_all(&o.out)?;
    let needs_glimpse = o.systems.contains(&System::Glimpse);
    let certs = if needs_glimpse {
        o.bins
            .require(&["glimpse-certs", "glimpse-node", "glimpse"])?;
        let names: Vec<String> = (1..=8).map(|i| format!("n{i}")).collect();
        Some(procs::make_certs(&o.bins, &o.out.join("certs"), &names).await?)
    } else {
        None
    };
    let total: u64 = experiments
        .iter()
        .map(|e| (e.points.len() * o.systems.len() * o.runs * e.images) as u64)
        .sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} images  {msg}")
            .map_err(|e| LabError::Report(e.to_string()))?
            .progress_chars("=> "),
    );
    let mut samples = Vec::new();
    let mut failed_runs = 0;
    let mut md = format!(
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
    );
    for exp in &experiments {
        let imgs: Arc<Vec<Bytes>> =
            Arc::new(images.iter().cycle().take(exp.images).cloned().collect());
        for p in &exp.points {
            for &sys in &o.systems {
                for run in 0..o.runs {
                    bar.set_message(format!(
                        "{} {} {} run {}/{}",
                        exp.id,
                        p.label,
                        sys,
                        run + 1,
                        o.runs
                    ));
                    let b = bar.clone();
                    let res = sweep::run_point(
                        o,
                        certs.as_ref().unwrap_or(&procs::Certs {
                            dir: o.out.join("certs"),
                        }),
                        imgs.clone(),
                        exp,
                        p,
                        sys,
                        run,
                        move || b.inc(1),
                    )
                    .await;
                    let mut unsupported = false;
                    let (result, note) = match res {
                        Ok(r) => {
                            if r.unfinished > 0 {
                                bar.println(format!(
                                    "run limit: {} of {} image(s) unanswered after {:.0} s in {} {} {} run {}",
                                    r.unfinished, r.images, r.elapsed_s, exp.id, p.label, sys, run
                                ));
                            }
                            if r.lost > 0 {
                                bar.println(format!(
                                    "LOST {} image(s) in {} {} {} run {}: {:?}",
                                    r.lost, exp.id, p.label, sys, run, r.errors
                                ));
                            }
                            (Some(r), None)
                        }
                        Err(LabError::Unsupported(why)) => {
                            // Same answer for every run: record it once, skip the rest.
                            unsupported = true;
                            bar.inc((exp.images * (o.runs - run)) as u64);
                            (None, Some(why))
                        }
                        Err(e) => {
                            failed_runs += 1;
                            bar.println(format!(
                                "run failed: {} {} {} run {}: {e}",
                                exp.id, p.label, sys, run
                            ));
                            bar.inc(exp.images as u64);
                            (None, Some(e.to_string()))
                        }
                    };
                    samples.push(Sample {
                        experiment: exp.id.clone(),
                        x: p.x,
                        label: p.label.clone(),
                        system: sys,
                        run,
                        result,
                        note,
                    });
                    if unsupported {
                        break;
                    }
                }
            }
        }
        let rows = report::summarize(exp, &samples, &o.systems);
        report::write_summary_csv(&o.out.join(format!("{}.csv", exp.id)), exp, &rows)?;
        let (png, svg) = report::plot(&o.out, exp, &rows)?;
        let table = report::markdown(
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
        md.push_str(&table);
        md.push_str(&format!(
            "\n![{}]({})  ([SVG]({}))\n\n",
            exp.title,
            png.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
            svg.file_name().and_then(|n| n.to_str()).unwrap_or_default()
        ));
    }
    bar.finish_and_clear();
    report::write_raw_csv(&o.out.join("raw.csv"), &samples)?;
    std::fs::write(o.out.join(format!("{sweep_name}.md")), &md)?;
    let lost = samples
        .iter()
        .filter_map(|s| s.result.as_ref())
        .map(|r| r.lost as u64)
        .sum();
    Ok(SweepOutcome {
        samples,
        lost,
        failed_runs,
        markdown: md,
    })
}
