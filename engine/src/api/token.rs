//! The API bearer token: where it comes from, and the check every protected request passes.

use std::io::Write;
use std::path::{Path, PathBuf};

use http::{header, StatusCode};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::http::{error, Response};

/// Environment variable that supplies the token when the config does not.
pub const TOKEN_ENV: &str = "ZEROCAST_API_TOKEN";
/// File (in the data directory) holding a generated token.
pub const TOKEN_FILE: &str = "api-token";

/// Where the token in force came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `auth.api_token`.
    Config,
    /// The environment variable.
    Environment,
    /// A file in the data directory (generated on an earlier or this start).
    File(PathBuf),
}

/// Resolves the token (config, then environment, then `data_dir/api-token`, generated with
/// 192 random bits and mode 0600 when missing) and stores it in `config.auth.api_token`, so
/// every shard checks against the same value.
pub fn resolve(config: &mut Config) -> std::io::Result<TokenSource> {
    if config.auth.api_token.is_some() {
        return Ok(TokenSource::Config);
    }
    if let Ok(t) = std::env::var(TOKEN_ENV) {
        let t = t.trim().to_owned();
        if t.len() >= 16 {
            config.auth.api_token = Some(t);
            return Ok(TokenSource::Environment);
        }
        tracing::warn!("{TOKEN_ENV} is shorter than 16 characters; ignored");
    }
    let path = config.server.data_dir.join(TOKEN_FILE);
    let token = match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 16 => t.trim().to_owned(),
        _ => write_new(&path)?,
    };
    config.auth.api_token = Some(token);
    Ok(TokenSource::File(path))
}

fn write_new(path: &Path) -> std::io::Result<String> {
    use base64::Engine;
    use rand::RngCore;
    use std::os::unix::fs::OpenOptionsExt;
    let mut raw = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{token}")?;
    f.sync_all()?;
    Ok(token)
}

/// `None` when `headers` carry `Authorization: Bearer <the token>`; else the 401 to send.
/// The comparison takes the same time wherever the tokens differ.
pub fn check(config: &Config, headers: &http::HeaderMap) -> Option<Response> {
    let expected = config.auth.api_token.as_deref().unwrap_or_default();
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or_default();
    // An unset token (only possible in unit tests) admits nobody.
    let ok = !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()));
    if ok {
        return None;
    }
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong bearer token (Authorization: Bearer <api token>)",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer realm=\"zerocast\""),
    );
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_is_checked() {
        let mut cfg = Config::default();
        cfg.auth.api_token = Some("0123456789abcdef-token".into());
        let mut h = http::HeaderMap::new();
        assert_eq!(
            check(&cfg, &h).map(|r| r.status()),
            Some(StatusCode::UNAUTHORIZED)
        );
        h.insert(
            header::AUTHORIZATION,
            "Bearer 0123456789abcdef-tokeX".parse().unwrap(),
        );
        assert!(check(&cfg, &h).is_some());
        h.insert(
            header::AUTHORIZATION,
            "Bearer 0123456789abcdef-token".parse().unwrap(),
        );
        assert!(check(&cfg, &h).is_none());
    }

    #[test]
    fn generated_token_is_kept_in_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.server.data_dir = dir.path().join("data");
        // The environment variable must not leak in from the test runner.
        if std::env::var(TOKEN_ENV).is_ok() {
            return;
        }
        let src = resolve(&mut cfg).unwrap();
        let first = cfg.auth.api_token.clone().unwrap();
        assert!(matches!(src, TokenSource::File(_)));
        assert!(first.len() >= 32);
        let mut again = Config::default();
        again.server.data_dir = dir.path().join("data");
        resolve(&mut again).unwrap();
        assert_eq!(again.auth.api_token.unwrap(), first);
    }
}
