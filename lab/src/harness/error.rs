//! The lab's error type, in a module of its own so that every part of the lab can return it
//! without importing from the lab's root, which in turn runs the parts (no import cycle).

use thiserror::Error;

/// Errors of the lab.
#[derive(Debug, Error)]
pub enum LabError {
    /// An I/O operation failed, e.g. writing results or logs, finding a free port or
    /// accepting a baseline connection.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The testbed could not be brought up: missing binaries, `glimpse-certs` failing, a
    /// process that would not start or become ready, a network namespace or link.
    #[error("setup: {0}")]
    Setup(String),
    /// The test images could not be generated or read from `--images-dir`.
    #[error("images: {0}")]
    Images(String),
    /// The load driver failed: its HTTPS client could not be built or a client task died.
    #[error("driver: {0}")]
    Driver(String),
    /// A plot or the progress display could not be rendered.
    #[error("report: {0}")]
    Report(String),
    /// The command line asks for something that does not exist: an unknown sweep, an
    /// `--only` id or `--points` that match nothing.
    #[error("usage: {0}")]
    Usage(String),
    /// The system cannot be measured at this point with this `--net` mode (e.g. the baseline
    /// under packet loss with `--net relay`); the sweep records it as a note and goes on.
    #[error("not supported: {0}")]
    Unsupported(String),
}
