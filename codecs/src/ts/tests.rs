//! Mux → demux round trips, byte-split invariance, bad input, and ffmpeg/ffprobe as peers.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use bytes::Bytes;

use super::*;
use crate::aac::AudioSpecificConfig;
use crate::bits::add_emulation_prevention;
use crate::media::{Frame, FramePayload, Track, TrackInfo};
use crate::rope::ByteRope;

/// A frame as comparable values: kind, timestamps, keyframe and payload bytes per NAL unit.
type Flat = (MediaKind, i64, i64, bool, Vec<Vec<u8>>);

fn flat(f: &Frame) -> Flat {
    let bytes = |r: &ByteRope| r.to_contiguous().to_vec();
    let p = match &f.payload {
        FramePayload::Nalus(n) => n.iter().map(bytes).collect(),
        FramePayload::Raw(r) => vec![bytes(r)],
    };
    (f.kind, f.dts, f.pts, f.keyframe, p)
}

fn split(events: &[DemuxEvent]) -> (Vec<Track>, Vec<Flat>, Vec<Flat>) {
    let (mut tracks, mut v, mut a) = (vec![], vec![], vec![]);
    for e in events {
        match e {
            DemuxEvent::Track(t) => tracks.push(t.clone()),
            DemuxEvent::Frame(f) if f.kind == MediaKind::Video => v.push(flat(f)),
            DemuxEvent::Frame(f) => a.push(flat(f)),
        }
    }
    (tracks, v, a)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A rope of `data` cut into three parts from separate buffers.
fn rope3(data: &[u8], rng: &mut Rng) -> ByteRope {
    let a = rng.next() as usize % data.len();
    let b = a + rng.next() as usize % (data.len() - a);
    let mut r = ByteRope::new();
    for s in [&data[..a], &data[a..b], &data[b..]] {
        r.push(Bytes::copy_from_slice(s));
    }
    r
}

fn nal(header: u8, len: usize, rng: &mut Rng) -> Vec<u8> {
    let mut body = rng.bytes(len);
    *body.last_mut().unwrap() |= 1; // A NAL unit never ends in a zero byte.
    let mut n = vec![header];
    n.extend(add_emulation_prevention(&body));
    n
}

fn tracks() -> Vec<Track> {
    let asc = AudioSpecificConfig::new(2, 48_000, 2).encode().unwrap();
    let t = |kind, codec, config| Track {
        kind,
        codec,
        config,
        timescale: 1000,
        info: TrackInfo::default(),
    };
    vec![
        t(
            MediaKind::Video,
            CodecId::H264,
            crate::h264::tests::x264_720p_avcc(),
        ),
        t(MediaKind::Audio, CodecId::Aac, asc),
    ]
}

/// `n` video frames (keyframe every 5, B-frame style pts) and audio every 21 ms, by dts.
fn frames(n: usize, size: usize, rng: &mut Rng) -> Vec<Frame> {
    let now = Instant::now();
    let mut out = vec![];
    for i in 0..n {
        let key = i % 5 == 0;
        let mut nalus = vec![rope3(&nal(0x06, 20, rng), rng)];
        nalus.push(rope3(
            &nal(if key { 0x65 } else { 0x41 }, size + i * 37, rng),
            rng,
        ));
        let dts = 1000 + 33 * i as i64;
        let payload = FramePayload::Nalus(nalus);
        out.push(Frame {
            kind: MediaKind::Video,
            dts,
            pts: dts + 66,
            keyframe: key,
            ingest: now,
            payload,
        });
    }
    for i in 0..n * 3 / 2 {
        let dts = 1000 + 21 * i as i64;
        let payload = FramePayload::Raw(rope3(&rng.bytes(60 + i * 13), rng));
        out.push(Frame {
            kind: MediaKind::Audio,
            dts,
            pts: dts,
            keyframe: true,
            ingest: now,
            payload,
        });
    }
    out.sort_by_key(|f| f.dts);
    out
}

fn mux(tracks: Vec<Track>, frames: &[Frame]) -> Vec<u8> {
    let mut m = Muxer::new(tracks).unwrap();
    let mut rope = ByteRope::new();
    for f in frames {
        m.mux(f, &mut rope).unwrap();
    }
    assert_eq!(rope.len() % PACKET_SIZE, 0);
    rope.to_contiguous().to_vec()
}

fn demux_chunks<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    now: Instant,
) -> Result<Vec<DemuxEvent>, TsError> {
    let mut d = Demuxer::default();
    let mut ev = vec![];
    for c in chunks {
        d.push(Bytes::copy_from_slice(c), now, &mut ev)?;
    }
    d.flush(&mut ev)?;
    Ok(ev)
}

