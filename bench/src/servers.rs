//! Starting and stopping the servers under test: zerocast and the peers (nginx-rtmp,
//! Node-Media-Server, xiu). Every server binds 127.0.0.1 on a free port (xiu binds all
//! addresses; it has no bind option), runs in its own temporary directory, and is stopped by
//! its PID.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::clip::cache_dir;

/// A server process we started.
pub struct ServerProc {
    /// Display name.
    pub name: String,
    /// The process.
    child: Child,
    /// Its working directory (logs, config).
    pub dir: PathBuf,
    /// RTMP port on 127.0.0.1.
    pub port: u16,
    /// Version or build notes for the report.
    pub version: String,
}

impl ServerProc {
    /// The server's PID (the process itself: `taskset` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `rtmp://127.0.0.1:PORT/live/NAME`.
    pub fn url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{name}", self.port)
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// Stops a server we started: SIGTERM, up to 5 s to exit, then SIGKILL.
pub fn stop_child(child: &mut std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Our own child, not reaped yet: the PID cannot belong to another process.
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A free TCP port on 127.0.0.1 (bound, read and released).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> Result<PathBuf> {
    let nanos = crate::rtmp::wall_ns();
    let d = std::env::temp_dir().join(format!(
        "zerocast-bench-{tag}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

/// Where the server runs.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    /// Pin the server to this CPU with `taskset -c`.
    pub cpu: Option<usize>,
}

fn command(placement: Placement, program: &Path) -> Command {
    match placement.cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn spawn(
    name: &str,
    mut cmd: Command,
    dir: PathBuf,
    port: u16,
    version: String,
) -> Result<ServerProc> {
    let log = std::fs::File::create(dir.join("server.log"))?;
    cmd.current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {name}: {cmd:?}"))?;
    let mut p = ServerProc {
        name: name.to_owned(),
        child,
        dir,
        port,
        version,
    };
    let t0 = Instant::now();
    loop {
        if !p.alive() {
            bail!(
                "{name} exited at start; its log:\n{}",
                log_tail(&p.dir.join("server.log"))
            );
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Give it a moment past accept() readiness (Node's listen callback, etc.).
            std::thread::sleep(Duration::from_millis(200));
            return Ok(p);
        }
        if t0.elapsed() > Duration::from_secs(20) {
            bail!(
                "{name} did not listen on 127.0.0.1:{port} within 20 s; its log:\n{}",
                log_tail(&p.dir.join("server.log"))
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn workspace_root() -> PathBuf {
    // bench/ is one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The zerocast release binary: `CARGO_TARGET_DIR` or `<workspace>/target`, built with cargo
/// when missing.
pub fn zerocast_release_bin() -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let bin = target.join("release").join("zerocast");
    if !bin.exists() {
        eprintln!("building zerocast (release): cargo build --release -p zerocast");
        let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "-p", "zerocast"])
            .current_dir(workspace_root())
            .status()
            .context("running cargo")?;
        if !st.success() || !bin.exists() {
            bail!("cargo build --release -p zerocast failed ({st})");
        }
    }
    Ok(bin)
}

/// Starts zerocast with open publishing, one shard and limits that admit `viewers` players
/// from 127.0.0.1.
pub fn start_zerocast(bin: &Path, placement: Placement, max_viewers: usize) -> Result<ServerProc> {
    let bin = &std::fs::canonicalize(bin)
        .with_context(|| format!("zerocast binary {}", bin.display()))?;
    let dir = temp_dir("zerocast")?;
    let port = free_port()?;
    let conns = (max_viewers + 64).max(1000);
    let cfg = format!(
        "[server]\ndata_dir = \"{}\"\nshards = 1\n\n[rtmp]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [http]\nlisten = \"\"\n\n[srt]\nlisten = \"\"\n\n[auth]\npublish = \"open\"\n\n[limits]\nmax_connections = {conns}\n\
         max_connections_per_ip = {conns}\n\n[log]\nlevel = \"warn\"\n",
        dir.join("data").display()
    );
    let conf = dir.join("zerocast.toml");
    std::fs::write(&conf, cfg)?;
    let mut cmd = command(placement, bin);
    cmd.arg("serve").arg("--config").arg(&conf);
    let version = zerocast_version(bin);
    spawn(
        "zerocast",
        cmd,
        dir,
        port,
        format!("{version} (release, shards = 1)"),
    )
}

const NGINX_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// Starts nginx with the RTMP module (Debian `nginx-light libnginx-mod-rtmp`).
pub fn start_nginx(placement: Placement) -> Result<ServerProc> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let Some(nginx) = nginx else {
        bail!("nginx not installed (Debian: apt-get install nginx-light libnginx-mod-rtmp)");
    };
    if !Path::new(NGINX_MODULE).exists() {
        bail!("{NGINX_MODULE} missing (Debian: apt-get install libnginx-mod-rtmp)");
    }
    let dir = temp_dir("nginx")?;
    let port = free_port()?;
    let d = dir.display();
    // As PEERS.md, plus worker_connections: the default (512) cannot hold 1,000 players.
    let conf = format!(
        "load_module {NGINX_MODULE};\ndaemon off;\nmaster_process off;\nworker_processes 1;\n\
         worker_rlimit_nofile 20000;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 10000; }}\n\
         rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; }} }} }}\n"
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let mut cmd = command(placement, &nginx);
    cmd.arg("-c").arg(&conf_path).arg("-p").arg(&dir);
    let version = Command::new(&nginx)
        .arg("-v")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .unwrap_or_default();
    let module = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "libnginx-mod-rtmp"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    spawn(
        "nginx-rtmp",
        cmd,
        dir,
        port,
        format!("{version}, libnginx-mod-rtmp {module}"),
    )
}

/// Installs Node-Media-Server v4 into the cache (npm) when missing; returns its package dir.
fn nms_package() -> Result<PathBuf> {
    let root = cache_dir().join("nms");
    let pkg = root.join("node_modules").join("node-media-server");
    if !pkg.join("package.json").exists() {
        std::fs::create_dir_all(&root)?;
        eprintln!("installing node-media-server@4 into {}", root.display());
        let st = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&root)
            .arg("node-media-server@4")
            .status()
            .context("npm not found (Debian: apt-get install npm)")?;
        if !st.success() {
            bail!("npm install node-media-server@4 failed ({st})");
        }
    }
    Ok(pkg)
}

/// Starts Node-Media-Server v4 with RTMP only (no HTTP, no admin, no recording), quiet logs.
pub fn start_nms(placement: Placement) -> Result<ServerProc> {
    let pkg = nms_package()?;
    let version = std::fs::read_to_string(pkg.join("package.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let dir = temp_dir("nms")?;
    let port = free_port()?;
    // v4 takes one config object; absent sections (http, https, rtmps) are not started.
    let js = format!(
        "const NodeMediaServer = require({pkg:?});\n\
         const logger = require({logger:?});\n\
         const nms = new NodeMediaServer({{\n\
           bind: '127.0.0.1',\n\
           rtmp: {{ port: {port} }},\n\
           auth: {{ play: false, publish: false }},\n\
           store: {{ path: {store:?} }},\n\
           record: {{ auto: false, path: {rec:?} }},\n\
           webadmin: {{ enable: false }},\n\
         }}, {cfg:?});\n\
         logger.level = 'error';\n\
         nms.run();\n\
         process.on('SIGTERM', () => process.exit(0));\n",
        pkg = pkg.display().to_string(),
        logger = pkg.join("src/core/logger.js").display().to_string(),
        store = dir.join("data").display().to_string(),
        rec = dir.join("record").display().to_string(),
        cfg = dir.join("config.json").display().to_string(),
    );
    let launcher = dir.join("launch.js");
    std::fs::write(&launcher, js)?;
    let node = PathBuf::from("node");
    let mut cmd = command(placement, &node);
    cmd.arg(&launcher);
    spawn(
        "node-media-server",
        cmd,
        dir,
        port,
        format!("node-media-server {version} (npm), node {}", node_version()),
    )
}

fn node_version() -> String {
    Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Installs xiu with `cargo install` into the cache when missing (bounded by `limit`).
pub fn xiu_bin(limit: Duration) -> Result<PathBuf> {
    let root = cache_dir().join("xiu");
    let bin = root.join("bin").join("xiu");
    if bin.exists() {
        return Ok(bin);
    }
    // Another run (or a manual `cargo install`) may be building it: its PID is in this file.
    let marker = cache_dir().join("xiu.installing");
    let other = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|pid| Path::new(&format!("/proc/{pid}")).exists());
    if let Some(pid) = other {
        eprintln!("waiting for the xiu install already running (pid {pid})");
        let t0 = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() && t0.elapsed() < limit {
            std::thread::sleep(Duration::from_secs(1));
        }
        if bin.exists() {
            return Ok(bin);
        }
        bail!(
            "cargo install xiu (pid {pid}, started earlier) ended or was still running without \
             producing {} after {} s of waiting here",
            bin.display(),
            t0.elapsed().as_secs()
        );
    }
    eprintln!(
        "installing xiu: cargo install xiu --root {} (limit {} s)",
        root.display(),
        limit.as_secs()
    );
    let log = root.with_extension("install.log");
    std::fs::create_dir_all(&root)?;
    let f = std::fs::File::create(&log)?;
    let mut child = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["install", "--locked", "xiu", "--root"])
        .arg(&root)
        .stdout(f.try_clone()?)
        .stderr(f)
        .spawn()
        .context("running cargo install")?;
    let _ = std::fs::write(&marker, child.id().to_string());
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait()? {
            if st.success() && bin.exists() {
                return Ok(bin);
            }
            let tail = log_tail(&log);
            let last = tail
                .lines()
                .rev()
                .find(|l| l.contains("error"))
                .unwrap_or("see the log");
            bail!(
                "cargo install xiu failed ({st}): {last} (log: {}; xiu's audiopus_sys needs \
                 Debian's libopus-dev and pkg-config)",
                log.display()
            );
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "cargo install xiu did not finish within {} s (log: {})",
                limit.as_secs(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Starts xiu with RTMP only on a free port, log level warn.
pub fn start_xiu(placement: Placement, install_limit: Duration) -> Result<ServerProc> {
    let bin = xiu_bin(install_limit)?;
    let dir = temp_dir("xiu")?;
    let port = free_port()?;
    let version = Command::new(&bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut cmd = command(placement, &bin);
    cmd.arg("-r").arg(port.to_string()).arg("-l").arg("warn");
    spawn("xiu", cmd, dir, port, format!("{version} (crates.io)"))
}

/// What `BIN --version` prints ("zerocast" when it prints nothing).
pub fn zerocast_version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "zerocast".to_owned())
}

/// CPUs in a kernel CPU list such as `0-2,5`.
fn cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for range in list.trim().split(',').filter(|r| !r.is_empty()) {
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
            cpus.extend(a..=b.min(a + 4096));
        }
    }
    cpus
}

/// `Cpus_allowed_list` of a thread or process, from its `status` file.
fn allowed_cpus(status_path: &str) -> Option<String> {
    std::fs::read_to_string(status_path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
}

/// Where the harness and the server's threads may run, and whether they share a CPU. A server
/// that pins its own threads can ignore the `taskset` it was started under.
pub fn placement(server_pid: Option<u32>) -> (String, Vec<String>) {
    let me = allowed_cpus("/proc/thread-self/status").unwrap_or_else(|| "?".to_owned());
    let mine = cpu_list(&me);
    let Some(pid) = server_pid else {
        return (format!("harness on CPU {me}"), Vec::new());
    };
    let mut threads: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut shared = Vec::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            let path = t.path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let Some(cpus) = allowed_cpus(&path.join("status").to_string_lossy()) else {
                continue;
            };
            let name = comm.trim().to_owned();
            if cpu_list(&cpus).iter().any(|c| mine.contains(c)) && !shared.contains(&name) {
                shared.push(name);
            }
            let e = threads
                .entry(comm.trim().to_owned())
                .or_insert((cpus.clone(), 0));
            e.1 += 1;
        }
    }
    let list: Vec<String> = threads
        .iter()
        .map(|(name, (cpus, n))| {
            if *n > 1 {
                format!("{name} ×{n} on {cpus}")
            } else {
                format!("{name} on {cpus}")
            }
        })
        .collect();
    (
        format!(
            "harness on CPU {me}; server threads: {}",
            if list.is_empty() {
                "?".to_owned()
            } else {
                list.join(", ")
            }
        ),
        shared,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list("0-2,5"), [0, 1, 2, 5]);
        assert_eq!(cpu_list("1\n"), [1]);
        assert!(cpu_list("").is_empty());
    }
}
