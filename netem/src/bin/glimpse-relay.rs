//! `glimpse-relay`: a userspace UDP impairment relay for one link.
//!
//! Unprivileged and portable, it stands in for tc netem where the kernel lacks sch_netem (or
//! where there is no root). See `glimpse_netem::impair::DirectionConfig::apply_spec` for the
//! impairment syntax and `glimpse_netem::control` for the control protocol.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use glimpse_netem::control;
use glimpse_netem::impair::DirectionConfig;
use glimpse_netem::link::LinkControl;
use glimpse_netem::relay::{RelayConfig, RelayHandle};

#[derive(Parser, Debug)]
#[command(
    name = "glimpse-relay",
    version,
    about = "Userspace UDP impairment relay (delay, jitter, loss, burst loss, reordering, duplication, rate limit, blackhole)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr: `text` for people, `json` for log collectors (one JSON object per
    /// line), as on every Glimpse binary. GLIMPSE_LOG or RUST_LOG sets the filter. Default: text.
    #[arg(long, env = "GLIMPSE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

/// How log lines are written; the same choice and the same variables as `glimpse_ops::logging`
/// on the other Glimpse binaries. Written out here because the emulator depends on no Glimpse
/// crate (it impairs any traffic, and the lab builds on it, not the other way round).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human text, coloured on a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the log subscriber on stderr, filtered by GLIMPSE_LOG, else RUST_LOG, else `info`.
fn init_logging(format: LogFormat) {
    let filter = std::env::var("GLIMPSE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Relay UDP from --listen to --upstream, impairing each direction.
    Serve(ServeArgs),
    /// An IP-level impaired link into a new network namespace (Linux, root): two TUN devices,
    /// 10.77.I.1 here and 10.77.I.2 in the namespace; any protocol (TCP too) crosses the
    /// impairment. Run servers with `ip netns exec NAMESPACE ...`; the namespace and devices
    /// are removed on Ctrl-C / SIGTERM.
    Tun(TunArgs),
    /// Send one control command to a running relay and print its reply, e.g.
    /// `glimpse-relay ctl set both loss=10% delay=50ms`.
    Ctl {
        /// The relay's control address.
        #[arg(long, env = "GLIMPSE_RELAY_CONTROL", default_value = "127.0.0.1:7400")]
        control: SocketAddr,
        /// The command words (set/reset/show/stats/json/clear/help).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// A TCP echo server (every byte received is sent back), for checking that TCP crosses a
    /// TUN link intact. Used by the tests.
    #[command(hide = true)]
    TcpEcho {
        /// Address to answer on.
        #[arg(long)]
        listen: SocketAddr,
    },
    /// A UDP echo server, for checking a link end to end (see `probe`).
    Echo {
        /// Address to answer on. Default: 127.0.0.1:7402.
        #[arg(
            long,
            env = "GLIMPSE_RELAY_ECHO_LISTEN",
            default_value = "127.0.0.1:7402"
        )]
        listen: SocketAddr,
    },
    /// Sends numbered datagrams to an echo server one at a time and prints
    /// `sent=N received=M loss=F median_rtt_ms=X` (a ping for hosts without ping).
    Probe {
        /// The echo server. Default: 127.0.0.1:7402.
        #[arg(
            long,
            env = "GLIMPSE_RELAY_PROBE_TARGET",
            default_value = "127.0.0.1:7402"
        )]
        target: SocketAddr,
        /// Datagrams to send. Default: 50.
        #[arg(long, env = "GLIMPSE_RELAY_PROBE_COUNT", default_value_t = 50)]
        count: u64,
        /// How long to wait for each echo, ms. Default: 2000.
        #[arg(long, env = "GLIMPSE_RELAY_PROBE_TIMEOUT_MS", default_value_t = 2000)]
        timeout_ms: u64,
    },
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// UDP address clients send to. Default: loopback port 7401.
    #[arg(long, env = "GLIMPSE_RELAY_LISTEN", default_value = "127.0.0.1:7401")]
    listen: SocketAddr,
    /// The UDP server this link leads to (required).
    #[arg(long, env = "GLIMPSE_RELAY_UPSTREAM")]
    upstream: SocketAddr,
    /// Control socket (line protocol, see `glimpse-relay ctl help`); keep it on loopback.
    /// Default: 127.0.0.1:7400. "off" is not supported: the control port is how runs change.
    #[arg(long, env = "GLIMPSE_RELAY_CONTROL", default_value = "127.0.0.1:7400")]
    control: SocketAddr,
    #[command(flatten)]
    impair: ImpairArgs,
    /// Requested socket buffer size in bytes (capped by net.core.rmem_max). Default 8 MiB,
    /// so bursts are dropped by the configured impairment rather than by the kernel.
    #[arg(long, env = "GLIMPSE_RELAY_SOCKET_BUFFER", default_value_t = 8 * 1024 * 1024)]
    socket_buffer: usize,
    /// Print the counters every this many seconds (0 = only at exit). Default: 0.
    #[arg(long, env = "GLIMPSE_RELAY_STATS_INTERVAL_S", default_value_t = 0)]
    stats_interval_s: u64,
}

