//! The optional TOML configuration file, under flags and environment variables.
//!
//! Its keys are the long flag names (`max-queued = 512`, `node = ["a=10.0.0.1:4433"]`), so
//! there is one set of names and defaults: the ones `--help` shows. The file's values become
//! the arguments' *defaults* before clap parses, so clap itself keeps its order: a flag beats
//! the environment variable, which beats the default, which is now the file's value, which
//! beat the built-in one. Values are checked by the same parsers as flags, so a wrong type gets
//! clap's own error. A key that names no flag is an error naming the key and the file: a typo
//! must not be silently ignored.
//!
//! The path comes from `--config PATH` or the environment variable of the `config` argument
//! (`GLIMPSE_CONFIG`), read from the command line before clap runs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{ArgAction, Command, Parser};

/// The argument id (and long name) of the configuration file flag.
const CONFIG_ARG: &str = "config";

/// Why a configuration file could not be applied, or the command line not parsed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("the configuration file {path} is not valid TOML: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A key names no flag of this program.
    #[error(
        "unknown key `{key}` in the configuration file {path}: keys are the long flag names of --help, without the leading --"
    )]
    UnknownKey {
        /// The key.
        key: String,
        /// The file.
        path: PathBuf,
    },
    /// A value of a shape no flag takes (a table, or a list for a flag given once).
    #[error("key `{key}` in the configuration file {path}: {problem}")]
    Shape {
        /// The key.
        key: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// clap's own error: a bad flag, or a value (from any source) its parser refuses; also
    /// `--help` and `--version`, which clap reports this way.
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

/// Parses the process's command line like [`Parser::parse`], with the configuration file
/// under it. On an error it prints the message and exits (status 2, or 0 for `--help`).
pub fn parse<P: Parser>() -> P {
    match try_parse_from::<P>(std::env::args_os(), |name| std::env::var_os(name)) {
        Ok(parsed) => parsed,
        Err(ConfigError::Clap(e)) => e.exit(),
        Err(e) => {
            let bin = std::env::args()
                .next()
                .and_then(|a| {
                    Path::new(&a)
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                })
                .unwrap_or_default();
            eprintln!("{bin}: error: {e}");
            std::process::exit(2);
        }
    }
}

/// Parses `args` (program name first) with the configuration file under it. `env` looks up
/// the configuration file's environment variable (the process's environment in [`parse`]);
/// the other arguments' variables are read by clap from the process's environment.
pub fn try_parse_from<P: Parser>(
    args: impl IntoIterator<Item = impl Into<OsString>>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<P, ConfigError> {
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = P::command();
    if let Some(path) = config_path(&command, &args, env) {
        command = apply_file(command, &path)?;
    }
    let matches = command.try_get_matches_from(args)?;
    Ok(P::from_arg_matches(&matches)?)
}

/// The file named by `--config PATH` / `--config=PATH` on the command line (the last one),
/// else by the config argument's environment variable.
fn config_path(
    command: &Command,
    args: &[OsString],
    env: impl Fn(&str) -> Option<OsString>,
) -> Option<PathBuf> {
    let mut found = None;
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            found = rest.next().cloned();
        } else if let Some(value) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            found = Some(OsString::from(value));
        }
    }
    found
        .or_else(|| {
            let arg = command.get_arguments().find(|a| a.get_id() == CONFIG_ARG)?;
            env(arg.get_env()?.to_str()?)
        })
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// Reads the file and makes each of its values the default of the flag it names.
fn apply_file(mut command: Command, path: &Path) -> Result<Command, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Toml {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    for (key, value) in &table {
        let shape = |problem| ConfigError::Shape {
            key: key.clone(),
            path: path.to_path_buf(),
            problem,
        };
        if key == CONFIG_ARG {
            return Err(shape("a configuration file cannot name another one"));
        }
        let (values, is_list) = match value {
            toml::Value::Array(items) => (
                items
                    .iter()
                    .map(scalar)
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| shape("a list may hold only strings, numbers and booleans"))?,
                true,
            ),
            other => (
                vec![scalar(other).ok_or_else(|| shape("tables are not settings"))?],
                false,
            ),
        };
        let mut found = Found::default();
        command = set_default(command, key, &values, is_list, &mut found);
        match found {
            Found::Nowhere => {
                return Err(ConfigError::UnknownKey {
                    key: key.clone(),
                    path: path.to_path_buf(),
                });
            }
            Found::NotAList => {
                return Err(shape(
                    "this flag takes one value, not a list (repeatable flags take lists)",
                ));
            }
            Found::Set => {}
        }
    }
    Ok(command)
}

