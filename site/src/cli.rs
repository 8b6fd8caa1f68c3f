//! Command line of the `glimpse` binary. Every flag has a `GLIMPSE_...` environment
//! variable, for containers and systemd units.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use glimpse_transport::dispatcher::Policy;

use crate::access::limits::Limits;
use crate::access::throttle::RateFlag;
use crate::fleet::cluster_error::ClusterError;
use crate::fleet::config::{
    ClusterConfig, Fleet, LocalModel, LocalWorkers, NodeAddress, RemoteFleet,
};
use crate::http::conn::{ConnLimits, max_connections_for, max_per_ip_for};
use crate::{H3Listen, SiteConfig};

/// `--grpc-listen`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcListen {
    /// No gRPC listener, even with local workers.
    Off,
    /// Listen here.
    At(SocketAddr),
}

impl FromStr for GrpcListen {
    type Err = String;
    fn from_str(s: &str) -> Result<GrpcListen, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(GrpcListen::Off);
        }
        s.parse()
            .map(GrpcListen::At)
            .map_err(|e| format!("expected HOST:PORT or `off`, got {s:?}: {e}"))
    }
}

/// Which model local workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelChoice {
    /// torchvision's GoogLeNet with `--weights`.
    Googlenet,
    /// Deterministic stand-in with `--service-ms` per image (load tests, CI): no weights.
    Synthetic,
}

