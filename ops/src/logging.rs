//! The process's log subscriber: human text, or one JSON object per line for log collectors
//! (Kubernetes, journald exports, Loki) that otherwise have to guess where a line ends and
//! which part is the level.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::traces::Traces;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-01-01T00:00:00Z  INFO target: message key=value`, coloured on a terminal.
    #[default]
    Text,
    /// `{"timestamp":…,"level":"INFO","target":…,"message":…,"key":value}` per line.
    Json,
}

/// Installs the global subscriber: log lines to stderr (stdout stays for the programs' own
/// output), and with `traces` on, the layer that exports spans. The log filter comes from
/// `GLIMPSE_LOG`, else `RUST_LOG`, else `default_filter`; it applies to the log lines only,
/// so `GLIMPSE_LOG=warn` keeps the traces whole. Does nothing if a subscriber is already
/// installed (tests that start several parts in one process).
pub fn init(format: LogFormat, default_filter: &str, traces: &Traces) {
    let filter = std::env::var("GLIMPSE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter));
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => lines
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(traces.layer())
        .with(lines.with_filter(filter))
        .try_init();
}
