//! Everything `glimpse-lab simulate` does: validate against the lab's measurements, project,
//! write the results.

use super::error::SimError;
use super::project::{self, ProjectOptions, Projection};
use super::report;
use super::validate::{self, Check};

/// Everything `glimpse-lab simulate` does.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// Where results go.
    pub out: std::path::PathBuf,
    /// Runs per validation point (the lab made 5).
    pub validation_runs: usize,
    /// What to project.
    pub project: ProjectOptions,
}

/// What `simulate` found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Validation points.
    pub checks: Vec<Check>,
    /// Projected points.
    pub projections: Vec<Projection>,
    /// Images lost over every run (validation and projections): must be 0.
    pub lost: usize,
    /// The Markdown written, for the terminal.
    pub markdown: String,
}

/// Validates against the lab's measurements, projects, and writes CSV, Markdown and plots to
/// `o.out`. `progress` hears of each projected point as it finishes.
pub fn simulate(
    o: &SimulateOptions,
    progress: impl FnMut(&Projection),
) -> Result<Outcome, SimError> {
    let checks = validate::validate(o.project.seed, o.validation_runs)?;
    report::write(&o.out, "validation.csv", &report::validation_csv(&checks))?;
    let validation_md = report::validation_markdown(&checks);
    report::write(&o.out, "validation.md", &validation_md)?;
    let projections = project::project(&o.project, progress)?;
    report::write(
        &o.out,
        "projections.csv",
        &report::projections_csv(&projections),
    )?;
    let projections_md = report::projections_markdown(&projections);
    report::write(&o.out, "projections.md", &projections_md)?;
    report::projection_plots(&o.out, &projections)?;
    let lost = checks.iter().map(|c| c.lost).sum::<usize>()
        + projections.iter().map(|p| p.report.lost).sum::<usize>();
    Ok(Outcome {
        checks,
        projections,
        lost,
        markdown: format!("## Validation\n\n{validation_md}\n## Projections\n\n{projections_md}"),
    })
}
