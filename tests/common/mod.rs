//! Shared helpers for the end-to-end tests: a `zerocast serve` child process in a temp dir,
//! ffmpeg/ffprobe peers (publishers, players, probes), cached test clips, and raw RTMP bytes.
//!
//! Every wait here is bounded; every child process is killed by PID when its guard drops.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub mod browser;
pub mod http;
pub mod nginx;
pub mod srt;

/// Path of the server binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_zerocast");

/// The frame rate of every test clip.
pub const FPS: f64 = 30.0;

// ---------------------------------------------------------------------------------------------
// Serialisation of real-time tests
// ---------------------------------------------------------------------------------------------

/// Tests that count frames in real time need the (small, shared) CPU to themselves: running
/// several of them at once in one test binary starves ffmpeg and the server and turns a timing
/// check into a CPU lottery. Each such test holds this lock for its whole run.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------------------------

/// Panics (never skips) when `tool` is not on PATH.
pub fn require_tool(tool: &str) {
    let hint = match tool {
        "srt-live-transmit" => "install Debian's srt-tools (./scripts/test does)",
        _ => "run ./scripts/test (it installs Debian's ffmpeg) or `apt-get install ffmpeg`",
    };
    require_tool_hint(tool, hint);
}

/// Panics (never skips) with `hint` (how to install it) when `tool` is not on PATH.
pub fn require_tool_hint(tool: &str, hint: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths).any(|dir| {
                let p = dir.join(tool);
                p.is_file()
                    && std::fs::metadata(&p)
                        .map(|m| {
                            use std::os::unix::fs::PermissionsExt;
                            m.permissions().mode() & 0o111 != 0
                        })
                        .unwrap_or(false)
            })
        })
        .unwrap_or(false);
    assert!(found, "{tool} not found: {hint}");
}

/// ffmpeg and ffprobe, both required.
pub fn require_ffmpeg() {
    require_tool("ffmpeg");
    require_tool("ffprobe");
}

/// A port on 127.0.0.1 that is free for both TCP and UDP (bound, then released).
///
/// Ports come from below the kernel's ephemeral range: a port the kernel hands out for port 0
/// is also one it may give to an outgoing connection, and once a server's listener is gone
/// (between a crash and a restart) such a connection can take the port and the restart fails
/// with "Address already in use".
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    let seed = u64::from(std::process::id()) << 32
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
        ^ DRAWS
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut rng = Rng::new(seed);
    for _ in 0..1000 {
        let port = low + (rng.next_u64() % u64::from(high - low)) as u16;
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {low}..{high} after 1000 tries");
}

/// Sends `sig` to `pid` (no-op if it is already gone).
pub fn signal(pid: u32, sig: libc::c_int) {
    // A child we spawned and still own (not yet reaped): the PID is still ours.
    if let Ok(sig) = nix::sys::signal::Signal::try_from(sig) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
    }
}

/// Waits for `child` to exit, at most `limit`. `None` when it is still running.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a file to a string, lossy; empty when missing.
pub fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Child processes (ffmpeg peers)
// ---------------------------------------------------------------------------------------------

/// A child process killed (SIGKILL, by PID) and reaped when dropped. stdout/stderr go to files.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub stderr_path: PathBuf,
    pub stdout_path: PathBuf,
    pub started: Instant,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdin null and stdout/stderr into `dir/<name>.{out,err}`.
    pub fn spawn(name: &str, dir: &Path, mut cmd: Command) -> Proc {
        let stdout_path = dir.join(format!("{name}.out"));
        let stderr_path = dir.join(format!("{name}.err"));
        let out = std::fs::File::create(&stdout_path).expect("create stdout file");
        let err = std::fs::File::create(&stderr_path).expect("create stderr file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_owned(),
            child,
            stderr_path,
            stdout_path,
            started: Instant::now(),
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits at most `limit` for the process to exit.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = wait_timeout(&mut self.child, limit);
        }
        self.status
    }

    /// Non-blocking: has it exited?
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    pub fn kill9(&mut self) {
        if self.try_status().is_none() {
            signal(self.pid(), libc::SIGKILL);
            self.status = wait_timeout(&mut self.child, Duration::from_secs(5));
        }
    }

    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout_path)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            signal(self.child.id(), libc::SIGKILL);
            let _ = wait_timeout(&mut self.child, Duration::from_secs(5));
        }
    }
}

