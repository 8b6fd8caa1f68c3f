//! Node configuration: the library's [`NodeConfig`] and the `serve` command line that fills it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use glimpse_model::{Backend, Classifier, WeightsSource};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::NodeError;
use crate::faults::FaultConfig;
use crate::lanes::{LaneArgs, Parallelism};

/// Default number of images a node takes at once (QUIC streams per connection, and the bound of
/// its inference queue). 32 GoogLeNet images are ~1.6 s of work on a 2-core machine: enough to
/// keep the inference lanes busy across a round trip, small enough that a dead node strands
/// little work.
pub const DEFAULT_CAPACITY: u32 = 32;
/// Default largest forward pass.
pub const DEFAULT_MAX_BATCH: u32 = 8;
/// Default largest accepted image, 32 MiB: generous for photos (users are surprised by low
/// upload limits), small enough that `capacity` of them fit in memory.
pub const DEFAULT_MAX_IMAGE_BYTES: usize = 32 * 1024 * 1024;
/// Default synthetic service time: about GoogLeNet's batch-1 time with burn-flex on 2 cores.
pub const DEFAULT_SERVICE_MS: f64 = 50.0;
/// Default time allowed for in-flight work after SIGTERM before the node gives up on it.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default decode budget, 768 MiB: the bytes all concurrent decodes (decoded pixels, the
/// codec's working memory, the RGB8 conversion, preprocessing) may hold at once. It holds
/// one image at the default 64-Mpx cap in any of its costly forms (a 16-bit RGBA PNG with its
/// RGB8 copy, ~11 bytes/pixel, ~710 MB), or three 64-Mpx GIF canvases (~262 MB each), or a
/// dozen 12-Mpx photos; with the model (~100 MB) and in-flight request bytes it keeps a
/// node within about 1 GB of memory.
pub const DEFAULT_DECODE_BUDGET_BYTES: u64 = 768 << 20;
/// Smallest decode budget accepted: 16 MiB holds a 1-Mpx photo and the codec's state, and
/// refuses a value given in MiB by mistake.
pub const MIN_DECODE_BUDGET_BYTES: u64 = 16 << 20;
/// Largest decode budget accepted: the budget is counted in KiB permits of a u32.
pub const MAX_DECODE_BUDGET_BYTES: u64 = (u32::MAX as u64) << 10;
/// Fewest bytes per pixel a large decode costs: RGBA8 (GIF canvases, PNG and WebP with
/// alpha), converted to RGB8 in place. The node's pixel cap is its budget over this (see
/// [`NodeConfig::decode_limits`]).
pub const RGBA8_BYTES_PER_PIXEL: u64 = 4;

/// TLS material of a node: its certificate chain and key, and the CA that signs front-ends.
pub struct NodeTls {
    /// The node's server certificate, leaf first, issued by the cluster CA for the name the
    /// front-ends expect.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The leaf certificate's private key. Never logged. The node's QUIC stateless-reset key
    /// is derived from it, so a node restarted with the same key resets its old connections.
    pub key: PrivateKeyDer<'static>,
    /// Clients (front-ends) must present a certificate signed by one of these.
    pub client_ca: Vec<CertificateDer<'static>>,
}

impl Clone for NodeTls {
    fn clone(&self) -> Self {
        Self {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
            client_ca: self.client_ca.clone(),
        }
    }
}

impl std::fmt::Debug for NodeTls {
    // The private key never goes into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field(
                "cert_chain",
                &format_args!("{} certificate(s)", self.cert_chain.len()),
            )
            .field("key", &"<redacted>")
            .field(
                "client_ca",
                &format_args!("{} certificate(s)", self.client_ca.len()),
            )
            .finish()
    }
}

impl NodeTls {
    /// Reads PEM files: the node's certificate (chain), its private key, and the cluster CA.
    pub fn from_pem_files(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
    ) -> Result<NodeTls, NodeError> {
        Ok(NodeTls {
            cert_chain: glimpse_certs::load_certs_file(cert)?,
            key: glimpse_certs::load_key_file(key)?,
            client_ca: glimpse_certs::load_certs_file(ca)?,
        })
    }
}

