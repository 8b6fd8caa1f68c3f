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
    let certs = sweep_certs(o).await?;
    let total: u64 = experiments
        .iter()
        .map(|e| (e.points.len() * o.systems.len() * o.runs * e.images) as u64)
        .sum();
    let bar = progress_bar(total)?;
    let mut samples = Vec::new();
    let mut failed_runs = 0;
    let mut md = report::sweep_header(sweep_name, o);
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
                    let (result, note, unsupported) =
                        run_outcome(res, &bar, exp, p, sys, run, o.runs, &mut failed_runs);
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
        md.push_str(&report::write_experiment(exp, &samples, o)?);
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

/// What one run's result means for the sweep: the result or why there is none, and whether
/// the point's remaining runs can be skipped (a point the setup cannot run gives the same
/// answer every time). Problems are printed above the progress bar as they happen.
#[allow(clippy::too_many_arguments)]
fn run_outcome(
    res: Result<driver::RunResult, LabError>,
    bar: &ProgressBar,
    exp: &sweep::Experiment,
    p: &sweep::Point,
    sys: System,
    run: usize,
    runs: usize,
    failed_runs: &mut usize,
) -> (Option<driver::RunResult>, Option<String>, bool) {
    match res {
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
            (Some(r), None, false)
        }
        Err(LabError::Unsupported(why)) => {
            bar.inc((exp.images * (runs - run)) as u64);
            (None, Some(why), true)
        }
        Err(e) => {
            *failed_runs += 1;
            bar.println(format!(
                "run failed: {} {} {} run {}: {e}",
                exp.id, p.label, sys, run
            ));
            bar.inc(exp.images as u64);
            (None, Some(e.to_string()), false)
        }
    }
}

/// The cluster's certificates for the sweep's Glimpse runs (none when it runs only the
/// baseline), after checking that the binaries the runs start are there.
async fn sweep_certs(o: &LabOptions) -> Result<Option<procs::Certs>, LabError> {
    if !o.systems.contains(&System::Glimpse) {
        return Ok(None);
    }
    o.bins
        .require(&["glimpse-certs", "glimpse-node", "glimpse"])?;
    let names: Vec<String> = (1..=8).map(|i| format!("n{i}")).collect();
    Ok(Some(
        procs::make_certs(&o.bins, &o.out.join("certs"), &names).await?,
    ))
}

/// The sweep's progress bar, counting images.
fn progress_bar(total: u64) -> Result<ProgressBar, LabError> {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} images  {msg}")
            .map_err(|e| LabError::Report(e.to_string()))?
            .progress_chars("=> "),
    );
    Ok(bar)
}
