//! Structure, offset and end-to-end (ffprobe) tests of the fMP4 muxer.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;

use super::*;
use crate::media::{Frame, FramePayload, TrackInfo};
use crate::rope::ByteRope;

/// A parsed box: type, offset of its first byte in the walked buffer, the whole box.
struct Atom<'a> {
    kind: [u8; 4],
    at: usize,
    data: &'a [u8],
}

/// Splits `data` into boxes, asserting that their sizes tile it exactly.
fn walk(data: &[u8], base: usize) -> Vec<Atom<'_>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        assert!(
            data.len() - pos >= 8,
            "box header truncated at {}",
            base + pos
        );
        let size = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        assert!(
            size >= 8 && pos + size <= data.len(),
            "bad box size {size} at {}",
            base + pos
        );
        let kind = data[pos + 4..pos + 8].try_into().unwrap();
        out.push(Atom {
            kind,
            at: base + pos,
            data: &data[pos..pos + size],
        });
        pos += size;
    }
    out
}

impl<'a> Atom<'a> {
    fn body(&self) -> &'a [u8] {
        &self.data[8..]
    }
    /// Children of a container box whose children start `skip` bytes into the body.
    fn children(&self, skip: usize) -> Vec<Atom<'a>> {
        walk(&self.body()[skip..], self.at + 8 + skip)
    }
    fn child(&self, kind: &[u8; 4]) -> Atom<'a> {
        let c = self.children(0);
        let i = c.iter().position(|a| &a.kind == kind).expect("child box");
        c.into_iter().nth(i).unwrap()
    }
    fn path(&self, path: &[&[u8; 4]]) -> Atom<'a> {
        let mut a = Atom {
            kind: self.kind,
            at: self.at,
            data: self.data,
        };
        for k in path {
            a = a.child(k);
        }
        a
    }
}

fn traks<'a>(moov: &Atom<'a>) -> Vec<Atom<'a>> {
    moov.children(0)
        .into_iter()
        .filter(|a| &a.kind == b"trak")
        .collect()
}