/// Which model a node serves.
#[derive(Clone)]
pub enum ModelSpec {
    /// GoogLeNet, loaded by the node at start.
    GoogLeNet {
        /// Where the weights come from (`auto`, a file, or random for transport tests).
        weights: WeightsSource,
        /// The CPU backend that runs the network.
        backend: Backend,
    },
    /// GoogLeNet already loaded by the caller: in-process nodes (`glimpse --local-workers N`)
    /// share one copy of the weights instead of loading N. The caller readies it for as many
    /// concurrent passes as all the nodes sharing it have lanes
    /// ([`crate::prepare_classifier`]); fewer, and the lanes queue for the classifier.
    Loaded(Arc<Classifier>),
    /// The synthetic stand-in: `service` per image, labels from a hash of the bytes, no weights.
    Synthetic {
        /// Time spent per image; a batch of n takes n times this.
        service: Duration,
    },
}

impl std::fmt::Debug for ModelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSpec::GoogLeNet { weights, backend } => f
                .debug_struct("GoogLeNet")
                .field("weights", weights)
                .field("backend", backend)
                .finish(),
            ModelSpec::Loaded(c) => f.debug_tuple("Loaded").field(&c.identity().name).finish(),
            ModelSpec::Synthetic { service } => f
                .debug_struct("Synthetic")
                .field("service", service)
                .finish(),
        }
    }
}

/// Everything a node needs to run; the `serve` flags map one to one onto these fields.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// UDP address to listen on; port 0 picks a free port (see [`crate::RunningNode::addr`]).
    pub listen: SocketAddr,
    /// The node's certificate and key, and the CA its clients must be signed by.
    pub tls: NodeTls,
    /// Name announced to front-ends (informational; the TLS name is what they verify).
    pub node_id: String,
    /// The model served, and how it is loaded.
    pub model: ModelSpec,
    /// Images taken at once: announced to front-ends (each keeps at most this many outstanding
    /// here) and the bound on queued work.
    pub capacity: u32,
    /// Largest forward pass.
    pub max_batch: u32,
    /// How long a free inference lane waits for more images to fill a batch (0 = only take
    /// what is already waiting).
    pub max_batch_wait: Duration,
    /// Largest accepted encoded image.
    pub max_image_bytes: usize,
    /// Fault injection for experiments and failover tests; all off by default.
    pub faults: FaultConfig,
    /// After shutdown starts, how long in-flight work may take before the node gives up.
    pub drain_timeout: Duration,
    /// Plain-HTTP address for `/healthz`, `/readyz` and `/metrics`; `None`: no such listener.
    pub admin_listen: Option<SocketAddr>,
    /// Compute threads for inference and the lanes that share them (see [`crate::lanes`]).
    pub parallelism: Parallelism,
    /// Bytes all concurrent decodes may hold at once (see [`DEFAULT_DECODE_BUDGET_BYTES`]).
    /// Each image reserves its probed decode cost first-come first-served before decoding;
    /// one that could never fit is refused as too large at once.
    pub decode_budget_bytes: u64,
}

