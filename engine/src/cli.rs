//! The `zerocast` command line.
//!
//! ```text
//! zerocast serve [--config FILE]
//! zerocast streams create NAME [--record] [--description TEXT] [--json]
//! zerocast streams set NAME [--record true|false|default] [--description TEXT]
//!                           [--enabled true|false] [--json]
//! zerocast streams list [--json]
//! zerocast streams delete NAME
//! zerocast streams rotate-key NAME [--json]
//! zerocast recordings list [--stream NAME] [--json]
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
use crate::store::{
    RecordingRow, SessionRow, Store, StoreError, StreamInfo, StreamRecord, StreamUpdate,
};

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
    /// List recordings.
    Recordings {
        /// The recordings operation.
        #[command(subcommand)]
        command: RecordingsCommand,
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
        /// Record this stream whatever `recording.record` says (without it, the stream
        /// follows `recording.record`; see `zerocast streams set`).
        #[arg(long)]
        record: bool,
        /// A description for operators (at most 1024 characters).
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        /// Print `{"id","name","key","created_at","record","description","enabled"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a stream's settings (at least one of them).
    #[command(group = clap::ArgGroup::new("change").required(true).multiple(true)
        .args(["record", "description", "enabled"]))]
    Set {
        /// Stream name.
        name: String,
        /// Whether the stream is recorded: `true`, `false`, or `default` to follow
        /// `recording.record`.
        #[arg(long, value_name = "true|false|default")]
        record: Option<RecordSetting>,
        /// A description for operators; an empty one removes it.
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        /// `false` refuses every publish (a live publisher stays until it leaves; the API's
        /// PATCH also stops it).
        #[arg(long, value_name = "true|false")]
        enabled: Option<bool>,
        /// Print the stream's settings as JSON (as in `streams list --json`).
        #[arg(long)]
        json: bool,
    },
    /// List streams (names, status, creation times, recording; keys are not shown).
    List {
        /// Print a JSON array of `{"id","name","status","created_at","record","description",
        /// "enabled"}` (`record` is null when the stream follows `recording.record`; `status`
        /// is idle, live, ended, error or disabled, from the publish history).
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

/// A stream's recording choice on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordSetting {
    /// Always record.
    True,
    /// Never record.
    False,
    /// Follow `recording.record`.
    Default,
}

impl RecordSetting {
    fn flag(self) -> Option<bool> {
        match self {
            RecordSetting::True => Some(true),
            RecordSetting::False => Some(false),
            RecordSetting::Default => None,
        }
    }
}

