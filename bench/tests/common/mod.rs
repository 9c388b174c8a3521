//! Helpers shared by the bench crate's tests: the zerocast binary and the ffmpeg check.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent directory")
        .to_path_buf()
}

pub fn zerocast_debug_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_absolute() {
                t
            } else {
                workspace_root().join(t)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"));
    let bin = target.join("debug").join("zerocast");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let st = Command::new(cargo)
            .args(["build", "-p", "zerocast"])
            .current_dir(workspace_root())
            .status()
            .expect("running cargo build -p zerocast");
        assert!(st.success(), "cargo build -p zerocast failed: {st}");
    }
    assert!(bin.exists(), "no zerocast binary at {}", bin.display());
    bin
}

pub fn have_ffmpeg() -> bool {
    Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}