/// glimpse: HTTPS front-end for image recognition served by Glimpse nodes over QUIC.
///
/// Quick start: `glimpse --local-workers 2` starts two in-process nodes and serves the
/// upload page at the printed https:// URL (self-signed certificate; its SHA-256
/// fingerprint is printed so you can check what your browser shows).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "glimpse",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// A command besides serving (none: serve).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// `--config` (the TOML file under flags and environment) and `--log-format`.
    #[command(flatten)]
    pub ops: glimpse_ops::OpsArgs,

    /// HTTPS address to listen on. Default: 127.0.0.1:8443 (local only; use 0.0.0.0:8443
    /// to serve others).
    #[arg(long, env = "GLIMPSE_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// HTTPS certificate chain (PEM). Default: none, a self-signed certificate for
    /// localhost, 127.0.0.1 and ::1 is generated at start.
    #[arg(long, env = "GLIMPSE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// HTTPS private key (PEM) for --tls-cert. Default: none (see --tls-cert).
    #[arg(long, env = "GLIMPSE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Also listen for plain HTTP on this address and redirect (308) every request to
    /// HTTPS. Default: off.
    #[arg(long, env = "GLIMPSE_HTTP_REDIRECT")]
    pub http_redirect: Option<SocketAddr>,
    /// KServe v2 / Triton gRPC address (`inference.GRPCInferenceService`; TLS with the HTTPS
    /// certificate, HTTP/2), or `off`. Same API keys and limits as HTTPS. Default: with
    /// --local-workers, the --listen host at the HTTPS port + 1 (127.0.0.1:8444; any free
    /// port when --listen's port is 0); otherwise off.
    #[arg(long, env = "GLIMPSE_GRPC_LISTEN", value_name = "HOST:PORT")]
    pub grpc_listen: Option<GrpcListen>,
    /// HTTP/3 address (QUIC over UDP, the HTTPS certificate): the same page and APIs as
    /// HTTPS, one QUIC stream per request, advertised in every HTTPS response's `Alt-Svc`
    /// so browsers switch by themselves. A firewall must let UDP through to it. Default: the
    /// --listen address and port, over UDP.
    #[arg(
        long,
        env = "GLIMPSE_H3_LISTEN",
        value_name = "HOST:PORT",
        conflicts_with = "no_h3"
    )]
    pub h3_listen: Option<SocketAddr>,
    /// Serve no HTTP/3: HTTPS over TCP only. Default: off (HTTP/3 is served).
    #[arg(long, env = "GLIMPSE_NO_H3", default_value_t = false)]
    pub no_h3: bool,

    /// A remote node as NAME=HOST:PORT (repeatable; NAME must match its certificate).
    /// Needs --ca, --cert and --key. Default: none.
    #[arg(
        long = "node",
        env = "GLIMPSE_NODES",
        value_delimiter = ',',
        conflicts_with = "local_workers"
    )]
    pub nodes: Vec<NodeAddress>,
    /// Cluster CA certificate (PEM) that signed the nodes. Required with --node, --node-dns
    /// and --nodes-file.
    #[arg(long, env = "GLIMPSE_CA")]
    pub ca: Option<PathBuf>,
    /// This front-end's client certificate (PEM) for mutual TLS with nodes. Required with
    /// --node, --node-dns and --nodes-file.
    #[arg(long, env = "GLIMPSE_CERT")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) for --cert. Required with --node, --node-dns and --nodes-file.
    #[arg(long, env = "GLIMPSE_KEY")]
    pub key: Option<PathBuf>,
    /// Live node discovery: --node-dns, --dns-server, --nodes-file, --discovery-interval-s.
    #[command(flatten)]
    pub discovery: crate::fleet::discovery::args::DiscoveryArgs,

    /// Start N nodes in this process on loopback QUIC with throwaway certificates (same
    /// dispatch path as remote nodes). Default: 0.
    #[arg(long, env = "GLIMPSE_LOCAL_WORKERS", default_value_t = 0)]
    pub local_workers: u32,
    /// Model of the local workers. Default: googlenet.
    #[arg(long, env = "GLIMPSE_MODEL", value_enum, default_value = "googlenet")]
    pub model: ModelChoice,
    /// GoogLeNet weights for local workers: `auto` (torchvision's file from the cache
    /// directory, downloaded once with a SHA-256 check), a path to a torchvision `.pth` or to
    /// the Burn-native `.bpk` copy kept beside it, or `random[:SEED]` (seeded untrained
    /// weights; the page warns loudly). Offline without a copy: `--model synthetic`.
    /// Default: auto.
    #[arg(long, env = "GLIMPSE_WEIGHTS", default_value = "auto")]
    pub weights: String,
    /// Inference backend for local workers: `flex` (burn-flex with Glimpse's fused
    /// channels-last operators, the fast path), `flex-stock` (burn-flex's own operators, the
    /// reference) or `ndarray`. Default: flex.
    #[arg(long, env = "GLIMPSE_BACKEND")]
    pub backend: Option<String>,
    /// Milliseconds per image of the synthetic model. Default: 50.
    #[arg(long, env = "GLIMPSE_SERVICE_MS", default_value_t = 50.0)]
    pub service_ms: f64,
    /// Images each local worker takes at once. Default: the node's default (32).
    #[arg(long, env = "GLIMPSE_WORKER_CAPACITY")]
    pub worker_capacity: Option<u32>,

    /// Attempts per image before giving up (retries go to another node when possible).
    /// Default: 3.
    #[arg(long, env = "GLIMPSE_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
    /// Deadline for one image across all attempts, in seconds. Default: 30.
    #[arg(long, env = "GLIMPSE_REQUEST_TIMEOUT_S", default_value_t = 30.0)]
    pub request_timeout_s: f64,
    /// Send a hedged duplicate to a second node when an answer is slower than the
    /// recent p95. Default: off.
    #[arg(long, env = "GLIMPSE_HEDGE", default_value_t = false)]
    pub hedge: bool,
    /// How a node is chosen for each image: expected-finish (where it is expected to finish
    /// first: images ahead of it there x the node's service time; a slow node gets work
    /// only when waiting for a fast one would take longer) or least-outstanding (the older
    /// rule, blind to speed). Default: expected-finish.
    #[arg(long, env = "GLIMPSE_PLACEMENT", default_value_t = glimpse_transport::dispatcher::Placement::ExpectedFinish)]
    pub placement: glimpse_transport::dispatcher::Placement,
    /// Milliseconds without a heartbeat (nodes report load every 100 ms) after which a
    /// connected node counts as silent and its in-flight images are reopened on other nodes;
    /// the node gets new work only when no other can take it. The effective timeout is
    /// max(this, 5 missed reports) + 2 RTT. Default: 500 (a killed node's images move on in
    /// about half a second, well before QUIC's 10 s idle timeout).
    #[arg(long, env = "GLIMPSE_SILENCE_MS", default_value_t = 500)]
    pub silence_ms: u64,
    /// Congestion controller for the images the front-end sends to nodes: `cubic` or `bbr`.
    /// Default: cubic (quinn's default; it marks BBR experimental). BBR keeps its rate under
    /// random packet loss, where Cubic shrinks to a two-packet window: see EXPERIMENTS.md.
    #[arg(long, env = "GLIMPSE_CONGESTION", default_value = "cubic")]
    pub congestion: glimpse_transport::CongestionControl,

    /// Largest image file in bytes; a larger one gets 413. Default: 20971520 (20 MiB).
    #[arg(long, env = "GLIMPSE_MAX_FILE_BYTES", default_value_t = 20 * 1024 * 1024)]
    pub max_file_bytes: usize,
    /// Largest request body in bytes (all files together); beyond it 413, and the body is
    /// not read further. Default: 104857600 (100 MiB).
    #[arg(long, env = "GLIMPSE_MAX_REQUEST_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Most files in one request (413 beyond); at most 1024. Default: 64.
    #[arg(long, env = "GLIMPSE_MAX_FILES", default_value_t = 64)]
    pub max_files: usize,
    /// Most images accepted and not yet answered, over all clients; beyond it requests get
    /// 503 with Retry-After. Default: 512.
    #[arg(long, env = "GLIMPSE_MAX_QUEUED", default_value_t = 512)]
    pub max_queued: usize,
    /// Most images handed to the dispatcher at once (the rest wait as `queued`). Default: 64.
    #[arg(long, env = "GLIMPSE_MAX_IN_FLIGHT", default_value_t = 64)]
    pub max_in_flight: usize,
    /// Seconds suggested by Retry-After on 503. Default: 2.
    #[arg(long, env = "GLIMPSE_RETRY_AFTER_S", default_value_t = 2)]
    pub retry_after_s: u64,
    /// Finished jobs kept for GET /api/v1/jobs/{id}. Default: 10000.
    #[arg(long, env = "GLIMPSE_JOB_RETENTION", default_value_t = 10_000)]
    pub job_retention: usize,
    /// Bytes of finished jobs kept for lookups, oldest evicted first (a job with top_k=1000
    /// is ~70 KB). Default: 67108864 (64 MiB).
    #[arg(long, env = "GLIMPSE_JOB_RETENTION_BYTES", default_value_t = 64 << 20)]
    pub job_retention_bytes: usize,

    /// API key file: one `NAME SHA256HEX [admin]` line per key (make keys with `glimpse keys
    /// new`), re-read within 2 s when it changes. With it every /api and /v2 request needs
    /// `Authorization: Bearer KEY`. Default: none, anyone who can reach the server may upload
    /// (each client still sees only its own jobs).
    #[arg(long, env = "GLIMPSE_API_KEYS", help_heading = "Security")]
    pub api_keys: Option<PathBuf>,
    /// Serve /metrics and /api/v1/nodes on this plain-HTTP address instead of the public one
    /// (with /healthz and /readyz), as Triton keeps metrics on their own port. Bind it to an
    /// address only operators reach. Default: none; then with --api-keys they need an admin
    /// key, and without keys they are public.
    #[arg(long, env = "GLIMPSE_ADMIN_LISTEN", help_heading = "Security")]
    pub admin_listen: Option<SocketAddr>,
    /// Another origin (`https://host[:port]`) whose pages may post uploads here; repeatable.
    /// Default: none, only this server's own page may (cross-origin browser POSTs get 403;
    /// API clients, which send no Origin, are not affected).
    #[arg(
        long = "allowed-origin",
        env = "GLIMPSE_ALLOWED_ORIGINS",
        value_delimiter = ',',
        help_heading = "Security"
    )]
    pub allowed_origins: Vec<String>,
    /// Requests per second per caller (API key, or client address without keys) as
    /// RPS[:BURST], or `off`; beyond it 429 with Retry-After. Health probes are not counted.
    /// Default: 50:200 (dropping 200 files on the page at once is fine).
    #[arg(
        long,
        env = "GLIMPSE_RATE_LIMIT",
        default_value = "50:200",
        help_heading = "Security"
    )]
    pub rate_limit: RateFlag,
    /// Most images one caller may have accepted and not yet answered; beyond it 429, so one
    /// caller cannot fill the queue. Default: 128.
    #[arg(
        long,
        env = "GLIMPSE_MAX_QUEUED_PER_CALLER",
        default_value_t = 128,
        help_heading = "Security"
    )]
    pub max_queued_per_caller: usize,
    /// Bytes of image data the front-end holds at once: bodies being received, queued and
    /// in-flight images. A request that would pass it gets 503 with Retry-After at once.
    /// Must hold at least one largest request. Default: 536870912 (512 MiB).
    #[arg(long, env = "GLIMPSE_MAX_BUFFERED_BYTES", default_value_t = 512 << 20, help_heading = "Security")]
    pub max_buffered_bytes: usize,
    /// Most connections open at once over all TCP listeners (HTTPS, gRPC, the redirect and
    /// admin listeners): the admin listener keeps a 64th of them (4 to 64) to itself, the
    /// redirect listener may hold at most an eighth of the rest. When the slots a new
    /// connection needs are taken, it replaces the one idle longest or, when all are busy,
    /// the slowest sender (bytes received per second); a connection that still finds no
    /// room gets 503 with Retry-After. Default: the file-descriptor limit (raised to its hard
    /// limit at start) minus 128, kept for QUIC sockets, files and refusal answers, so
    /// accept never runs out of descriptors.
    #[arg(long, env = "GLIMPSE_MAX_CONNECTIONS", help_heading = "Security")]
    pub max_connections: Option<usize>,
    /// Most connections from one client address (an IPv6 /64 counts as one); past it a new
    /// connection replaces the address's own longest-idle one, or gets 429 with Retry-After
    /// when all of them are busy. Default: a sixteenth of --max-connections, at least 64
    /// (64 with the common 1,024-descriptor limit). Many users can share one address (office
    /// and carrier-grade NAT), so the default scales with the server instead of locking a
    /// whole NAT out; one address still cannot take more than a sixteenth, and the
    /// slowest-sender reclaim, not this cap, is what holds against many addresses.
    #[arg(
        long,
        env = "GLIMPSE_MAX_CONNECTIONS_PER_IP",
        help_heading = "Security"
    )]
    pub max_connections_per_ip: Option<usize>,
    /// Seconds a new connection may take to complete its TLS handshake. Default: 10.
    #[arg(
        long,
        env = "GLIMPSE_HANDSHAKE_TIMEOUT_S",
        default_value_t = 10.0,
        help_heading = "Security"
    )]
    pub handshake_timeout_s: f64,
    /// Seconds a connection may take to send its first complete request head (slow
    /// "slowloris" senders are closed). Default: 10.
    #[arg(
        long,
        env = "GLIMPSE_HEADER_TIMEOUT_S",
        default_value_t = 10.0,
        help_heading = "Security"
    )]
    pub header_timeout_s: f64,
    /// Seconds a connection is kept without a request in flight. Default: 60.
    #[arg(
        long,
        env = "GLIMPSE_IDLE_TIMEOUT_S",
        default_value_t = 60.0,
        help_heading = "Security"
    )]
    pub idle_timeout_s: f64,
    /// Seconds a request body may go without sending data before it is abandoned (408).
    /// Default: 30.
    #[arg(
        long,
        env = "GLIMPSE_BODY_TIMEOUT_S",
        default_value_t = 30.0,
        help_heading = "Security"
    )]
    pub body_timeout_s: f64,
    /// Bytes per second a request body must average, over its whole life so far, once
    /// --body-rate-grace-s is over; a slower body is abandoned with 408, so a sender that
    /// trickles cannot hold a connection, a parse slot or its bytes. 0 turns it off.
    /// Default: 1024 (1 KiB/s: any real uplink is far faster).
    #[arg(
        long,
        env = "GLIMPSE_BODY_MIN_RATE",
        default_value_t = 1024,
        help_heading = "Security"
    )]
    pub body_min_rate: u64,
    /// Seconds a request body may take before --body-min-rate applies (slow starts, TCP
    /// slow start on long paths). Default: 10.
    #[arg(
        long,
        env = "GLIMPSE_BODY_RATE_GRACE_S",
        default_value_t = 10.0,
        help_heading = "Security"
    )]
    pub body_rate_grace_s: f64,
    /// Seconds a request body may take in all, however fast it comes; beyond it 408.
    /// Default: 300 (a 100 MiB request needs 350 KB/s; raise it for slower uplinks).
    #[arg(
        long,
        env = "GLIMPSE_BODY_DEADLINE_S",
        default_value_t = 300.0,
        help_heading = "Security"
    )]
    pub body_deadline_s: f64,
    /// Failed API key checks per second one client address (an IPv6 /64) may make, as
    /// RPS[:BURST], or `off`; past it the address gets 429 with Retry-After without its key
    /// being checked, so keys cannot be guessed at wire speed. Clients with valid keys use
    /// none of it. Default: 10:50.
    #[arg(
        long,
        env = "GLIMPSE_AUTH_FAILURE_RATE",
        default_value = "10:50",
        help_heading = "Security"
    )]
    pub auth_failure_rate: RateFlag,
    /// Event streams (GET /api/v1/events) open at once; beyond it 503. Default: 512.
    #[arg(
        long,
        env = "GLIMPSE_MAX_EVENT_STREAMS",
        default_value_t = 512,
        help_heading = "Security"
    )]
    pub max_event_streams: usize,
    /// Event streams one caller may hold open; beyond it 429. Default: 8.
    #[arg(
        long,
        env = "GLIMPSE_MAX_EVENT_STREAMS_PER_CALLER",
        default_value_t = 8,
        help_heading = "Security"
    )]
    pub max_event_streams_per_caller: usize,
    /// Strict-Transport-Security max-age in seconds, sent with every HTTPS response; 0 sends
    /// none. Default: 31536000 (one year; browsers ignore it over an untrusted certificate).
    #[arg(
        long,
        env = "GLIMPSE_HSTS_MAX_AGE_S",
        default_value_t = 31_536_000,
        help_heading = "Security"
    )]
    pub hsts_max_age_s: u64,

    /// Several front-ends on the same nodes: this one's id, its peers, its shutdown grace.
    #[command(flatten)]
    pub frontend: crate::fleet::frontend::FrontendArgs,
}

