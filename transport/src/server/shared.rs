//! What a node server's connection and stream tasks share: its announced info and limits,
//! the drain signal, the connections (to close them on shutdown) and the in-flight count
//! shutdown waits on.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use quinn::Connection;
use tokio::sync::Notify;

use crate::shutdown::Shutdown;
use crate::types::NodeInfo;

/// Counts requests being handled, so shutdown can wait for them.
#[derive(Default)]
pub(super) struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

pub(super) struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    pub(super) fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    /// Requests being handled now.
    pub(super) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub(super) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// State shared by all connection and stream tasks of one server.
pub(super) struct Shared {
    pub(super) info: NodeInfo,
    pub(super) max_image_bytes: usize,
    pub(super) load_interval: Duration,
    pub(super) header_timeout: Duration,
    pub(super) draining: Shutdown,
    pub(super) in_flight: Arc<InFlight>,
    pub(super) connections: Mutex<HashMap<usize, Connection>>,
}
