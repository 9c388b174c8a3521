//! The `zerocast` command line.
//!
//! ```text
//! zerocast serve [--config FILE]
//! zerocast streams create NAME [--json]
//! zerocast streams list [--json]
//! zerocast streams delete NAME
//! zerocast streams rotate-key NAME [--json]
//! zerocast config default
//! zerocast config check [--config FILE]
//! ```
//!
//! `--config` may appear anywhere on the line. Failures print one line,
//! `zerocast: error: ...`, on stderr and exit with 1 (2 for a malformed command line).

use std::error::Error as StdError;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, DEFAULT_TOML};
use crate::store::{Store, StoreError, StreamRecord};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "zerocast",
    version,
    about = "Live-media appliance: RTMP(S) in, RTMP out"
)]
pub struct Cli {
    /// Configuration file (TOML); defaults apply when omitted. See `zerocast config default`.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve,
    /// Manage streams and their publish keys.
    Streams {
        /// The stream operation.
        #[command(subcommand)]
        command: StreamsCommand,
    },
    /// Show or check configuration.
    Config {
        /// The configuration operation.
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// `zerocast streams ...`.
#[derive(Debug, Subcommand)]
pub enum StreamsCommand {
    /// Create a stream and print its publish key.
    Create {
        /// Stream name: 1-64 characters of A-Z, a-z, 0-9, '_' and '-'.
        name: String,
        /// Print `{"name","key","created_at"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List streams (names and creation times; keys are not shown).
    List {
        /// Print a JSON array of `{"name","created_at"}`.
        #[arg(long)]
        json: bool,
    },
    /// Delete a stream; its key stops working.
    Delete {
        /// Stream name.
        name: String,
    },
    /// Give a stream a new publish key and print it; the old key stops working.
    RotateKey {
        /// Stream name.
        name: String,
        /// Print `{"name","key","created_at"}` as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `zerocast config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the default configuration, every key commented.
    Default,
    /// Load and validate the configuration given with --config, then print "ok".
    Check,
}

/// A failed command, printed as one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The stream store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server could not start or stopped with an error.
    #[error(transparent)]
    Serve(#[from] crate::server::ServeError),
}

/// Runs the command line of this process and returns its exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zerocast: error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Help and version go to stdout with status 0; real usage errors become one line, status 2.
fn usage_error(e: &clap::Error) -> ExitCode {
    if e.exit_code() == 0 {
        // Printing help can only fail on a closed stdout; nothing useful is left to do then.
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // A bare `zerocast` or `zerocast streams`: the help is the useful answer.
        let _ = e.print();
    } else {
        eprintln!(
            "zerocast: error: {} (see `zerocast --help`)",
            one_line_usage_error(e)
        );
    }
    ExitCode::from(2)
}

/// Clap's multi-line message folded into one line: the text before its "Usage:" paragraph,
/// whitespace collapsed, so a list of missing arguments stays on the line.
fn one_line_usage_error(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let body = rendered.split("\nUsage:").next().unwrap_or(&rendered);
    let body = body.trim().strip_prefix("error:").unwrap_or(body);
    body.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" tip:", "; tip:")
}

/// `e` and its sources, joined by ": ".
fn error_chain(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        // Transparent wrappers repeat their inner message; print it once.
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Executes a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let config_path = cli.config.as_deref();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{DEFAULT_TOML}");
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            Config::load(config_path)?;
            match config_path {
                Some(path) => println!("ok: {}", path.display()),
                None => println!("ok: defaults (no --config given)"),
            }
            Ok(())
        }
        Command::Serve => serve(Config::load(config_path)?),
        Command::Streams { command } => {
            let config = Config::load(config_path)?;
            let store = Store::open(&config.server.data_dir)?;
            streams(&store, command)
        }
    }
}

fn serve(config: Config) -> Result<(), CliError> {
    crate::logging::init(&config.log);
    let store = Store::open(&config.server.data_dir)?;
    let demo = store.ensure_demo()?;
    crate::banner::print_banner(
        &config,
        demo.as_ref().map(|(r, _)| r),
        demo.as_ref().is_some_and(|d| d.1),
    );
    tracing::info!(
        data_dir = %config.server.data_dir.display(),
        shards = config.shard_count(),
        "starting"
    );
    crate::server::serve(config, store)?;
    Ok(())
}

fn streams(store: &Store, command: StreamsCommand) -> Result<(), CliError> {
    match command {
        StreamsCommand::Create { name, json } => {
            let record = store.create_stream(&name)?;
            print_key(&record, json, "created")
        }
        StreamsCommand::RotateKey { name, json } => {
            let record = store.rotate_key(&name)?;
            print_key(&record, json, "new key for")
        }
        StreamsCommand::Delete { name } => {
            if !store.delete(&name)? {
                return Err(StoreError::StreamNotFound(name).into());
            }
            println!("deleted stream {name}");
            Ok(())
        }
        StreamsCommand::List { json } => {
            let records = store.list()?;
            if json {
                let list: Vec<_> = records
                    .iter()
                    .map(|r| serde_json::json!({ "name": r.name, "created_at": r.created_at }))
                    .collect();
                return write_json(&serde_json::Value::Array(list));
            }
            if records.is_empty() {
                println!("no streams; create one with `zerocast streams create NAME`");
            }
            let width = records
                .iter()
                .map(|r| r.name.len())
                .max()
                .unwrap_or(0)
                .max(4);
            if !records.is_empty() {
                println!("{:width$}  CREATED (UTC)", "NAME");
            }
            for r in &records {
                println!("{:width$}  {}", r.name, format_utc(r.created_at));
            }
            Ok(())
        }
    }
}

fn print_key(record: &StreamRecord, json: bool, what: &str) -> Result<(), CliError> {
    if json {
        return write_json(&serde_json::json!({
            "name": record.name,
            "key": record.key,
            "created_at": record.created_at,
        }));
    }
    println!("{what} stream {}", record.name);
    println!("key: {}", record.key);
    Ok(())
}

fn write_json(value: &serde_json::Value) -> Result<(), CliError> {
    // `Value`'s Display is compact JSON; it cannot fail.
    println!("{value}");
    Ok(())
}

/// `unix` seconds as `YYYY-MM-DD HH:MM:SS` in UTC.
fn format_utc(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Proleptic Gregorian date from a day count, by 400-year eras (Howard Hinnant's
    // `civil_from_days` derivation).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("zerocast").chain(args.iter().copied()))
    }

    #[test]
    fn config_flag_is_accepted_anywhere() {
        for args in [
            &["--config", "z.toml", "serve"][..],
            &["serve", "--config", "z.toml"],
            &["streams", "--config", "z.toml", "list"],
            &["streams", "list", "--config=z.toml"],
        ] {
            let cli = parse(args).unwrap();
            assert_eq!(
                cli.config.as_deref(),
                Some(std::path::Path::new("z.toml")),
                "{args:?}"
            );
        }
        assert!(parse(&["serve"]).unwrap().config.is_none());
    }

    #[test]
    fn stream_subcommands() {
        let cli = parse(&["streams", "create", "cam1", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Streams { command: StreamsCommand::Create { ref name, json: true } } if name == "cam1"
        ));
        let cli = parse(&["streams", "rotate-key", "cam1"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Streams {
                command: StreamsCommand::RotateKey { json: false, .. }
            }
        ));
        assert!(matches!(
            parse(&["streams", "delete", "x"]).unwrap().command,
            Command::Streams {
                command: StreamsCommand::Delete { .. }
            }
        ));
        assert!(matches!(
            parse(&["config", "default"]).unwrap().command,
            Command::Config {
                command: ConfigCommand::Default
            }
        ));
    }

    #[test]
    fn usage_errors_fold_to_one_line() {
        let e = parse(&["streams", "create"]).unwrap_err();
        let line = one_line_usage_error(&e);
        assert!(!line.contains('\n'));
        assert!(line.contains("<NAME>"), "{line}");
        assert!(parse(&["stream", "list"]).is_err());
        assert!(parse(&["serve", "--bogus"]).is_err());
        assert_eq!(parse(&["--help"]).unwrap_err().exit_code(), 0);
    }

    #[test]
    fn config_errors_reach_the_user_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[limits]\nhandshake_timeout = \"ten seconds\"\n").unwrap();
        let cli = parse(&["config", "check", "--config", path.to_str().unwrap()]).unwrap();
        let line = error_chain(&run(cli).unwrap_err());
        assert!(line.contains("bad.toml:2:"), "{line}");
        assert!(line.contains("ten seconds"), "{line}");