/// Whether a key matched a flag.
#[derive(Debug, Default, PartialEq, Eq)]
enum Found {
    #[default]
    Nowhere,
    NotAList,
    Set,
}

/// Sets `values` as the default of every value-taking argument whose long name is `key`, in
/// `command` and its subcommands (a name shared by subcommands means the same setting).
fn set_default(
    mut command: Command,
    key: &str,
    values: &[String],
    is_list: bool,
    found: &mut Found,
) -> Command {
    let ids: Vec<(clap::Id, bool)> = command
        .get_arguments()
        .filter(|a| a.get_long() == Some(key) && takes_setting(a.get_action()))
        .map(|a| {
            (
                a.get_id().clone(),
                matches!(a.get_action(), ArgAction::Append),
            )
        })
        .collect();
    for (id, repeatable) in ids {
        if is_list && !repeatable {
            if *found == Found::Nowhere {
                *found = Found::NotAList;
            }
            continue;
        }
        *found = Found::Set;
        let defaults: Vec<clap::builder::OsStr> = values
            .iter()
            .map(|v| clap::builder::OsStr::from(clap::builder::Str::from(v.clone())))
            .collect();
        // A flag the program requires is satisfied by the file: clap counts only explicit
        // values (command line, environment) as present for `required`.
        command = command.mut_arg(id, |a| a.default_values(defaults).required(false));
    }
    let subcommands: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subcommands {
        command = command.mut_subcommand(name, |s| set_default(s, key, values, is_list, found));
    }
    command
}

/// Argument actions that hold a setting (not `--help`, `--version`).
fn takes_setting(action: &ArgAction) -> bool {
    matches!(
        action,
        ArgAction::Set
            | ArgAction::Append
            | ArgAction::SetTrue
            | ArgAction::SetFalse
            | ArgAction::Count
    )
}