fn expected(frames: &[Frame], kind: MediaKind) -> Vec<Flat> {
    frames.iter().filter(|f| f.kind == kind).map(flat).collect()
}

#[test]
fn h264_aac_round_trip() {
    let mut rng = Rng(7);
    let input = frames(12, 900, &mut rng);
    let ts = mux(tracks(), &input);
    let events = demux_chunks([&ts[..]], Instant::now()).unwrap();
    let (t, v, a) = split(&events);
    assert_eq!(t.len(), 2, "{t:?}");
    let video = t.iter().find(|t| t.kind == MediaKind::Video).unwrap();
    assert_eq!(
        (video.codec, video.info.width, video.info.height),
        (CodecId::H264, Some(1280), Some(720))
    );
    let audio = t.iter().find(|t| t.kind == MediaKind::Audio).unwrap();
    assert_eq!(
        (audio.codec, audio.info.sample_rate, audio.info.channels),
        (CodecId::Aac, Some(48_000), Some(2))
    );
    assert_eq!(audio.config, tracks()[1].config);
    assert_eq!(v, expected(&input, MediaKind::Video));
    assert_eq!(a, expected(&input, MediaKind::Audio));
    // Zero copy both ways: muxed packets carry the frame's own slices, demuxed payloads are
    // slices of the pushed buffer.
    let mut m = Muxer::new(tracks()).unwrap();
    let mut rope = ByteRope::new();
    m.mux(&input[0], &mut rope).unwrap();
    let FramePayload::Nalus(n) = &input[0].payload else {
        unreachable!()
    };
    let ptrs: Vec<_> = rope.parts().iter().map(|p| p.as_ptr()).collect();
    assert!(n
        .iter()
        .flat_map(|x| x.parts())
        .all(|p| ptrs.contains(&p.as_ptr())));
    let whole = Bytes::from(ts.clone());
    let range = whole.as_ptr_range();
    let mut d = Demuxer::default();
    let mut ev = vec![];
    d.push(whole.clone(), Instant::now(), &mut ev).unwrap();
    for e in &ev {
        if let DemuxEvent::Frame(Frame {
            payload: FramePayload::Nalus(n),
            ..
        }) = e
        {
            assert!(n
                .iter()
                .flat_map(|x| x.parts())
                .all(|p| range.contains(&p.as_ptr())));
        }
    }
    // NAL units that crossed packet boundaries come back as multi-part sub-ropes.
    assert!(events.iter().any(
        |e| matches!(e, DemuxEvent::Frame(Frame { payload: FramePayload::Nalus(n), .. })
        if n.iter().any(|x| x.parts().len() > 1))
    ));
}

#[test]
fn every_split_gives_the_same_events() {
    let mut rng = Rng(11);
    let input = frames(4, 150, &mut rng);
    let ts = mux(tracks(), &input);
    let now = Instant::now();
    let norm = |ev: Vec<DemuxEvent>| -> Vec<(Option<Track>, Option<Flat>)> {
        ev.iter()
            .map(|e| match e {
                DemuxEvent::Track(t) => (Some(t.clone()), None),
                DemuxEvent::Frame(f) => (None, Some(flat(f))),
            })
            .collect()
    };
    let reference = norm(demux_chunks([&ts[..]], now).unwrap());
    assert_eq!(reference.len(), 2 + 4 + 6);
    for k in 1..ts.len() {
        assert_eq!(
            norm(demux_chunks([&ts[..k], &ts[k..]], now).unwrap()),
            reference,
            "split at {k}"
        );
    }
    assert_eq!(norm(demux_chunks(ts.chunks(1), now).unwrap()), reference);
    // Leading garbage and a damaged packet in the middle only cost what they hit.
    let mut noisy = b"\x47garbage".repeat(20);
    noisy.extend_from_slice(&ts);
    assert_eq!(
        norm(demux_chunks(noisy.chunks(100), now).unwrap()),
        reference
    );
}