/// Runs `cmd` to completion, at most `limit`; kills it after that. Returns (status, stdout, stderr);
/// status `None` means it timed out.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> (Option<ExitStatus>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = Proc::spawn("cmd", dir.path(), {
        cmd.stdin(Stdio::null());
        cmd
    });
    let st = p.wait_for(limit);
    if st.is_none() {
        p.kill9();
    }
    (st, p.stdout(), p.stderr())
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// Options for one server instance; `Default` is 1 shard, keys auth, no TLS, info logs.
#[derive(Clone, Debug)]
pub struct ServerOpts {
    pub shards: u32,
    pub publish: &'static str,
    pub tls: bool,
    pub log_level: String,
    /// Extra `key = value` lines for `[limits]`.
    pub limits: Vec<String>,
    /// Extra `key = value` lines for `[rtmp]`.
    pub rtmp: Vec<String>,
    /// Extra `key = value` lines for `[streams]`.
    pub streams: Vec<String>,
    /// Extra `key = value` lines for `[http]` (`listen` is set to a free port).
    pub http: Vec<String>,
    /// Extra `key = value` lines for `[hls]`.
    pub hls: Vec<String>,
    /// Extra `key = value` lines for `[recording]`.
    pub recording: Vec<String>,
    /// Extra `key = value` lines for `[auth]` (`publish` and `api_token` are set).
    pub auth: Vec<String>,
    /// Extra `key = value` lines for `[hooks]`.
    pub hooks: Vec<String>,
    /// Extra `key = value` lines for `[metrics]`.
    pub metrics: Vec<String>,
    /// `[srt]`: a UDP listener on a free port (`Server::srt_port`); `None` turns SRT off
    /// (`listen = ""`: the server's default is 0.0.0.0:8890).
    pub srt: Option<SrtOpts>,
}

/// The `[srt]` section of a test server: `listen` is a free UDP port on 127.0.0.1.
#[derive(Clone, Debug, Default)]
pub struct SrtOpts {
    /// `latency`, a duration string such as `"120ms"`; `None` keeps the server's default.
    pub latency: Option<String>,
    /// `passphrase` (10 to 79 characters); `None`: no encryption.
    pub passphrase: Option<String>,
    /// `pbkeylen` (16, 24 or 32).
    pub pbkeylen: Option<u32>,
    /// Extra `key = value` lines.
    pub extra: Vec<String>,
}

/// The API token every test server is configured with.
pub const API_TOKEN: &str = "zerocast-e2e-token-0123456789abcdef";

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            shards: 1,
            publish: "keys",
            tls: false,
            log_level: "info".into(),
            limits: Vec::new(),
            rtmp: Vec::new(),
            streams: Vec::new(),
            http: Vec::new(),
            hls: Vec::new(),
            recording: Vec::new(),
            auth: Vec::new(),
            hooks: Vec::new(),
            metrics: Vec::new(),
            srt: None,
        }
    }
}

/// A running `zerocast serve` in its own temp dir. Killed (SIGKILL) on drop if still running;
/// on a panicking drop its logs are printed.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
    pub tls_port: Option<u16>,
    /// Plain HTTP port (LL-HLS, /healthz).
    pub http_port: u16,
    /// UDP port of the `[srt]` listener, when `ServerOpts::srt` asked for one.
    pub srt_port: Option<u16>,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    child: Option<Child>,
    exited: Option<ExitStatus>,
    /// Whether this guard sent the server SIGTERM (to tell a foreign signal apart in failures).
    sent_term: bool,
}

impl Server {
    /// Writes the config, creates nothing else, does not start.
    fn prepare(opts: &ServerOpts) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("zerocast-e2e-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let tls_port = opts.tls.then(free_port);
        let http_port = free_port();
        let srt_port = opts.srt.as_ref().map(|_| free_port());
        let data = dir.path().join("data");
        let mut toml = String::new();
        toml += &format!(
            "[server]\ndata_dir = {:?}\nshards = {}\n\n",
            data.display().to_string(),
            opts.shards
        );
        toml += &format!("[rtmp]\nlisten = \"127.0.0.1:{port}\"\n");
        if let Some(tp) = tls_port {
            toml += &format!("tls_listen = \"127.0.0.1:{tp}\"\n");
        }
        for l in &opts.rtmp {
            toml += l;
            toml += "\n";
        }
        toml += &format!("\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n");
        for (section, lines) in [
            ("http", &opts.http),
            ("hls", &opts.hls),
            ("recording", &opts.recording),
        ] {
            if section != "http" {
                toml += &format!("\n[{section}]\n");
            }
            for l in lines {
                toml += l;
                toml += "\n";
            }
        }
        toml += &format!(
            "\n[auth]\npublish = {:?}\napi_token = {API_TOKEN:?}\n",
            opts.publish
        );
        for l in &opts.auth {
            toml += l;
            toml += "\n";
        }
        for (section, lines) in [("hooks", &opts.hooks), ("metrics", &opts.metrics)] {
            toml += &format!("\n[{section}]\n");
            for l in lines {
                toml += l;
                toml += "\n";
            }
        }
        toml += "\n";
        toml += "[streams]\n";
        for l in &opts.streams {
            toml += l;
            toml += "\n";
        }
        toml += "\n[limits]\n";
        for l in &opts.limits {
            toml += l;
            toml += "\n";
        }
        // SRT listens on 0.0.0.0:8890 by default: test servers turn it off unless asked.
        if srt_port.is_none() {
            toml += "\n[srt]\nlisten = \"\"\n";
        }
        if let (Some(srt), Some(sp)) = (&opts.srt, srt_port) {
            toml += &format!("\n[srt]\nlisten = \"127.0.0.1:{sp}\"\n");
            if let Some(l) = &srt.latency {
                toml += &format!("latency = {l:?}\n");
            }
            if let Some(p) = &srt.passphrase {
                toml += &format!("passphrase = {p:?}\n");
            }
            if let Some(k) = srt.pbkeylen {
                toml += &format!("pbkeylen = {k}\n");
            }
            for l in &srt.extra {
                toml += l;
                toml += "\n";
            }
        }
        toml += &format!("\n[log]\nlevel = {:?}\nformat = \"text\"\n", opts.log_level);
        let config = dir.path().join("zerocast.toml");
        std::fs::write(&config, toml).expect("write config");
        Server {
            stdout_path: dir.path().join("server.out"),
            stderr_path: dir.path().join("server.err"),
            dir,
            config,
            port,
            tls_port,
            http_port,
            srt_port,
            child: None,
            exited: None,
            sent_term: false,
        }
    }

