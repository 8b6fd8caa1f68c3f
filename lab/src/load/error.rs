//! What can stop `glimpse-lab load` as a whole.

use thiserror::Error;

/// Errors of `glimpse-lab load` (a request's failure is not one: it is counted in the report).
#[derive(Debug, Error)]
pub enum LoadError {
    /// The options ask for something impossible: no steps, batch 0, a rate that is not a
    /// positive number, a URL that is not `https://`.
    #[error("usage: {0}")]
    Usage(String),
    /// The TLS configuration could not be built (e.g. an unreadable `--ca`).
    #[error("TLS: {0}")]
    Tls(String),
    /// The client could not be built or (gRPC) could not connect.
    #[error("client: {0}")]
    Client(String),
    /// A load task died (a bug).
    #[error("load task: {0}")]
    Task(String),
}