/// `zerocast recordings ...`.
#[derive(Debug, Subcommand)]
pub enum RecordingsCommand {
    /// List recordings, oldest first: stream, start, duration, size, status and file.
    List {
        /// Only the recordings of this stream.
        #[arg(long, value_name = "NAME")]
        stream: Option<String>,
        /// Print a JSON array of `{"stream","path","format","started_at","ended_at",
        /// "duration_ms","bytes","status","reason"}`.
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
    /// A file the server needs could not be written.
    #[error("{0}")]
    Io(String),
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
pub(crate) fn error_chain(e: &dyn StdError) -> String {
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
        Command::Recordings {
            command: RecordingsCommand::List { stream, json },
        } => {
            let config = Config::load(config_path)?;
            let store = Store::open(&config.server.data_dir)?;
            list_recordings(&store, stream.as_deref(), json)
        }
    }
}

fn serve(mut config: Config) -> Result<(), CliError> {
    crate::logging::init(&config.log);
    let store = Store::open(&config.server.data_dir)?;
    let token_file = match crate::api::token::resolve(&mut config) {
        Ok(crate::api::token::TokenSource::File(path)) => {
            tracing::info!(path = %path.display(), "API token (Authorization: Bearer ...) is in this file");
            Some(path)
        }
        Ok(source) => {
            tracing::info!(?source, "API token configured");
            None
        }
        Err(e) => {
            return Err(CliError::Io(format!(
                "cannot write the API token into {}: {e}",
                config.server.data_dir.display()
            )))
        }
    };
    let open_sessions = store.close_open_sessions()?;
    if open_sessions > 0 {
        tracing::warn!(
            open_sessions,
            "publish sessions left open by a previous run are closed with an error"
        );
    }
    let interrupted = store.mark_interrupted_recordings()?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "recordings left open by a previous run are marked interrupted; \
             each plays up to its last completed fragment"
        );
    }
    let demo = store.ensure_demo()?;
    crate::banner::print_banner(
        &config,
        demo.as_ref().map(|(r, _)| r),
        demo.as_ref().is_some_and(|d| d.1),
        token_file.as_deref(),
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
        StreamsCommand::Create {
            name,
            record,
            description,
            json,
        } => {
            check_description(description.as_deref())?;
            let flag = record.then_some(true);
            let (created, info) = store.create_stream_with(&name, flag, description.as_deref())?;
            if json {
                let mut v = info_json(&info, None);
                v["key"] = created.key.clone().into();
                return write_json(&v);
            }
            print_key(&created, flag, false, "created")
        }
        StreamsCommand::Set {
            name,
            record,
            description,
            enabled,
            json,
        } => {
            check_description(description.as_deref())?;
            let update = StreamUpdate {
                record: record.map(RecordSetting::flag),
                description: description.map(|d| (!d.is_empty()).then_some(d)),
                enabled,
            };
            let info = store.update_stream(&name, &update)?;
            if json {
                let last = store.stream_info(&name)?.and_then(|(_, last)| last);
                return write_json(&info_json(&info, last.as_ref()));
            }
            if let Some(record) = record {
                match record.flag() {
                    Some(r) => println!("stream {name}: record = {r}"),
                    None => println!("stream {name}: record follows recording.record"),
                }
            }
            if let Some(d) = &update.description {
                match d {
                    Some(d) => println!("stream {name}: description = {d:?}"),
                    None => println!("stream {name}: description removed"),
                }
            }
            if let Some(e) = enabled {
                println!(
                    "stream {name}: {}",
                    if e {
                        "enabled"
                    } else {
                        "disabled (publishing is refused)"
                    }
                );
            }
            Ok(())
        }
        StreamsCommand::RotateKey { name, json } => {
            let rotated = store.rotate_key(&name)?;
            let flag = record_flag(store, &name)?;
            print_key(&rotated, flag, json, "new key for")
        }
        StreamsCommand::Delete { name } => {
            if !store.delete(&name)? {
                return Err(StoreError::StreamNotFound(name).into());
            }
            println!("deleted stream {name}");
            Ok(())
        }
        StreamsCommand::List { json } => {
            let infos = store.stream_infos()?;
            if json {
                let list: Vec<_> = infos
                    .iter()
                    .map(|(info, last)| info_json(info, last.as_ref()))
                    .collect();
                return write_json(&serde_json::Value::Array(list));
            }
            if infos.is_empty() {
                println!("no streams; create one with `zerocast streams create NAME`");
                return Ok(());
            }
            let width = infos
                .iter()
                .map(|(r, _)| r.name.len())
                .max()
                .unwrap_or(0)
                .max(4);
            println!(
                "{:width$}  STATUS    CREATED (UTC)        RECORD   DESCRIPTION",
                "NAME"
            );
            for (r, last) in &infos {
                let record = match r.record {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "default",
                };
                println!(
                    "{:width$}  {:8}  {}  {record:7}  {}",
                    r.name,
                    stored_status(r, last.as_ref()),
                    format_utc(r.created_at),
                    r.description.as_deref().unwrap_or("")
                );
            }
            Ok(())
        }
    }
}

fn check_description(d: Option<&str>) -> Result<(), CliError> {
    match d {
        Some(d) if d.chars().count() > crate::api::MAX_DESCRIPTION => Err(CliError::Io(format!(
            "the description is longer than {} characters",
            crate::api::MAX_DESCRIPTION
        ))),
        _ => Ok(()),
    }
}

/// A stream's status as the store knows it (the API also asks the shards whether it is
/// live): disabled, live (an open session), error (the last session ended with one), ended,
/// or idle (never published).
fn stored_status(info: &StreamInfo, last: Option<&SessionRow>) -> &'static str {
    if !info.enabled {
        return "disabled";
    }
    match last {
        None => "idle",
        Some(s) if s.ended_at_ms.is_none() => "live",
        Some(s)
            if s.end_reason
                .as_deref()
                .is_some_and(|r| r.starts_with("error")) =>
        {
            "error"
        }
        Some(_) => "ended",
    }
}

/// A stream's settings as JSON, with the same field names as the API.
fn info_json(info: &StreamInfo, last: Option<&SessionRow>) -> serde_json::Value {
    serde_json::json!({
        "id": info.id,
        "name": info.name,
        "status": stored_status(info, last),
        "created_at": info.created_at,
        "record": info.record,
        "description": info.description,
        "enabled": info.enabled,
    })
}

fn record_flag(store: &Store, name: &str) -> Result<Option<bool>, CliError> {
    Ok(store
        .record_flags()?
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, r)| r))
}

fn list_recordings(store: &Store, stream: Option<&str>, json: bool) -> Result<(), CliError> {
    let rows = store.recordings(stream)?;
    if json {
        let list: Vec<_> = rows.iter().map(recording_json).collect();
        return write_json(&serde_json::Value::Array(list));
    }
    if rows.is_empty() {
        println!("no recordings; set `record = true` under [recording] or use `zerocast streams set NAME --record true`");
        return Ok(());
    }
    let width = rows
        .iter()
        .map(|r| r.stream.len())
        .max()
        .unwrap_or(0)
        .max(6);
    println!(
        "{:width$}  STARTED (UTC)        DURATION    SIZE        STATUS       PATH",
        "STREAM"
    );
    for r in &rows {
        println!(
            "{:width$}  {}  {:>10}  {:>10}  {:11}  {}",
            r.stream,
            format_utc(r.started_at),
            format!("{:.1} s", r.duration_ms as f64 / 1000.0),
            format_size(r.bytes),
            r.status.as_str(),
            r.path
        );
    }
    Ok(())
}