    /// Starts a server with `opts` and waits (≤ 10 s) until its ports accept connections.
    pub fn start(opts: ServerOpts) -> Server {
        let mut s = Server::prepare(&opts);
        s.spawn();
        s
    }

    /// Starts the same configuration and data directory again after a stop.
    pub fn restart(mut stopped: Server) -> Server {
        assert!(
            stopped.try_status().is_some(),
            "restart needs a stopped server"
        );
        stopped.child = None;
        stopped.exited = None;
        // The kernel may hold the dead server's listeners a moment longer (io_uring tears its
        // ring down asynchronously): wait until the ports can be bound, or the readiness probe
        // below could connect to the old listener.
        let deadline = Instant::now() + Duration::from_secs(5);
        let ports: Vec<u16> = [
            Some(stopped.port),
            stopped.tls_port,
            Some(stopped.http_port),
        ]
        .into_iter()
        .flatten()
        .collect();
        while !ports
            .iter()
            .all(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
            || !stopped
                .srt_port
                .iter()
                .all(|&p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok())
        {
            assert!(
                Instant::now() < deadline,
                "ports {ports:?} still in use 5 s after the server stopped"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        stopped.spawn();
        stopped
    }

    fn spawn(&mut self) {
        let out = std::fs::File::create(&self.stdout_path).unwrap();
        let err = std::fs::File::create(&self.stderr_path).unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn zerocast serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut ports = vec![self.port];
        ports.extend(self.tls_port);
        for port in ports {
            loop {
                if let Some(st) = self.try_status() {
                    panic!(
                        "zerocast serve exited early with {st}\n--- config ---\n{}\n--- stderr ---\n{}\n--- stdout ---\n{}",
                        read_lossy(&self.config),
                        self.log(),
                        self.stdout()
                    );
                }
                let addr: SocketAddr = ([127, 0, 0, 1], port).into();
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "zerocast did not accept on 127.0.0.1:{port} within 10 s\n--- stderr ---\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // SRT is UDP: ready once the listener answers an induction handshake.
        if let Some(sp) = self.srt_port {
            loop {
                if let Some(st) = self.try_status() {
                    panic!(
                        "zerocast serve exited early with {st}\n--- config ---\n{}\n--- stderr ---\n{}\n--- stdout ---\n{}",
                        read_lossy(&self.config),
                        self.log(),
                        self.stdout()
                    );
                }
                if srt::induction_probe(sp, Duration::from_millis(200)).is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "zerocast's SRT listener on udp 127.0.0.1:{sp} did not answer an induction \
                     handshake within 10 s\n--- stderr ---\n{}",
                    self.log()
                );
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server child").id()
    }

    /// The server's stderr (its log).
    pub fn log(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// The server's stdout (the banner).
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout_path)
    }

    /// Waits at most `limit` until a log line contains every one of `parts`; returns that line.
    pub fn wait_log(&self, parts: &[&str], limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            if let Some(l) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return Some(l.to_owned());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Like [`Server::wait_log`] but panics with the log when the line does not come.
    pub fn expect_log(&self, parts: &[&str], limit: Duration) -> String {
        self.wait_log(parts, limit).unwrap_or_else(|| {
            panic!(
                "no server log line with {parts:?} within {limit:?}\n--- server stderr ---\n{}",
                tail(&self.log(), 80)
            )
        })
    }

    /// `zerocast streams create NAME --json`; returns the key.
    pub fn create_stream(&self, name: &str) -> String {
        let mut cmd = Command::new(BIN);
        cmd.args(["streams", "create", name, "--json", "--config"])
            .arg(&self.config)
            .env_remove("RUST_LOG");
        let (st, out, err) = run_bounded(cmd, Duration::from_secs(20));
        assert!(
            st.map(|s| s.success()).unwrap_or(false),
            "streams create {name} failed ({st:?}): {err}"
        );
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("streams create --json printed non-JSON ({e}): {out:?}"));
        assert_eq!(v["name"], name, "streams create output: {out}");
        assert!(
            v["created_at"].is_string() || v["created_at"].is_number(),
            "{out}"
        );
        let key = v["key"].as_str().expect("key string").to_owned();
        assert!(key.len() >= 16, "key too short: {key:?}");
        key
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    pub fn publish_url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.port)
    }

    /// `http://127.0.0.1:PORT/hls/NAME/index.m3u8`.
    pub fn hls_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/hls/{name}/index.m3u8", self.http_port)
    }

    /// Waits (bounded) until `/hls/NAME/media.m3u8` answers 200 with at least `segments`
    /// complete segments; returns the playlist.
    pub fn wait_hls(&self, name: &str, segments: usize, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let r = http::get(self.http_port, &format!("/hls/{name}/media.m3u8"));
            if r.status == 200 && r.text().matches("#EXTINF:").count() >= segments {
                return r.text();
            }
            assert!(
                Instant::now() < deadline,
                "no LL-HLS playlist with {segments} segments for {name} within {limit:?}: \
                 last answer {} {}\n--- server stderr ---\n{}",
                r.status,
                r.text(),
                tail(&self.log(), 40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn play_url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{name}", self.port)
    }

    pub fn rtmps_publish_url(&self, key: &str) -> String {
        format!(
            "rtmps://127.0.0.1:{}/live/{key}",
            self.tls_port.expect("tls")
        )
    }

    pub fn rtmps_play_url(&self, name: &str) -> String {
        format!(
            "rtmps://127.0.0.1:{}/live/{name}",
            self.tls_port.expect("tls")
        )
    }

    /// A scratch directory inside the server's temp dir.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Some(c) = self.child.as_mut() {
                self.exited = c.try_wait().ok().flatten();
            }
        }
        self.exited
    }

    pub fn is_alive(&mut self) -> bool {
        self.child.is_some() && self.try_status().is_none()
    }

    /// SIGTERM, then waits at most `limit`. `None` when it did not exit in time (then it is killed).
    pub fn stop_gracefully(&mut self, limit: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.try_status() {
            return Some(st);
        }
        self.sent_term = true;
        signal(self.pid(), libc::SIGTERM);
        let child = self.child.as_mut().unwrap();
        self.exited = wait_timeout(child, limit);
        if self.exited.is_none() {
            signal(child.id(), libc::SIGKILL);
            let _ = wait_timeout(child, Duration::from_secs(5));
            return None;
        }
        self.exited
    }

    /// Stops with SIGTERM and asserts exit status 0 within 5 s.
    pub fn stop_ok(&mut self) {
        let st = self.stop_gracefully(Duration::from_secs(5));
        assert!(
            st.map(|s| s.success()).unwrap_or(false),
            "server did not exit 0 within 5 s of SIGTERM: {st:?}\n--- server stderr ---\n{}",
            tail(&self.log(), 60)
        );
    }

    /// Resident set size (VmRSS) of the server, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = read_lossy(Path::new(&format!("/proc/{}/status", self.pid())));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Asserts the server is still running.
    pub fn assert_alive(&mut self) {
        if let Some(st) = self.try_status() {
            panic!(
                "server died: {st}\n--- server stderr ---\n{}",
                tail(&self.log(), 80)
            );
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if self.exited.is_none() && matches!(c.try_wait(), Ok(None)) {
                signal(c.id(), libc::SIGKILL);
                let _ = wait_timeout(c, Duration::from_secs(5));
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- zerocast stderr ({}) ---\n{}\n--- zerocast stdout ---\n{}",
                self.stderr_path.display(),
                tail(&self.log(), 150),
                tail(&self.stdout(), 20)
            );
            if !self.sent_term && self.log().contains("stopping") {
                eprintln!(
                    "NOTE: the server was stopped by a signal this test did not send \
                     (something else on this machine signalled PID {})",
                    self.child.as_ref().map(|c| c.id()).unwrap_or(0)
                );
            }
            if std::env::var_os("ZEROCAST_KEEP_TMP").is_some() {
                let p = self.dir.path().to_owned();
                eprintln!("keeping {}", p.display());
                std::mem::forget(std::mem::replace(
                    &mut self.dir,
                    tempfile::tempdir().unwrap(),
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Test clips
// ---------------------------------------------------------------------------------------------

/// What a generated clip looks like.
#[derive(Clone, Copy, Debug)]
pub struct ClipSpec {
    pub width: u32,
    pub height: u32,
    pub secs: u32,
    pub tone_hz: u32,
    pub kbps: u32,
}

/// The standard clip: 10 s 1280x720 30 fps H.264 (GOP 60) + AAC 48 kHz stereo 1 kHz tone.
pub const MAIN_CLIP: ClipSpec = ClipSpec {
    width: 1280,
    height: 720,
    secs: 10,
    tone_hz: 1000,
    kbps: 2500,
};

/// A cheap 4 s clip of another size and tone, for "distinct content" tests.
pub const fn small_clip(width: u32, height: u32, tone_hz: u32) -> ClipSpec {
    ClipSpec {
        width,
        height,
        secs: 4,
        tone_hz,
        kbps: 800,
    }
}

fn clip_dir() -> PathBuf {
    // `CARGO_TARGET_TMPDIR` is target/tmp: shared by all test binaries, kept between runs.
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("zerocast-test-clip");
    std::fs::create_dir_all(&d).expect("create clip cache dir");
    d
}

/// Path of the clip for `spec`, generating it once (cached across runs). Generation writes to a
/// unique temp name and renames into place, so concurrent generators never see a half file.
pub fn clip(spec: ClipSpec) -> PathBuf {
    static GEN: Mutex<()> = Mutex::new(());
    let name = format!(
        "clip-{}x{}-{}s-{}hz-{}k.flv",
        spec.width, spec.height, spec.secs, spec.tone_hz, spec.kbps
    );
    let path = clip_dir().join(&name);
    let _g = GEN.lock().unwrap_or_else(|p| p.into_inner());
    if path.is_file()
        && std::fs::metadata(&path)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
    {
        return path;
    }
    require_ffmpeg();
    let tmp = clip_dir().join(format!(".{name}.{}.tmp.flv", std::process::id()));
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
    ])
    .arg(format!(
        "testsrc2=size={}x{}:rate=30",
        spec.width, spec.height
    ))
    .args(["-f", "lavfi", "-i"])
    .arg(format!("sine=frequency={}:sample_rate=48000", spec.tone_hz))
    .args(["-t", &spec.secs.to_string()])
    .args([
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "60",
    ])
    .args(["-b:v", &format!("{}k", spec.kbps)])
    .args(["-c:a", "aac", "-b:a", "128k", "-ac", "2", "-f", "flv", "-y"])
    .arg(&tmp);
    let (st, _out, err) = run_bounded(cmd, Duration::from_secs(120));
    assert!(
        st.map(|s| s.success()).unwrap_or(false),
        "generating {name} failed ({st:?}): {err}"
    );
    std::fs::rename(&tmp, &path).expect("rename clip into place");
    path
}

// ---------------------------------------------------------------------------------------------
// ffmpeg peers
// ---------------------------------------------------------------------------------------------

/// `ffmpeg -re -stream_loop -1 -i CLIP -c copy -f flv URL`: publishes until killed.
pub fn publish(name: &str, dir: &Path, clip: &Path, url: &str) -> Proc {
    publish_limited(name, dir, clip, url, None)
}

/// Like [`publish`]; with `secs`, publishes exactly that much media (`-t SECS`), then exits.
pub fn publish_limited(name: &str, dir: &Path, clip: &Path, url: &str, secs: Option<u32>) -> Proc {
    require_ffmpeg();
    ffmpeg_publish(name, dir, clip, url, secs, "flv")
}

/// ffmpeg sending `clip` in real time, looped (or `secs` of it), as `format` to `url`.
pub fn ffmpeg_publish(
    name: &str,
    dir: &Path,
    clip: &Path,
    url: &str,
    secs: Option<u32>,
    format: &str,
) -> Proc {
    Proc::spawn(name, dir, ffmpeg_realtime(clip, secs, format, url))
}

/// The ffmpeg command that sends `clip` in real time, looped (or `secs` of it), copied as
/// `format` to `output` (a URL, or `-` for stdout).
pub fn ffmpeg_realtime(clip: &Path, secs: Option<u32>, format: &str, output: &str) -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "info",
        "-re",
        "-stream_loop",
        "-1",
        "-i",
    ])
    .arg(clip);
    if let Some(secs) = secs {
        cmd.args(["-t", &secs.to_string()]);
    }
    cmd.args(["-c", "copy", "-f", format, output]);
    cmd
}

/// A program in the Python virtualenv `scripts/test` creates (`$ZEROCAST_VENV`, default
/// `~/.cache/zerocast/venv`), e.g. `bin/python`; panics with the install command for `package`
/// when it is missing.
pub fn venv_program(program: &str, package: &str) -> PathBuf {
    let venv = std::env::var_os("ZEROCAST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/zerocast/venv")
        });
    let path = venv.join(program);
    assert!(
        path.is_file(),
        "{} is missing: run ./scripts/test (it creates the virtualenv), or \
         `python3 -m venv {1} && {1}/bin/pip install {package}`",
        path.display(),
        venv.display()
    );
    path
}

/// `ffmpeg -i URL -t SECS -c copy -y OUT`: records `secs` seconds of the stream into `out`.
pub fn record(name: &str, dir: &Path, url: &str, secs: f64, out: &Path) -> Proc {
    require_ffmpeg();
    ffmpeg_record(name, dir, url, secs, out, "flv")
}

/// `ffmpeg -i URL -t SECS -c copy -f FORMAT -y OUT`: saves `secs` seconds of `url` as `format`.
pub fn ffmpeg_record(
    name: &str,
    dir: &Path,
    url: &str,
    secs: f64,
    out: &Path,
    format: &str,
) -> Proc {
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "info",
        "-i",
        url,
        "-t",
    ])
    .arg(format!("{secs}"))
    .args(["-c", "copy", "-f", format, "-y"])
    .arg(out);
    Proc::spawn(name, dir, cmd)
}

