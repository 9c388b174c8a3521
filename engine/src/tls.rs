//! RTMPS certificates: load PEM files, or generate a self-signed pair into the data directory.

use std::fs;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::warn;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The PEM file has no usable certificate or key.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        what: String,
    },
    /// rustls refused the certificate/key pair.
    #[error("certificate and key do not work together: {0}")]
    Rustls(#[from] rustls::Error),
    /// Generating a self-signed certificate failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
}

/// Builds a TLS server configuration from a PEM certificate chain and key (`tls_cert` and
/// `tls_key` of `[rtmp]` or `[http]`), or from a self-signed certificate generated once into
/// `data_dir/tls/` when neither is given. `alpn` lists the protocols offered (empty for RTMPS).
pub fn server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (cert_path, key_path) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_owned(), k.to_owned()),
        _ => self_signed(data_dir)?,
    };
    let certs = {
        let f = fs::File::open(&cert_path).map_err(|source| TlsError::Read {
            path: cert_path.clone(),
            source,
        })?;
        rustls_pemfile::certs(&mut BufReader::new(f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                path: cert_path.clone(),
                what: e.to_string(),
            })?
    };
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: cert_path,
            what: "no CERTIFICATE block".into(),
        });
    }
    let key = {
        let f = fs::File::open(&key_path).map_err(|source| TlsError::Read {
            path: key_path.clone(),
            source,
        })?;
        rustls_pemfile::private_key(&mut BufReader::new(f))
            .map_err(|e| TlsError::Pem {
                path: key_path.clone(),
                what: e.to_string(),
            })?
            .ok_or_else(|| TlsError::Pem {
                path: key_path.clone(),
                what: "no PRIVATE KEY block".into(),
            })?
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Paths of the self-signed pair, generated when missing.
fn self_signed(data_dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let dir = data_dir.join("tls");
    let cert_path = dir.join("self-signed-cert.pem");
    let key_path = dir.join("self-signed-key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(h) = fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            names.push(h.to_owned());
        }
    }
    let ck =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    let io = |path: &Path, source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    fs::write(&cert_path, ck.cert.pem()).map_err(|e| io(&cert_path, e))?;
    write_private(&key_path, ck.key_pair.serialize_pem().as_bytes())
        .map_err(|e| io(&key_path, e))?;
    warn!(
        cert = %cert_path.display(),
        "rtmp.tls_listen is on without rtmp.tls_cert/tls_key: generated a self-signed certificate; clients must be told to accept it"
    );
    Ok((cert_path, key_path))
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}
