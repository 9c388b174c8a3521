//! Runs `zerocast-bench smoke` against a debug zerocast: 3 viewers, 3 s, frames must flow;
//! and `zerocast-bench hls` against a debug zerocast with HTTP on: LL-HLS parts must flow.
//!
//! Needs ffmpeg the first time (it encodes the cached clip) and the zerocast binary, which is
//! built here with `cargo build -p zerocast` when missing.

mod common;

use std::process::Command;

use common::{have_ffmpeg, zerocast_debug_bin};

#[test]
fn smoke_run_delivers_frames() {
    assert!(have_ffmpeg(), "ffmpeg not found: run ./scripts/test");
    let zerocast = zerocast_debug_bin();
    let out = Command::new(env!("CARGO_BIN_EXE_zerocast-bench"))
        .arg("smoke")
        .arg("--zerocast-bin")
        .arg(&zerocast)
        .output()
        .expect("running zerocast-bench smoke");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "zerocast-bench smoke failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("smoke: ok"), "unexpected output:\n{stdout}");
}

/// Kills the child by PID when dropped.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `zerocast-bench hls` against a debug zerocast with HTTP on: 5 LL-HLS clients for 4 s must
/// receive stamped parts, with latency p99 under 1 s, no error and no part missed.
#[test]
fn hls_smoke_run_receives_parts() {
    use std::time::{Duration, Instant};

    assert!(have_ffmpeg(), "ffmpeg not found: run ./scripts/test");
    let dir = tempfile::tempdir().expect("tempdir");
    let (rtmp, http) = (free_port(), free_port());
    let config = dir.path().join("zerocast.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = {:?}\nshards = 1\n[rtmp]\nlisten = \"127.0.0.1:{rtmp}\"\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n[srt]\nlisten = \"\"\n[auth]\npublish = \"open\"\n\
             [limits]\nmax_connections_per_ip = 1000\n[log]\nlevel = \"warn\"\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .expect("config written");
    let log = dir.path().join("server.log");
    let server = Guard(
        Command::new(zerocast_debug_bin())
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("zerocast starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    for port in [rtmp, http] {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "zerocast did not listen on {port}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let out_dir = dir.path().join("out");
    let out = Command::new(env!("CARGO_BIN_EXE_zerocast-bench"))
        .arg("hls")
        .arg("--url")
        .arg(format!("http://127.0.0.1:{http}/hls/smoke/media.m3u8"))
        .arg("--publish-url")
        .arg(format!("rtmp://127.0.0.1:{rtmp}/live/smoke"))
        .args(["--clients", "5", "--duration", "4", "--warmup", "1"])
        .arg("--server-pid")
        .arg(server.0.id().to_string())
        .arg("--out")
        .arg(&out_dir)
        .output()
        .expect("running zerocast-bench hls");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let server_log = std::fs::read_to_string(&log).unwrap_or_default();
    let context = format!("{stdout}\n{stderr}\n--- server log ---\n{server_log}");
    assert!(
        out.status.success(),
        "zerocast-bench hls failed ({}):\n{context}",
        out.status
    );
    let json = std::fs::read_dir(&out_dir)
        .expect("--out written")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with("-hls.json"))
        .unwrap_or_else(|| panic!("no <date>-hls.json in --out:\n{context}"));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).expect("JSON readable"))
            .expect("valid JSON");
    let step = &v["steps"][0];
    let parts = step["parts_received"].as_u64().unwrap_or(0);
    let p99 = step["latency"]["p99_us"].as_u64().unwrap_or(u64::MAX);
    let errors = step["errors"]["total"].as_u64().unwrap_or(u64::MAX);
    let missed = step["errors"]["parts_missed"].as_u64().unwrap_or(u64::MAX);
    assert!(parts > 0, "no part received:\n{context}");
    assert!(p99 < 1_000_000, "latency p99 {p99} µs ≥ 1 s:\n{context}");
    assert_eq!(errors, 0, "errors:\n{context}");
    assert_eq!(missed, 0, "parts missed:\n{context}");
}
