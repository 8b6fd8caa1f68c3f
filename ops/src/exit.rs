//! How a Glimpse binary ends when it cannot do its job: the error and its causes printed once,
//! on one line, for people (`glimpse: error: starting the cluster: loading the model: ...`),
//! and a non-zero exit status, whatever `RUST_BACKTRACE` says. Returning `anyhow::Result` from
//! `main` instead prints the error's `Debug` form, which carries a 30-frame stack trace as soon
//! as `RUST_BACKTRACE=1` is set in the environment.
//!
//! The stack trace is for developers: `--verbose` ([`crate::OpsArgs::verbose`]) or a debug log
//! filter (`GLIMPSE_LOG=debug`, or `RUST_LOG` when `GLIMPSE_LOG` is unset) prints the `Debug`
//! form, and [`Reporter::new`] then turns backtrace capture on, so the trace is there without
//! setting `RUST_BACKTRACE` too.
//!
//! ```no_run
//! use std::process::ExitCode;
//!
//! fn main() -> ExitCode {
//!     // First thing, before any thread or runtime starts (it may set an environment variable).
//!     let reporter = glimpse_ops::exit::Reporter::new("glimpse-example", false);
//!     reporter.finish(run())
//! }
//!
//! fn run() -> Result<(), std::io::Error> {
//!     std::fs::read("/nonexistent").map(drop)
//! }
//! ```

use std::error::Error;
use std::fmt::Debug;
use std::process::ExitCode;

/// Reports a binary's final error as [the module](self) says.
#[derive(Debug, Clone)]
pub struct Reporter {
    program: String,
    verbose: bool,
}

impl Reporter {
    /// A reporter for `program` (the binary's name, the prefix of the error line). `verbose`
    /// is the `--verbose` flag; a debug log filter turns it on too. When verbose, backtrace
    /// capture is turned on for errors made from now on (`RUST_LIB_BACKTRACE=1`, unless that
    /// is set already), so call this first in `main`, while the process has one thread.
    pub fn new(program: &str, verbose: bool) -> Reporter {
        let verbose = verbose || debug_logging(|name| std::env::var(name).ok());
        if verbose && std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
            // SAFETY: documented to be called at the start of `main`, before any other thread
            // exists that could read the environment at the same time.
            unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "1") };
        }
        Reporter {
            program: program.to_string(),
            verbose,
        }
    }

    /// Whether the `Debug` form (with its backtrace) is printed.
    pub fn verbose(&self) -> bool {
        self.verbose
    }

    /// `Ok`: success. `Err`: the error printed once on stderr ([`Reporter::render`]) and
    /// failure (exit status 1).
    pub fn finish<E>(&self, result: Result<(), E>) -> ExitCode
    where
        E: AsRef<dyn Error + Send + Sync + 'static> + Debug,
    {
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{}", self.render(&e));
                ExitCode::FAILURE
            }
        }
    }

    /// What [`Reporter::finish`] prints: `PROGRAM: error: ` and [`one_line`], then, when
    /// verbose, the error's `Debug` form (anyhow's: the causes and the backtrace).
    pub fn render<E>(&self, error: &E) -> String
    where
        E: AsRef<dyn Error + Send + Sync + 'static> + Debug,
    {
        let mut out = format!("{}: error: {}", self.program, one_line(error.as_ref()));
        if self.verbose {
            out.push_str(&format!("\n\nDetails (--verbose):\n{error:?}"));
        }
        out
    }
}

/// The error and its causes on one line, `outer: inner: innermost`, skipping a cause whose text
/// an outer message already includes (error types that embed their source would otherwise
/// print it twice), with runs of white space (line breaks too) made one space.
pub fn one_line(error: &(dyn Error + 'static)) -> String {
    let mut out = String::new();
    let mut cause = Some(error);
    while let Some(e) = cause {
        let text = e.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        cause = e.source();
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether the log filter (`GLIMPSE_LOG`, else `RUST_LOG`, as [`crate::logging::init`] reads
/// it) asks for debug or trace output by default: a bare `debug`/`trace` directive, not one for
/// a single module (`glimpse_transport=debug`).
pub fn debug_logging(env: impl Fn(&str) -> Option<String>) -> bool {
    let Some(filter) = env("GLIMPSE_LOG").or_else(|| env("RUST_LOG")) else {
        return false;
    };
    filter.split(',').any(|directive| {
        let d = directive.trim();
        d.eq_ignore_ascii_case("debug") || d.eq_ignore_ascii_case("trace")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("loading the model")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("weights not found:\n  pass --weights random")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("could not listen: {0}")]
    struct Embeds(#[source] Inner);

    fn boxed(e: impl Error + Send + Sync + 'static) -> Box<dyn Error + Send + Sync> {
        Box::new(e)
    }

    #[test]
    fn one_line_names_each_cause_once() {
        assert_eq!(
            one_line(boxed(Outer(Inner)).as_ref()),
            "loading the model: weights not found: pass --weights random"
        );
        // The outer message already says the inner one: not repeated.
        assert_eq!(
            one_line(boxed(Embeds(Inner)).as_ref()),
            "could not listen: weights not found: pass --weights random"
        );
    }

    #[test]
    fn the_report_is_one_line_unless_verbose() {
        let quiet = Reporter {
            program: "glimpse".into(),
            verbose: false,
        };
        let report = quiet.render(&boxed(Outer(Inner)));
        assert_eq!(
            report,
            "glimpse: error: loading the model: weights not found: pass --weights random"
        );
        let verbose = Reporter {
            program: "glimpse".into(),
            verbose: true,
        };
        let report = verbose.render(&boxed(Outer(Inner)));
        assert!(
            report.starts_with("glimpse: error: loading the model"),
            "{report}"
        );
        assert!(report.contains("--verbose"), "{report}");
        assert!(report.contains("Outer(Inner)"), "the Debug form: {report}");
    }

    #[test]
    fn only_a_default_debug_or_trace_filter_is_verbose() {
        let env = |glimpse: Option<&str>, rust: Option<&str>| {
            let (g, r) = (glimpse.map(String::from), rust.map(String::from));
            move |name: &str| match name {
                "GLIMPSE_LOG" => g.clone(),
                "RUST_LOG" => r.clone(),
                _ => None,
            }
        };
        assert!(!debug_logging(env(None, None)));
        assert!(debug_logging(env(Some("debug"), None)));
        assert!(debug_logging(env(Some("info,TRACE"), None)));
        assert!(debug_logging(env(None, Some("debug"))));
        assert!(!debug_logging(env(Some("info"), Some("debug"))));
        assert!(!debug_logging(env(
            Some("info,glimpse_transport=debug"),
            None
        )));
    }
}