/// One stream as reported by ffprobe.
#[derive(Clone, Debug, Default)]
pub struct ProbeStream {
    pub codec_type: String,
    pub codec_name: String,
    pub width: Option<u64>,
    pub height: Option<u64>,
    pub r_frame_rate: Option<String>,
    pub sample_rate: Option<String>,
    pub channels: Option<u64>,
}

/// `ffprobe -show_entries stream=... -of json TARGET`, bounded by `limit`. Err with stderr on failure.
pub fn probe(target: &str, limit: Duration) -> Result<Vec<ProbeStream>, String> {
    let mut cmd = Command::new("ffprobe");
    cmd.args([
        "-v",
        "error",
        "-show_entries",
        "stream=codec_type,codec_name,width,height,r_frame_rate,sample_rate,channels",
        "-of",
        "json",
        target,
    ]);
    let (st, out, err) = run_bounded(cmd, limit);
    match st {
        None => return Err(format!("ffprobe timed out after {limit:?}; stderr: {err}")),
        Some(s) if !s.success() => return Err(format!("ffprobe exited {s}; stderr: {err}")),
        _ => {}
    }
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("ffprobe JSON ({e}): {out}"))?;
    let streams = v["streams"].as_array().cloned().unwrap_or_default();
    Ok(streams
        .iter()
        .map(|s| ProbeStream {
            codec_type: s["codec_type"].as_str().unwrap_or_default().to_owned(),
            codec_name: s["codec_name"].as_str().unwrap_or_default().to_owned(),
            width: s["width"].as_u64(),
            height: s["height"].as_u64(),
            r_frame_rate: s["r_frame_rate"].as_str().map(str::to_owned),
            sample_rate: s["sample_rate"].as_str().map(str::to_owned),
            channels: s["channels"].as_u64(),
        })
        .collect())
}

