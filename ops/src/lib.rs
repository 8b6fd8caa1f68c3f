//! What operating a Glimpse process needs, shared by the front-end (`glimpse`) and the node
//! (`glimpse-node`) so both behave the same:
//!
//! - [`config_file`]: the optional TOML file under flags and environment variables;
//! - [`logging`]: `--log-format text|json`;
//! - [`traces`]: `--otlp-endpoint`, OpenTelemetry trace export;
//! - [`process`] and [`exposition`]: the Prometheus pieces both `/metrics` pages share (build
//!   info, `process_*` metrics, the text format and its content type);
//! - [`exit`]: how a binary reports the error it stops on (once, without a backtrace unless
//!   `--verbose`);
//! - [`OpsArgs`]: the flags for the above, flattened into both command lines.

pub mod config_file;
pub mod exit;
pub mod exposition;
pub mod logging;
pub mod process;
pub mod traces;

use std::path::PathBuf;

pub use logging::LogFormat;
pub use traces::{OtlpEndpoint, Traces};

/// `--config`, `--log-format`, `--otlp-endpoint` and `--verbose`, the same on every Glimpse binary (flatten them into the
/// top-level command: they are global, so they may follow a subcommand too).
#[derive(Debug, Clone, clap::Args)]
pub struct OpsArgs {
    /// TOML configuration file whose keys are the long flag names without `--`, e.g.
    /// `max-queued = 512` or `node = ["a=10.0.0.1:4433"]` (repeatable flags take lists).
    /// Precedence: flag > environment variable > file > built-in default. Unknown keys are an
    /// error. Default: none.
    #[arg(long, env = "GLIMPSE_CONFIG", value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
    /// `--log-format` and `--verbose`.
    #[command(flatten)]
    pub log: LogArgs,
    /// Export traces (one span per image on the front-end, one per attempt on the node,
    /// joined by the W3C trace context) as OTLP protobuf over HTTP to this collector, e.g.
    /// `http://otel-collector:4318` (spans go to `/v1/traces` under it). A collector that is
    /// down only costs dropped spans and a warning in the log. Default: none, no export.
    #[arg(long, env = "GLIMPSE_OTLP_ENDPOINT", value_name = "URL", global = true)]
    pub otlp_endpoint: Option<OtlpEndpoint>,
}

impl OpsArgs {
    /// Sets a serving process up to report: as [`LogArgs::init`], plus the trace exporter
    /// for `--otlp-endpoint` as service `program`, whose layer goes in beside the log lines.
    /// An exporter that cannot be set up costs the traces and a warning, never the start.
    pub fn init(&self, program: &'static str, default_filter: &str) -> (exit::Reporter, Traces) {
        let reporter = exit::Reporter::new(program, self.log.verbose);
        let traces = Traces::start(self.otlp_endpoint.as_ref(), program);
        let (traces, failed) = match traces {
            Ok(t) => (t, None),
            Err(e) => (Traces::off(), Some(e)),
        };
        logging::init(self.log.log_format, default_filter, &traces);
        if let Some(e) = failed {
            tracing::warn!("traces are not exported: {}", exit::one_line(&e));
        } else if let Some(endpoint) = &self.otlp_endpoint {
            tracing::info!(%endpoint, "exporting traces (OTLP over HTTP)");
        }
        (reporter, traces)
    }
}

/// How a binary reports, the same on every Glimpse binary (the front-end and the node take it
/// inside [`OpsArgs`]; the certificate and lab tools alone): its log lines, and its final
/// error.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log lines on stderr: `text` for people, `json` for log collectors (one JSON object
    /// per line, with timestamp, level, target and the event's fields). GLIMPSE_LOG or
    /// RUST_LOG sets the filter. Default: text.
    #[arg(
        long,
        env = "GLIMPSE_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
    pub log_format: LogFormat,
    /// When the program stops on an error, also print the error's details and the stack
    /// trace where it was made (for bug reports). Without it the error is one line whatever
    /// RUST_BACKTRACE says; GLIMPSE_LOG=debug turns this on too. Default: off.
    #[arg(long, short = 'v', env = "GLIMPSE_VERBOSE", global = true)]
    pub verbose: bool,
}

impl LogArgs {
    /// Sets the process up to report: the final error's [`exit::Reporter`] first (it may turn
    /// backtrace capture on, which must happen while the process has one thread), then the
    /// log subscriber with `default_filter` unless GLIMPSE_LOG or RUST_LOG says otherwise.
    pub fn init(&self, program: &str, default_filter: &str) -> exit::Reporter {
        let reporter = exit::Reporter::new(program, self.verbose);
        logging::init(self.log_format, default_filter, &traces::Traces::off());
        reporter
    }
}
