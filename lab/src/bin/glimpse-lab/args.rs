//! What several subcommands' arguments share.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use glimpse_lab::harness::images;

/// Seconds from a command-line number, refusing negative, NaN and absurd values.
pub(crate) fn seconds(name: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|e| anyhow::anyhow!("{name} {s}: {e}"))
}

/// The images a run sends: every image file in `dir`, or eight distinct synthetic 480×360
/// images made from `seed` when no folder is given.
pub(crate) fn lab_images(dir: Option<&Path>, seed: u64) -> anyhow::Result<Vec<Bytes>> {
    Ok(match dir {
        Some(d) => images::from_dir(d)?,
        None => images::synthetic(8, 480, 360, seed)?,
    })
}
