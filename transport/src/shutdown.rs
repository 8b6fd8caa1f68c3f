//! Graceful shutdown, passed down as a value (as in tokio's mini-redis): whoever owns the
//! [`ShutdownTrigger`] decides when to stop; each task holds a [`Shutdown`] to wait on. The
//! one signal type of the workspace: nodes drain with it, the front-end's dispatcher stops
//! its supervision tasks with it, the site stops its servers and event streams with it.

use tokio::sync::watch;

/// Starts the shutdown of everything holding a matching [`Shutdown`]. Dropping the trigger
/// also starts it, so nothing outlives the code that owns it.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Completes when shutdown has been triggered (or the trigger dropped). Cheap to clone: give
/// one to each task.
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

    /// Whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Another signal connected to this trigger.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// Whether shutdown has started (or the trigger is gone, which counts the same).
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Waits until shutdown starts.
    pub async fn wait(mut self) {
        self.recv().await;
    }

    /// Waits until shutdown starts, keeping the signal: for `select!` loops that wait on it
    /// turn after turn. Returns at once once it has started.
    pub async fn recv(&mut self) {
        // An error means the trigger was dropped: that counts as shutdown too.
        let _ = self.0.wait_for(|triggered| *triggered).await;
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
        assert!(shutdown.is_triggered() && trigger.is_triggered());
    }

    #[tokio::test]
    async fn dropping_the_trigger_counts_as_shutdown() {
        let (trigger, shutdown) = shutdown_channel();
        drop(trigger);
        assert!(shutdown.is_triggered());
        tokio::time::timeout(Duration::from_secs(10), shutdown.wait())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn recv_returns_at_once_after_the_trigger_and_a_late_subscriber_sees_it() {
        let (trigger, mut shutdown) = shutdown_channel();
        trigger.trigger();
        for _ in 0..3 {
            tokio::time::timeout(Duration::from_secs(10), shutdown.recv())
                .await
                .unwrap();
        }
        assert!(trigger.subscribe().is_triggered());
    }
}