impl NodeConfig {
    /// A config with the documented defaults: GoogLeNet with `auto` weights and the default
    /// backend, capacity 32, batches of up to 8 without waiting, 32 MiB images, a 768 MiB
    /// decode budget, no faults, every available core in the default number of lanes.
    pub fn new(listen: SocketAddr, tls: NodeTls, node_id: impl Into<String>) -> NodeConfig {
        NodeConfig {
            listen,
            tls,
            node_id: node_id.into(),
            model: ModelSpec::GoogLeNet {
                weights: WeightsSource::Auto,
                backend: Backend::default(),
            },
            capacity: DEFAULT_CAPACITY,
            max_batch: DEFAULT_MAX_BATCH,
            max_batch_wait: Duration::ZERO,
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            faults: FaultConfig::default(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            admin_listen: None,
            decode_budget_bytes: DEFAULT_DECODE_BUDGET_BYTES,
            parallelism: Parallelism::default(),
        }
    }

    /// The decode limits this node applies: `max_image_bytes`, and a pixel cap derived from
    /// the decode budget, min(64 Mpx, budget / 4 bytes). An image with more pixels than that
    /// could not fit the budget even as the cheapest large decode (RGBA8 converted in
    /// place), so it is refused from its header like any oversized image. Images under the
    /// cap whose probed cost still exceeds the budget (16-bit samples, an EXIF rotation, a
    /// progressive JPEG) are refused by the budget check before they queue. With the
    /// default budget the cap stays at 64 Mpx.
    pub fn decode_limits(&self) -> glimpse_model::DecodeLimits {
        let defaults = glimpse_model::DecodeLimits::default();
        glimpse_model::DecodeLimits {
            max_bytes: self.max_image_bytes,
            max_pixels: defaults
                .max_pixels
                .min(self.decode_budget_bytes / RGBA8_BYTES_PER_PIXEL),
            ..defaults
        }
    }

    /// Checks values that the types alone do not rule out.
    pub fn validate(&self) -> Result<(), NodeError> {
        let bad = |m: String| Err(NodeError::Config(m));
        if self.capacity == 0 {
            return bad("capacity must be at least 1".into());
        }
        if self.max_batch == 0 {
            return bad("max batch must be at least 1".into());
        }
        if self.max_image_bytes == 0 {
            return bad("max image bytes must be at least 1".into());
        }
        if !(MIN_DECODE_BUDGET_BYTES..=MAX_DECODE_BUDGET_BYTES).contains(&self.decode_budget_bytes)
        {
            return bad(format!(
                "decode budget must be between {MIN_DECODE_BUDGET_BYTES} and \
                 {MAX_DECODE_BUDGET_BYTES} bytes, got {}",
                self.decode_budget_bytes
            ));
        }
        self.faults.validate().map_err(NodeError::Config)
    }
}

/// Which model `serve` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelKind {
    /// torchvision's GoogLeNet (IMAGENET1K_V1), loaded per `--weights`.
    Googlenet,
    /// Deterministic stand-in: `--service-ms` per image, labels from a hash of the bytes.
    Synthetic,
}