/// A TOML scalar as the text a flag would carry.
fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(d) => Some(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, Subcommand};

    /// A program shaped like the real ones: a flag with an environment variable, a list, a
    /// switch, a required flag, and a subcommand with flags of its own.
    #[derive(Debug, Parser)]
    struct Program {
        #[command(flatten)]
        common: Common,
        /// A number.
        #[arg(long, default_value_t = 1)]
        max_queued: u32,
        /// A number with every source (only the precedence test sets its variable).
        #[arg(long, env = "GLIMPSE_OPS_TEST_WORKERS", default_value_t = 1)]
        workers: u32,
        /// A repeatable flag.
        #[arg(long)]
        node: Vec<String>,
        /// A switch.
        #[arg(long)]
        verbose: bool,
        #[command(subcommand)]
        command: Option<Sub>,
    }

    #[derive(Debug, Args)]
    struct Common {
        /// The configuration file.
        #[arg(long, env = "GLIMPSE_OPS_TEST_CONFIG", global = true)]
        config: Option<PathBuf>,
    }

    #[derive(Debug, Subcommand)]
    enum Sub {
        Serve {
            /// Required unless the file gives it.
            #[arg(long)]
            cert: PathBuf,
            #[arg(long, default_value_t = 8)]
            max_batch: u32,
        },
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(f.path(), text).expect("write");
        f
    }

    fn parse(args: &[&str]) -> Result<Program, ConfigError> {
        try_parse_from::<Program>(args.iter().copied(), |_| None)
    }

    #[test]
    fn precedence_is_flag_then_env_then_file_then_default() {
        let f = file("workers = 3\n");
        let path = f.path().to_str().expect("utf-8 path");
        // Default.
        assert_eq!(parse(&["p"]).expect("parses").workers, 1);
        // File over default.
        assert_eq!(parse(&["p", "--config", path]).expect("parses").workers, 3);
        // SAFETY: only this test reads or writes this variable, and nothing else in this
        // test binary changes the environment.
        unsafe { std::env::set_var("GLIMPSE_OPS_TEST_WORKERS", "5") };
        let env = parse(&["p", "--config", path]);
        let flag = parse(&["p", "--config", path, "--workers", "7"]);
        // SAFETY: as above.
        unsafe { std::env::remove_var("GLIMPSE_OPS_TEST_WORKERS") };
        // Environment over file.
        assert_eq!(env.expect("parses").workers, 5);
        // Flag over environment.
        assert_eq!(flag.expect("parses").workers, 7);
    }

    #[test]
    fn the_path_comes_from_the_flag_or_the_environment_variable() {
        let f = file("max-queued = 4\n");
        let path = f.path().to_str().expect("utf-8 path").to_string();
        let eq = format!("--config={path}");
        assert_eq!(parse(&["p", &eq]).expect("parses").max_queued, 4);
        let by_env = try_parse_from::<Program>(["p"], |name| {
            (name == "GLIMPSE_OPS_TEST_CONFIG").then(|| OsString::from(&path))
        })
        .expect("parses");
        assert_eq!(by_env.max_queued, 4);
    }

    #[test]
    fn lists_switches_and_subcommand_flags_take_file_values() {
        let f = file(
            "node = [\"a=10.0.0.1:4433\", \"b=10.0.0.2:4433\"]\nverbose = true\ncert = \"/etc/node.pem\"\nmax-batch = 16\n",
        );
        let path = f.path().to_str().expect("utf-8 path");
        let p = parse(&["p", "--config", path, "serve"]).expect("parses");
        assert_eq!(p.node, ["a=10.0.0.1:4433", "b=10.0.0.2:4433"]);
        assert!(p.verbose);
        let Some(Sub::Serve { cert, max_batch }) = p.command else {
            panic!("serve expected")
        };
        // A required flag is satisfied by the file.
        assert_eq!(cert, PathBuf::from("/etc/node.pem"));
        assert_eq!(max_batch, 16);
        // The command line still adds nothing to, but replaces, a file's list.
        let p = parse(&["p", "--config", path, "--node", "c=h:1", "serve"]).expect("parses");
        assert_eq!(p.node, ["c=h:1"]);
        // Without the file the required flag is required again.
        assert!(parse(&["p", "serve"]).is_err());
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_file() {
        let f = file("max-queud = 3\n");
        let path = f.path().to_str().expect("utf-8 path");
        let err = parse(&["p", "--config", path]).expect_err("refused");
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("`max-queud`") && text.contains(path),
            "{text}"
        );
        // `help` is a flag, not a setting.
        let f = file("help = true\n");
        let path = f.path().to_str().expect("utf-8 path");
        assert!(matches!(
            parse(&["p", "--config", path]),
            Err(ConfigError::UnknownKey { .. })
        ));
    }

    #[test]
    fn wrong_types_get_clap_errors_and_bad_shapes_ours() {
        let f = file("max-queued = \"many\"\n");
        let path = f.path().to_str().expect("utf-8 path");
        let err = parse(&["p", "--config", path]).expect_err("refused");
        assert!(matches!(err, ConfigError::Clap(_)), "{err:?}");
        assert!(err.to_string().contains("many"), "{err}");

        for (text, problem) in [
            ("max-queued = [1, 2]\n", "not a list"),
            ("[max-queued]\nx = 1\n", "tables"),
            ("config = \"other.toml\"\n", "another one"),
        ] {
            let f = file(text);
            let path = f.path().to_str().expect("utf-8 path");
            let err = parse(&["p", "--config", path]).expect_err("refused");
            assert!(err.to_string().contains(problem), "{text}: {err}");
        }

        let f = file("max-queued = \n");
        let path = f.path().to_str().expect("utf-8 path");
        let err = parse(&["p", "--config", path]).expect_err("refused");
        assert!(matches!(err, ConfigError::Toml { .. }), "{err:?}");

        let err = parse(&["p", "--config", "/nonexistent/glimpse.toml"]).expect_err("refused");
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    }
}
