//! Runs `zerocast-bench chaos` briefly against a debug zerocast while a real ffmpeg stream
//! plays: the server must stay up, keep the stream whole and keep its memory bounded.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{have_ffmpeg, zerocast_debug_bin};

/// Kills the child by PID when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn chaos_leaves_server_and_stream_intact() {
    assert!(have_ffmpeg(), "ffmpeg not found: run ./scripts/test");
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = dir.path().join("clip.flv");
    let st = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "4",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
        ])
        .args([
            "-pix_fmt", "yuv420p", "-g", "30", "-c:a", "aac", "-ac", "2", "-y",
        ])
        .arg(&clip)
        .status()
        .expect("ffmpeg runs");
    assert!(st.success(), "clip encoding failed");

    let port = free_port();
    let config = dir.path().join("zerocast.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = {:?}\nshards = 2\n[rtmp]\nlisten = \"127.0.0.1:{port}\"\n\
             [http]\nlisten = \"\"\n[auth]\npublish = \"open\"\n[limits]\nhandshake_timeout = \"3s\"\n[log]\nlevel = \"warn\"\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let server = Guard(
        Command::new(zerocast_debug_bin())
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("server.err")).unwrap())
            .spawn()
            .expect("zerocast starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "zerocast did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("rtmp://127.0.0.1:{port}/live/chaos");
    let _publisher = Guard(
        Command::new("ffmpeg")
            .args(["-v", "error", "-re", "-stream_loop", "-1", "-i"])
            .arg(&clip)
            .args(["-c", "copy", "-f", "flv", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg publisher starts"),
    );
    std::thread::sleep(Duration::from_secs(2));
    let out = Command::new(env!("CARGO_BIN_EXE_zerocast-bench"))
        .args([
            "chaos",
            "--url",
            &url,
            "--duration",
            "15",
            "--connections",
            "8",
        ])
        .arg("--server-pid")
        .arg(server.0.id().to_string())
        .output()
        .expect("zerocast-bench chaos runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = std::fs::read_to_string(dir.path().join("server.err")).unwrap_or_default();
    assert!(
        out.status.success(),
        "chaos failed ({}):\n{stdout}\n{stderr}\n--- server log ---\n{log}",
        out.status
    );
}
