//! Synthetic streams (a decodable H.264 720p30 and AAC 48 kHz, millisecond timestamps as RTMP
//! gives them) and the helpers the test files share.

mod ffprobe;
mod packaging;
mod serving;

use std::time::{Duration, Instant};

use bytes::Bytes;
use zerocast_codecs::bits::{add_emulation_prevention, BitWriter};
use zerocast_codecs::h264::AvcDecoderConfig;
use zerocast_codecs::{ByteRope, CodecId, Frame, FramePayload, MediaKind, Track, TrackInfo};

use crate::{HlsUpdate, Packager, PackagerConfig, Window};

/// Unix time of the first frame.
const T0: u64 = 1_700_000_000_000;

fn nal(header: u8, w: BitWriter) -> Bytes {
    let mut v = vec![header];
    v.extend(add_emulation_prevention(&w.finish_rbsp()));
    Bytes::from(v)
}

/// Constrained Baseline, level 3.1, 1280x720 (80x45 macroblocks), CAVLC, POC type 2.
fn sps_pps() -> (Bytes, Bytes) {
    let mut w = BitWriter::new();
    w.bits(24, 0x42_c0_1f);
    for v in [0, 0, 2, 1] {
        w.ue(v); // sps id, log2_max_frame_num - 4, poc type, max_num_ref_frames
    }
    w.flag(false); // gaps_in_frame_num_allowed
    w.ue(79);
    w.ue(44);
    w.bits(4, 0b1100); // frame_mbs_only, direct_8x8, no cropping, no VUI
    let sps = nal(0x67, w);
    let mut w = BitWriter::new();
    w.ue(0); // pps id
    w.ue(0); // sps id
    w.bits(2, 0); // CAVLC, no field POC
    (0..3).for_each(|_| w.ue(0)); // one slice group, one ref in each list
    w.bits(3, 0); // no weighted prediction
    (0..3).for_each(|_| w.se(0)); // QP 26, QS 26, chroma offset 0
    w.bits(3, 0b100); // deblocking control present, no constrained intra, no redundant pic cnt
    (sps, nal(0x68, w))
}

/// An IDR picture: every macroblock I_16x16 DC prediction without residual (8 bits each).
fn idr(idr_pic_id: u32) -> Bytes {
    let mut w = BitWriter::new();
    w.ue(0); // first_mb_in_slice
    w.ue(7); // I, all slices
    w.ue(0); // pps id
    w.bits(4, 0); // frame_num
    w.ue(idr_pic_id);
    w.bits(2, 0); // no_output_of_prior_pics, long_term_reference
    w.se(0); // slice_qp_delta
    w.ue(1); // deblocking off
    for _ in 0..3600 {
        w.bits(8, 0b0010_0111); // mb_type 3, chroma DC, qp delta 0, empty DC coeff_token
    }
    nal(0x65, w)
}

/// A P picture of skipped macroblocks.
fn p_slice(frame_num: u32) -> Bytes {
    let mut w = BitWriter::new();
    w.ue(0);
    w.ue(5); // P, all slices
    w.ue(0);
    w.bits(4, frame_num % 16);
    w.bits(3, 0); // no ref idx override, no list modification, no adaptive marking
    w.se(0);
    w.ue(1);
    w.ue(3600); // mb_skip_run: the whole picture
    nal(0x41, w)
}

fn h264_track() -> Track {
    let (sps, pps) = sps_pps();
    let config = AvcDecoderConfig::from_parameter_sets(vec![sps], vec![pps])
        .and_then(|c| c.encode())
        .unwrap();
    let info = TrackInfo {
        width: Some(1280),
        height: Some(720),
        fps: Some(30.0),
        ..Default::default()
    };
    Track {
        kind: MediaKind::Video,
        codec: CodecId::H264,
        config,
        timescale: 1000,
        info,
    }
}

fn aac_track() -> Track {
    let info = TrackInfo {
        sample_rate: Some(48_000),
        channels: Some(2),
        ..Default::default()
    };
    Track {
        kind: MediaKind::Audio,
        codec: CodecId::Aac,
        config: Bytes::from_static(&[0x11, 0x90]),
        timescale: 1000,
        info,
    }
}

fn frame(kind: MediaKind, dts: i64, keyframe: bool, payload: FramePayload) -> Frame {
    let ingest = Instant::now();
    Frame {
        kind,
        dts,
        pts: dts,
        keyframe,
        ingest,
        payload,
    }
}

/// `secs` of 30 fps video (a keyframe every 2 s) and/or AAC, interleaved by dts as RTMP
/// delivers them, each with its arrival time in Unix milliseconds.
fn stream(secs: i64, video: bool, audio: bool) -> Vec<(Frame, u64)> {
    let vdts = |i: i64| (i * 1000 + 15) / 30;
    let adts = |i: i64| (i * 1024 * 1000 + 24_000) / 48_000;
    let idrs = [idr(0), idr(1)];
    let silence = Bytes::from_static(&[0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c]);
    let (mut vi, mut ai, mut out) = (0, 0, Vec::new());
    loop {
        let (v, a) = (vdts(vi), adts(ai));
        let take_video = video && v < secs * 1000 && (!audio || v <= a);
        if take_video {
            let key = vi % 60 == 0;
            let nal = if key {
                idrs[(vi / 60 % 2) as usize].clone()
            } else {
                p_slice((vi % 60) as u32)
            };
            let payload = FramePayload::Nalus(vec![ByteRope::from(nal)]);
            out.push((frame(MediaKind::Video, v, key, payload), T0 + v as u64));
            vi += 1;
        } else if audio && a < secs * 1000 {
            let payload = FramePayload::Raw(ByteRope::from(silence.clone()));
            out.push((frame(MediaKind::Audio, a, true, payload), T0 + a as u64));
            ai += 1;
        } else if !(video && v < secs * 1000) {
            return out;
        }
    }
}

/// Packages `frames`, applies every update to `window`, and returns the updates.
fn feed(p: &mut Packager, window: &mut Window, frames: &[(Frame, u64)]) -> Vec<HlsUpdate> {
    let mut all = Vec::new();
    for (f, wall) in frames {
        all.extend(p.push_frame(f, *wall).unwrap());
    }
    all.iter().for_each(|u| window.apply(u));
    all
}

/// A packager and window that have packaged `secs` of `stream(secs, true, true)`.
fn packaged(cfg: PackagerConfig, secs: i64) -> (Packager, Window, Vec<HlsUpdate>) {
    let mut p = Packager::new(cfg, None);
    let mut w = Window::new(cfg);
    let mut all = p.set_tracks(&[h264_track(), aac_track()]).unwrap();
    all.iter().for_each(|u| w.apply(u));
    all.extend(feed(&mut p, &mut w, &stream(secs, true, true)));
    (p, w, all)
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}
