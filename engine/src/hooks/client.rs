//! The webhook HTTP client: one `POST` per connection, blocking, with a deadline per attempt.
//!
//! Webhooks need one verb, a status code and a hard time limit, from a plain thread. This is
//! that and nothing more: `Connection: close`, a `Content-Length` body, the status line of the
//! answer (the body is not read). HTTPS uses the rustls the engine already links, with the
//! operating system's trusted roots (`/etc/ssl/certs`, so an internal CA added there works).
//! Redirects are not followed: a 3xx is an answer like any other non-2xx.
//!
//! The deadline covers connect, TLS handshake, the request and the response head. Name
//! resolution (`getaddrinfo`) cannot be bounded from std; a literal IP address or a host in
//! `/etc/hosts` avoids the resolver.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// Largest response head accepted (status line and headers).
const MAX_HEAD: usize = 16 * 1024;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL cannot be used.
    #[error("invalid URL: {0}")]
    BadUrl(String),
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        source: io::Error,
    },
    /// No address of the host accepted a connection.
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    /// The deadline passed; `during` says in which step.
    #[error("timed out after {after:?} during {during}")]
    TimedOut {
        /// The step (`connect`, `request`, `response`).
        during: &'static str,
        /// The time allowed.
        after: Duration,
    },
    /// A read or write failed.
    #[error("{during} failed: {source}")]
    Io {
        /// The step.
        during: &'static str,
        /// The error.
        source: io::Error,
    },
    /// TLS could not be set up (no trusted roots, bad server name).
    #[error("TLS: {0}")]
    Tls(String),
    /// The answer is not HTTP/1.x.
    #[error("malformed response: {0}")]
    BadResponse(String),
}

/// A parsed `http://` or `https://` hook URL.
#[derive(Clone)]
pub struct HookUrl {
    tls: bool,
    host: String,
    port: u16,
    /// Path and query, as sent in the request line.
    target: String,
    /// `Authorization: Basic` value from `user:password@` in the URL.
    basic_auth: Option<String>,
    /// The URL without its user info, for logs.
    shown: String,
}

impl fmt::Display for HookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for HookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HookUrl({})", self.shown)
    }
}

impl HookUrl {
    /// Parses `http(s)://[user:password@]host[:port][/path][?query]`; IPv6 hosts in brackets.
    pub fn parse(url: &str) -> Result<HookUrl, ClientError> {
        let bad = |why: &str| ClientError::BadUrl(format!("{why}: {:?}", redact(url)));
        let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(bad("not http:// or https://"));
        };
        if url.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err(bad("spaces or control characters"));
        }
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_owned()),
            None => (rest, "/".to_owned()),
        };
        let target = target.split('#').next().unwrap_or("/").to_owned();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
            let (h, after) = r.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
            None if tls => 443,
            None => 80,
        };
        let basic_auth = userinfo.map(|u| base64::engine::general_purpose::STANDARD.encode(u));
        let host_shown = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let shown = format!(
            "{}://{host_shown}:{port}{target}",
            if tls { "https" } else { "http" }
        );
        Ok(HookUrl {
            tls,
            host: host.to_owned(),
            port,
            target,
            basic_auth,
            shown,
        })
    }

    /// The `Host` header value.
    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// `url` with any `user:password@` replaced, for error messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// The client. Cheap to share; HTTPS settings are built on first use.
#[derive(Default)]
pub struct Client {
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A client whose HTTPS trusts exactly `roots` (tests).
    #[cfg(test)]
    pub fn with_roots(roots: rustls::RootCertStore) -> Client {
        let client = Client::default();
        let _ = client.tls.set(tls_config(roots));
        client
    }

    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, ClientError> {
        self.tls
            .get_or_init(|| {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = rustls::RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                    return Err(format!(
                        "no trusted root certificates found on this system ({})",
                        errors.join("; ")
                    ));
                }
                tls_config(roots)
            })
            .clone()
            .map_err(ClientError::Tls)
    }

    /// POSTs `body` with `headers` (besides `Host`, `Content-Length`, `Connection`,
    /// `User-Agent` and the URL's `Authorization`) and returns the response's status code.
    /// Everything but name resolution is done within `timeout`.
    pub fn post(
        &self,
        url: &HookUrl,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u16, ClientError> {
        let deadline = Instant::now() + timeout;
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: zerocast/{}\r\nContent-Length: {}\r\n\
             Connection: close\r\n",
            url.target,
            url.host_header(),
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        if let Some(auth) = &url.basic_auth {
            head += &format!("Authorization: Basic {auth}\r\n");
        }
        for (name, value) in headers {
            head += &format!("{name}: {value}\r\n");
        }
        head += "\r\n";
        let mut request = head.into_bytes();
        request.extend_from_slice(body);

        let tcp = connect(url, deadline, timeout)?;
        if url.tls {
            let config = self.tls_config()?;
            let name = rustls::pki_types::ServerName::try_from(url.host.clone())
                .map_err(|e| ClientError::Tls(format!("server name {:?}: {e}", url.host)))?;
            let conn = rustls::ClientConnection::new(config, name)
                .map_err(|e| ClientError::Tls(e.to_string()))?;
            let mut stream = rustls::StreamOwned::new(conn, tcp);
            exchange(&mut stream, &request, deadline, timeout)
        } else {
            let mut stream = tcp;
            exchange(&mut stream, &request, deadline, timeout)
        }
    }
}

