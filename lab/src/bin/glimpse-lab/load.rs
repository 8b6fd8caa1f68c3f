//! `glimpse-lab load`: a load generator for a running deployment, in the spirit of
//! Triton's perf_analyzer.

use std::path::PathBuf;

use anyhow::Context;
use glimpse_lab::load::protocol::{HttpVersion, Protocol, TargetOptions};
use glimpse_lab::load::tls::Trust;
use glimpse_lab::load::{LoadOptions, LoadPlan, run_load};
use glimpse_transport::CongestionControl;

use crate::args::{lab_images, seconds};
use crate::interrupt::interrupted;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("trust").args(["ca", "insecure"])))]
pub(crate) struct LoadArgs {
    /// The deployment's address for --protocol, e.g. https://glimpse.example:8443; for grpc
    /// its gRPC listener (`glimpse --grpc-listen`, the HTTPS port + 1 with --local-workers).
    /// Required.
    #[arg(long, env = "GLIMPSE_LOAD_URL")]
    url: String,
    /// Which API: json (POST /api/v1/classify?wait=true), v2 (KServe v2 HTTP with binary
    /// tensor data, POST /v2/models/googlenet/infer) or grpc (KServe v2 gRPC ModelInfer).
    /// Default: json.
    #[arg(
        long,
        env = "GLIMPSE_LOAD_PROTOCOL",
        value_enum,
        default_value = "json"
    )]
    protocol: Protocol,
    /// Which HTTP carries json and v2: 1.1 (a pool, one TLS connection per request in
    /// flight), 2 (one TLS connection, a stream per request) or 3 (one QUIC connection to the
    /// URL's port over UDP, a stream per request: the front-end's HTTP/3 listener, which
    /// shares the HTTPS port unless it was moved with --h3-listen). gRPC always rides
    /// HTTP/2. Default: 1.1 for json and v2, 2 for grpc.
    #[arg(long, env = "GLIMPSE_LOAD_HTTP", value_enum)]
    http: Option<HttpVersion>,
    /// With --http 3: the congestion controller of the client's QUIC connection, cubic or
    /// bbr (HTTP/1.1 and HTTP/2 use the kernel TCP's, net.ipv4.tcp_congestion_control).
    /// Default: cubic (quinn's default, and what browsers' QUIC uses).
    #[arg(long, env = "GLIMPSE_LOAD_CONGESTION", default_value = "cubic")]
    congestion: CongestionControl,
    /// Trust only the CA certificate(s) in this PEM file (e.g. glimpse-certs' ca.pem).
    /// Default: none, the public web roots are trusted (see also --insecure).
    #[arg(long, env = "GLIMPSE_LOAD_CA")]
    ca: Option<PathBuf>,
    /// Accept any server certificate (a local front-end with its generated self-signed
    /// certificate). Default: off, certificates are verified.
    #[arg(long, env = "GLIMPSE_LOAD_INSECURE")]
    insecure: bool,
    /// API key, sent as `Authorization: Bearer KEY` with every request (every protocol).
    /// Default: none (for a server without --api-keys).
    #[arg(long, env = "GLIMPSE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Directory of .jpg/.png images, sent round-robin. Default: 8 generated 480×360 JPEGs
    /// (about 100 KB each, deterministic for --seed).
    #[arg(long, env = "GLIMPSE_LOAD_IMAGES")]
    images: Option<PathBuf>,
    /// Images per request: one v2/gRPC tensor of shape [N], or N `file` parts in one json
    /// form. Default: 1.
    #[arg(long, env = "GLIMPSE_LOAD_BATCH", default_value_t = 1)]
    batch: usize,
    /// Closed-loop concurrency sweep, comma-separated (e.g. 1,2,4,8): each step keeps that
    /// many requests in flight, each client sending its next request when the previous one
    /// answered. Default: 1, unless --rate is given.
    #[arg(
        long,
        env = "GLIMPSE_LOAD_CONCURRENCY",
        value_delimiter = ',',
        conflicts_with = "rate"
    )]
    concurrency: Vec<usize>,
    /// Open loop instead: Poisson arrivals at R requests per second, one step per rate
    /// (comma-separated, e.g. 5,10,20). Requests go out on schedule whether or not earlier
    /// ones answered. Default: none (closed loop).
    #[arg(long, env = "GLIMPSE_LOAD_RATE", value_delimiter = ',')]
    rate: Vec<f64>,
    /// Open loop: most requests waiting for an answer at once; arrivals beyond it are not
    /// sent and are counted as `skipped`. Default: 1000.
    #[arg(long, env = "GLIMPSE_LOAD_MAX_OUTSTANDING", default_value_t = 1000)]
    max_outstanding: usize,
    /// Seconds each step is measured, after its warm-up. Default: 10.
    #[arg(long, env = "GLIMPSE_LOAD_DURATION", default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before each step's measurement starts (not counted). Default: 2.
    #[arg(long, env = "GLIMPSE_LOAD_WARMUP", default_value_t = 2.0)]
    warmup: f64,
    /// Seconds to wait for one answer before counting it as a `timeout` error. Default: 30.
    #[arg(long, env = "GLIMPSE_LOAD_TIMEOUT", default_value_t = 30.0)]
    timeout: f64,
    /// Also write the report as JSON to this file, or to stdout with `-` (the table then
    /// goes to stderr). Default: none, only the table on stdout.
    #[arg(long, env = "GLIMPSE_LOAD_JSON")]
    json: Option<PathBuf>,
    /// Seed of the generated images and the open-loop arrival times (step i uses seed + i);
    /// the same seed gives the same schedule. Default: 1.
    #[arg(long, env = "GLIMPSE_LOAD_SEED", default_value_t = 1)]
    seed: u64,
}

