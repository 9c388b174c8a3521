//! Entry points for the cargo-fuzz targets in `fuzz/` (feature `fuzzing`). They live here so
//! that they compile, and replay their seeds, in this crate's own tests.

use std::time::Instant;

use bytes::Bytes;
use zerocast_codecs::{ByteRope, CodecId, Frame, FramePayload, MediaKind, Track, TrackInfo};

use crate::{Packager, PackagerConfig, PlaylistRequest, Resource, Window};

/// The avcC ffmpeg 5.1 sends for the 1280x720 test clip (also a seed of `h264_avc_config`).
const AVCC: &[u8] = include_bytes!("fuzz_avcc.bin");

/// Query strings and file names as a client sends them: parse both, and render a playlist
/// of an empty window for whatever request parsed.
pub fn fuzz_request(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (query, file) = text.split_once('\n').unwrap_or((text, text));
    let _ = Resource::parse(file).map(|r| r.content_type());
    if let Ok(req) = PlaylistRequest::parse(query) {
        let window = Window::new(PackagerConfig::default());
        let _ = window.readiness(&req);
        let _ = window.media_playlist(&req);
    }
}

/// A publisher's frame sequence, driven by the input: each 4-byte record is one frame (kind,
/// keyframe flag, a dts step that may go back or jump, a payload length), or a track change.
/// Every update goes to a window, whose playlists, parts and segments are then read.
pub fn fuzz_packager(data: &[u8]) {
    let cfg = PackagerConfig {
        segment_duration: std::time::Duration::from_millis(400),
        part_duration: std::time::Duration::from_millis(100),
        window_segments: 3,
    };
    let video = Track {
        kind: MediaKind::Video,
        codec: CodecId::H264,
        config: Bytes::from_static(AVCC),
        timescale: 1000,
        info: TrackInfo {
            width: Some(1280),
            height: Some(720),
            fps: Some(30.0),
            ..Default::default()
        },
    };
    let audio = Track {
        kind: MediaKind::Audio,
        codec: CodecId::Aac,
        // AAC-LC, 48 kHz, stereo.
        config: Bytes::from_static(&[0x11, 0x90]),
        timescale: 1000,
        info: TrackInfo {
            sample_rate: Some(48_000),
            channels: Some(2),
            ..Default::default()
        },
    };
    let mut window = Window::new(cfg);
    let mut packager = Packager::new(cfg, None);
    let apply = |updates: Vec<crate::HlsUpdate>, window: &mut Window| {
        for u in &updates {
            window.apply(u);
        }
    };
    if let Ok(u) = packager.set_tracks(&[video.clone(), audio.clone()]) {
        apply(u, &mut window);
    }
    let payload = Bytes::from(vec![0x65u8; 256]);
    let mut dts = [0i64; 2];
    let now = Instant::now();
    for (n, rec) in data.chunks_exact(4).enumerate() {
        let kind = rec[0] % 8;
        if kind == 7 {
            // A track change: audio only, or both again.
            let tracks = if rec[1] % 2 == 0 {
                vec![audio.clone()]
            } else {
                vec![video.clone(), audio.clone()]
            };
            if let Ok(u) = packager.set_tracks(&tracks) {
                apply(u, &mut window);
            }
            continue;
        }
        let is_video = kind < 4;
        let t = usize::from(!is_video);
        let step = i64::from(i8::from_le_bytes([rec[2]])) * if rec[1] & 0x80 != 0 { 50 } else { 1 };
        dts[t] = dts[t].saturating_add(step);
        let len = usize::from(rec[3]);
        let body = ByteRope::from(payload.slice(..len.min(payload.len())));
        let frame = Frame {
            kind: if is_video {
                MediaKind::Video
            } else {
                MediaKind::Audio
            },
            dts: dts[t],
            pts: dts[t] + i64::from(rec[1] & 0x0f),
            keyframe: rec[1] & 0x40 != 0,
            ingest: now,
            payload: if is_video {
                FramePayload::Nalus(vec![body])
            } else {
                FramePayload::Raw(body)
            },
        };
        if let Ok(u) = packager.push_frame(&frame, 1_700_000_000_000) {
            apply(u, &mut window);
        }
        // Rendering every playlist after every frame would spend the fuzzer's time there.
        if n % 16 == 15 {
            read_everything(&window);
        }
    }
    apply(packager.end(), &mut window);
    read_everything(&window);
}

fn read_everything(window: &Window) {
    let _ = window.multivariant_playlist("media.m3u8");
    for req in ["", "_HLS_skip=YES", "_HLS_msn=3&_HLS_part=1"] {
        if let Ok(req) = PlaylistRequest::parse(req) {
            let _ = window.readiness(&req);
            let _ = window.media_playlist(&req);
        }
    }
    if let Some(last) = window.last_msn() {
        for msn in last.saturating_sub(4)..=last + 1 {
            let _ = window.segment(msn);
        }
    }
    let next = window.numbering.next_part_seq;
    for seq in next.saturating_sub(40)..=next.saturating_add(1) {
        let _ = window.part(seq);
    }
    let _ = window.init(1);
}
