use super::*;

fn now() -> Instant {
    // One instant per test process keeps frames comparable.
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn rope(parts: &[&[u8]]) -> ByteRope {
    let mut r = ByteRope::new();
    for p in parts {
        r.push(Bytes::copy_from_slice(p));
    }
    r
}

fn contiguous(b: &[u8]) -> ByteRope {
    ByteRope::from(b.to_vec())
}

fn seq_header(tag: FlvTag) -> Track {
    match tag {
        FlvTag::SequenceHeader(t) => t,
        other => panic!("expected a sequence header, got {other:?}"),
    }
}

fn frame_of(tag: FlvTag) -> (CodecId, Frame) {
    match tag {
        FlvTag::Frame { codec, frame } => (codec, frame),
        other => panic!("expected a frame, got {other:?}"),
    }
}

fn h264_track() -> Track {
    let mut body = vec![0x17, 0, 0, 0, 0];
    body.extend_from_slice(&crate::h264::tests::x264_720p_avcc());
    seq_header(parse_video(&contiguous(&body), 0, now(), 4).unwrap())
}

fn video_frame(dts: i64, pts: i64, keyframe: bool, payload: FramePayload) -> Frame {
    Frame {
        kind: MediaKind::Video,
        dts,
        pts,
        keyframe,
        ingest: now(),
        payload,
    }
}

fn mux_video(track: &Track, frame: &Frame) -> ByteRope {
    let mut out = ByteRope::new();
    video_body(track, frame, &mut out);
    out
}

#[test]
fn h264_sequence_header_from_x264() {
    let t = h264_track();
    assert_eq!(t.kind, MediaKind::Video);
    assert_eq!(t.codec, CodecId::H264);
    assert_eq!(t.timescale, 1000);
    assert_eq!(t.info.width, Some(1280));
    assert_eq!(t.info.height, Some(720));
    assert_eq!(t.info.fps, Some(30.0));
    assert_eq!(t.info.profile, Some(100));
    assert_eq!(t.info.level, Some(31));
    assert_eq!(t.config, crate::h264::tests::x264_720p_avcc());
    assert_eq!(nalu_length_size(&t), 4);
    // Mux back: the same bytes, and they parse to the same track.
    let header = video_sequence_header(&t);
    assert_eq!(&header[..5], &[0x17, 0, 0, 0, 0]);
    assert_eq!(&header[5..], &t.config[..]);
    assert_eq!(
        seq_header(parse_video(&header.into(), 0, now(), 4).unwrap()),
        t
    );
}

#[test]
fn h264_sequence_header_split_across_parts() {
    let mut body = vec![0x17, 0, 0, 0, 0];
    body.extend_from_slice(&crate::h264::tests::x264_720p_avcc());
    let whole = seq_header(parse_video(&contiguous(&body), 0, now(), 4).unwrap());
    for cut in 0..body.len() {
        let r = rope(&[&body[..cut], &body[cut..]]);
        assert_eq!(seq_header(parse_video(&r, 0, now(), 4).unwrap()), whole);
    }
}

#[test]
fn h264_frames_round_trip() {
    let t = h264_track();
    // An SEI, an IDR slice spanning three rope parts, and a tiny NAL.
    let sei = crate::h264::sei::build_user_data_unregistered(&[7; 16], b"stamp");
    let mut idr = ByteRope::new();
    idr.push(Bytes::from_static(&[0x65, 0x88, 0x84]));
    idr.push(Bytes::from(vec![0xab; 1000]));
    idr.push(Bytes::from_static(&[0x00, 0x00, 0x01]));
    let small = ByteRope::from(vec![0x06]);
    let nalus = vec![ByteRope::from(sei.clone()), idr, small];
    for (dts, pts, key) in [(0, 0, true), (1000, 1066, false), (5000, 4967, false)] {
        let f = video_frame(dts, pts, key, FramePayload::Nalus(nalus.clone()));
        let body = mux_video(&t, &f);
        // Header, then length + NAL parts for each NAL, all slices of one header buffer.
        assert_eq!(body.parts().len(), 1 + (1 + 1) + (1 + 3) + (1 + 1));
        assert_eq!(body.get(0), Some(if key { 0x17 } else { 0x27 }));
        assert_eq!(body.len(), 5 + 12 + sei.len() + 1006 + 1);
        let (codec, back) = frame_of(parse_video(&body, dts, now(), 4).unwrap());
        assert_eq!(codec, CodecId::H264);
        assert_eq!(back, f);
        // The SEI stamp survives.
        let FramePayload::Nalus(n) = &back.payload else {
            panic!("not NAL units")
        };
        assert_eq!(
            crate::h264::sei::find_user_data_unregistered(n, &[7; 16]).as_deref(),
            Some(&b"stamp"[..])
        );
    }
}

#[test]
fn h264_input_nal_split_across_parts_is_shared() {
    // 2-byte NAL lengths, NAL units split across the input rope's parts.
    let body = [
        0x27, 1, 0, 0, 0x21, 0, 3, 0x41, 0x9a, 0x02, 0, 2, 0x41, 0x9b,
    ];
    let whole = frame_of(parse_video(&contiguous(&body), 7, now(), 2).unwrap()).1;
    assert_eq!(whole.pts, 7 + 0x21);
    assert!(!whole.keyframe);
    for cut in 1..body.len() {
        let r = rope(&[&body[..cut], &body[cut..]]);
        let f = frame_of(parse_video(&r, 7, now(), 2).unwrap()).1;
        assert_eq!(f.payload.len(), 5);
        let FramePayload::Nalus(n) = &f.payload else {
            panic!()
        };
        assert_eq!(
            n[0].to_contiguous(),
            Bytes::from_static(&[0x41, 0x9a, 0x02])
        );
        assert_eq!(n[1].to_contiguous(), Bytes::from_static(&[0x41, 0x9b]));
        // Zero-copy: every NAL part points into the input parts.
        for part in n.iter().flat_map(|x| x.parts()) {
            assert!(r.parts().iter().any(|p| {
                let (a, b) = (p.as_ptr() as usize, part.as_ptr() as usize);
                b >= a && b + part.len() <= a + p.len()
            }));
        }
    }
}

#[test]
fn h265_round_trip() {
    let mut body = vec![0x90, b'h', b'v', b'c', b'1'];
    body.extend_from_slice(&crate::h265::tests::x265_720p_hvcc());
    let t = seq_header(parse_video(&contiguous(&body), 0, now(), 4).unwrap());
    assert_eq!(t.codec, CodecId::H265);
    assert_eq!((t.info.width, t.info.height), (Some(1280), Some(720)));
    assert_eq!((t.info.profile, t.info.level), (Some(1), Some(93)));
    assert_eq!(nalu_length_size(&t), 4);
    assert_eq!(&video_sequence_header(&t)[..], &body[..]);
    let nalus = vec![
        ByteRope::from(vec![0x26, 0x01, 0xaf, 0x00]),
        rope(&[&[0x02, 0x01], &[0xd0, 0x00, 0x00, 0x03]]),
    ];
    for (dts, pts, key, header) in [
        (40, 40, true, 0x93u8),   // CodedFramesX
        (80, 113, false, 0xa1u8), // CodedFrames with composition time
    ] {
        let f = video_frame(dts, pts, key, FramePayload::Nalus(nalus.clone()));
        let out = mux_video(&t, &f);
        assert_eq!(out.get(0), Some(header));
        let (codec, back) = frame_of(parse_video(&out, dts, now(), 4).unwrap());
        assert_eq!(codec, CodecId::H265);
        assert_eq!(back, f);
    }
    // Legacy codec id 12 with AVC-style framing.
    let legacy = [0x1c, 1, 0, 0, 5, 0, 0, 0, 2, 0x26, 0x01];
    let (codec, f) = frame_of(parse_video(&contiguous(&legacy), 0, now(), 4).unwrap());
    assert_eq!(codec, CodecId::H265);
    assert_eq!((f.pts, f.keyframe, f.payload.len()), (5, true, 2));
}

#[test]
fn av1_and_vp9_round_trip() {
    for (codec, fourcc, config) in [
        (CodecId::Av1, *b"av01", vec![0x81, 0x08, 0x0c, 0x00]),
        (
            CodecId::Vp9,
            *b"vp09",
            vec![1, 0, 0, 0, 0, 10, 0x80, 2, 2, 2, 0, 0],
        ),
    ] {
        let mut body = vec![0x90];
        body.extend_from_slice(&fourcc);
        body.extend_from_slice(&config);
        let t = seq_header(parse_video(&contiguous(&body), 0, now(), 4).unwrap());
        assert_eq!(t.codec, codec);
        assert_eq!(&t.config[..], &config[..]);
        assert_eq!(&video_sequence_header(&t)[..], &body[..]);
        if codec == CodecId::Av1 {
            assert_eq!((t.info.profile, t.info.level), (Some(0), Some(8)));
        }
        for key in [true, false] {
            let payload = rope(&[&[0x12, 0x00, 0x0a], &[0x0b, 0x00, 0x00]]);
            let f = video_frame(33, 33, key, FramePayload::Raw(payload));
            let out = mux_video(&t, &f);
            assert_eq!(out.get(0), Some(if key { 0x91 } else { 0xa1 }));
            assert_eq!(
                frame_of(parse_video(&out, 33, now(), 4).unwrap()),
                (codec, f)
            );
        }
        let end = [0x92, fourcc[0], fourcc[1], fourcc[2], fourcc[3]];
        assert_eq!(
            parse_video(&contiguous(&end), 0, now(), 4),
            Ok(FlvTag::EndOfSequence(codec))
        );
    }
}

fn audio_frame(ts: i64, payload: ByteRope) -> Frame {
    Frame {
        kind: MediaKind::Audio,
        dts: ts,
        pts: ts,
        keyframe: true,
        ingest: now(),
        payload: FramePayload::Raw(payload),
    }
}

#[test]
fn aac_round_trip() {
    let body = [0xaf, 0x00, 0x11, 0x90];
    let t = seq_header(parse_audio(&contiguous(&body), 0, now()).unwrap());
    assert_eq!((t.kind, t.codec), (MediaKind::Audio, CodecId::Aac));
    assert_eq!(t.info.sample_rate, Some(48000));
    assert_eq!(t.info.channels, Some(2));
    assert_eq!(&t.config[..], &[0x11, 0x90]);
    assert_eq!(&audio_sequence_header(&t)[..], &body[..]);
    let f = audio_frame(21, rope(&[&[0x21, 0x10], &[0x05, 0x00]]));
    let mut out = ByteRope::new();
    audio_body(&t, &f, &mut out);
    assert_eq!(&out.parts()[0][..], &[0xaf, 0x01]);
    assert_eq!(
        frame_of(parse_audio(&out, 21, now()).unwrap()),
        (CodecId::Aac, f)
    );
}

#[test]
fn opus_round_trip() {
    let head = crate::opus::OpusHead {
        channels: 2,
        pre_skip: 312,
        input_sample_rate: 44100,
        output_gain: 0,
        mapping_family: 0,
    }
    .encode();
    let t = Track {
        kind: MediaKind::Audio,
        codec: CodecId::Opus,
        config: head.clone(),
        timescale: 1000,
        info: TrackInfo {
            sample_rate: Some(48000),
            channels: Some(2),
            ..TrackInfo::default()
        },
    };
    let header = audio_sequence_header(&t);
    assert_eq!(&header[..5], b"\x90Opus");
    assert_eq!(
        seq_header(parse_audio(&header.into(), 0, now()).unwrap()),
        t
    );
    let f = audio_frame(20, rope(&[&[0xfc, 0xff], &[0xfe]]));
    let mut out = ByteRope::new();
    audio_body(&t, &f, &mut out);
    assert_eq!(&out.parts()[0][..], b"\x91Opus");
    assert_eq!(
        frame_of(parse_audio(&out, 20, now()).unwrap()),
        (CodecId::Opus, f)
    );
    assert_eq!(
        parse_audio(&contiguous(b"\x92Opus"), 0, now()),
        Ok(FlvTag::EndOfSequence(CodecId::Opus))
    );
}

#[test]
fn passthrough_codecs_resend_their_body() {
    let cases: [(&[u8], bool, CodecId); 4] = [
        (
            &[0x22, 0x00, 0x00, 0x84],
            true,
            CodecId::FlvLegacy(MediaKind::Video, 2),
        ),
        (
            &[0x24, 0x00, 0x01],
            true,
            CodecId::FlvLegacy(MediaKind::Video, 4),
        ),
        (&[0x2f, 0xff, 0xfb, 0x90], false, CodecId::Mp3),
        (
            &[0x72, 0xd5, 0xd5],
            false,
            CodecId::FlvLegacy(MediaKind::Audio, 7),
        ),
    ];
    for (body, video, codec) in cases {
        let r = contiguous(body);
        let tag = if video {
            parse_video(&r, 0, now(), 4).unwrap()
        } else {
            parse_audio(&r, 0, now()).unwrap()
        };
        let FlvTag::Passthrough {
            kind,
            codec: c,
            body: b,
            keyframe,
        } = tag
        else {
            panic!("not passthrough: {tag:?}")
        };
        assert_eq!(c, codec);
        assert_eq!(b, r);
        assert_eq!(keyframe, !video || body[0] >> 4 == 1);
        let t = Track {
            kind,
            codec,
            config: Bytes::new(),
            timescale: 1000,
            info: TrackInfo::default(),
        };
        let f = Frame {
            kind,
            dts: 0,
            pts: 0,
            keyframe,
            ingest: now(),
            payload: FramePayload::Raw(b),
        };
        let mut out = ByteRope::new();
        if video {
            assert!(video_sequence_header(&t).is_empty());
            video_body(&t, &f, &mut out);
        } else {
            assert!(audio_sequence_header(&t).is_empty());
            audio_body(&t, &f, &mut out);
        }
        assert_eq!(out.to_contiguous(), Bytes::copy_from_slice(body));
    }
}

#[test]
fn enhanced_rtmp_extras() {
    // ModEx (nanosecond offset, 3 bytes) before CodedFrames of av01.
    let body = [
        0x97, 0x02, 0x00, 0x01, 0x02, 0x01, b'a', b'v', b'0', b'1', 0x12, 0x00,
    ];
    let (codec, f) = frame_of(parse_video(&contiguous(&body), 5, now(), 4).unwrap());
    assert_eq!(
        (codec, f.payload.len(), f.keyframe),
        (CodecId::Av1, 2, true)
    );
    // Metadata is forwarded, command frames and TS sequence starts are dropped.
    let meta = contiguous(b"\x94hvc1\x02\x00\x09colorInfo");
    assert!(matches!(
        parse_video(&meta, 0, now(), 4),
        Ok(FlvTag::Passthrough {
            codec: CodecId::H265,
            ..
        })
    ));
    assert!(matches!(
        parse_video(&contiguous(&[0xd1, 0x00]), 0, now(), 4),
        Ok(FlvTag::Ignored { .. })
    ));
    assert!(matches!(
        parse_video(&contiguous(&[0x57, 0x00]), 0, now(), 4),
        Ok(FlvTag::Ignored { .. })
    ));
    assert!(matches!(
        parse_video(&contiguous(b"\x95av01\x80"), 0, now(), 4),
        Ok(FlvTag::Ignored { .. })
    ));
    // avc1 in Enhanced RTMP: CodedFrames carry a composition time, CodedFramesX do not.
    let (c, f) = frame_of(
        parse_video(
            &contiguous(b"\x91avc1\x00\x00\x10\x00\x00\x00\x01\x65"),
            0,
            now(),
            4,
        )
        .unwrap(),
    );
    assert_eq!((c, f.pts, f.payload.len()), (CodecId::H264, 16, 1));
    let (_, f) =
        frame_of(parse_video(&contiguous(b"\xa3avc1\x00\x00\x00\x01\x41"), 9, now(), 4).unwrap());
    assert_eq!((f.pts, f.keyframe), (9, false));
    // Multichannel config is forwarded.
    assert!(matches!(
        parse_audio(&contiguous(b"\x94Opus\x01\x02"), 0, now()),
        Ok(FlvTag::Passthrough { .. })
    ));
    // E-RTMP mp4a sequence start.
    let t = seq_header(parse_audio(&contiguous(b"\x90mp4a\x11\x90"), 0, now()).unwrap());
    assert_eq!((t.codec, t.info.sample_rate), (CodecId::Aac, Some(48000)));
}

#[test]
fn errors_name_the_violation() {
    let now = now();
    assert_eq!(
        parse_video(&ByteRope::new(), 0, now, 4),
        Err(FlvError::Empty)
    );
    assert_eq!(parse_audio(&ByteRope::new(), 0, now), Err(FlvError::Empty));
    assert_eq!(
        parse_video(&contiguous(&[0x17, 1, 0, 0, 0]), 0, now, 0),
        Err(FlvError::BadNaluLengthSize(0))
    );
    // A NAL length larger than the body.
    let body = [
        0x17, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, 0x88, 0xff, 0xff, 0xff, 0xf0, 0x41,
    ];
    assert_eq!(
        parse_video(&contiguous(&body), 0, now, 4),
        Err(FlvError::NaluTooLong {
            offset: 11,
            length: 0xffff_fff0,
            remaining: 1
        })
    );
    // A length prefix cut short.
    assert_eq!(
        parse_video(&contiguous(&[0x27, 1, 0, 0, 0, 0, 0]), 0, now, 4),
        Err(FlvError::Truncated {
            what: "NAL unit length",
            offset: 5,
            needed: 2
        })
    );
    assert_eq!(
        parse_video(&contiguous(&[0x17, 9, 0, 0, 0]), 0, now, 4),
        Err(FlvError::UnknownPacketType {
            what: "AVCPacketType",
            value: 9,
            offset: 1
        })
    );
    assert_eq!(
        parse_video(&contiguous(b"\x91xxxx"), 0, now, 4),
        Err(FlvError::UnsupportedFourCc {
            fourcc: *b"xxxx",
            offset: 1
        })
    );
    // An audio FourCC in a video tag.
    assert!(matches!(
        parse_video(&contiguous(b"\x91Opus"), 0, now, 4),
        Err(FlvError::UnsupportedFourCc { .. })
    ));
    assert!(matches!(
        parse_video(&contiguous(b"\x96\x00hvc1"), 0, now, 4),
        Err(FlvError::Multitrack {
            kind: MediaKind::Video,
            ..
        })
    ));
    assert!(matches!(
        parse_audio(&contiguous(b"\x95\x00Opus"), 0, now),
        Err(FlvError::Multitrack {
            kind: MediaKind::Audio,
            ..
        })
    ));
    assert!(matches!(
        parse_audio(&contiguous(&[0xaf, 0x00, 0x16]), 0, now),
        Err(FlvError::AacConfig { offset: 2, .. })
    ));
    assert!(matches!(
        parse_audio(&contiguous(b"\x90OpusOpusHead"), 0, now),
        Err(FlvError::OpusHead { offset: 5, .. })
    ));
    assert!(matches!(
        parse_video(&contiguous(&[0x17, 0, 0, 0, 0, 2]), 0, now, 4),
        Err(FlvError::AvcConfig { offset: 5, .. })
    ));
    assert!(matches!(
        parse_video(&contiguous(b"\x90hvc1\x01"), 0, now, 4),
        Err(FlvError::HevcConfig { offset: 5, .. })
    ));
    // Messages render with their offsets.
    let msg = parse_video(&contiguous(&body), 0, now, 4)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("byte 11"), "{msg}");
}