#[test]
fn garbage_wrong_crc_and_bad_pes() {
    let now = Instant::now();
    let junk: Vec<u8> = (0..100_000u32)
        .map(|i| (i * 7 + 1) as u8)
        .map(|b| if b == SYNC_BYTE { 0 } else { b })
        .collect();
    assert!(matches!(
        demux_chunks(junk.chunks(1000), now),
        Err(TsError::NoSync {
            skipped: 65_537,
            ..
        })
    ));
    let mut rng = Rng(3);
    for _ in 0..50 {
        let noise = rng.bytes(188 * 20);
        if let Ok(ev) = demux_chunks([&noise[..]], now) {
            assert!(ev.is_empty());
        }
    }

    let mut rng = Rng(5);
    let ts = mux(tracks(), &frames(3, 2000, &mut rng));
    let mut bad = ts.clone();
    bad[12] ^= 0x10; // Inside the PAT section of the first packet.
    assert!(matches!(
        demux_chunks([&bad[..]], now),
        Err(TsError::Crc {
            pid: 0,
            offset: 5,
            ..
        })
    ));

    // First audio PES: PES_packet_length shorter than its own header, then longer than the PES.
    let at = ts
        .chunks(PACKET_SIZE)
        .position(|p| p[1] & 0x40 != 0 && p[1..3] == [0x41, 0x01])
        .unwrap()
        * PACKET_SIZE;
    let pes = at
        + if ts[at + 3] & 0x20 != 0 {
            5 + usize::from(ts[at + 4])
        } else {
            4
        };
    let mut bad = ts.clone();
    bad[pes + 4..pes + 6].copy_from_slice(&[0, 2]);
    let err = demux_chunks([&bad[..]], now).unwrap_err();
    assert_eq!(
        err,
        TsError::Invalid {
            offset: pes as u64 + 4,
            what: "PES_packet_length shorter than its header"
        }
    );
    bad[pes + 4..pes + 6].copy_from_slice(&[0xff, 0xff]);
    let err = demux_chunks([&bad[..]], now).unwrap_err();
    assert_eq!(
        err,
        TsError::Invalid {
            offset: pes as u64,
            what: "PES shorter than its PES_packet_length"
        }
    );

    let mut d = Demuxer::new(DemuxConfig {
        max_pes_size: 1000,
        ..DemuxConfig::default()
    });
    let err = d.push(Bytes::from(ts), now, &mut vec![]).unwrap_err();
    assert!(
        matches!(
            err,
            TsError::PesTooLarge {
                pid: 0x100,
                max: 1000,
                ..
            }
        ),
        "{err}"
    );
}

/// The path of a peer tool; fails (never skips) when it is missing.
fn tool(name: &str) -> PathBuf {
    let p = PathBuf::from("/usr/bin").join(name);
    assert!(
        p.exists(),
        "{name} not found: run ./scripts/test (it installs Debian's ffmpeg) or `apt-get install ffmpeg`"
    );
    p
}