        std::fs::write(&path, "[rtmp]\nlisen = \"0.0.0.0:1935\"\n").unwrap();
        let cli = parse(&["streams", "list", "--config", path.to_str().unwrap()]).unwrap();
        let line = error_chain(&run(cli).unwrap_err());
        assert!(line.contains("lisen"), "{line}");

        let cli = parse(&["config", "check", "--config", "/nonexistent/z.toml"]).unwrap();
        let line = error_chain(&run(cli).unwrap_err());
        assert!(
            line.contains("/nonexistent/z.toml") && line.contains("No such file"),
            "{line}"
        );
    }

    #[test]
    fn streams_commands_run_against_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("z.toml");
        let data = dir.path().join("data");
        std::fs::write(
            &cfg,
            format!("[server]\ndata_dir = {:?}\n", data.to_str().unwrap()),
        )
        .unwrap();
        let c = cfg.to_str().unwrap();
        run(parse(&["streams", "create", "cam", "--json", "--config", c]).unwrap()).unwrap();
        let again = run(parse(&["streams", "create", "cam", "--config", c]).unwrap()).unwrap_err();
        assert!(error_chain(&again).contains("already exists"));
        run(parse(&["streams", "delete", "cam", "--config", c]).unwrap()).unwrap();
        let gone = run(parse(&["streams", "delete", "cam", "--config", c]).unwrap()).unwrap_err();
        assert!(error_chain(&gone).contains("no stream named"));
    }

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13:20");
    }
}