/// The video and audio streams of a probe, asserting both exist.
pub fn av_streams(streams: &[ProbeStream], what: &str) -> (ProbeStream, ProbeStream) {
    let v = streams
        .iter()
        .find(|s| s.codec_type == "video")
        .unwrap_or_else(|| panic!("{what}: no video stream in {streams:?}"))
        .clone();
    let a = streams
        .iter()
        .find(|s| s.codec_type == "audio")
        .unwrap_or_else(|| panic!("{what}: no audio stream in {streams:?}"))
        .clone();
    (v, a)
}

/// Asserts a probe shows H.264 `w`x`h` at 30 fps plus AAC 48 kHz stereo.
pub fn assert_av(streams: &[ProbeStream], w: u64, h: u64, what: &str) {
    let (v, a) = av_streams(streams, what);
    assert_eq!(v.codec_name, "h264", "{what}: video codec in {v:?}");
    assert_eq!(
        (v.width, v.height),
        (Some(w), Some(h)),
        "{what}: size in {v:?}"
    );
    assert_eq!(
        v.r_frame_rate.as_deref(),
        Some("30/1"),
        "{what}: frame rate in {v:?}"
    );
    assert_eq!(a.codec_name, "aac", "{what}: audio codec in {a:?}");
    assert_eq!(
        a.sample_rate.as_deref(),
        Some("48000"),
        "{what}: sample rate in {a:?}"
    );
    assert_eq!(a.channels, Some(2), "{what}: channels in {a:?}");
}