/// Commands besides serving.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Manage the API keys of --api-keys.
    Keys {
        /// What to do with the keys.
        #[command(subcommand)]
        action: KeysCommand,
    },
}

/// `glimpse keys ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Make a new random key: print it (the only time it is shown) and append its name and
    /// SHA-256 to the key file (created, mode 0600, if missing). A running server picks it
    /// up within 2 s.
    New {
        /// The key file. Default: none (required).
        #[arg(long, env = "GLIMPSE_API_KEYS")]
        file: PathBuf,
        /// The key's name: who holds it (letters, digits, '.', '_', '-'; at most 64). Limits
        /// and job ownership go by it.
        #[arg(long)]
        name: String,
        /// Let the key also read /metrics and /api/v1/nodes. Default: off.
        #[arg(long)]
        admin: bool,
    },
}

impl Cli {
    /// The dispatcher's deadline for one image.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.request_timeout_s.clamp(0.1, 3600.0))
    }

    /// The site's limits from the flags. The site's own safety timeout is the
    /// dispatcher's deadline plus a margin, so the dispatcher normally decides.
    pub fn limits(&self) -> Limits {
        Limits {
            max_file_bytes: self.max_file_bytes,
            max_request_bytes: self.max_request_bytes,
            max_files: self.max_files,
            max_queued: self.max_queued,
            max_in_flight: self.max_in_flight,
            retry_after_s: self.retry_after_s,
            job_timeout: self.request_timeout() + Duration::from_secs(10),
            job_retention: self.job_retention,
            job_retention_bytes: self.job_retention_bytes,
            max_buffered_bytes: self.max_buffered_bytes,
            max_queued_per_caller: self.max_queued_per_caller,
            body_timeout: secs(self.body_timeout_s),
            body_min_rate: self.body_min_rate,
            body_rate_grace: secs(self.body_rate_grace_s),
            body_deadline: secs(self.body_deadline_s),
            auth_failures: self.auth_failure_rate.0,
            max_event_streams: self.max_event_streams,
            max_event_streams_per_caller: self.max_event_streams_per_caller,
            rate: self.rate_limit.0,
        }
    }

    /// The connection limits, with the default cap taken from the file-descriptor limit
    /// `nofile` (see [`crate::http::conn::raise_fd_limit`]).
    pub fn conn_limits(&self, nofile: u64) -> ConnLimits {
        let max_total = self
            .max_connections
            .unwrap_or_else(|| max_connections_for(nofile))
            .max(1);
        ConnLimits {
            max_total,
            max_per_ip: self
                .max_connections_per_ip
                .unwrap_or_else(|| max_per_ip_for(max_total))
                .max(1),
            handshake_timeout: secs(self.handshake_timeout_s),
            header_timeout: secs(self.header_timeout_s),
            idle_timeout: secs(self.idle_timeout_s),
            // The largest body any route accepts: KServe's base64 of a whole request.
            linger_bytes: (self.max_request_bytes as u64).saturating_mul(4) / 3 + (64 << 10),
            retry_after_s: self.retry_after_s,
        }
    }

    /// Where gRPC listens: `--grpc-listen`, else with local workers next to HTTPS (port + 1,
    /// or 0 when HTTPS takes any free port; none when HTTPS is on the last port).
    pub fn grpc_listen(&self) -> Option<SocketAddr> {
        match self.grpc_listen {
            Some(GrpcListen::At(addr)) => Some(addr),
            Some(GrpcListen::Off) => None,
            None if self.local_workers > 0 => {
                let port = match self.listen.port() {
                    0 => 0,
                    p => p.checked_add(1)?,
                };
                Some(SocketAddr::new(self.listen.ip(), port))
            }
            None => None,
        }
    }

    /// The cluster the flags describe: local workers or remote nodes, with their model or
    /// certificates, and the dispatch policy. The one place flags become the cluster's
    /// configuration; a combination that cannot work is refused here, before anything starts.
    pub fn cluster_config(&self) -> Result<ClusterConfig, ClusterError> {
        let fleet = if let Some(count) = NonZeroU32::new(self.local_workers) {
            Fleet::Local(LocalWorkers {
                count,
                model: self.local_model()?,
                capacity: self.worker_capacity,
            })
        } else if !self.nodes.is_empty() || self.discovery.any() {
            let (Some(ca), Some(cert), Some(key)) = (&self.ca, &self.cert, &self.key) else {
                return Err(ClusterError::Config(
                    "--node, --node-dns and --nodes-file need --ca, --cert and --key".to_string(),
                ));
            };
            Fleet::Remote(RemoteFleet {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
                nodes: self.nodes.clone(),
                discovery: self.discovery.config(),
            })
        } else {
            return Err(ClusterError::Config(
                "no nodes: pass --local-workers N, or --node NAME=HOST:PORT, --node-dns NAME:PORT or --nodes-file PATH with --ca, --cert and --key".to_string(),
            ));
        };
        Ok(ClusterConfig {
            fleet,
            policy: Policy {
                max_attempts: self.max_attempts.max(1),
                request_deadline: self.request_timeout(),
                hedge: self.hedge,
                placement: self.placement,
                silence_floor: Duration::from_millis(self.silence_ms),
                ..Policy::default()
            },
            congestion: self.congestion,
        })
    }

    /// `--model` with its parameters, checked.
    fn local_model(&self) -> Result<LocalModel, ClusterError> {
        match self.model {
            ModelChoice::Synthetic => {
                if !self.service_ms.is_finite() || self.service_ms < 0.0 {
                    return Err(ClusterError::Config(format!(
                        "--service-ms must be a non-negative number, got {}",
                        self.service_ms
                    )));
                }
                Ok(LocalModel::Synthetic {
                    service: Duration::from_secs_f64(self.service_ms / 1000.0),
                })
            }
            #[cfg(feature = "local-workers")]
            ModelChoice::Googlenet => Ok(LocalModel::Googlenet {
                weights: self
                    .weights
                    .parse()
                    .map_err(|e| ClusterError::Config(format!("--weights: {e}")))?,
                backend: match &self.backend {
                    Some(b) => b
                        .parse()
                        .map_err(|e| ClusterError::Config(format!("--backend: {e}")))?,
                    None => glimpse_model::Backend::default(),
                },
            }),
            #[cfg(not(feature = "local-workers"))]
            ModelChoice::Googlenet => Err(ClusterError::Config(
                "this glimpse was built without local workers (the `local-workers` feature); use --node".into(),
            )),
        }
    }

    /// The front-end's whole configuration (`nofile` as for [`Cli::conn_limits`]).
    pub fn site_config(&self, nofile: u64) -> SiteConfig {
        SiteConfig {
            listen: self.listen,
            http_redirect: self.http_redirect,
            admin_listen: self.admin_listen,
            grpc_listen: self.grpc_listen(),
            h3_listen: match (self.no_h3, self.h3_listen) {
                (true, _) => H3Listen::Off,
                (false, Some(at)) => H3Listen::At(at),
                (false, None) => H3Listen::BesideHttps,
            },
            api_keys: self.api_keys.clone(),
            allowed_origins: self.allowed_origins.clone(),
            hsts_max_age_s: self.hsts_max_age_s,
            limits: self.limits(),
            conn: self.conn_limits(nofile),
            ownership: self.frontend.ownership(),
        }
    }
}