/// ffmpeg's TS demuxed by us, remuxed by us, read back by us and by ffprobe.
#[test]
fn ffmpeg_and_ffprobe_peers() {
    let (ffmpeg, ffprobe) = (tool("ffmpeg"), tool("ffprobe"));
    let dir = std::env::temp_dir().join(format!("zerocast-ts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, ours) = (dir.join("x.ts"), dir.join("ours.ts"));
    let st = Command::new(ffmpeg)
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=1000:sample_rate=48000",
            "-t",
            "2",
        ])
        .args([
            "-c:v", "libx264", "-g", "30", "-c:a", "aac", "-ac", "2", "-f", "mpegts",
        ])
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    let data = std::fs::read(&src).unwrap();
    let now = Instant::now();
    let events = demux_chunks(data.chunks(1316), now).unwrap();
    let (t, v, a) = split(&events);
    let video = t.iter().find(|t| t.kind == MediaKind::Video).unwrap();
    assert_eq!(
        (video.info.width, video.info.height, video.info.fps),
        (Some(1280), Some(720), Some(30.0))
    );
    let audio = t.iter().find(|t| t.kind == MediaKind::Audio).unwrap();
    assert_eq!(
        (audio.codec, audio.info.sample_rate, audio.info.channels),
        (CodecId::Aac, Some(48_000), Some(2))
    );
    assert!((59..=61).contains(&v.len()), "{} video frames", v.len());
    assert!(v.iter().filter(|f| f.3).count() >= 2);
    assert!(v.windows(2).all(|w| w[0].1 < w[1].1), "video dts increase");
    assert!(v.iter().any(|f| f.1 != f.2), "B-frames keep pts != dts");
    assert!((90..=100).contains(&a.len()), "{} audio frames", a.len());
    assert!(a.windows(2).all(|w| (20..=22).contains(&(w[1].1 - w[0].1))));

    let mut frames: Vec<Frame> = events
        .into_iter()
        .filter_map(|e| {
            if let DemuxEvent::Frame(f) = e {
                Some(f)
            } else {
                None
            }
        })
        .collect();
    frames.sort_by_key(|f| f.dts);
    let ts = mux(vec![video.clone(), audio.clone()], &frames);
    let again = split(&demux_chunks([&ts[..]], now).unwrap());
    assert_eq!((again.1, again.2), (v.clone(), a.clone()));
    std::fs::write(&ours, &ts).unwrap();
    let probe = Command::new(ffprobe)
        .args(["-v", "error", "-show_streams", "-count_packets"])
        .arg(&ours)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&probe.stdout).into_owned();
    assert!(
        probe.status.success() && probe.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let streams: Vec<&str> = text.split("[STREAM]").skip(1).collect();
    let has = |s: &str, kv: String| s.lines().any(|l| l == kv);
    assert_eq!(streams.len(), 2, "{text}");
    let h264 = streams
        .iter()
        .find(|s| has(s, "codec_name=h264".into()))
        .expect(&text);
    for kv in [
        "width=1280".to_string(),
        "height=720".into(),
        format!("nb_read_packets={}", v.len()),
    ] {
        assert!(has(h264, kv.clone()), "{kv} in {h264}");
    }
    let aac = streams
        .iter()
        .find(|s| has(s, "codec_name=aac".into()))
        .expect(&text);
    for kv in [
        "sample_rate=48000".to_string(),
        "channels=2".into(),
        format!("nb_read_packets={}", a.len()),
    ] {
        assert!(has(aac, kv.clone()), "{kv} in {aac}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// H.265 and Opus from ffmpeg (libx265, libopus), demuxed, remuxed and probed.
#[test]
fn ffmpeg_hevc_opus() {
    let (ffmpeg, ffprobe) = (tool("ffmpeg"), tool("ffprobe"));
    let dir = std::env::temp_dir().join(format!("zerocast-ts-hevc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, ours) = (dir.join("x.ts"), dir.join("ours.ts"));
    let st = Command::new(ffmpeg)
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"])
        .args(["-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi"])
        .args([
            "-i",
            "sine=frequency=1000:sample_rate=48000",
            "-t",
            "1",
            "-c:v",
            "libx265",
        ])
        .args([
            "-x265-params",
            "log-level=error",
            "-c:a",
            "libopus",
            "-ac",
            "2",
            "-f",
            "mpegts",
        ])
        .arg(&src)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "ffmpeg could not encode H.265/Opus (Debian's ffmpeg has libx265 and libopus)"
    );
    let now = Instant::now();
    let events = demux_chunks(std::fs::read(&src).unwrap().chunks(1316), now).unwrap();
    let (t, v, a) = split(&events);
    let video = t.iter().find(|t| t.kind == MediaKind::Video).unwrap();
    assert_eq!(
        (video.codec, video.info.width, video.info.height),
        (CodecId::H265, Some(320), Some(240))
    );
    let hvcc = crate::h265::HevcDecoderConfig::parse(&video.config).unwrap();
    assert_eq!(hvcc.picture_size(), Some((320, 240)));
    let audio = t.iter().find(|t| t.kind == MediaKind::Audio).unwrap();
    assert_eq!((audio.codec, audio.info.channels), (CodecId::Opus, Some(2)));
    assert!(
        (29..=31).contains(&v.len()) && v[0].3,
        "{} video frames",
        v.len()
    );
    assert!((45..=56).contains(&a.len()), "{} audio frames", a.len());
    assert!(
        a.windows(2).all(|w| w[1].1 - w[0].1 == 20),
        "20 ms Opus packets"
    );

    let mut frames: Vec<Frame> = events
        .into_iter()
        .filter_map(|e| {
            if let DemuxEvent::Frame(f) = e {
                Some(f)
            } else {
                None
            }
        })
        .collect();
    frames.sort_by_key(|f| f.dts);
    let ts = mux(vec![video.clone(), audio.clone()], &frames);
    let again = split(&demux_chunks([&ts[..]], now).unwrap());
    assert_eq!((again.1, again.2), (v.clone(), a.clone()));
    std::fs::write(&ours, &ts).unwrap();
    let probe = Command::new(ffprobe)
        .args(["-v", "error", "-show_streams", "-count_packets"])
        .arg(&ours)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&probe.stdout);
    assert!(
        text.contains("codec_name=hevc") && text.contains("codec_name=opus"),
        "{text}"
    );
    assert!(
        text.contains(&format!("nb_read_packets={}\n", v.len())),
        "{text}"
    );
    assert!(
        text.contains(&format!("nb_read_packets={}\n", a.len())),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Video PES of unbounded length (as ffmpeg and OBS write them) come out as soon as their
/// stuffed last packet arrives, not a frame later when the next PES starts.
#[test]
fn unbounded_video_pes_ends_at_its_stuffed_last_packet() {
    let mut rng = Rng(11);
    let mut all = frames(20, 3000, &mut rng);
    all.extend(frames(10, 70_000, &mut rng));
    let video: Vec<Frame> = all
        .into_iter()
        .filter(|f| f.kind == MediaKind::Video)
        .collect();
    let mut m = Muxer::new(tracks()).unwrap();
    let mut d = Demuxer::default();
    let mut late = 0;
    for (i, f) in video.iter().enumerate() {
        let mut rope = ByteRope::new();
        m.mux(f, &mut rope).unwrap();
        let mut ts = rope.to_contiguous().to_vec();
        for p in ts.chunks_mut(PACKET_SIZE) {
            let pid = u16::from_be_bytes([p[1], p[2]]) & 0x1fff;
            let unit_start = p[1] & 0x40 != 0;
            if pid != 0x100 || !unit_start {
                continue;
            }
            let start = if p[3] & 0x20 != 0 {
                5 + usize::from(p[4])
            } else {
                4
            };
            // PES_packet_length := 0.
            p[start + 4] = 0;
            p[start + 5] = 0;
        }
        // A frame that fills its last packet exactly has no stuffing to end it: it waits.
        let stuffed = ts
            .chunks(PACKET_SIZE)
            .rev()
            .find(|p| u16::from_be_bytes([p[1], p[2]]) & 0x1fff == 0x100)
            .is_some_and(|p| p[3] & 0x20 != 0);
        let mut ev = vec![];
        d.push(Bytes::from(ts), f.ingest, &mut ev).unwrap();
        let got = ev
            .iter()
            .filter(|e| matches!(e, DemuxEvent::Frame(g) if g.kind == MediaKind::Video))
            .count();
        if got == 0 && stuffed {
            late += 1;
        }
        assert!(got <= 2, "frame {i}: {got} frames");
    }
    assert_eq!(
        late,
        0,
        "{late} of {} stuffed frames waited for the next",
        video.len()
    );
}

/// A muxer rebuilt for new tracks with [`Muxer::follow`] (audio arrives after video) continues
/// every PID's continuity counter, announces the new program with the next PMT version, and
/// the whole output demuxes with no error.
#[test]
fn a_followed_muxer_keeps_continuity_counters_and_moves_the_pmt_version() {
    let mut rng = Rng(11);
    let all = tracks();
    let input = frames(15, 700, &mut rng);
    let (before, after) = input.split_at(input.len() / 2);
    let video_only: Vec<Frame> = before
        .iter()
        .filter(|f| f.kind == MediaKind::Video)
        .cloned()
        .collect();
    let mut first = Muxer::new(all[..1].to_vec()).unwrap();
    let mut rope = ByteRope::new();
    for f in &video_only {
        first.mux(f, &mut rope).unwrap();
    }
    let mut second = first.follow(all.clone()).unwrap();
    for f in after {
        second.mux(f, &mut rope).unwrap();
    }
    let ts = rope.to_contiguous();

    let mut last_cc: std::collections::HashMap<u16, u8> = Default::default();
    let mut pmt_versions = Vec::new();
    for p in ts.chunks_exact(PACKET_SIZE) {
        let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
        let cc = p[3] & 0xf;
        if let Some(prev) = last_cc.insert(pid, cc) {
            assert_eq!(
                cc,
                (prev + 1) & 0xf,
                "continuity counter jump on PID {pid:#x}"
            );
        }
        if pid == 0x1000 && p[1] & 0x40 != 0 {
            // Pointer field 0, then the section: version_number in byte 5 of it.
            let version = (p[5 + 5] >> 1) & 0x1f;
            if pmt_versions.last() != Some(&version) {
                pmt_versions.push(version);
            }
        }
    }
    assert_eq!(
        pmt_versions,
        [0, 1],
        "the PMT that adds audio is a new version"
    );
    assert!(
        last_cc.contains_key(&0x101),
        "audio went out after the rebuild"
    );

    let events = demux_chunks([&ts[..]], Instant::now()).unwrap();
    let (_, video, audio) = split(&events);
    assert_eq!(
        video.len(),
        video_only.len() + expected(after, MediaKind::Video).len()
    );
    assert_eq!(audio, expected(after, MediaKind::Audio));
    // Following with the same tracks keeps the PMT version.
    let mut same = second.follow(all).unwrap();
    let mut rope = ByteRope::new();
    same.mux(&after[0], &mut rope).unwrap();
    let pmt = rope
        .to_contiguous()
        .chunks_exact(PACKET_SIZE)
        .find(|p| (u16::from(p[1] & 0x1f) << 8 | u16::from(p[2])) == 0x1000)
        .map(|p| (p[10] >> 1) & 0x1f);
    assert_eq!(pmt, Some(1));
}