pub(crate) async fn load(a: LoadArgs) -> anyhow::Result<()> {
    let imgs = lab_images(a.images.as_deref(), a.seed)?;
    let plan = if !a.rate.is_empty() {
        LoadPlan::Rate(a.rate)
    } else if !a.concurrency.is_empty() {
        LoadPlan::Concurrency(a.concurrency)
    } else {
        LoadPlan::Concurrency(vec![1])
    };
    let options = LoadOptions {
        target: TargetOptions {
            url: a.url,
            protocol: a.protocol,
            http: a.http.unwrap_or(match a.protocol {
                Protocol::Grpc => HttpVersion::Http2,
                Protocol::Json | Protocol::V2 => HttpVersion::Http1,
            }),
            congestion: a.congestion,
            trust: match (a.ca, a.insecure) {
                (Some(ca), _) => Trust::Ca(ca),
                (None, true) => Trust::Insecure,
                (None, false) => Trust::PublicRoots,
            },
            api_key: a.api_key.filter(|k| !k.is_empty()),
            timeout: seconds("--timeout", a.timeout)?,
        },
        images: imgs,
        batch: a.batch,
        plan,
        max_outstanding: a.max_outstanding,
        warmup: seconds("--warmup", a.warmup)?,
        duration: seconds("--duration", a.duration)?,
        seed: a.seed,
    };
    let json_to_stdout = a.json.as_deref() == Some(std::path::Path::new("-"));
    eprintln!(
        "glimpse-lab load: {} over {} ({}), batch {}, {} s warm-up + {} s per step",
        options.target.url,
        options.target.protocol,
        options.target.http,
        options.batch,
        options.warmup.as_secs_f64(),
        options.duration.as_secs_f64()
    );
    let report = tokio::select! {
        r = run_load(&options, |s| {
            eprintln!(
                "{}: {} ok, {} error(s), {:.1} req/s, p50 {:.1} ms, p99 {:.1} ms",
                s.load,
                s.ok,
                s.error_total(),
                s.throughput_rps,
                s.latency_ms.p50,
                s.latency_ms.p99
            )
        }) => r?,
        _ = interrupted() => anyhow::bail!("interrupted"),
    };
    if json_to_stdout {
        eprint!("{}", report.table());
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
        if let Some(path) = &a.json {
            std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    let ok: u64 = report.steps.iter().map(|s| s.ok).sum();
    anyhow::ensure!(ok > 0, "no request succeeded");
    Ok(())
}
