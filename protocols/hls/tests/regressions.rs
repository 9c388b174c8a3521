//! Inputs the HLS fuzz targets must keep handling: every seed (`fuzz/seeds/<target>/`) and
//! every input a fuzzer once crashed on (`fuzz/regressions/<target>/`), replayed through the
//! entry points the targets call. Run with
//! `cargo test -p zerocast-hls --features fuzzing --test regressions`.
#![cfg(feature = "fuzzing")]

use std::path::PathBuf;

use zerocast_hls::fuzz;

/// Runs `f` on every seed and regression input of `target`; returns how many it ran.
fn replay(target: &str, f: fn(&[u8])) -> usize {
    let mut n = 0;
    for kind in ["seeds", "regressions"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz")
            .join(kind)
            .join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        files.sort();
        for path in files {
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            f(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn hls_request() {
    assert!(replay("hls_request", fuzz::fuzz_request) > 0);
}

#[test]
fn hls_packager() {
    assert!(replay("hls_packager", fuzz::fuzz_packager) > 0);
}