fn tls_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Time left before `deadline`, or the timeout error for `during`.
fn left(
    deadline: Instant,
    timeout: Duration,
    during: &'static str,
) -> Result<Duration, ClientError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ClientError::TimedOut {
            during,
            after: timeout,
        });
    }
    Ok(left)
}

fn connect(url: &HookUrl, deadline: Instant, timeout: Duration) -> Result<TcpStream, ClientError> {
    let addrs: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|source| ClientError::Resolve {
            host: url.host.clone(),
            source,
        })?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    for addr in addrs {
        let left = left(deadline, timeout, "connect")?;
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                last = e;
            }
            Err(e) => last = e,
        }
    }
    if Instant::now() >= deadline {
        return Err(ClientError::TimedOut {
            during: "connect",
            after: timeout,
        });
    }
    Err(ClientError::Connect(last))
}

/// A stream whose socket timeouts can be set before each operation.
trait Timed: Read + Write {
    fn socket(&self) -> &TcpStream;
}

impl Timed for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl Timed for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn socket(&self) -> &TcpStream {
        &self.sock
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Sends `request` and reads the status of the final (non-1xx) response head.
fn exchange<S: Timed>(
    s: &mut S,
    request: &[u8],
    deadline: Instant,
    timeout: Duration,
) -> Result<u16, ClientError> {
    let io_err = |during: &'static str, e: io::Error| {
        if is_timeout(&e) {
            ClientError::TimedOut {
                during,
                after: timeout,
            }
        } else {
            ClientError::Io { during, source: e }
        }
    };
    let mut sent = 0;
    while sent < request.len() {
        let left = left(deadline, timeout, "request")?;
        let _ = s.socket().set_write_timeout(Some(left));
        match s.write(&request[sent..]) {
            Ok(0) => return Err(io_err("request", io::ErrorKind::WriteZero.into())),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("request", e)),
        }
    }
    s.flush().map_err(|e| io_err("request", e))?;

    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        // Every complete head in the buffer: skip 1xx ones, answer with the first other.
        while let Some(end) = find_head_end(&buf) {
            let status = parse_status(&buf[..end])?;
            if !(100..200).contains(&status) {
                return Ok(status);
            }
            buf.drain(..end);
        }
        if buf.len() > MAX_HEAD {
            return Err(ClientError::BadResponse(format!(
                "response head longer than {MAX_HEAD} bytes"
            )));
        }
        let left = left(deadline, timeout, "response")?;
        let _ = s.socket().set_read_timeout(Some(left));
        match s.read(&mut chunk) {
            Ok(0) => {
                return Err(ClientError::BadResponse(if buf.is_empty() {
                    "connection closed without a response".into()
                } else {
                    "connection closed in the response head".into()
                }))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("response", e)),
        }
    }
}

/// Fuzz entry (the `hook_response` target): a hook server's response bytes, as `exchange`
/// reads them: find the head, then its status.
#[doc(hidden)]
pub fn fuzz_hook_response(data: &[u8]) {
    if let Some(end) = find_head_end(data) {
        let _ = parse_status(&data[..end]);
    }
    let _ = parse_status(data);
}

