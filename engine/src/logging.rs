//! Process-wide logging: `tracing` events to stderr, as text or JSON lines.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber described by `cfg`.
///
/// `RUST_LOG`, when set and valid, overrides `cfg.level`, so an operator can turn up detail for
/// one run without editing the config file. An invalid `RUST_LOG` falls back to `cfg.level` with
/// a warning rather than silencing logs. A second call is a no-op: the first subscriber stays.
pub fn init(cfg: &LogConfig) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let mut env_problem = None;
    let filter = match from_env.as_deref().map(EnvFilter::try_new) {
        Some(Ok(filter)) => filter,
        other => {
            if let Some(Err(e)) = other {
                env_problem = Some(e.to_string());
            }
            // `Config::validate` already checked the level; "info" only guards configs built
            // in code that skipped validation.
            EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info"))
        }
    };
    // Colour codes only help a person at a terminal; in a journal or file they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match cfg.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if installed.is_ok() {
        if let Some(problem) = env_problem {
            tracing::warn!(%problem, level = %cfg.level, "ignoring invalid RUST_LOG; using the configured level");
        }
    }
}