/// One packet of a recording.
#[derive(Clone, Debug)]
pub struct Packet {
    pub pts: f64,
    pub dts: f64,
    pub key: bool,
}

/// What a recording holds.
#[derive(Clone, Debug)]
pub struct Recording {
    pub video: Vec<Packet>,
    pub audio: usize,
    pub width: Option<u64>,
    pub height: Option<u64>,
    pub video_codec: String,
    pub audio_codec: String,
}

impl Recording {
    /// Seconds between the first and last video timestamps.
    pub fn video_span(&self) -> f64 {
        let min = self
            .video
            .iter()
            .map(|p| p.pts)
            .fold(f64::INFINITY, f64::min);
        let max = self
            .video
            .iter()
            .map(|p| p.pts)
            .fold(f64::NEG_INFINITY, f64::max);
        if self.video.is_empty() {
            0.0
        } else {
            max - min
        }
    }

    /// Largest gap between consecutive video decode timestamps, seconds.
    pub fn max_video_gap(&self) -> f64 {
        self.video
            .windows(2)
            .map(|w| w[1].dts - w[0].dts)
            .fold(0.0, f64::max)
    }

    /// Asserts: the first video packet is a keyframe; the span covers ≥ `min_span` s; the frame
    /// count is ≥ 95% of 30 fps × span (+1); the measured rate is near 30 fps; no gap > `max_gap`.
    pub fn assert_complete(&self, min_span: f64, max_gap: f64, what: &str) {
        let n = self.video.len();
        assert!(n > 0, "{what}: no video frames recorded");
        assert!(
            self.video[0].key,
            "{what}: first video packet is not a keyframe: {:?}",
            &self.video[..n.min(3)]
        );
        let span = self.video_span();
        assert!(
            span >= min_span,
            "{what}: recording spans only {span:.3} s of video (want ≥ {min_span} s, {n} frames)"
        );
        let expected = span * FPS + 1.0;
        assert!(
            n as f64 >= 0.95 * expected,
            "{what}: {n} video frames over {span:.3} s, expected ≈ {expected:.0} (≥ 95%)"
        );
        let rate = (n as f64 - 1.0) / span;
        assert!(
            (27.0..=33.0).contains(&rate),
            "{what}: {rate:.2} frames/s measured from timestamps (want ≈ 30)"
        );
        let gap = self.max_video_gap();
        assert!(
            gap <= max_gap,
            "{what}: gap of {:.0} ms between consecutive video frames (max {:.0} ms)",
            gap * 1000.0,
            max_gap * 1000.0
        );
        assert!(self.audio > 0, "{what}: no audio packets recorded");
    }
}

