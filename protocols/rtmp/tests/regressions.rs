//! Inputs that the fuzz targets must keep handling: every seed recorded from a real peer
//! (`fuzz/seeds/<target>/`) and every input a fuzzer once crashed on
//! (`fuzz/regressions/<target>/`), replayed through the same entry points the targets call.
//! Run with `cargo test -p zerocast-rtmp --features fuzzing --test regressions`.
#![cfg(feature = "fuzzing")]

use std::path::PathBuf;

use zerocast_rtmp::{fuzz, Amf0Limits, Command};

/// The files of `fuzz/<kind>/<target>/`, sorted; none when the folder does not exist.
fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, data)
        })
        .collect()
}

/// Runs `f` on every seed and regression input of `target`; returns how many it ran.
fn replay(target: &str, f: fn(&[u8])) -> usize {
    let mut n = 0;
    for kind in ["seeds", "regressions"] {
        for (path, data) in inputs(kind, target) {
            eprintln!("{}", path.display());
            f(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn handshake() {
    assert!(replay("rtmp_handshake", fuzz::fuzz_handshake) > 0);
}

#[test]
fn chunk() {
    assert!(replay("rtmp_chunk", fuzz::fuzz_chunk) > 0);
}

#[test]
fn amf0() {
    assert!(replay("rtmp_amf0", fuzz::fuzz_amf0) > 0);
}

#[test]
fn amf0_roundtrip() {
    assert!(replay("rtmp_amf0_roundtrip", fuzz::fuzz_amf0_roundtrip) > 0);
}

#[test]
fn chunk_roundtrip() {
    assert!(replay("rtmp_chunk_roundtrip", fuzz::fuzz_chunk_roundtrip) > 0);
}

#[test]
fn server_session() {
    assert!(replay("rtmp_server_session", fuzz::fuzz_server_session) > 0);
}

#[test]
fn client_session() {
    assert!(replay("rtmp_client_session", fuzz::fuzz_client_session) > 0);
}

#[test]
fn command() {
    fn decode(data: &[u8]) {
        let _ = Command::decode(data, &Amf0Limits::default());
    }
    assert!(replay("rtmp_command", decode) > 0);
}

/// The recorded ffmpeg commands decode to the commands ffmpeg sent.
#[test]
fn recorded_commands_decode() {
    for (path, data) in inputs("seeds", "rtmp_command") {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let c = Command::decode(&data, &Amf0Limits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if !name.ends_with("-metadata.bin") {
            assert!(
                name.contains(&format!("-{}.bin", c.name)),
                "{name}: {}",
                c.name
            );
        }
    }
}
