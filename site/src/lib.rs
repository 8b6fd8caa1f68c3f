//! glimpse-site: the HTTPS front-end of Glimpse.
//!
//! A request flows: TCP accept and a connection slot ([`http::server`], [`http::conn`]) →
//! TLS → warp routes, assembled in [`http::routes`] ([`api::page`], [`api::v1`], [`kserve`])
//! → who is calling and whether it may ([`http::filters`], [`access`]) → body read under
//! size, time and byte-budget limits ([`api::upload`], `glimpse_wire::budget`) → admission
//! and one job per image ([`site`], [`api::jobs`]) → the cluster behind the
//! [`fleet::inference::Inference`] seam (the QUIC `Dispatcher`, see [`fleet::cluster`]) →
//! the result back into the job store, which feeds the `?wait=true` answer,
//! `GET /api/v1/jobs/{id}` and the caller's own SSE stream ([`api::events`]). Every refusal
//! is an [`http::error::ApiError`]. KServe v2 over gRPC ([`grpc`]) has a listener of its
//! own and joins the same path at admission.
//!
//! The folders, each a concern: [`http`] (listeners, connections, filters, guards, errors),
//! [`api`] (the page, the JSON API, uploads, jobs, events), [`access`] (keys, callers,
//! throttles, limits), [`fleet`] (the cluster, local workers, discovery, front-ends),
//! [`kserve`] and [`grpc`] (KServe v2 over HTTP and gRPC), `observe` (metrics, statistics,
//! trace spans).

pub mod access;
pub mod api;
pub mod cli;
pub mod fleet;
pub mod grpc;
pub mod http;
pub mod kserve;
pub(crate) mod observe;
mod site;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use glimpse_transport::{ShutdownTrigger, shutdown_channel};
use tokio::task::JoinHandle;

pub use access::limits::Limits;
pub use fleet::inference::Inference;
pub use http::server::{ServerError, TlsIdentity};
pub use site::{PARSE_SLOT_WAIT, PARSES_PER_ADDRESS, PARSES_PER_CALLER, PARSES_TOTAL, Site};

use access::auth::KeyFile;
use access::caller::{ClientTokens, Identify};
use api::v1::AdminAccess;
use fleet::frontend::{Frontend, FrontendId};
use http::conn::{ConnLimits, Listener, Registry};
use http::routes::Access;

/// Everything about how the front-end listens and what it lets callers do.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// HTTPS address (port 0 = any free port).
    pub listen: SocketAddr,
    /// Plain-HTTP address that redirects to HTTPS.
    pub http_redirect: Option<SocketAddr>,
    /// Plain-HTTP address for `/metrics`, `/api/v1/nodes` and health, for operators.
    pub admin_listen: Option<SocketAddr>,
    /// KServe v2 gRPC address (TLS with the HTTPS certificate), if any.
    pub grpc_listen: Option<SocketAddr>,
    /// Where HTTP/3 listens (UDP), if anywhere.
    pub h3_listen: H3Listen,
    /// The API key file; without it, callers are told apart by signed client tokens.
    pub api_keys: Option<PathBuf>,
    /// Other origins whose pages may post here (`https://host[:port]`).
    pub allowed_origins: Vec<String>,
    /// `Strict-Transport-Security` max-age in seconds (0: none).
    pub hsts_max_age_s: u64,
    /// What clients may make the site do.
    pub limits: Limits,
    /// Connection caps and timeouts.
    pub conn: ConnLimits,
    /// This front-end's id and where the others are (several front-ends on the same nodes).
    pub ownership: fleet::frontend::Ownership,
}

/// Where the HTTP/3 listener is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H3Listen {
    /// None: HTTPS over TCP only.
    Off,
    /// The HTTPS address and port, over UDP (when HTTPS took any free port and that number
    /// is taken over UDP, any free UDP port: `Alt-Svc` names it).
    BesideHttps,
    /// This address.
    At(SocketAddr),
}