fn recording_json(r: &RecordingRow) -> serde_json::Value {
    serde_json::json!({
        "stream": r.stream,
        "path": r.path,
        "format": r.format,
        "started_at": r.started_at,
        "ended_at": r.ended_at,
        "duration_ms": r.duration_ms,
        "bytes": r.bytes,
        "status": r.status.as_str(),
        "reason": r.reason,
    })
}

/// `bytes` in KB, MB or GB (powers of 1000, one decimal).
fn format_size(bytes: i64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

fn print_key(
    record: &StreamRecord,
    recording: Option<bool>,
    json: bool,
    what: &str,
) -> Result<(), CliError> {
    if json {
        return write_json(&serde_json::json!({
            "name": record.name,
            "key": record.key,
            "created_at": record.created_at,
            "record": recording,
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
    let t = crate::recording::UtcTime::from_unix(unix);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
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
            Command::Streams { command: StreamsCommand::Create { ref name, json: true, record: false, description: None } } if name == "cam1"
        ));
        let cli = parse(&["streams", "create", "cam1", "--record"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Streams {
                command: StreamsCommand::Create { record: true, .. }
            }
        ));
        for (value, want) in [
            ("true", RecordSetting::True),
            ("false", RecordSetting::False),
            ("default", RecordSetting::Default),
        ] {
            let cli = parse(&["streams", "set", "cam1", "--record", value]).unwrap();
            assert!(matches!(
                cli.command,
                Command::Streams { command: StreamsCommand::Set { record: Some(record), .. } } if record == want
            ));
        }
        assert!(parse(&["streams", "set", "cam1", "--record", "maybe"]).is_err());
        assert!(
            parse(&["streams", "set", "cam1"]).is_err(),
            "set needs a change"
        );
        let cli = parse(&[
            "streams",
            "set",
            "cam1",
            "--enabled",
            "false",
            "--description",
            "d",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Streams { command: StreamsCommand::Set { enabled: Some(false), record: None, description: Some(ref d), .. } } if d == "d"
        ));
        let cli = parse(&["recordings", "list", "--stream", "cam1", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Recordings { command: RecordingsCommand::List { stream: Some(ref s), json: true } } if s == "cam1"
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
        run(parse(&["streams", "set", "cam", "--record", "true", "--config", c]).unwrap()).unwrap();
        let store = Store::open(&data).unwrap();
        assert_eq!(
            store.record_flags().unwrap(),
            [("cam".to_owned(), Some(true))]
        );
        run(parse(&[
            "streams", "set", "cam", "--record", "default", "--config", c,
        ])
        .unwrap())
        .unwrap();
        assert_eq!(store.record_flags().unwrap(), [("cam".to_owned(), None)]);
        run(parse(&[
            "streams",
            "set",
            "cam",
            "--enabled",
            "false",
            "--description",
            "hello",
            "--json",
            "--config",
            c,
        ])
        .unwrap())
        .unwrap();
        let (info, _) = store.stream_info("cam").unwrap().unwrap();
        assert_eq!(
            (info.enabled, info.description.as_deref()),
            (false, Some("hello"))
        );
        assert_eq!(stored_status(&info, None), "disabled");
        run(parse(&[
            "streams",
            "set",
            "cam",
            "--enabled",
            "true",
            "--description",
            "",
            "--config",
            c,
        ])
        .unwrap())
        .unwrap();
        let (info, _) = store.stream_info("cam").unwrap().unwrap();
        assert_eq!((info.enabled, info.description), (true, None));
        let long = "x".repeat(1025);
        assert!(run(parse(&[
            "streams",
            "set",
            "cam",
            "--description",
            &long,
            "--config",
            c
        ])
        .unwrap())
        .is_err());
        run(parse(&["streams", "list", "--config", c]).unwrap()).unwrap();
        run(parse(&["streams", "list", "--json", "--config", c]).unwrap()).unwrap();
        let missing =
            run(parse(&["streams", "set", "nope", "--record", "true", "--config", c]).unwrap())
                .unwrap_err();
        assert!(error_chain(&missing).contains("no stream named"));
        run(parse(&["recordings", "list", "--config", c]).unwrap()).unwrap();
        run(parse(&[
            "recordings",
            "list",
            "--json",
            "--stream",
            "cam",
            "--config",
            c,
        ])
        .unwrap())
        .unwrap();
        run(parse(&["streams", "delete", "cam", "--config", c]).unwrap()).unwrap();
        let gone = run(parse(&["streams", "delete", "cam", "--config", c]).unwrap()).unwrap_err();
        assert!(error_chain(&gone).contains("no stream named"));
    }

    #[test]
    fn sizes() {
        assert_eq!(format_size(999), "999 B");
        assert_eq!(format_size(6_340_000), "6.3 MB");
        assert_eq!(format_size(2_500_000_000), "2.5 GB");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13:20");
    }
}