/// `glimpse-node serve` flags. Each has an environment variable, for containers and systemd.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// UDP address to listen on. Default: all IPv4 interfaces, port 4433 (mutual TLS keeps
    /// strangers out).
    #[arg(long, env = "GLIMPSE_NODE_LISTEN", default_value = "0.0.0.0:4433")]
    pub listen: SocketAddr,
    /// This node's certificate (PEM), issued by the cluster CA (`glimpse-certs init`). Required.
    #[arg(long, env = "GLIMPSE_NODE_CERT")]
    pub cert: PathBuf,
    /// This node's private key (PEM). Required.
    #[arg(long, env = "GLIMPSE_NODE_KEY")]
    pub key: PathBuf,
    /// The cluster CA certificate (PEM); only front-ends it signed may connect. Required.
    #[arg(long, env = "GLIMPSE_NODE_CA")]
    pub ca: PathBuf,
    /// Name announced to front-ends. Default: this machine's hostname.
    #[arg(long, env = "GLIMPSE_NODE_ID")]
    pub node_id: Option<String>,
    /// GoogLeNet weights: `auto` (torchvision's file from the cache directory, downloaded
    /// once with a SHA-256 check), a path to a torchvision `.pth` or to the Burn-native `.bpk`
    /// copy kept beside it, or `random[:SEED]` (seeded untrained weights, for transport
    /// tests). Offline without a copy: `--model synthetic`. Default: auto.
    #[arg(long, env = "GLIMPSE_WEIGHTS", default_value = "auto")]
    pub weights: String,
    /// Compute backend: `flex` (burn-flex with Glimpse's fused channels-last operators, the
    /// fast path), `flex-stock` (burn-flex's own operators, the reference) or `ndarray`.
    /// Default: flex.
    #[arg(long, env = "GLIMPSE_BACKEND")]
    pub backend: Option<String>,
    /// Model to serve. Default: googlenet. `synthetic` needs no weights.
    #[arg(long, env = "GLIMPSE_MODEL", value_enum, default_value_t = ModelKind::Googlenet)]
    pub model: ModelKind,
    /// Synthetic model only: milliseconds spent per image (a batch of n takes n times this).
    /// Default: 50, about GoogLeNet's batch-1 time on a 2-core machine.
    #[arg(long, env = "GLIMPSE_SERVICE_MS", default_value_t = DEFAULT_SERVICE_MS)]
    pub service_ms: f64,
    /// Images taken at once: each front-end keeps at most this many outstanding here, and
    /// beyond it (several front-ends) a request is answered "overloaded". QUIC stream credit is
    /// twice this, so a new request never waits for a finished stream's credit. Default: 32.
    #[arg(long, env = "GLIMPSE_CAPACITY", default_value_t = DEFAULT_CAPACITY)]
    pub capacity: u32,
    /// Largest forward pass in images. Default: 8.
    #[arg(long, env = "GLIMPSE_MAX_BATCH", default_value_t = DEFAULT_MAX_BATCH)]
    pub max_batch: u32,
    /// Milliseconds a free inference lane waits to fill a batch. Default: 0, i.e. batch only
    /// what is already waiting (on CPU, waiting raises latency more than it adds throughput).
    #[arg(long, env = "GLIMPSE_MAX_BATCH_WAIT_MS", default_value_t = 0)]
    pub max_batch_wait_ms: u32,
    /// Largest accepted image in bytes. Default: 33554432 (32 MiB).
    #[arg(long, env = "GLIMPSE_MAX_IMAGE_BYTES", default_value_t = DEFAULT_MAX_IMAGE_BYTES)]
    pub max_image_bytes: usize,
    /// Bytes all concurrent image decodes may hold at once (decoded pixels, codec working
    /// memory, RGB conversion, preprocessing), on top of the one-decode-per-core limit. Each
    /// image's cost is read from its header before anything is decoded; images wait for
    /// room first come, first served, and one that could never fit is refused as too large.
    /// The pixel cap is this over 4 bytes (at most 64 Mpx). At least 16777216 (16 MiB).
    /// Default: 805306368 (768 MiB): one 64-Mpx image even at 16 bits per sample, or three
    /// 64-Mpx GIF canvases, and with the model a node stays within about 1 GB.
    #[arg(long, env = "GLIMPSE_DECODE_BUDGET_BYTES", default_value_t = DEFAULT_DECODE_BUDGET_BYTES)]
    pub decode_budget_bytes: u64,
    /// Fault injection: probability per request that the process dies at once (exit code 86,
    /// no QUIC close), like a crashed worker. Default: 0 (off).
    #[arg(long, env = "GLIMPSE_FAIL_RATE", default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Fault injection: probability per request that the node stops answering for good
    /// (connections stay open). Default: 0 (off).
    #[arg(long, env = "GLIMPSE_STALL_RATE", default_value_t = 0.0)]
    pub stall_rate: f64,
    /// Fault injection: milliseconds every answer is held before it is sent. Default: 0.
    #[arg(long, env = "GLIMPSE_EXTRA_DELAY_MS", default_value_t = 0)]
    pub extra_delay_ms: u64,
    /// Seed of the fault-injection RNG. Default: random (logged at start).
    #[arg(long, env = "GLIMPSE_FAULT_SEED")]
    pub seed: Option<u64>,
    /// Seconds in-flight work may take after SIGTERM/SIGINT before the node exits anyway
    /// (non-zero). Default: 30.
    #[arg(long, env = "GLIMPSE_DRAIN_TIMEOUT_S", default_value_t = DEFAULT_DRAIN_TIMEOUT.as_secs())]
    pub drain_timeout_s: u64,
    /// Plain-HTTP address for operators and orchestrators: GET /healthz (200 while the
    /// process runs), /readyz (200 once the model is loaded, 503 while loading or draining)
    /// and /metrics (Prometheus). No authentication: bind it to a private address, e.g.
    /// 0.0.0.0:9090 inside a pod. Default: off.
    #[arg(long, env = "GLIMPSE_NODE_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// `--threads` and `--lanes`.
    #[command(flatten)]
    pub lanes: LaneArgs,
}