/// A running HTTPS front-end (and its optional plain-HTTP redirect and admin listener).
pub struct RunningSite {
    /// The bound HTTPS address (useful with port 0).
    pub addr: SocketAddr,
    /// The bound redirect address, if any.
    pub redirect_addr: Option<SocketAddr>,
    /// The bound admin address, if any.
    pub admin_addr: Option<SocketAddr>,
    /// The bound gRPC address, if any.
    pub grpc_addr: Option<SocketAddr>,
    /// The bound HTTP/3 address (UDP), if any.
    pub h3_addr: Option<SocketAddr>,
    /// Shared state: job store, metrics, the cluster.
    pub site: Arc<Site>,
    /// The connections of every listener (one registry, one budget of slots).
    pub connections: Arc<Registry>,
    shutdown: ShutdownTrigger,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningSite {
    /// Stop accepting, end SSE streams, let open requests finish (bounded), and return.
    pub async fn shutdown(self) {
        self.shutdown.trigger();
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Begin stopping: readiness answers 503 from now on, everything else is served as
    /// before, so load balancers move away before [`RunningSite::shutdown`] drains.
    pub fn stop_ready(&self) {
        self.site.frontend.stop_ready();
    }

    /// Start a graceful shutdown without waiting for it (see [`RunningSite::shutdown`]).
    pub fn trigger_shutdown(&self) {
        self.shutdown.trigger();
    }
}

/// How often per-caller rate-limit state of idle callers is dropped.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Bind and start serving `inference` as `config` says ([`bind_site`], then
/// [`BoundSite::serve`]).
pub async fn start_site(
    config: SiteConfig,
    tls: &TlsIdentity,
    inference: Arc<dyn Inference>,
) -> Result<RunningSite, ServerError> {
    bind_site(config).await?.serve(tls, inference).await
}

/// The front-end's listeners, bound but not serving yet, and its checked configuration. The
/// binary binds before it loads any model, so a busy port or a bad key file is reported at
/// once instead of after the workers' weights have loaded.
pub struct BoundSite {
    config: SiteConfig,
    keys: Option<Arc<KeyFile>>,
    https: tokio::net::TcpListener,
    redirect: Option<tokio::net::TcpListener>,
    admin: Option<tokio::net::TcpListener>,
    grpc: Option<tokio::net::TcpListener>,
    h3: Option<std::net::UdpSocket>,
}

/// Checks the limits, loads the API key file and binds every listener `config` asks for
/// (HTTPS, redirect, admin, gRPC over TCP; HTTP/3 over UDP). A listener that cannot bind is a [`ServerError::Bind`]
/// naming the flag that sets its address.
pub async fn bind_site(config: SiteConfig) -> Result<BoundSite, ServerError> {
    config.limits.validate().map_err(ServerError::Config)?;
    let keys = match &config.api_keys {
        Some(path) => Some(Arc::new(KeyFile::load(path)?)),
        None => None,
    };
    let https = http::server::bind_flag(config.listen, "--listen").await?;
    let redirect = match config.http_redirect {
        Some(at) => Some(http::server::bind_flag(at, "--http-redirect").await?),
        None => None,
    };
    let admin = match config.admin_listen {
        Some(at) => Some(http::server::bind_flag(at, "--admin-listen").await?),
        None => None,
    };
    let grpc = match config.grpc_listen {
        Some(at) => Some(http::server::bind_flag(at, "--grpc-listen").await?),
        None => None,
    };
    let h3 = match config.h3_listen {
        H3Listen::Off => None,
        H3Listen::BesideHttps => {
            let at = https.local_addr()?;
            let any = (config.listen.port() == 0).then(|| SocketAddr::new(at.ip(), 0));
            Some(http::h3::bind(at, any)?)
        }
        H3Listen::At(at) => Some(http::h3::bind(at, None)?),
    };
    Ok(BoundSite {
        config,
        keys,
        https,
        redirect,
        admin,
        grpc,
        h3,
    })
}

impl BoundSite {
    /// The bound HTTPS address (useful with port 0).
    pub fn addr(&self) -> Result<SocketAddr, ServerError> {
        Ok(self.https.local_addr()?)
    }

    /// Start serving `inference` on the bound listeners.
    // Over 80 lines on purpose: the front-end's start-up in order (listeners, registry, cluster, each task); one place, so the order is read, not reconstructed.
    pub async fn serve(
        self,
        tls: &TlsIdentity,
        inference: Arc<dyn Inference>,
    ) -> Result<RunningSite, ServerError> {
        let BoundSite {
            config,
            keys,
            https: listener,
            redirect,
            admin: admin_listener,
            grpc,
            h3,
        } = self;
        let admin = match (&admin_listener, &keys) {
            (Some(_), _) => AdminAccess::Elsewhere,
            (None, Some(_)) => AdminAccess::AdminKey,
            (None, None) => AdminAccess::Open,
        };
        let identify = Identify {
            keys: keys.clone(),
            tokens: ClientTokens::new().map_err(|e| ServerError::Config(e.to_string()))?,
        };
        let id = match config.ownership.id.clone() {
            Some(id) => id,
            None => FrontendId::from_host_name().map_err(|e| ServerError::Config(e.to_string()))?,
        };
        let frontend = Frontend::new(id, config.ownership.peers.clone());
        let (tx, rx) = shutdown_channel();
        // One registry for every listener (HTTPS, HTTP/3, gRPC, redirect, admin): one budget
        // of slots below the process's descriptor limit, split as `conn::Shares` says.
        let connections = Registry::new(config.conn);
        let site = Site::new(
            inference,
            config.limits.clone(),
            identify,
            connections.clone(),
            rx.clone(),
            frontend,
        );
        let access = Access {
            admin,
            allowed_origins: Arc::new(
                config
                    .allowed_origins
                    .iter()
                    .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                    .collect(),
            ),
            hsts_max_age_s: config.hsts_max_age_s,
        };
        let addr = listener.local_addr()?;
        let mut tasks = Vec::new();
        let mut redirect_addr = None;
        if let Some(plain) = redirect {
            redirect_addr = Some(plain.local_addr()?);
            tasks.push(tokio::spawn(http::server::serve_redirect(
                plain,
                addr.port(),
                connections.clone(),
                rx.clone().wait(),
            )));
        }
        let mut admin_addr = None;
        if let Some(plain) = admin_listener {
            admin_addr = Some(plain.local_addr()?);
            tasks.push(tokio::spawn(http::server::serve(
                plain,
                None,
                connections.clone(),
                Listener::Admin,
                api::v1::admin_routes(site.clone()),
                0,
                rx.clone().wait(),
            )));
        }
        let mut grpc_addr = None;
        if let Some(listener) = grpc {
            grpc_addr = Some(listener.local_addr()?);
            tasks.push(tokio::spawn(grpc::serve(
                listener,
                tls.config.clone(),
                connections.clone(),
                site.clone(),
                rx.clone().wait(),
            )));
        }
        if let Some(keys) = keys {
            tasks.push(tokio::spawn(keys.watch(rx.clone().wait())));
        }
        {
            let site = site.clone();
            let stop = rx.clone().wait();
            tasks.push(tokio::spawn(async move {
                let mut stop = std::pin::pin!(stop);
                loop {
                    tokio::select! {
                        () = &mut stop => return,
                        () = tokio::time::sleep(PRUNE_INTERVAL) => {
                            site.rate.prune();
                            site.auth_failures.prune(std::time::Instant::now());
                        }
                    }
                }
            }));
        }
        // One routing table for HTTPS and HTTP/3; HTTPS advertises HTTP/3 in `Alt-Svc`.
        let mut routes = http::routes::https(site.clone(), &access);
        let mut h3_addr = None;
        if let Some(socket) = h3 {
            let at = socket.local_addr()?;
            let quic = http::h3::server_config(&tls.config, &config.conn)?;
            let endpoint = quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                Some(quic),
                socket,
                Arc::new(quinn::TokioRuntime),
            )?;
            tasks.push(tokio::spawn(http::h3::serve(
                endpoint,
                connections.clone(),
                routes.clone(),
                config.hsts_max_age_s,
                rx.clone().wait(),
            )));
            routes = http::h3::advertised(routes, at.port());
            h3_addr = Some(at);
        }
        tasks.push(tokio::spawn(http::server::serve(
            listener,
            Some(tls.config.clone()),
            connections.clone(),
            Listener::Https,
            routes,
            config.hsts_max_age_s,
            rx.wait(),
        )));
        Ok(RunningSite {
            addr,
            redirect_addr,
            admin_addr,
            grpc_addr,
            h3_addr,
            site,
            connections,
            shutdown: tx,
            tasks,
        })
    }
}