/// Seconds from a flag, clamped to something a timer can hold (0.1 s to a day).
fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() {
        s.clamp(0.1, 86_400.0)
    } else {
        86_400.0
    })
}

#[cfg(test)]
mod tests {
    use glimpse_transport::CongestionControl;

    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let cli = Cli::try_parse_from(["glimpse"]).unwrap();
        assert_eq!(cli.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(cli.limits().max_files, 64);
        assert!(
            Cli::try_parse_from(["glimpse", "--local-workers", "2", "--node", "a=h:1"]).is_err()
        );
        let limits = cli.limits();
        assert_eq!(limits.max_buffered_bytes, 512 << 20);
        assert_eq!(cli.frontend.shutdown_grace(), Duration::from_secs(5));
        assert_eq!(cli.site_config(1024).ownership.id, None, "the host name's");
        assert!(limits.validate().is_ok(), "the defaults work together");
        let rate = limits.rate.expect("rate limited by default");
        assert_eq!((rate.per_second.get(), rate.burst.get()), (50, 200));
        let conn = cli.conn_limits(1024);
        assert_eq!(conn.max_total, 1024 - 128, "below the fd limit");
        assert_eq!(conn.max_per_ip, 64, "the floor, at 1,024 descriptors");
        assert_eq!(cli.conn_limits(65_536).max_per_ip, (65_536 - 128) / 16);
        let fixed = Cli::try_parse_from(["glimpse", "--max-connections-per-ip", "8"]).unwrap();
        assert_eq!(fixed.conn_limits(65_536).max_per_ip, 8);
        assert_eq!(conn.header_timeout, Duration::from_secs(10));
        let small = Cli::try_parse_from(["glimpse", "--max-buffered-bytes", "1000"]).unwrap();
        assert!(
            small.limits().validate().is_err(),
            "cannot hold one request"
        );
    }

