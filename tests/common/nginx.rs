//! A caching reverse proxy (Debian's nginx) in front of the server, the way a CDN edge would sit
//! in front of LL-HLS: it caches what the origin's Cache-Control allows, collapses concurrent
//! misses into one upstream request (`proxy_cache_lock`), keeps HTTP/1.1 connections to the
//! origin alive, and passes LL-HLS blocking playlist requests (`_HLS_msn` in the query) straight
//! through, neither cached nor buffered. Every response carries `X-Cache-Status` (HIT, MISS,
//! EXPIRED, …; `PASS` for the pass-through) and the access log is one JSON object per line.
//!
//! nginx runs in the foreground as one process (`daemon off; master_process off`) from a temp
//! dir holding its config, cache, temp files and logs; it is stopped by PID on drop.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, read_lossy, signal, wait_timeout};

/// The nginx binary: /usr/sbin/nginx (Debian's, often not on a user's PATH) or `nginx` on PATH.
pub fn nginx_bin() -> PathBuf {
    let sbin = Path::new("/usr/sbin/nginx");
    if sbin.is_file() {
        return sbin.to_owned();
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nginx"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "nginx not found: run ./scripts/test (it installs it) or `apt-get install nginx-light`"
        )
    })
}

/// Panics (never skips) when nginx is not installed.
pub fn require_nginx() {
    let _ = nginx_bin();
}

/// One access-log line.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessEntry {
    pub method: String,
    /// Path without the query.
    pub uri: String,
    /// The query string, empty when none.
    pub args: String,
    pub status: u16,
    /// `$upstream_cache_status`: HIT, MISS, EXPIRED, STALE, UPDATING, REVALIDATED, BYPASS, or
    /// empty for requests that did not use the cache (the `_HLS_msn` pass-through).
    pub cache: String,
    /// Seconds from the first byte of the request to the last byte of the response.
    pub request_time: f64,
    /// `$upstream_response_time` as nginx writes it (`0.012`, `-`, or a list).
    pub upstream_time: String,
    pub body_bytes: u64,
    /// When the request finished (Unix seconds, ms resolution).
    pub msec: f64,
}

/// nginx as a caching reverse proxy on 127.0.0.1 in front of `127.0.0.1:upstream_port`.
pub struct CachingNginx {
    child: Option<Child>,
    port: u16,
    dir: Option<tempfile::TempDir>,
}

const LOG_FORMAT: &str = r#"'{"method":"$request_method","uri":"$uri","args":"$args","status":$status,"cache":"$upstream_cache_status","request_time":$request_time,"upstream_time":"$upstream_response_time","bytes":$body_bytes_sent,"msec":$msec}'"#;

fn config(dir: &Path, port: u16, upstream_port: u16) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;

events {{
    worker_connections 1024;
}}

http {{
    log_format zerocast escape=json {LOG_FORMAT};
    access_log {d}/access.log zerocast;

    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;

    # Cache lifetimes come from the origin (Cache-Control / Expires): no proxy_cache_valid and
    # no proxy_ignore_headers, so what the origin does not allow to be cached is not cached.
    proxy_cache_path {d}/cache levels=1:2 keys_zone=zerocast:10m max_size=1g inactive=10m use_temp_path=off;

    upstream origin {{
        server 127.0.0.1:{upstream_port};
        keepalive 16;
    }}

    server {{
        listen 127.0.0.1:{port};

        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_read_timeout 30s;

        location / {{
            # LL-HLS blocking playlist reloads go to the pass-through location below.
            error_page 418 = @blocking;
            if ($arg__HLS_msn != "") {{
                return 418;
            }}
            proxy_pass http://origin;
            proxy_cache zerocast;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 10s;
            proxy_cache_lock_age 10s;
            add_header X-Cache-Status $upstream_cache_status always;
        }}

        location @blocking {{
            proxy_pass http://origin;
            proxy_cache off;
            proxy_buffering off;
            add_header X-Cache-Status PASS always;
        }}
    }}
}}
"#
    )
}

impl CachingNginx {
    /// Starts nginx in front of `127.0.0.1:upstream_port` and waits (≤ 10 s) until it accepts.
    pub fn start(upstream_port: u16) -> CachingNginx {
        let bin = nginx_bin();
        let mut last_err = String::new();
        // The free port may be taken between probing and binding: retry on a new one.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("zerocast-nginx-")
                .tempdir()
                .expect("tempdir");
            let port = free_port();
            for sub in ["cache", "tmp"] {
                std::fs::create_dir_all(dir.path().join(sub)).expect("nginx dirs");
            }
            let conf = dir.path().join("nginx.conf");
            std::fs::write(&conf, config(dir.path(), port, upstream_port))
                .expect("write nginx.conf");
            let child = Command::new(&bin)
                .arg("-c")
                .arg(&conf)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let mut n = CachingNginx {
                child: Some(child),
                port,
                dir: Some(dir),
            };
            match n.wait_ready(Duration::from_secs(10)) {
                Ok(()) => return n,
                Err(e) => {
                    last_err = e;
                    let in_use = last_err.contains("Address already in use");
                    drop(n);
                    if !in_use {
                        break;
                    }
                }
            }
        }
        panic!("nginx did not start: {last_err}");
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        loop {
            if let Ok(Some(st)) = self.child.as_mut().unwrap().try_wait() {
                self.child = None;
                return Err(format!(
                    "nginx exited at start with {st}\n--- error.log ---\n{}\n--- stderr ---\n{}",
                    self.error_log(),
                    read_lossy(&self.path("stderr.log"))
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "nginx did not accept on {addr} within {limit:?}\n--- error.log ---\n{}",
                    self.error_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.as_ref().expect("nginx dir").path().join(name)
    }

    /// The port nginx listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The access log: one JSON object per request (see [`AccessEntry`]).
    pub fn access_log(&self) -> String {
        read_lossy(&self.path("access.log"))
    }

    /// The access log, parsed.
    pub fn access_entries(&self) -> Vec<AccessEntry> {
        self.access_log()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("nginx access log line ({e}): {l}"));
                AccessEntry {
                    method: v["method"].as_str().unwrap_or_default().to_owned(),
                    uri: v["uri"].as_str().unwrap_or_default().to_owned(),
                    args: v["args"].as_str().unwrap_or_default().to_owned(),
                    status: v["status"].as_u64().unwrap_or(0) as u16,
                    cache: v["cache"].as_str().unwrap_or_default().to_owned(),
                    request_time: v["request_time"].as_f64().unwrap_or(0.0),
                    upstream_time: v["upstream_time"].as_str().unwrap_or_default().to_owned(),
                    body_bytes: v["bytes"].as_u64().unwrap_or(0),
                    msec: v["msec"].as_f64().unwrap_or(0.0),
                }
            })
            .collect()
    }

    /// nginx's error log (info level).
    pub fn error_log(&self) -> String {
        read_lossy(&self.path("error.log"))
    }

    /// The generated nginx.conf.
    pub fn config(&self) -> String {
        read_lossy(&self.path("nginx.conf"))
    }
}

impl Drop for CachingNginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                signal(child.id(), libc::SIGTERM);
                if wait_timeout(&mut child, Duration::from_secs(2)).is_none() {
                    signal(child.id(), libc::SIGKILL);
                    let _ = wait_timeout(&mut child, Duration::from_secs(5));
                }
            }
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}