/// The length of the first head in `buf` (through its blank line), when complete.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The status code of a response head (`HTTP/1.x NNN reason`).
fn parse_status(head: &[u8]) -> Result<u16, ClientError> {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let line = String::from_utf8_lossy(&head[..line_end]);
    let shown = || line.chars().take(80).collect::<String>();
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !(version == "HTTP/1.1" || version == "HTTP/1.0") {
        return Err(ClientError::BadResponse(format!(
            "status line {:?}",
            shown()
        )));
    }
    let code = parts.next().unwrap_or_default();
    match code.parse::<u16>() {
        Ok(c) if code.len() == 3 && (100..600).contains(&c) => Ok(c),
        _ => Err(ClientError::BadResponse(format!(
            "status line {:?}",
            shown()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;

    /// A one-connection server that answers `reply` after `delay` and hands back the request.
    fn server(reply: &'static [u8], delay: Duration) -> (u16, mpsc::Receiver<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Head, then Content-Length bytes of body.
            loop {
                let n = s.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                if let Some(end) = find_head_end(&req) {
                    let head = String::from_utf8_lossy(&req[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if req.len() >= end + len {
                        break;
                    }
                }
            }
            std::thread::sleep(delay);
            let _ = s.write_all(reply);
            let _ = tx.send(req);
        });
        (port, rx)
    }

    #[test]
    fn fuzz_entry_takes_anything() {
        fuzz_hook_response(b"HTTP/1.1 204 No Content\r\n\r\n");
        fuzz_hook_response(b"HTTP/1.1 99999999999 x\r\n\r\n");
        fuzz_hook_response(&[0xff; 64]);
        fuzz_hook_response(b"");
    }

    #[test]
    fn urls_parse() {
        let u = HookUrl::parse("http://127.0.0.1:9000/hooks/publish?x=1").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "127.0.0.1", 9000));
        assert_eq!(u.target, "/hooks/publish?x=1");
        assert_eq!(u.host_header(), "127.0.0.1:9000");
        let u = HookUrl::parse("https://user:pw@example.com").unwrap();
        assert_eq!((u.tls, u.port, u.target.as_str()), (true, 443, "/"));
        assert_eq!(u.basic_auth.as_deref(), Some("dXNlcjpwdw=="));
        assert_eq!(u.to_string(), "https://example.com:443/");
        assert!(!format!("{u:?}").contains("pw"));
        let u = HookUrl::parse("http://[::1]:8080?a=b#frag").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        assert_eq!(u.target, "/?a=b");
        assert_eq!(u.host_header(), "[::1]:8080");
        for bad in [
            "ftp://x",
            "http://",
            "http://:80/",
            "http://h:99999/",
            "http://h/a b",
            "http://[::1/",
        ] {
            assert!(HookUrl::parse(bad).is_err(), "{bad}");
        }
        let e = HookUrl::parse("http://user:secret@:1/")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn statuses_parse() {
        assert_eq!(
            parse_status(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap(),
            204
        );
        assert_eq!(parse_status(b"HTTP/1.0 403\r\n\r\n").unwrap(), 403);
        for bad in [
            &b"HTTP/2 200\r\n\r\n"[..],
            b"HTTP/1.1 20 x\r\n\r\n",
            b"SSH-2.0\r\n\r\n",
        ] {
            assert!(parse_status(bad).is_err());
        }
    }

    #[test]
    fn posts_and_reads_the_status() {
        let (port, rx) = server(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno",
            Duration::ZERO,
        );
        let url = HookUrl::parse(&format!("http://127.0.0.1:{port}/p?q=1")).unwrap();
        let status = Client::default()
            .post(
                &url,
                &[("X-Test", "1")],
                b"{\"a\":1}",
                Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(status, 403);
        let req = String::from_utf8(rx.recv().unwrap()).unwrap();
        assert!(req.starts_with("POST /p?q=1 HTTP/1.1\r\n"), "{req}");
        assert!(
            req.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
            "{req}"
        );
        assert!(req.contains("Content-Length: 7\r\n"), "{req}");
        assert!(req.contains("X-Test: 1\r\n"), "{req}");
        assert!(req.ends_with("\r\n\r\n{\"a\":1}"), "{req}");
    }

    #[test]
    fn a_slow_answer_times_out() {
        let (port, _rx) = server(b"HTTP/1.1 200 OK\r\n\r\n", Duration::from_secs(2));
        let url = HookUrl::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let t = Instant::now();
        let e = Client::default()
            .post(&url, &[], b"{}", Duration::from_millis(300))
            .unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::TimedOut {
                    during: "response",
                    ..
                }
            ),
            "{e}"
        );
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    #[test]
    fn refused_and_garbage_are_errors() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = HookUrl::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let e = Client::default()
            .post(&url, &[], b"", Duration::from_secs(2))
            .unwrap_err();
        assert!(matches!(e, ClientError::Connect(_)), "{e}");
        let (port, _rx) = server(b"garbage\r\n\r\n", Duration::ZERO);
        let url = HookUrl::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let e = Client::default()
            .post(&url, &[], b"", Duration::from_secs(2))
            .unwrap_err();
        assert!(matches!(e, ClientError::BadResponse(_)), "{e}");
    }

    #[test]
    fn https_verifies_the_server() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = ck.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::from(
            rustls::pki_types::PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()),
        );
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_cfg = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert.clone()], key)
                .unwrap(),
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for _ in 0..2 {
                let Ok((tcp, _)) = l.accept() else { return };
                tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let conn = rustls::ServerConnection::new(server_cfg.clone()).unwrap();
                let mut s = rustls::StreamOwned::new(conn, tcp);
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while find_head_end(&req).is_none() {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
                let _ = s.flush();
            }
        });
        let url = HookUrl::parse(&format!("https://localhost:{port}/")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let status = Client::with_roots(roots)
            .post(&url, &[], b"{}", Duration::from_secs(5))
            .unwrap();
        assert_eq!(status, 202);
        // Without the certificate among the roots, the handshake fails.
        let e = Client::with_roots(rustls::RootCertStore::empty())
            .post(&url, &[], b"{}", Duration::from_secs(5))
            .unwrap_err();
        assert!(matches!(e, ClientError::Io { .. }), "{e}");
    }
}