/// Reads a recording with ffprobe: video packets (pts, dts, key flag), audio packet count, size.
pub fn analyze(path: &Path) -> Result<Recording, String> {
    let meta = fs_len(path);
    if meta == 0 {
        return Err(format!("{} is missing or empty", path.display()));
    }
    let mut cmd = Command::new("ffprobe");
    cmd.args([
        "-v",
        "error",
        "-show_entries",
        "packet=codec_type,pts_time,dts_time,flags:stream=codec_type,codec_name,width,height",
        "-of",
        "json",
    ])
    .arg(path);
    let (st, out, err) = run_bounded(cmd, Duration::from_secs(30));
    if !st.map(|s| s.success()).unwrap_or(false) {
        return Err(format!("ffprobe {} failed ({st:?}): {err}", path.display()));
    }
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("ffprobe JSON ({e})"))?;
    let num = |x: &serde_json::Value| x.as_str().and_then(|s| s.parse::<f64>().ok());
    let mut rec = Recording {
        video: Vec::new(),
        audio: 0,
        width: None,
        height: None,
        video_codec: String::new(),
        audio_codec: String::new(),
    };
    for s in v["streams"].as_array().cloned().unwrap_or_default() {
        match s["codec_type"].as_str() {
            Some("video") => {
                rec.width = s["width"].as_u64();
                rec.height = s["height"].as_u64();
                rec.video_codec = s["codec_name"].as_str().unwrap_or_default().into();
            }
            Some("audio") => rec.audio_codec = s["codec_name"].as_str().unwrap_or_default().into(),
            _ => {}
        }
    }
    for p in v["packets"].as_array().cloned().unwrap_or_default() {
        match p["codec_type"].as_str() {
            Some("video") => {
                let pts = num(&p["pts_time"]);
                let dts = num(&p["dts_time"]).or(pts);
                if let (Some(pts), Some(dts)) = (pts.or(dts), dts) {
                    rec.video.push(Packet {
                        pts,
                        dts,
                        key: p["flags"].as_str().unwrap_or("").contains('K'),
                    });
                }
            }
            Some("audio") => rec.audio += 1,
            _ => {}
        }
    }
    Ok(rec)
}

pub fn fs_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Analyzes a recording or panics with the player's stderr.
pub fn analyze_or_panic(path: &Path, player: &Proc) -> Recording {
    analyze(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}\n--- {} stderr ---\n{}",
            player.name,
            player.name,
            tail(&player.stderr(), 30)
        )
    })
}

/// Waits (bounded) for a player to finish and asserts it exited 0.
pub fn finish_player(p: &mut Proc, limit: Duration) {
    let st = p.wait_for(limit);
    match st {
        Some(s) if s.success() => {}
        other => {
            p.kill9();
            panic!(
                "{} did not finish cleanly within {limit:?}: {other:?}\n--- stderr ---\n{}",
                p.name,
                tail(&p.stderr(), 30)
            );
        }
    }
}

/// Asserts a publisher is still running (it has not been refused or crashed).
pub fn assert_running(p: &mut Proc) {
    if let Some(st) = p.try_status() {
        panic!(
            "{} exited early with {st}\n--- stderr ---\n{}",
            p.name,
            tail(&p.stderr(), 30)
        );
    }
}

/// `shard=N` values of the server's `playing` log lines.
pub fn playing_shards(log: &str) -> HashMap<u32, usize> {
    let mut m = HashMap::new();
    for l in log.lines().filter(|l| l.contains("playing")) {
        if let Some(i) = l.find("shard=") {
            let digits: String = l[i + 6..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if let Ok(n) = digits.parse() {
                *m.entry(n).or_insert(0) += 1;
            }
        }
    }
    m
}

// ---------------------------------------------------------------------------------------------
// Raw RTMP bytes
// ---------------------------------------------------------------------------------------------

pub const HANDSHAKE_SIZE: usize = 1536;

/// A small deterministic PRNG (xorshift64*), so tests need no rand crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }
}

