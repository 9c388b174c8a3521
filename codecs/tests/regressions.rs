//! Inputs that the codec fuzz targets must keep handling: every seed recorded from a real
//! peer (`fuzz/seeds/<target>/`) and every input a fuzzer once crashed on
//! (`fuzz/regressions/<target>/`), replayed through the same entry points the targets call.
//! Run with `cargo test -p zerocast-codecs --features fuzzing --test regressions`.
#![cfg(feature = "fuzzing")]

use std::path::PathBuf;

use zerocast_codecs::fuzz;

/// The files of `fuzz/<kind>/<target>/`, sorted; none when the folder does not exist.
fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
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
fn flv_video() {
    assert!(replay("flv_video", fuzz::fuzz_flv_video) > 0);
}

#[test]
fn flv_audio() {
    assert!(replay("flv_audio", fuzz::fuzz_flv_audio) > 0);
}

#[test]
fn h264_sps() {
    assert!(replay("h264_sps", fuzz::fuzz_h264_sps) > 0);
}

#[test]
fn h264_avc_config() {
    assert!(replay("h264_avc_config", fuzz::fuzz_avc_config) > 0);
}

#[test]
fn h264_sei() {
    assert!(replay("h264_sei", fuzz::fuzz_sei) > 0);
}

#[test]
fn aac_config() {
    assert!(replay("aac_config", fuzz::fuzz_aac_config) > 0);
}

/// The recorded x264 SPS parses (the seed must stay a meaningful one).
#[test]
fn recorded_sps_parses() {
    for (path, data) in inputs("seeds", "h264_sps") {
        if path.to_string_lossy().ends_with("-sps.bin") {
            zerocast_codecs::h264::Sps::parse(&data)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}