    #[test]
    fn grpc_listens_next_to_https_with_local_workers_unless_told() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["glimpse"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).unwrap().grpc_listen()
        };
        assert_eq!(parse(&[]), None, "off without local workers");
        assert_eq!(
            parse(&["--local-workers", "1"]),
            Some("127.0.0.1:8444".parse().unwrap())
        );
        assert_eq!(
            parse(&["--local-workers", "1", "--listen", "[::1]:0"]),
            Some("[::1]:0".parse().unwrap())
        );
        assert_eq!(
            parse(&["--local-workers", "1", "--listen", "127.0.0.1:65535"]),
            None
        );
        assert_eq!(
            parse(&["--local-workers", "1", "--grpc-listen", "off"]),
            None
        );
        assert_eq!(
            parse(&["--grpc-listen", "0.0.0.0:8001"]),
            Some("0.0.0.0:8001".parse().unwrap())
        );
        assert!(Cli::try_parse_from(["glimpse", "--grpc-listen", "8001"]).is_err());
    }

    #[test]
    fn keys_subcommand_parses_and_does_not_mix_with_serving_flags() {
        let cli =
            Cli::try_parse_from(["glimpse", "keys", "new", "--file", "k", "--name", "ci"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Keys { action: KeysCommand::New { ref name, admin: false, .. } }) if name == "ci"
        ));
        assert!(
            Cli::try_parse_from([
                "glimpse",
                "--local-workers",
                "1",
                "keys",
                "new",
                "--file",
                "k",
                "--name",
                "x"
            ])
            .is_err()
        );
        let off = Cli::try_parse_from(["glimpse", "--rate-limit", "off"]).unwrap();
        assert!(off.limits().rate.is_none());
    }

    fn cluster(args: &[&str]) -> Result<ClusterConfig, ClusterError> {
        let mut argv = vec!["glimpse"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .expect("flags parse")
            .cluster_config()
    }

    #[test]
    fn discovery_needs_the_cluster_certificates_and_no_local_workers() {
        for flags in [
            &["--node-dns", "nodes.test:4433"][..],
            &["--nodes-file", "/nonexistent"][..],
            &["--node", "a=127.0.0.1:1"][..],
        ] {
            let Err(e) = cluster(flags) else {
                panic!("{flags:?} accepted without certificates")
            };
            assert!(e.to_string().contains("need --ca, --cert and --key"), "{e}");
        }
        let Err(e) = cluster(&[]) else {
            panic!("no nodes accepted")
        };
        assert!(e.to_string().starts_with("no nodes"), "{e}");
        assert!(
            Cli::try_parse_from(["glimpse", "--local-workers", "1", "--node-dns", "n.test:1"])
                .is_err()
        );
        let remote = cluster(&[
            "--node-dns",
            "a.test:1,b.test:2",
            "--dns-server",
            "127.0.0.1:5353",
            "--discovery-interval-s",
            "0.5",
            "--ca",
            "ca.pem",
            "--cert",
            "fe.pem",
            "--key",
            "fe.key",
        ])
        .expect("a remote fleet");
        let Fleet::Remote(remote) = remote.fleet else {
            panic!("not remote")
        };
        let sources = remote.discovery.expect("discovery sources");
        assert_eq!(sources.node_dns.len(), 2);
        assert_eq!(sources.interval, Duration::from_millis(500));
        assert_eq!(remote.key, PathBuf::from("fe.key"));
        assert!(Cli::try_parse_from(["glimpse", "--discovery-interval-s", "0"]).is_err());
    }

    #[test]
    fn dispatch_flags_become_the_policy() {
        let c = cluster(&["--local-workers", "2", "--model", "synthetic"]).unwrap();
        assert_eq!(c.congestion, CongestionControl::Cubic);
        assert_eq!(c.policy.silence_floor, Duration::from_millis(500));
        assert_eq!(c.policy.max_attempts, 3);
        let c = cluster(&[
            "--local-workers",
            "2",
            "--model",
            "synthetic",
            "--congestion",
            "bbr",
            "--silence-ms",
            "750",
            "--max-attempts",
            "0",
            "--hedge",
            "--request-timeout-s",
            "7",
        ])
        .unwrap();
        assert_eq!(c.congestion, CongestionControl::Bbr);
        assert_eq!(c.policy.silence_floor, Duration::from_millis(750));
        assert_eq!(c.policy.max_attempts, 1, "at least one attempt");
        assert_eq!(c.policy.request_deadline, Duration::from_secs(7));
        assert!(c.policy.hedge);
        assert!(Cli::try_parse_from(["glimpse", "--congestion", "reno"]).is_err());
    }

    #[test]
    fn local_workers_take_a_checked_model() {
        let c = cluster(&[
            "--local-workers",
            "3",
            "--model",
            "synthetic",
            "--service-ms",
            "20",
        ]);
        let Ok(ClusterConfig {
            fleet: Fleet::Local(local),
            ..
        }) = c
        else {
            panic!("not local: {c:?}")
        };
        assert_eq!(local.count.get(), 3);
        assert!(
            matches!(local.model, LocalModel::Synthetic { service } if service == Duration::from_millis(20))
        );
        let Err(e) = cluster(&[
            "--local-workers",
            "1",
            "--model",
            "synthetic",
            "--service-ms=-1",
        ]) else {
            panic!("a negative service time accepted")
        };
        assert!(e.to_string().contains("--service-ms"), "{e}");
        #[cfg(feature = "local-workers")]
        {
            let Err(e) = cluster(&["--local-workers", "1", "--weights", "random:x"]) else {
                panic!("a bad seed accepted")
            };
            assert!(e.to_string().starts_with("--weights"), "{e}");
            let Err(e) = cluster(&["--local-workers", "1", "--backend", "tpu"]) else {
                panic!("an unknown backend accepted")
            };
            assert!(e.to_string().starts_with("--backend"), "{e}");
        }
    }
}
