//! Runs `zerocast-bench smoke` against a debug zerocast: 3 viewers, 3 s, frames must flow.
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
