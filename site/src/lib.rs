//! glimpse-site: the HTTPS front-end of Glimpse.
//!
//! A request flows: TLS accept ([`server`]) → warp routes ([`api`], [`kserve`], [`page`]) →
//! body read under limits ([`upload`]) → admission and one job per image ([`site`],
//! [`jobs`]) → the cluster behind the [`inference::Inference`] seam (the QUIC
//! `Dispatcher`, see [`cluster`]) → the result back into the job store, which feeds the
//! `?wait=true` answer, `GET /api/v1/jobs/{id}` and the SSE stream the page listens to.

pub mod api;
pub mod cli;
pub mod cluster;
pub mod inference;
pub mod jobs;
pub mod kserve;
pub mod metrics;
pub mod page;
pub mod server;
pub mod site;
pub mod sniff;
pub mod upload;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use inference::Inference;
pub use server::{ServerError, TlsIdentity};
pub use site::{Limits, Site};

/// A running HTTPS front-end (and its optional plain-HTTP redirect).
pub struct RunningSite {
    /// The bound HTTPS address (useful with port 0).
    pub addr: SocketAddr,
    /// The bound redirect address, if any.
    pub redirect_addr: Option<SocketAddr>,
    /// Shared state: job store, metrics, the cluster.
    pub site: Arc<Site>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningSite {
    /// Stop accepting, end SSE streams, let open requests finish (bounded), and return.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Start a graceful shutdown without waiting for it (see [`RunningSite::shutdown`]).
    pub fn trigger_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// Bind and start serving `inference` over HTTPS on `listen` (port 0 = any free port).
pub async fn start_site(
    listen: SocketAddr,
    tls: &TlsIdentity,
    http_redirect: Option<SocketAddr>,
    inference: Arc<dyn Inference>,
    limits: Limits,
) -> Result<RunningSite, ServerError> {
    let (tx, rx) = watch::channel(false);
    let site = Site::new(inference, limits, rx.clone());
    let listener = server::bind(listen).await?;
    let addr = listener.local_addr()?;
    let routes = api::routes(site.clone());
    let mut tasks = Vec::new();
    let mut redirect_addr = None;
    if let Some(redirect) = http_redirect {
        let plain = server::bind(redirect).await?;
        redirect_addr = Some(plain.local_addr()?);
        tasks.push(tokio::spawn(server::serve_redirect(
            plain,
            addr.port(),
            stopped(rx.clone()),
        )));
    }
    tasks.push(tokio::spawn(server::serve_https(
        listener,
        tls.config.clone(),
        routes,
        stopped(rx),
    )));
    Ok(RunningSite {
        addr,
        redirect_addr,
        site,
        shutdown: tx,
        tasks,
    })
}

/// Completes when the watch flips to true (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}