/// The impairment of a link's two directions, shared by `serve` and `tun`.
#[derive(clap::Args, Debug)]
struct ImpairArgs {
    /// Impairment of both directions, as `key=value ...` (e.g. "delay=50ms jitter=5ms loss=1%").
    /// Default: none (a perfect link). Applied before --up/--down.
    #[arg(long, env = "GLIMPSE_RELAY_BOTH", default_value = "")]
    both: String,
    /// Impairment of the up direction only (serve: client→upstream; tun: root
    /// namespace→worker namespace). Default: none.
    #[arg(long, env = "GLIMPSE_RELAY_UP", default_value = "")]
    up: String,
    /// Impairment of the down direction only (serve: upstream→client; tun: worker
    /// namespace→root namespace). Default: none.
    #[arg(long, env = "GLIMPSE_RELAY_DOWN", default_value = "")]
    down: String,
    /// RNG seed, for reproducible loss patterns (down uses seed+1). Default: 1.
    #[arg(long, env = "GLIMPSE_RELAY_SEED", default_value_t = 1)]
    seed: u64,
}

impl ImpairArgs {
    /// (up, down) configurations.
    fn configs(&self) -> anyhow::Result<(DirectionConfig, DirectionConfig)> {
        let mut up = DirectionConfig::default();
        let mut down = DirectionConfig::default();
        for c in [&mut up, &mut down] {
            c.apply_spec(&self.both).context("--both")?;
        }
        up.apply_spec(&self.up).context("--up")?;
        down.apply_spec(&self.down).context("--down")?;
        Ok((up, down))
    }
}

