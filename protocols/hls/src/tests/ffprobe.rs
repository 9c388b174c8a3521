//! The real ffprobe (ffmpeg 5.1, no LL-HLS support) reads what the packager made: the init
//! segment and segments concatenated, and the ended playlist itself.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use super::*;
use crate::PlaylistRequest;

/// `-show_streams -count_frames` of `input`, as `index.key -> value`; asserts that ffprobe
/// and the decoders had nothing to complain about.
fn probe(input: &Path) -> HashMap<String, String> {
    let ffprobe = Path::new("/usr/bin/ffprobe");
    assert!(
        ffprobe.exists(),
        "ffprobe not found: `apt-get install ffmpeg`"
    );
    let out = Command::new(ffprobe)
        .args([
            "-v",
            "error",
            "-show_streams",
            "-count_frames",
            "-of",
            "flat",
        ])
        .arg(input)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "{}: {stderr}",
        input.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim_start_matches("streams.stream.").to_owned(),
                v.trim_matches('"').to_owned(),
            )
        })
        .collect()
}

#[test]
fn ffprobe_decodes_segments_and_playlist() {
    let frames = stream(6, true, true);
    let (mut p, mut w, _) = packaged(PackagerConfig::default(), 0);
    feed(&mut p, &mut w, &frames);
    p.end().iter().for_each(|u| w.apply(u));
    let dir = std::env::temp_dir().join(format!("zerocast-hls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let init = w.init(0).unwrap();
    let mut all = init.to_vec();
    std::fs::write(dir.join("init-0.mp4"), &init).unwrap();
    for msn in 0..3 {
        let seg = w.segment(msn).unwrap().concat();
        std::fs::write(dir.join(format!("seg-{msn}.m4s")), &seg).unwrap();
        all.extend(seg);
    }
    std::fs::write(dir.join("all.mp4"), &all).unwrap();
    std::fs::write(
        dir.join("media.m3u8"),
        w.media_playlist(&PlaylistRequest::default()),
    )
    .unwrap();
    let (whole, playlist) = (probe(&dir.join("all.mp4")), probe(&dir.join("media.m3u8")));
    let _ = std::fs::remove_dir_all(&dir);

    // Audio after the last video frame's part is dropped at the end.
    let audio = frames
        .iter()
        .filter(|(f, _)| f.kind == MediaKind::Audio && f.dts < 5967)
        .count();
    for fields in [&whole, &playlist] {
        let get = |k: &str| {
            fields
                .get(k)
                .map(String::as_str)
                .unwrap_or_else(|| panic!("{k}: {fields:?}"))
        };
        let keys = ["0.codec_name", "0.width", "0.height", "0.nb_read_frames"];
        assert_eq!(keys.map(get), ["h264", "1280", "720", "180"]);
        let keys = ["1.codec_name", "1.sample_rate", "1.channels"];
        assert_eq!(keys.map(get), ["aac", "48000", "2"]);
        assert_eq!(get("1.nb_read_frames"), audio.to_string());
    }
}
