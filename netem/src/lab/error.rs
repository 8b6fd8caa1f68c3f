//! The lab's error type, in a module of its own so that every part of the lab can return it
//! without importing from the lab's root, which in turn runs the parts (no import cycle).

use thiserror::Error;

/// Errors of the lab.
#[derive(Debug, Error)]
pub enum LabError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("setup: {0}")]
    Setup(String),
    #[error("images: {0}")]
    Images(String),
    #[error("driver: {0}")]
    Driver(String),
    #[error("report: {0}")]
    Report(String),
    #[error("usage: {0}")]
    Usage(String),
    #[error("not supported: {0}")]
    Unsupported(String),
}