#[derive(clap::Args, Debug)]
struct TunArgs {
    /// Link index I (1..=250): addresses 10.77.I.1 (this side) and 10.77.I.2 (namespace).
    /// Default: 1.
    #[arg(long, env = "GLIMPSE_RELAY_TUN_INDEX", default_value_t = 1)]
    index: u8,
    /// Name of the namespace to create (must not exist). Default: gl<pid>w<index>.
    #[arg(long, env = "GLIMPSE_RELAY_TUN_NAMESPACE")]
    namespace: Option<String>,
    /// Control socket (same protocol as `serve`). Default: 127.0.0.1:7400.
    #[arg(long, env = "GLIMPSE_RELAY_CONTROL", default_value = "127.0.0.1:7400")]
    control: SocketAddr,
    #[command(flatten)]
    impair: ImpairArgs,
    /// Print the counters every this many seconds (0 = only at exit). Default: 0.
    #[arg(long, env = "GLIMPSE_RELAY_STATS_INTERVAL_S", default_value_t = 0)]
    stats_interval_s: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Once, on one line, whatever RUST_BACKTRACE says (as the other Glimpse binaries
        // report; GLIMPSE_LOG=debug logs the details).
        Err(e) => {
            eprintln!("glimpse-relay: error: {e:#}");
            tracing::debug!("{e:?}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Ctl { control, words } => {
            let reply = control::send_command(control, &words.join(" "))
                .await
                .with_context(|| format!("control connection to {control}"))?;
            println!("{reply}");
            if !reply.starts_with("ok") {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Serve(args) => serve(args).await,
        Command::Tun(args) => tun(args).await,
        Command::TcpEcho { listen } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            println!("tcp echo on {}", listener.local_addr()?);
            loop {
                let (mut stream, _) = listener.accept().await?;
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        }
        Command::Echo { listen } => {
            let sock = tokio::net::UdpSocket::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            println!("echo on {}", sock.local_addr()?);
            let mut buf = vec![0u8; 65_535];
            loop {
                if let Ok((n, peer)) = sock.recv_from(&mut buf).await {
                    let _ = sock.send_to(&buf[..n], peer).await;
                }
            }
        }
        Command::Probe {
            target,
            count,
            timeout_ms,
        } => {
            let r = probe(target, count, Duration::from_millis(timeout_ms)).await?;
            println!("{r}");
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (up, down) = args.impair.configs()?;
    let mut config = RelayConfig::new(args.listen, args.upstream);
    config.up = up;
    config.down = down;
    config.seed = args.impair.seed;
    config.socket_buffer = args.socket_buffer;
    let relay = RelayHandle::start(config).await?;
    let listener = tokio::net::TcpListener::bind(args.control)
        .await
        .with_context(|| format!("binding control socket {}", args.control))?;
    println!(
        "relay {} -> {} control {}",
        relay.local_addr(),
        args.upstream,
        listener.local_addr()?
    );
    run_link(relay.clone(), listener, args.stats_interval_s).await;
    relay.shutdown();
    Ok(())
}

#[cfg(target_os = "linux")]
async fn tun(args: TunArgs) -> anyhow::Result<()> {
    use glimpse_netem::tun::{TunConfig, TunLink};
    use std::sync::Arc;
    let (up, down) = args.impair.configs()?;
    let mut config = TunConfig::new(args.index);
    if let Some(ns) = args.namespace {
        config.namespace = ns;
    }
    config.up = up;
    config.down = down;
    config.seed = args.impair.seed;
    // Bind the control port first: failing there must not leave a namespace behind.
    let listener = tokio::net::TcpListener::bind(args.control)
        .await
        .with_context(|| format!("binding control socket {}", args.control))?;
    let link = Arc::new(TunLink::create(config).await?);
    println!(
        "tun link {} (dev {}) <-> namespace {} {} (dev {}) control {}",
        link.root_addr(),
        link.root_device(),
        link.namespace(),
        link.worker_addr(),
        link.worker_device(),
        listener.local_addr()?
    );
    run_link(link.clone(), listener, args.stats_interval_s).await;
    link.close().await;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
async fn tun(_args: TunArgs) -> anyhow::Result<()> {
    anyhow::bail!("`glimpse-relay tun` needs Linux (TUN devices and network namespaces)")
}

/// Serves the control port and prints counters until Ctrl-C / SIGTERM; prints the final
/// counters.
async fn run_link<L: LinkControl + Clone + 'static>(
    link: L,
    listener: tokio::net::TcpListener,
    stats_interval_s: u64,
) {
    println!("{}", control::execute(&link, "show"));
    let server = tokio::spawn(control::serve(listener, link.clone()));
    let ticker = (stats_interval_s > 0).then(|| {
        let l = link.clone();
        let every = Duration::from_secs(stats_interval_s);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                println!("{}", control::execute(&l, "stats"));
            }
        })
    });
    shutdown_signal().await;
    server.abort();
    if let Some(t) = ticker {
        t.abort();
    }
    println!("{}", control::execute(&link, "stats"));
}

/// Sequential UDP pings; returns the summary line.
async fn probe(target: SocketAddr, count: u64, timeout: Duration) -> anyhow::Result<String> {
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(target).await?;
    let mut rtts = Vec::new();
    let mut buf = [0u8; 64];
    for seq in 0..count {
        let t0 = std::time::Instant::now();
        // Send errors (e.g. ICMP unreachable reported on a connected socket) count as loss.
        if sock.send(&seq.to_be_bytes()).await.is_err() {
            continue;
        }
        let deadline = t0 + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match tokio::time::timeout(left, sock.recv(&mut buf)).await {
                Ok(Ok(8)) if buf[..8] == seq.to_be_bytes() => {
                    rtts.push(t0.elapsed().as_secs_f64() * 1e3);
                    break;
                }
                Ok(Ok(_)) => continue,
                Ok(Err(_)) | Err(_) => break,
            }
        }
    }
    rtts.sort_by(f64::total_cmp);
    let median = rtts.get(rtts.len() / 2).copied().unwrap_or(f64::NAN);
    Ok(format!(
        "sent={count} received={} loss={:.4} median_rtt_ms={median:.2}",
        rtts.len(),
        1.0 - rtts.len() as f64 / count.max(1) as f64
    ))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
