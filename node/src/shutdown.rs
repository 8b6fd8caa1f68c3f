//! Graceful shutdown: the workspace's one signal type ([`Shutdown`], from the transport crate,
//! passed down as a value as in tokio's mini-redis) and the process signals that trigger it.

pub use glimpse_transport::shutdown::{Shutdown, ShutdownTrigger, shutdown_channel};

/// SIGTERM and SIGINT handlers. They are installed by [`TerminationSignals::install`], not
/// when first polled, so install them before announcing readiness.
#[cfg(unix)]
#[derive(Debug)]
pub struct TerminationSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl TerminationSignals {
    /// Installs the handlers (needs a tokio runtime).
    pub fn install() -> std::io::Result<TerminationSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(TerminationSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT and returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