impl ServeArgs {
    /// Reads the PEM files and builds the node's configuration.
    pub fn into_config(self) -> Result<NodeConfig, NodeError> {
        // Checked first: a bad value is refused before any file is read.
        let parallelism = self.lanes.parallelism()?;
        let tls = NodeTls::from_pem_files(&self.cert, &self.key, &self.ca)?;
        let model = match self.model {
            ModelKind::Synthetic => {
                if !self.service_ms.is_finite() || self.service_ms < 0.0 {
                    return Err(NodeError::Config(format!(
                        "--service-ms must be a non-negative number, got {}",
                        self.service_ms
                    )));
                }
                ModelSpec::Synthetic {
                    service: Duration::from_secs_f64(self.service_ms / 1000.0),
                }
            }
            ModelKind::Googlenet => ModelSpec::GoogLeNet {
                weights: self
                    .weights
                    .parse()
                    .map_err(|e| NodeError::Config(format!("--weights: {e}")))?,
                backend: match &self.backend {
                    Some(b) => b
                        .parse()
                        .map_err(|e| NodeError::Config(format!("--backend: {e}")))?,
                    None => Backend::default(),
                },
            },
        };
        let node_id = self.node_id.unwrap_or_else(default_node_id);
        let config = NodeConfig {
            listen: self.listen,
            tls,
            node_id,
            model,
            capacity: self.capacity,
            max_batch: self.max_batch,
            max_batch_wait: Duration::from_millis(u64::from(self.max_batch_wait_ms)),
            max_image_bytes: self.max_image_bytes,
            faults: FaultConfig {
                fail_rate: self.fail_rate,
                stall_rate: self.stall_rate,
                extra_delay: Duration::from_millis(self.extra_delay_ms),
                seed: self.seed,
            },
            drain_timeout: Duration::from_secs(self.drain_timeout_s),
            admin_listen: self.admin_listen,
            decode_budget_bytes: self.decode_budget_bytes,
            parallelism,
        };
        config.validate()?;
        Ok(config)
    }
}

/// The hostname, or "glimpse-node" where it cannot be read.
fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "glimpse-node".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivatePkcs8KeyDer;

    fn config(budget: u64) -> NodeConfig {
        let tls = NodeTls {
            cert_chain: Vec::new(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(vec![0u8; 4])),
            client_ca: Vec::new(),
        };
        let mut c = NodeConfig::new("127.0.0.1:0".parse().expect("addr"), tls, "t");
        c.decode_budget_bytes = budget;
        c
    }

    #[test]
    fn pixel_cap_follows_the_decode_budget() {
        // The default budget keeps the default 64-Mpx cap.
        let c = config(DEFAULT_DECODE_BUDGET_BYTES);
        assert_eq!(c.decode_limits().max_pixels, 64_000_000);
        assert_eq!(c.decode_limits().max_bytes, DEFAULT_MAX_IMAGE_BYTES);
        // A 100 MiB budget cannot hold more than 100 MiB / 4 bytes of RGBA8 pixels.
        assert_eq!(config(100 << 20).decode_limits().max_pixels, 26_214_400);
        assert!(config(100 << 20).validate().is_ok());
    }

    #[test]
    fn decode_budget_out_of_range_is_refused() {
        for bad in [
            0,
            768,
            MIN_DECODE_BUDGET_BYTES - 1,
            MAX_DECODE_BUDGET_BYTES + 1,
        ] {
            let err = config(bad).validate().expect_err("refused");
            assert!(err.to_string().contains("decode budget"), "{err}");
        }
        assert!(config(MIN_DECODE_BUDGET_BYTES).validate().is_ok());
    }
}