/// C0 (version 3) + C1 (time 0, zero field, random) for a plain handshake.
pub fn c0c1(rng: &mut Rng) -> Vec<u8> {
    let mut v = vec![0u8; 1 + HANDSHAKE_SIZE];
    v[0] = 3;
    rng.fill(&mut v[9..]);
    v
}

/// Connects to `addr` with read/write timeouts of `timeout`.
pub fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Plain handshake as a client: sends C0C1, reads S0S1S2, sends C2 (= S1 echoed).
pub fn handshake(s: &mut TcpStream, rng: &mut Rng) -> std::io::Result<()> {
    s.write_all(&c0c1(rng))?;
    let mut s0s1s2 = vec![0u8; 1 + 2 * HANDSHAKE_SIZE];
    s.read_exact(&mut s0s1s2)?;
    if s0s1s2[0] != 3 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("S0 version {}", s0s1s2[0]),
        ));
    }
    let s1 = &s0s1s2[1..1 + HANDSHAKE_SIZE];
    s.write_all(s1)?;
    Ok(())
}

/// Reads until EOF or an error, at most `limit`. `Ok(bytes_read)` on EOF/reset, `Err` when the
/// connection is still open after `limit`.
pub fn expect_closed(s: &mut TcpStream, limit: Duration) -> Result<usize, String> {
    let deadline = Instant::now() + limit;
    let mut total = 0;
    let mut buf = [0u8; 16384];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "connection still open after {limit:?} ({total} bytes read)"
            ));
        }
        s.set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .ok();
        match s.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(_) => return Ok(total),
        }
    }
}

/// Writes, ignoring errors (the server may already have closed).
pub fn write_lossy(s: &mut TcpStream, data: &[u8]) {
    let _ = s.write_all(data);
}

pub fn close(s: TcpStream) {
    let _ = s.shutdown(Shutdown::Both);
}

/// One RTMP message as chunks with chunk stream id `csid` (< 64), type-0 first header,
/// type-3 continuation headers, `chunk` bytes per chunk.
pub fn chunked_message(
    csid: u8,
    timestamp: u32,
    type_id: u8,
    msg_stream_id: u32,
    payload: &[u8],
    chunk: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload.len() / chunk.max(1) + 16);
    let len = payload.len() as u32;
    out.push(csid & 0x3f);
    let ts = timestamp.min(0xFF_FFFF);
    out.extend_from_slice(&ts.to_be_bytes()[1..]);
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(type_id);
    out.extend_from_slice(&msg_stream_id.to_le_bytes());
    if timestamp >= 0xFF_FFFF {
        out.extend_from_slice(&timestamp.to_be_bytes());
    }
    for (i, piece) in payload.chunks(chunk).enumerate() {
        if i > 0 {
            out.push(0xC0 | (csid & 0x3f));
            if timestamp >= 0xFF_FFFF {
                out.extend_from_slice(&timestamp.to_be_bytes());
            }
        }
        out.extend_from_slice(piece);
    }
    out
}

/// Set Chunk Size (type 1) with `size`, on chunk stream 2.
pub fn set_chunk_size(size: u32) -> Vec<u8> {
    chunked_message(2, 0, 1, 0, &size.to_be_bytes(), 128)
}

/// AMF0 string value.
pub fn amf_string(out: &mut Vec<u8>, s: &str) {
    out.push(0x02);
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// AMF0 number value.
pub fn amf_number(out: &mut Vec<u8>, n: f64) {
    out.push(0x00);
    out.extend_from_slice(&n.to_be_bytes());
}

/// An AMF0 `connect` command whose command object nests `depth` objects and strict arrays.
pub fn deep_connect(depth: usize) -> Vec<u8> {
    let mut p = Vec::new();
    amf_string(&mut p, "connect");
    amf_number(&mut p, 1.0);
    // Opening: object { "app": "live", "x": <array [ <object { "x": ... } > ] > }
    for i in 0..depth {
        if i % 2 == 0 {
            p.push(0x03); // object
            if i == 0 {
                p.extend_from_slice(&3u16.to_be_bytes());
                p.extend_from_slice(b"app");
                amf_string(&mut p, "live");
            }
            p.extend_from_slice(&1u16.to_be_bytes());
            p.extend_from_slice(b"x");
        } else {
            p.push(0x0A); // strict array of one element
            p.extend_from_slice(&1u32.to_be_bytes());
        }
    }
    p.push(0x05); // null at the bottom
    for i in (0..depth).rev() {
        if i % 2 == 0 {
            p.extend_from_slice(&[0x00, 0x00, 0x09]); // object end
        }
    }
    p
}
