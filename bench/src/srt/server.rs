//! Starting zerocast with SRT on, and reading where its threads run.
//!
//! Like `servers::start_zerocast` (free ports on 127.0.0.1, a temporary directory, open
//! publishing, one shard, `taskset -c CPU`), plus an `[srt]` section on a free UDP port with
//! the latency under test.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A zerocast process this harness started; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Zerocast {
    child: Child,
    /// Its temporary directory (config, `server.log`, data).
    pub dir: PathBuf,
    /// RTMP address.
    pub rtmp: SocketAddr,
    /// SRT (UDP) address.
    pub srt: SocketAddr,
    /// `zerocast --version` and how it runs.
    pub version: String,
}

impl Zerocast {
    /// The server's PID (`taskset` execs it, so the PID is zerocast's own).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `rtmp://ADDR/live/NAME`.
    pub fn rtmp_url(&self, name: &str) -> String {
        format!("rtmp://{}/live/{name}", self.rtmp)
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir.join("server.log"))
    }
}

impl Drop for Zerocast {
    fn drop(&mut self) {
        crate::servers::stop_child(&mut self.child);
    }
}

fn log_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A free UDP port on 127.0.0.1 (bound, read and released).
fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The server configuration: RTMP and SRT on loopback, HTTP off, open publishing, one shard,
/// room for `clients` connections from 127.0.0.1.
///
/// `max_pending_handshakes` is raised to the session limit: zerocast keeps an SRT session's
/// address in its pending-handshake set until the *session* ends (the admission task runs the
/// session), so the default 256 also caps concurrent SRT sessions per shard, refusing the
/// 257th caller with "backlog exceeded".
pub fn config(
    data_dir: &Path,
    rtmp_port: u16,
    srt_port: u16,
    latency_ms: u64,
    clients: usize,
) -> String {
    let conns = (clients + 64).max(1000);
    format!(
        "[server]\ndata_dir = \"{}\"\nshards = 1\n\n\
         [rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n\
         [srt]\nlisten = \"127.0.0.1:{srt_port}\"\nlatency = \"{latency_ms}ms\"\n\
         max_sessions = {conns}\nmax_pending_handshakes = {conns}\n\n\
         [http]\nlisten = \"\"\n\n[auth]\npublish = \"open\"\n\n\
         [limits]\nmax_connections = {conns}\nmax_connections_per_ip = {conns}\n\n\
         [log]\nlevel = \"warn\"\n",
        data_dir.display()
    )
}

/// Starts `bin` with [`config`], pinned to `cpu` when given; returns once RTMP accepts.
pub fn start(bin: &Path, cpu: Option<usize>, latency_ms: u64, clients: usize) -> Result<Zerocast> {
    let bin = &std::fs::canonicalize(bin)
        .with_context(|| format!("zerocast binary {}", bin.display()))?;
    let dir = crate::servers::temp_dir("zerocast-srt")?;
    let rtmp_port = crate::servers::free_port()?;
    let srt_port = free_udp_port()?;
    let conf = dir.join("zerocast.toml");
    std::fs::write(
        &conf,
        config(&dir.join("data"), rtmp_port, srt_port, latency_ms, clients),
    )?;
    let mut cmd = match cpu {
        Some(c) => {
            let mut t = Command::new("taskset");
            t.arg("-c").arg(c.to_string()).arg(bin);
            t
        }
        None => Command::new(bin),
    };
    cmd.arg("serve").arg("--config").arg(&conf);
    let log = std::fs::File::create(dir.join("server.log"))?;
    cmd.current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let version = crate::servers::zerocast_version(bin);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting zerocast: {cmd:?}"))?;
    let mut z = Zerocast {
        child,
        dir,
        rtmp: SocketAddr::from(([127, 0, 0, 1], rtmp_port)),
        srt: SocketAddr::from(([127, 0, 0, 1], srt_port)),
        version: format!("{version} (release, shards = 1, srt.latency = {latency_ms}ms)"),
    };
    let t0 = Instant::now();
    loop {
        if !z.alive() {
            bail!("zerocast exited at start; its log:\n{}", z.log_tail());
        }
        if TcpStream::connect(z.rtmp).is_ok() {
            // The SRT endpoint binds in the same start-up; callers retry their handshake anyway.
            std::thread::sleep(Duration::from_millis(200));
            return Ok(z);
        }
        if t0.elapsed() > Duration::from_secs(20) {
            bail!(
                "zerocast did not listen on {} within 20 s; its log:\n{}",
                z.rtmp,
                z.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_turns_srt_on_with_the_latency() {
        let c = config(Path::new("/tmp/d"), 1935, 9000, 120, 10);
        assert!(c.contains("[srt]\nlisten = \"127.0.0.1:9000\"\nlatency = \"120ms\""));
        assert!(c.contains("max_sessions = 1000\nmax_pending_handshakes = 1000"));
        assert!(c.contains("publish = \"open\""));
        let big = config(Path::new("/tmp/d"), 1935, 9000, 40, 2000);
        assert!(big.contains("max_connections_per_ip = 2064"));
    }
}
