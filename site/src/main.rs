//! `glimpse`: the HTTPS front-end binary. See `glimpse --help`.

use std::process::ExitCode;

use anyhow::Context;
use glimpse_site::access::auth;
use glimpse_site::bind_site;
use glimpse_site::cli::{Cli, Command, KeysCommand};
use glimpse_site::fleet::cluster;
use glimpse_site::http::{conn, server};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Flags over environment over the --config file over defaults.
    let cli: Cli = glimpse_ops::config_file::parse();
    // An error ends the program as one line for people (--verbose adds the backtrace);
    // GLIMPSE_LOG (or RUST_LOG) sets the log filter, default info.
    // With --otlp-endpoint, the spans are exported too.
    let (reporter, traces) = cli.ops.init("glimpse", "info");
    if let Some(Command::Keys { action }) = &cli.command {
        return reporter.finish(keys(action));
    }
    let served = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(serve(cli, traces)));
    reporter.finish(served)
}

// Over 80 lines on purpose: the binary's start-up in order (bind, keys, cluster, serve, shutdown); splitting it would hide the order.
async fn serve(cli: Cli, traces: glimpse_ops::Traces) -> anyhow::Result<()> {
    // Register for SIGTERM/SIGINT before anything else: a signal that arrives while nodes start
    // or weights load must drain and exit 0, not kill the process with the default action.
    let mut signals = Signals::install().context("listening for SIGTERM and SIGINT")?;

    tokio::spawn(return_memory());
    let nofile = conn::raise_fd_limit().context("raising the file-descriptor limit")?;
    let config = cli.site_config(nofile);
    config
        .limits
        .validate()
        .map_err(anyhow::Error::msg)
        .context("checking the limits")?;
    let cluster_config = cli.cluster_config()?;
    let tls = server::tls_identity(cli.tls_cert.as_deref(), cli.tls_key.as_deref())
        .context("setting up HTTPS")?;
    // Every listener is bound before any model loads: a busy port (the error names the flag
    // that moves it) or a broken key file fails in milliseconds, not after the weights load.
    let bound = bind_site(config.clone()).await?;
    let cluster = cluster::build(&cluster_config)
        .await
        .context("starting the cluster")?;
    let site = bound
        .serve(&tls, cluster.inference.clone())
        .await
        .context("starting the front-end")?;

    tracing::info!(frontend = %site.site.frontend.id(), "front-end id (the prefix of its job ids)");
    let host = display_host(site.addr.ip());
    println!("Glimpse is serving at https://{host}:{}/", site.addr.port());
    if let Some(h) = site.h3_addr {
        println!(
            "HTTP/3 on UDP {}:{} (browsers switch to it by themselves, from Alt-Svc)",
            display_host(h.ip()),
            h.port()
        );
    }
    if let Some(g) = site.grpc_addr {
        println!(
            "KServe v2 gRPC (Triton clients) at {}:{} (TLS, the same certificate)",
            display_host(g.ip()),
            g.port()
        );
    }
    if tls.self_signed {
        println!(
            "Self-signed certificate, SHA-256 fingerprint {}",
            tls.fingerprint
        );
    } else {
        println!("Certificate SHA-256 fingerprint {}", tls.fingerprint);
    }
    if let Some(r) = site.redirect_addr {
        println!("Plain HTTP on {r} redirects to HTTPS");
    }
    if let Some(a) = site.admin_addr {
        println!("Metrics and node list on http://{a}/metrics and /api/v1/nodes (admin address)");
    }
    match &config.api_keys {
        Some(path) => println!(
            "API keys required (from {}); each key sees only its own jobs",
            path.display()
        ),
        None if !site.addr.ip().is_loopback() => println!(
            "WARNING: no --api-keys: anyone who can reach {} may upload (each client still sees only its own jobs); see README, Security",
            site.addr
        ),
        None => {}
    }
    tracing::info!(
        max_connections = config.conn.max_total,
        max_connections_per_ip = config.conn.max_per_ip,
        fd_limit = nofile,
        "connection limits"
    );
    println!(
        "{} node(s) configured; /readyz turns 200 once one is connected",
        cluster.node_count()
    );

    let dispatcher = cluster.inference.dispatcher().clone();
    tokio::spawn(async move {
        if dispatcher
            .wait_ready(1, std::time::Duration::from_secs(30))
            .await
        {
            tracing::info!("at least one node is ready");
        } else {
            tracing::warn!("no node ready after 30 s; still trying in the background");
        }
    });

    let signal = signals.recv().await;
    // First fail readiness and keep serving for the grace period, so load balancers (probes,
    // endpoint removal) send new work elsewhere before this front-end stops accepting it.
    let grace = cli.frontend.shutdown_grace();
    site.stop_ready();
    if !grace.is_zero() {
        tracing::info!(
            signal,
            grace_s = grace.as_secs_f64(),
            "shutting down: /readyz answers 503, serving on for the grace period (send the signal again to skip it)"
        );
        tokio::select! {
            () = tokio::time::sleep(grace) => {}
            signal = signals.recv() => tracing::info!(signal, "second signal: skipping the rest of the grace period"),
        }
    }
    tracing::info!(signal, "shutting down: finishing open requests");
    site.shutdown().await;
    cluster.shutdown().await;
    // The spans of the last images.
    traces.shutdown().await;
    Ok(())
}

/// How an address is shown in URLs: `localhost` for loopback and any-address listeners
/// (the self-signed certificate names localhost), IPv6 in brackets.
fn display_host(ip: std::net::IpAddr) -> String {
    match ip {
        ip if ip.is_unspecified() || ip.is_loopback() => "localhost".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    }
}

/// Every second, have the allocator hand memory that is free again back to the OS. mimalloc
/// purges freed pages only when the thread that freed them allocates again, so after a burst
/// of large uploads an idle server would otherwise keep its peak size for good.
async fn return_memory() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        // SAFETY: mi_collect only walks the allocator's own structures.
        unsafe { libmimalloc_sys::mi_collect(true) };
    }
}

/// `glimpse keys new`: print a fresh key and append its hash to the file.
fn keys(action: &KeysCommand) -> anyhow::Result<()> {
    match action {
        KeysCommand::New { file, name, admin } => {
            let key = auth::add_new_key(file, name, *admin)
                .with_context(|| format!("adding key {name:?} to {}", file.display()))?;
            eprintln!(
                "Added {}key {name:?} to {}. It is shown only now; a running server picks it up within {} s.",
                if *admin { "admin " } else { "" },
                file.display(),
                auth::RELOAD_INTERVAL.as_secs()
            );
            println!("{key}");
            Ok(())
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C), registered at once: a signal that arrives before anyone
/// waits is kept, not lost.
#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next SIGTERM or SIGINT, by name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Ctrl-C where there is no SIGTERM.
#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals)
    }

    async fn recv(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
