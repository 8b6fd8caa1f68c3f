//! Graceful shutdown, passed down as a value (as in tokio's mini-redis): whoever owns the
//! [`ShutdownTrigger`] decides when nodes drain; each node gets a [`Shutdown`] to wait on.

use tokio::sync::watch;

/// Starts the shutdown of every node holding a matching [`Shutdown`]. Dropping the trigger
/// also starts it, so nodes never outlive the code that owns them.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Completes when shutdown has been triggered (or the trigger dropped). Cheap to clone: give
/// one to each node.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and signal.
pub fn shutdown_channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    /// Starts the shutdown; calling it again does nothing more.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until shutdown starts.
    pub async fn wait(mut self) {
        // An error means the trigger was dropped: that counts as shutdown too.
        let _ = self.0.wait_for(|triggered| *triggered).await;
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn trigger_wakes_every_clone() {
        let (trigger, shutdown) = shutdown_channel();
        let a = tokio::spawn(shutdown.clone().wait());
        let b = tokio::spawn(shutdown.clone().wait());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!a.is_finished() && !b.is_finished());
        assert!(!shutdown.is_triggered());
        trigger.trigger();
        tokio::time::timeout(Duration::from_secs(10), a)
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), b)
            .await
            .unwrap()
            .unwrap();
        assert!(shutdown.is_triggered());
    }

    #[tokio::test]
    async fn dropping_the_trigger_counts_as_shutdown() {
        let (trigger, shutdown) = shutdown_channel();
        drop(trigger);
        tokio::time::timeout(Duration::from_secs(10), shutdown.wait())
            .await
            .unwrap();
    }
}
