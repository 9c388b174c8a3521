//! Entry points for cargo-fuzz targets (feature `fuzzing`). Each takes arbitrary bytes and
//! must never panic; round-trip entry points also check that muxing what was parsed gives
//! back the same parse.

use std::time::Instant;

use bytes::Bytes;

use crate::flv::{self, FlvTag};
use crate::media::{FramePayload, Track, TrackInfo};
use crate::rope::ByteRope;

/// Splits `data` into a rope of up to three parts, so parsers see part boundaries.
fn rope_of(data: &[u8]) -> ByteRope {
    let all = Bytes::copy_from_slice(data);
    let mut r = ByteRope::new();
    let (a, b) = (data.len() / 3, 2 * data.len() / 3);
    r.push(all.slice(..a));
    r.push(all.slice(a..b));
    r.push(all.slice(b..));
    r
}

fn track_for(codec: crate::CodecId, kind: crate::MediaKind) -> Track {
    Track {
        kind,
        codec,
        config: Bytes::new(),
        timescale: flv::TIMESCALE,
        info: TrackInfo::default(),
    }
}

/// Parses a video tag body (NAL length size from the first byte), re-muxes parsed frames and
/// checks that they parse back the same.
pub fn fuzz_flv_video(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let size = first % 5;
    let now = Instant::now();
    let Ok(FlvTag::Frame { codec, frame }) = flv::parse_video(&rope_of(rest), 1000, now, size)
    else {
        return;
    };
    let mut out = ByteRope::new();
    flv::video_body(&track_for(codec, frame.kind), &frame, &mut out);
    if let FramePayload::Nalus(n) = &frame.payload {
        // Re-muxed H.264/H.265 frames use 4-byte lengths.
        let again = flv::parse_video(&out, frame.dts, now, 4);
        let cts_fits = (frame.pts - frame.dts).abs() < (1 << 23);
        if cts_fits && n.iter().all(|x| x.len() <= u32::MAX as usize) {
            match again {
                Ok(FlvTag::Frame { frame: f2, .. }) => {
                    assert_eq!(f2.payload.len(), frame.payload.len());
                    assert_eq!(f2.pts, frame.pts);
                }
                other => panic!("re-muxed frame did not parse: {other:?}"),
            }
        }
    }
}

/// Parses an audio tag body and re-muxes parsed frames.
pub fn fuzz_flv_audio(data: &[u8]) {
    let now = Instant::now();
    if let Ok(FlvTag::Frame { codec, frame }) = flv::parse_audio(&rope_of(data), 0, now) {
        let mut out = ByteRope::new();
        flv::audio_body(&track_for(codec, frame.kind), &frame, &mut out);
        assert!(out.len() >= frame.payload.len());
    }
}

/// Parses an SPS NAL unit.
pub fn fuzz_h264_sps(data: &[u8]) {
    let _ = crate::h264::Sps::parse(data);
}

/// Parses an AVCDecoderConfigurationRecord and checks encode/parse round-trips.
pub fn fuzz_avc_config(data: &[u8]) {
    if let Ok(c) = crate::h264::AvcDecoderConfig::parse(&Bytes::copy_from_slice(data)) {
        if let Ok(enc) = c.encode() {
            let again = crate::h264::AvcDecoderConfig::parse(&enc);
            assert_eq!(again.as_ref().ok(), Some(&c));
        }
    }
}

/// Parses an SEI NAL unit.
pub fn fuzz_sei(data: &[u8]) {
    if let Ok(msgs) = crate::h264::sei::parse_nal(data) {
        for m in msgs {
            let _ = m.user_data_unregistered();
        }
    }
}

