//! `glimpse`: the HTTPS front-end binary. See `glimpse --help`.

use anyhow::Context;
use clap::Parser;
use glimpse_site::cli::Cli;
use glimpse_site::{cluster, server, start_site};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Register for SIGTERM/SIGINT before anything else: a signal that arrives while nodes start
    // or weights load must drain and exit 0, not kill the process with the default action.
    let shutdown = shutdown_signal().context("listening for SIGTERM and SIGINT")?;

    let tls = server::tls_identity(cli.tls_cert.as_deref(), cli.tls_key.as_deref())
        .context("setting up HTTPS")?;
    let cluster = cluster::build(&cli).await.context("starting the cluster")?;
    let site = start_site(
        cli.listen,
        &tls,
        cli.http_redirect,
        cluster.inference.clone(),
        cli.limits(),
    )
    .await
    .with_context(|| format!("listening on {}", cli.listen))?;

    let host = match site.addr.ip() {
        ip if ip.is_unspecified() || ip.is_loopback() => "localhost".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    println!("Glimpse is serving at https://{host}:{}/", site.addr.port());
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

    shutdown.await;
    tracing::info!("shutting down: finishing open requests");
    site.shutdown().await;
    cluster.shutdown().await;
    Ok(())
}

/// Registers for SIGTERM and SIGINT (Ctrl-C) now and returns a future that completes on the
/// first of them.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Ctrl-C where there is no SIGTERM.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