#[test]
fn every_truncation_is_an_error_or_a_shorter_parse() {
    let mut avc_seq = vec![0x17, 0, 0, 0, 0];
    avc_seq.extend_from_slice(&crate::h264::tests::x264_720p_avcc());
    let mut hevc_seq = b"\x90hvc1".to_vec();
    hevc_seq.extend_from_slice(&crate::h265::tests::x265_720p_hvcc());
    let videos: [&[u8]; 5] = [
        &avc_seq,
        &hevc_seq,
        &[0x17, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, 0x88, 0, 0, 0, 1, 0x06],
        &[
            0xa1, b'h', b'v', b'c', b'1', 0, 0, 5, 0, 0, 0, 2, 0x02, 0x01,
        ],
        &[0x97, 0xff, 0, 1, 2],
    ];
    for body in videos {
        for n in 0..body.len() {
            for cut in 0..=n {
                let r = rope(&[&body[..cut], &body[cut..n]]);
                // Must not panic; NAL frames truncated inside a NAL must fail.
                let _ = parse_video(&r, 0, now(), 4);
            }
        }
    }
    // A truncated sequence header is always an error.
    for n in 0..avc_seq.len() - 4 {
        assert!(
            parse_video(&contiguous(&avc_seq[..n]), 0, now(), 4).is_err(),
            "{n}"
        );
    }
    let audios: [&[u8]; 3] = [
        &[0xaf, 0x00, 0x11, 0x90],
        b"\x90mp4a\x11\x90",
        b"\x97\x00\x00\x01Opus",
    ];
    for body in audios {
        for n in 0..body.len() {
            let _ = parse_audio(&contiguous(&body[..n]), 0, now());
        }
    }
    for n in 0..4 {
        assert!(parse_audio(&contiguous(&[0xaf, 0x00, 0x11, 0x90][..n]), 0, now()).is_err());
    }
}

#[test]
fn length_size_is_rewritten_to_four() {
    let mut rec = crate::h264::tests::x264_720p_avcc().to_vec();
    rec[4] = 0xfd; // 2-byte lengths
    let mut body = vec![0x17, 0, 0, 0, 0];
    body.extend_from_slice(&rec);
    let t = seq_header(parse_video(&contiguous(&body), 0, now(), 4).unwrap());
    assert_eq!(nalu_length_size(&t), 2);
    let out = video_sequence_header(&t);
    assert_eq!(out[5 + 4], 0xff);
    let f = frame_of(
        parse_video(
            &contiguous(&[0x17, 1, 0, 0, 0, 0, 2, 0x65, 0x88]),
            0,
            now(),
            2,
        )
        .unwrap(),
    )
    .1;
    let muxed = mux_video(&t, &f);
    assert_eq!(
        muxed.to_contiguous(),
        Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, 0x88])
    );
}