/// Parses an AudioSpecificConfig and an ADTS header.
pub fn fuzz_aac_config(data: &[u8]) {
    if let Ok(asc) = crate::aac::AudioSpecificConfig::parse(data) {
        let _ = asc.channels();
        let _ = asc.encode();
    }
    let _ = crate::aac::AdtsHeader::parse(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short deterministic mutation run over seed inputs, so `cargo test --features fuzzing`
    /// exercises every entry point.
    #[test]
    fn smoke() {
        let seeds: [&[u8]; 8] = [
            &[
                4, 0x17, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, 0x88, 0, 0, 0, 1, 0x06,
            ],
            b"\x04\xa1hvc1\x00\x00\x05\x00\x00\x00\x02\x02\x01",
            b"\x04\x97\x00\x00\x01av01\x12\x00",
            &[0xaf, 0x00, 0x11, 0x90],
            b"\x90OpusOpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00",
            &[
                0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10,
            ],
            &[
                0x06, 0x05, 0x12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 0xaa,
                0xbb, 0x80,
            ],
            &[
                0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x02, 0x67, 0x64, 0x01, 0x00, 0x01, 0x68,
            ],
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for seed in seeds {
            for _ in 0..2000 {
                let mut d = seed.to_vec();
                for _ in 0..(next() % 4) {
                    let r = next();
                    match r % 3 {
                        0 if !d.is_empty() => {
                            let i = (r >> 8) as usize % d.len();
                            d[i] = (r >> 32) as u8;
                        }
                        1 if !d.is_empty() => {
                            d.truncate((r >> 8) as usize % d.len());
                        }
                        _ => d.push((r >> 16) as u8),
                    }
                }
                fuzz_flv_video(&d);
                fuzz_flv_audio(&d);
                fuzz_h264_sps(&d);
                fuzz_avc_config(&d);
                fuzz_sei(&d);
                fuzz_aac_config(&d);
            }
        }
    }
}

/// Demuxes arbitrary bytes as a transport stream, whole and split in two; both must give the
/// same events when both succeed.
pub fn fuzz_ts_demux(data: &[u8]) {
    let now = Instant::now();
    let run = |chunks: &[&[u8]]| {
        let config = crate::ts::DemuxConfig {
            max_pes_size: 1 << 16,
            max_resync: 1 << 12,
        };
        let mut d = crate::ts::Demuxer::new(config);
        let mut ev = Vec::new();
        for c in chunks {
            d.push(Bytes::copy_from_slice(c), now, &mut ev).ok()?;
        }
        d.flush(&mut ev).ok()?;
        Some(ev.iter().map(ts_event_summary).collect::<Vec<_>>())
    };
    let mid = data.len() / 2;
    if let (Some(a), Some(b)) = (run(&[data]), run(&[&data[..mid], &data[mid..]])) {
        assert_eq!(a, b);
    }
}

fn ts_event_summary(e: &crate::ts::DemuxEvent) -> (i64, i64, bool, Vec<u8>) {
    match e {
        crate::ts::DemuxEvent::Track(t) => (-1, -1, false, t.config.to_vec()),
        crate::ts::DemuxEvent::Frame(f) => {
            let mut bytes = Vec::new();
            match &f.payload {
                FramePayload::Nalus(n) => n
                    .iter()
                    .for_each(|x| bytes.extend_from_slice(&x.to_contiguous())),
                FramePayload::Raw(r) => bytes.extend_from_slice(&r.to_contiguous()),
            }
            (f.dts, f.pts, f.keyframe, bytes)
        }
    }
}

/// AVCDecoderConfigurationRecord of x264 at 1280x720 (High profile), for the TS round trip.
const TS_FUZZ_AVCC: &[u8] = &[
    0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50,
    0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83,
    0x19, 0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0xfd, 0xf8, 0xf8, 0x00,
];

/// Builds H.264 and AAC frames from the bytes, muxes them, demuxes the result and checks that
/// the frames come back unchanged.
pub fn fuzz_ts_roundtrip(data: &[u8]) {
    use crate::{Frame, MediaKind};
    let asc = crate::aac::AudioSpecificConfig::new(2, 48_000, 2)
        .encode()
        .unwrap_or_default();
    let tracks = vec![
        Track {
            config: Bytes::from_static(TS_FUZZ_AVCC),
            ..track_for(crate::CodecId::H264, MediaKind::Video)
        },
        Track {
            config: asc,
            ..track_for(crate::CodecId::Aac, MediaKind::Audio)
        },
    ];
    let now = Instant::now();
    let (mut frames, mut rest, mut dts) = (Vec::new(), data, [0i64; 2]);
    while let [b, len, tail @ ..] = rest {
        let len = (usize::from(*len) * 4).min(tail.len());
        let (body, tail) = tail.split_at(len);
        rest = tail;
        let video = b & 1 == 1;
        dts[usize::from(video)] += i64::from(b >> 3);
        let payload = if video {
            // One slice NAL unit (IDR when bit 1 is set) with emulation prevention applied.
            let mut rbsp = body.to_vec();
            rbsp.push(0x80);
            let mut nal = vec![if b & 2 != 0 { 0x65 } else { 0x41 }];
            nal.extend(crate::bits::add_emulation_prevention(&rbsp));
            FramePayload::Nalus(vec![rope_of(&nal)])
        } else {
            FramePayload::Raw(rope_of(body))
        };
        let d = dts[usize::from(video)];
        let pts = d + i64::from(b >> 6) * 33 * i64::from(video);
        let keyframe = !video || b & 2 != 0;
        let kind = if video {
            MediaKind::Video
        } else {
            MediaKind::Audio
        };
        frames.push(Frame {
            kind,
            dts: d,
            pts,
            keyframe,
            ingest: now,
            payload,
        });
    }
    let Ok(mut muxer) = crate::ts::Muxer::new(tracks) else {
        panic!("the fuzz tracks are valid");
    };
    let mut out = ByteRope::new();
    for f in &frames {
        muxer.mux(f, &mut out).expect("muxing a well-formed frame");
    }
    let mut d = crate::ts::Demuxer::default();
    let mut ev = Vec::new();
    d.push(out.to_contiguous(), now, &mut ev)
        .expect("demuxing our own mux");
    d.flush(&mut ev).expect("demuxing our own mux");
    for kind in [MediaKind::Video, MediaKind::Audio] {
        let summary = |f: &Frame| ts_event_summary(&crate::ts::DemuxEvent::Frame(f.clone()));
        let sent: Vec<_> = frames
            .iter()
            .filter(|f| f.kind == kind)
            .map(summary)
            .collect();
        let got: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                crate::ts::DemuxEvent::Frame(f) if f.kind == kind => Some(summary(f)),
                _ => None,
            })
            .collect();
        // Video before the first keyframe is dropped: the track is not known yet.
        let skip = if kind == MediaKind::Video {
            sent.iter().position(|s| s.2).unwrap_or(sent.len())
        } else {
            0
        };
        assert_eq!(got, sent[skip..], "{kind:?}");
    }
}

#[cfg(test)]
mod ts_smoke {
    /// A deterministic mutation run over a muxed stream and the round trip.
    #[test]
    fn ts_entry_points() {
        let seed: Vec<u8> = (0..3000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        super::fuzz_ts_roundtrip(&seed);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for n in 0..300 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut d = seed[..(state as usize % seed.len())].to_vec();
            if let Some(x) = d.get_mut((state >> 20) as usize % seed.len()) {
                *x ^= (state >> 40) as u8;
            }
            super::fuzz_ts_roundtrip(&d);
            if n % 10 == 0 {
                super::fuzz_ts_demux(&d);
            }
        }
    }
}