fn kinds(atoms: &[Atom<'_>]) -> Vec<String> {
    atoms
        .iter()
        .map(|a| String::from_utf8_lossy(&a.kind).into_owned())
        .collect()
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn h264_track() -> Track {
    Track {
        kind: MediaKind::Video,
        codec: CodecId::H264,
        config: crate::h264::tests::x264_720p_avcc(),
        timescale: 1000,
        info: TrackInfo {
            width: Some(1280),
            height: Some(720),
            fps: Some(30.0),
            ..Default::default()
        },
    }
}

fn aac_track() -> Track {
    Track {
        kind: MediaKind::Audio,
        codec: CodecId::Aac,
        config: Bytes::from_static(&[0x11, 0x90]),
        timescale: 1000,
        info: TrackInfo {
            sample_rate: Some(48000),
            channels: Some(2),
            ..Default::default()
        },
    }
}

fn frame(kind: MediaKind, dts: i64, pts: i64, keyframe: bool, payload: FramePayload) -> Frame {
    Frame {
        kind,
        dts,
        pts,
        keyframe,
        ingest: Instant::now(),
        payload,
    }
}

fn video(dts: i64, pts: i64, key: bool, nalus: &[&[u8]]) -> Frame {
    let n = nalus.iter().map(|n| ByteRope::from(n.to_vec())).collect();
    frame(MediaKind::Video, dts, pts, key, FramePayload::Nalus(n))
}

fn audio(dts: i64, data: &[u8]) -> Frame {
    frame(
        MediaKind::Audio,
        dts,
        dts,
        true,
        FramePayload::Raw(data.to_vec().into()),
    )
}

#[test]
fn init_segment_structure() {
    let tracks = [h264_track(), aac_track()];
    let init = init_segment(&tracks).unwrap();
    let top = walk(&init, 0);
    assert_eq!(kinds(&top), ["ftyp", "moov"]);
    assert_eq!(&top[0].body()[..4], b"iso6");
    assert_eq!(&top[0].body()[8..], b"iso6cmfcmp41");
    let moov = &top[1];
    assert_eq!(kinds(&moov.children(0)), ["mvhd", "trak", "trak", "mvex"]);
    assert_eq!(be32(moov.child(b"mvhd").body(), 96), 3, "next_track_ID");
    let expected = [(90000, b"vide"), (48000, b"soun")];
    for (i, (trak, (timescale, handler))) in traks(moov).iter().zip(expected).enumerate() {
        let tkhd = trak.child(b"tkhd");
        assert_eq!(be32(tkhd.body(), 12), i as u32 + 1, "track_ID");
        assert_eq!(be32(trak.path(&[b"mdia", b"mdhd"]).body(), 12), timescale);
        assert_eq!(&trak.path(&[b"mdia", b"hdlr"]).body()[8..12], handler);
        let stbl = trak.path(&[b"mdia", b"minf", b"stbl"]);
        assert_eq!(
            kinds(&stbl.children(0)),
            ["stsd", "stts", "stsc", "stsz", "stco"]
        );
        let entries = stbl.child(b"stsd").children(8);
        assert_eq!(entries.len(), 1);
        if i == 0 {
            assert_eq!(be32(tkhd.body(), 76), 1280 << 16);
            assert_eq!(&entries[0].kind, b"avc1");
            assert_eq!(&entries[0].body()[24..28], &[0x05, 0x00, 0x02, 0xd0]);
            let avcc = entries[0].children(78);
            assert_eq!(kinds(&avcc), ["avcC"]);
            assert_eq!(avcc[0].body(), &tracks[0].config[..]);
        } else {
            assert_eq!(&entries[0].kind, b"mp4a");
            assert_eq!(&entries[0].body()[16..18], &[0, 2], "channels");
            assert_eq!(be32(entries[0].body(), 24), 48000 << 16);
            let esds = entries[0].children(28);
            assert_eq!(kinds(&esds), ["esds"]);
            // ES_Descriptor, DecoderConfigDescriptor (MPEG-4 audio), DecoderSpecificInfo = ASC.
            let body = esds[0].body();
            assert_eq!((body[4], body[12], body[17]), (0x03, 0x04, 0x40));
            assert_eq!(&body[30..37], &[0x05, 0x80, 0x80, 0x80, 0x02, 0x11, 0x90]);
            assert_eq!(&body[37..], &[0x06, 0x80, 0x80, 0x80, 0x01, 0x02]);
            assert_eq!(body[5..9], [0x80, 0x80, 0x80, body.len() as u8 - 9]);
        }
    }
    let trex = moov.child(b"mvex").children(0);
    assert_eq!(kinds(&trex), ["trex", "trex"]);
    assert_eq!(be32(trex[1].body(), 4), 2);
}

#[test]
fn opus_av1_hevc_entries_and_codecs() {
    let head = crate::opus::OpusHead {
        channels: 2,
        pre_skip: 312,
        input_sample_rate: 44100,
        output_gain: -256,
        mapping_family: 0,
    };
    let info = TrackInfo::default();
    let opus = Track {
        codec: CodecId::Opus,
        config: head.encode(),
        ..aac_track()
    };
    let opus = Track {
        info: info.clone(),
        ..opus
    };
    let av1c = Bytes::from_static(&[0x81, 0x08, 0x0c, 0x00]);
    let av1 = Track {
        codec: CodecId::Av1,
        config: av1c,
        ..h264_track()
    };
    let hevc = crate::h265::tests::x265_720p_hvcc();
    let hevc = Track {
        codec: CodecId::H265,
        config: hevc,
        info,
        ..h264_track()
    };
    let tracks = [hevc, av1, opus];
    let init = init_segment(&tracks).unwrap();
    let moov = walk(&init, 0).into_iter().nth(1).unwrap();
    let stsd: Vec<_> = traks(&moov)
        .iter()
        .map(|t| t.path(&[b"mdia", b"minf", b"stbl", b"stsd"]).data.to_vec())
        .collect();
    // Sample entries start at byte 16 of the stsd; their bodies at 24.
    assert_eq!(&stsd[0][20..24], b"hvc1");
    // The picture size comes from the SPS when `info` has none.
    assert_eq!(&stsd[0][48..52], &[0x05, 0x00, 0x02, 0xd0]);
    assert_eq!(&stsd[1][20..24], b"av01");
    assert_eq!(&stsd[2][20..24], b"Opus");
    assert_eq!(be32(&stsd[2], 48), 48000 << 16);
    let dops = &stsd[2][52..];
    assert_eq!(&dops[4..8], b"dOps");
    assert_eq!(
        &dops[8..],
        &[0, 2, 0x01, 0x38, 0, 0, 0xac, 0x44, 0xff, 0x00, 0]
    );

    let codecs = |t: &Track| cmaf_codecs_string(t).unwrap_or_default();
    assert_eq!(codecs(&h264_track()), "avc1.64001f");
    assert_eq!(codecs(&aac_track()), "mp4a.40.2");
    assert_eq!(codecs(&tracks[0]), "hvc1.1.6.L93.90");
    assert_eq!(codecs(&tracks[1]), "av01.0.08M.08");
    assert_eq!(codecs(&tracks[2]), "opus");
    let he = Bytes::from_static(&[0x2b, 0x11, 0x88, 0x00]);
    assert_eq!(
        codecs(&Track {
            config: he,
            ..aac_track()
        }),
        "mp4a.40.5"
    );
    let av = mime_codecs(&[h264_track(), aac_track()]);
    assert_eq!(av, "video/mp4; codecs=\"avc1.64001f,mp4a.40.2\"");
    assert_eq!(mime_codecs(&tracks[2..]), "audio/mp4; codecs=\"opus\"");
}

#[test]
fn bad_tracks_are_errors() {
    use Fmp4Error as E;
    let with = |codec, config: &'static [u8]| {
        let t = Track {
            codec,
            config: Bytes::from_static(config),
            ..h264_track()
        };
        init_segment(&[aac_track(), t]).unwrap_err()
    };
    assert_eq!(init_segment(&[]), Err(E::NoTracks));
    let vp8 = E::UnsupportedCodec {
        track: 1,
        codec: CodecId::Vp8,
    };
    assert_eq!(with(CodecId::Vp8, &[]), vp8);
    assert!(matches!(with(CodecId::H264, &[1, 0x64]), E::H264(_)));
    assert!(matches!(
        with(CodecId::Av1, &[]),
        E::BadConfig { track: 1, .. }
    ));
    let zero = Track {
        timescale: 0,
        ..aac_track()
    };
    assert_eq!(
        FragmentBuilder::new(&[zero]).err(),
        Some(E::ZeroTimescale { track: 0 })
    );

    let mut b = FragmentBuilder::new(&[h264_track()]).unwrap();
    let (f, back) = (
        video(10, 10, true, &[&[0x65]]),
        video(9, 9, false, &[&[0x41]]),
    );
    assert_eq!(
        b.push(1, &f),
        Err(E::UnknownTrack {
            index: 1,
            tracks: 1
        })
    );
    let negative = video(-1, 0, true, &[&[0x65]]);
    assert_eq!(
        b.push(0, &negative),
        Err(E::NegativeDts { track: 0, dts: -1 })
    );
    b.push(0, &f).unwrap();
    let went_back = E::DtsWentBack {
        track: 0,
        previous: 900,
        dts: 810,
    };
    assert_eq!(b.push(0, &back), Err(went_back.clone()));
    b.finish(1);
    // The check holds across fragments.
    assert_eq!(b.push(0, &back), Err(went_back));
}

/// Parses one `moof`+`mdat` and returns, per traf: track id, tfdt, trun.
fn parse_fragment(data: &[u8]) -> Vec<(u32, u64, Trun)> {
    let top = walk(data, 0);
    let moof = top.iter().find(|a| &a.kind == b"moof").unwrap();
    let mdat = top.iter().find(|a| &a.kind == b"mdat").unwrap();
    assert_eq!(mdat.at, moof.at + moof.data.len(), "mdat follows moof");
    let mut out = Vec::new();
    let mut next_sample = mdat.at + 8;
    for traf in moof.children(0).iter().filter(|a| &a.kind == b"traf") {
        assert_eq!(kinds(&traf.children(0)), ["tfhd", "tfdt", "trun"]);
        let tfhd = Tfhd::decode(traf.child(b"tfhd").data).unwrap();
        let tfdt = Tfdt::decode(traf.child(b"tfdt").data).unwrap();
        let trun = Trun::decode(traf.child(b"trun").data).unwrap();
        // default-base-is-moof: the data offset counts from the moof's first byte.
        assert_eq!(moof.at + trun.data_offset.unwrap() as usize, next_sample);
        next_sample += trun.samples.iter().map(|s| s.size as usize).sum::<usize>();
        out.push((tfhd.track_id, tfdt.base_media_decode_time, trun));
    }
    assert_eq!(
        next_sample,
        mdat.at + mdat.data.len(),
        "samples fill the mdat"
    );
    out
}

#[test]
fn fragment_offsets_durations_and_zero_copy() {
    let tracks = [h264_track(), aac_track()];
    let mut b = FragmentBuilder::new(&tracks).unwrap().with_styp(true);
    let (sei, idr) = (
        Bytes::from_static(&[0x06, 0x05]),
        Bytes::from_static(&[0x65, 0xaa, 0xbb]),
    );
    let nalus = vec![ByteRope::from(sei), ByteRope::from(idr.clone())];
    b.push(
        0,
        &frame(
            MediaKind::Video,
            1000,
            1066,
            true,
            FramePayload::Nalus(nalus),
        ),
    )
    .unwrap();
    b.push(1, &audio(1000, &[0x21; 7])).unwrap();
    b.push(0, &video(1033, 1033, false, &[&[0x41, 1, 2, 3]]))
        .unwrap();
    b.push(1, &audio(1021, &[0x22; 5])).unwrap();
    b.push(0, &video(1067, 1050, false, &[&[0x01, 9]])).unwrap();
    b.set_next_dts(1, 1043).unwrap();
    assert_eq!(b.pending_samples(), 5);
    let f = b.finish(7);
    assert!(b.is_empty() && f.starts_with_keyframe);
    assert_eq!(
        (f.sequence_number, f.samples, f.start_ms, f.duration_ms),
        (7, 5, 1000, 101)
    );
    // Zero copy: the IDR slice in the payload is the frame's own buffer, and the length
    // prefixes (parts 0, 2, 4, 6) are neighbours in one allocation.
    let p = f.payload.parts();
    assert_eq!(p[3].as_ptr(), idr.as_ptr());
    let base = p[0].as_ptr() as usize;
    assert!((0..4).all(|k| p[2 * k].as_ptr() as usize == base + 4 * k));
    let data = f.to_contiguous();
    let moof_at = walk(&data, 0)[1].at;
    assert_eq!(kinds(&walk(&data, 0)), ["styp", "moof", "mdat"]);
    let trafs = parse_fragment(&data);
    let (id, base, v) = &trafs[0];
    assert_eq!((*id, *base), (1, 90_000));
    let d = v
        .samples
        .iter()
        .map(|s| (s.duration, s.size, s.flags, s.composition_offset));
    // The last sample reuses the previous duration; sizes count 4-byte length prefixes.
    let (sync, non_sync) = (0x0200_0000, 0x0101_0000);
    let expected = [
        (2970, 13, sync, 5940),
        (3060, 8, non_sync, 0),
        (3060, 6, non_sync, -1530),
    ];
    assert_eq!(d.collect::<Vec<_>>(), expected);
    let first = v.data_offset.unwrap() as usize + moof_at;
    assert_eq!(
        &data[first..first + 13],
        &[0, 0, 0, 2, 6, 5, 0, 0, 0, 3, 0x65, 0xaa, 0xbb]
    );
    let (id, base, a) = &trafs[1];
    assert_eq!((*id, *base), (2, 48_000));
    assert!(!a.sample_flags && !a.composition_offsets);
    // The hint gives the last audio sample its exact duration.
    let d: Vec<_> = a.samples.iter().map(|s| (s.duration, s.size)).collect();
    assert_eq!(d, [(1008, 7), (1056, 5)]);
    let at = a.data_offset.unwrap() as usize + moof_at;
    assert_eq!(
        &data[at..at + 12],
        b"\x21\x21\x21\x21\x21\x21\x21\x22\x22\x22\x22\x22"
    );

    // A lone sample takes the track's last duration; an empty track gets no traf.
    b.push(0, &video(1100, 1100, false, &[&[0x41]])).unwrap();
    let f = b.finish(8);
    assert!(!f.starts_with_keyframe);
    let trafs = parse_fragment(&f.to_contiguous());
    assert_eq!((trafs.len(), trafs[0].2.samples[0].duration), (1, 3060));
    let empty = b.finish(9);
    assert_eq!(
        (
            empty.samples,
            empty.payload.len(),
            empty.starts_with_keyframe
        ),
        (0, 0, false)
    );
    assert_eq!(
        kinds(&walk(&empty.to_contiguous(), 0)),
        ["styp", "moof", "mdat"]
    );
}

#[test]
fn rescale_rounds_absolute_times() {
    assert_eq!(rescale(33, 1000, 90_000), 2970);
    assert_eq!(rescale(23, 1000, 44_100), 1014); // 1014.3
    assert_eq!((rescale(1, 2, 3), rescale(-1, 2, 3)), (2, -1)); // halves round up
                                                                // Durations are differences of rounded times: 10 × 23 ms sum to exactly 230 ms.
    let ticks: Vec<i64> = (0..=10).map(|i| rescale(i * 23, 1000, 44_100)).collect();
    let sum: i64 = ticks.windows(2).map(|w| w[1] - w[0]).sum();
    assert_eq!(sum, rescale(230, 1000, 44_100));
}

/// init + 2 fragments of H.264 (x264 720p parameter sets, dummy slices) and AAC (silent
/// frames), read back by the real ffprobe.
#[test]
fn ffprobe_reads_init_and_fragments() {
    let ffprobe = std::path::Path::new("/usr/bin/ffprobe");
    assert!(
        ffprobe.exists(),
        "ffprobe not found: run ./scripts/test (it installs Debian's ffmpeg) or `apt-get install ffmpeg`"
    );
    let tracks = [h264_track(), aac_track()];
    let mut out = init_segment(&tracks).unwrap().to_vec();
    let mut b = FragmentBuilder::new(&tracks).unwrap();
    let vdts = |i: i64| (i * 1000 + 15) / 30; // 30 fps in ms, rounded
    let adts = |i: i64| (i * 1024 * 1000 + 24_000) / 48_000; // 1024 samples at 48 kHz
    let aac = |i| audio(adts(i), &[0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c]);
    let (mut vi, mut ai, mut seq) = (0i64, 0i64, 1);
    // Interleave by dts; cut before each keyframe (every 15 frames) but the first.
    while vi < 30 || ai < 47 {
        if ai < 47 && (vi == 30 || adts(ai) < vdts(vi)) {
            b.push(1, &aac(ai)).unwrap();
            ai += 1;
            continue;
        }
        let key = vi % 15 == 0;
        if key && vi > 0 {
            b.set_next_dts(0, vdts(vi)).unwrap();
            b.set_next_dts(1, adts(ai)).unwrap();
            out.extend_from_slice(&b.finish(seq).to_contiguous());
            seq += 1;
        }
        let nal: &[u8] = if key {
            &[0x65, 0x88, 0x84, 0x00, 0x33]
        } else {
            &[0x41, 0x9a, 0x02]
        };
        b.push(0, &video(vdts(vi), vdts(vi), key, &[nal])).unwrap();
        vi += 1;
    }
    let last = b.finish(seq);
    assert!(last.starts_with_keyframe);
    out.extend_from_slice(&last.to_contiguous());
    let path = std::env::temp_dir().join(format!("zerocast-fmp4-{}.mp4", std::process::id()));
    std::fs::write(&path, &out).unwrap();
    let args = [
        "-v",
        "error",
        "-show_streams",
        "-count_packets",
        "-of",
        "flat",
    ];
    let probe = std::process::Command::new(ffprobe)
        .args(args)
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    // stderr has the h264 decoder's complaints about the dummy slices; only stdout counts.
    let text = String::from_utf8_lossy(&probe.stdout);
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let fields: HashMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim_start_matches("streams.stream."), v.trim_matches('"')))
        .collect();
    let get = |k: &str| {
        *fields
            .get(k)
            .unwrap_or_else(|| panic!("{k} missing in:\n{text}"))
    };
    let got = |keys: [&str; 5]| keys.map(get);
    let video = [
        "0.codec_name",
        "0.width",
        "0.height",
        "0.nb_read_packets",
        "0.duration_ts",
    ];
    // Last dts 967 ms plus the previous duration (34 ms): 1001 ms, 90090 ticks.
    assert_eq!(got(video), ["h264", "1280", "720", "30", "90090"], "{text}");
    let audio = [
        "1.codec_name",
        "1.sample_rate",
        "1.channels",
        "1.nb_read_packets",
        "1.duration_ts",
    ];
    // Last dts 981 ms plus the previous duration (21 ms): 1002 ms, 48096 ticks.
    assert_eq!(got(audio), ["aac", "48000", "2", "47", "48096"], "{text}");
    assert_eq!(
        (get("0.time_base"), get("1.time_base")),
        ("1/90000", "1/48000")
    );
}
