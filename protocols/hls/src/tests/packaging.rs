//! The packager: numbering, part and segment cuts, discontinuities, zero copy.

use super::*;
use crate::{HlsError, HlsUpdate as U, PlaylistRequest as Req, Readiness, Window};

/// One line per update, e.g. `start 3 disc seq 1 init 1 @2000` (date time minus T0) or
/// `part 3.0 #30 200 I` (msn.index, sequence number, milliseconds, independent).
fn describe(u: &HlsUpdate) -> String {
    let flag = |on: bool, s: &str| if on { s.to_owned() } else { String::new() };
    match u {
        U::Init { id, .. } => format!("init {id}"),
        U::SegmentStart {
            msn,
            discontinuity,
            discontinuity_sequence: seq,
            program_date_time_ms: t,
            init_id,
        } => {
            format!(
                "start {msn}{} seq {seq} init {init_id} @{}",
                flag(*discontinuity, " disc"),
                t - T0
            )
        }
        U::Part {
            msn,
            index,
            seq,
            duration,
            independent,
            ..
        } => {
            format!(
                "part {msn}.{index} #{seq} {}{}",
                ms(*duration),
                flag(*independent, " I")
            )
        }
        U::SegmentEnd { msn, duration } => format!("end {msn} {}", ms(*duration)),
        U::Ended => "ended".to_owned(),
    }
}

/// The sequence numbers of the parts among `updates`.
fn part_seqs(updates: &[HlsUpdate]) -> Vec<u64> {
    let seq = |u: &HlsUpdate| match u {
        U::Part { seq, .. } => Some(*seq),
        _ => None,
    };
    updates.iter().filter_map(seq).collect()
}

fn described(updates: &[HlsUpdate], prefixes: &[&str]) -> Vec<String> {
    let lines = updates.iter().map(describe);
    lines
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .collect()
}

#[test]
fn segments_and_parts_follow_the_rules() {
    let (_, _, updates) = packaged(PackagerConfig::default(), 9);
    // Keyframes every 2 s: 2 s segments of ten 200 ms parts (six 30 fps frames each); only
    // the first part of a segment starts with a keyframe; date times follow the media clock.
    let mut expected = vec!["init 0".to_owned()];
    for msn in 0..5 {
        expected.push(format!("start {msn} seq 0 init 0 @{}", 2000 * msn));
        let parts = if msn < 4 { 10 } else { 5 };
        expected.extend((0..parts).map(|i| {
            let independent = if i == 0 { " I" } else { "" };
            format!("part {msn}.{i} #{} 200{independent}", 10 * msn + i)
        }));
        if msn < 4 {
            expected.push(format!("end {msn} 2000"));
        }
    }
    assert_eq!(described(&updates, &[""]), expected);
}

#[test]
fn a_part_is_emitted_with_the_frame_that_fills_it() {
    let mut p = Packager::new(PackagerConfig::default(), None);
    p.set_tracks(&[h264_track(), aac_track()]).unwrap();
    let mut cuts = Vec::new();
    for (f, wall) in stream(1, true, true) {
        if p.push_frame(&f, wall)
            .unwrap()
            .iter()
            .any(|u| matches!(u, U::Part { .. }))
        {
            cuts.push((f.kind, f.dts));
        }
    }
    // The video frame at 167 ms ends at 200 ms: the part is cut with it, not a frame later.
    assert_eq!(
        cuts[..2],
        [(MediaKind::Video, 167), (MediaKind::Video, 367)]
    );
}

#[test]
fn parts_never_exceed_the_target_with_jitter() {
    let cfg = PackagerConfig::default();
    let (mut p, mut w) = (Packager::new(cfg, None), Window::new(cfg));
    p.set_tracks(&[h264_track()]).unwrap();
    // 24 fps with ±3 ms of jitter: frames never tile 200 ms exactly.
    let frames: Vec<_> = (0..200i64)
        .map(|i| {
            let dts = (i * 1000 / 24 + [0, 3, -3, 1][i as usize % 4]).max(0);
            let nal = if i % 48 == 0 {
                idr(0)
            } else {
                p_slice(i as u32)
            };
            let payload = FramePayload::Nalus(vec![ByteRope::from(nal)]);
            (
                frame(MediaKind::Video, dts, i % 48 == 0, payload),
                T0 + dts as u64,
            )
        })
        .collect();
    let mut updates = feed(&mut p, &mut w, &frames);
    updates.extend(p.end());
    let mut sum = 0;
    for u in &updates {
        match u {
            U::Part { duration, .. } => {
                assert!((150..=200).contains(&ms(*duration)), "{duration:?}");
                sum += ms(*duration);
            }
            U::SegmentEnd { duration, .. } => assert_eq!(ms(*duration), std::mem::take(&mut sum)),
            _ => {}
        }
    }
}

#[test]
fn parts_share_the_frames_buffers() {
    let mut p = Packager::new(PackagerConfig::default(), None);
    p.set_tracks(&[h264_track(), aac_track()]).unwrap();
    let frames = stream(1, true, true);
    let mut payloads = Vec::new();
    for (f, wall) in &frames {
        for u in p.push_frame(f, *wall).unwrap() {
            if let U::Part { payload, .. } = u {
                payloads.extend(payload.parts().iter().map(|b| b.as_ptr()));
            }
        }
    }
    for (f, _) in frames.iter().filter(|(f, _)| f.dts < 900) {
        let slice = match &f.payload {
            FramePayload::Nalus(n) => n[0].parts()[0].as_ptr(),
            FramePayload::Raw(r) => r.parts()[0].as_ptr(),
        };
        assert!(
            payloads.contains(&slice),
            "{:?} at {} was copied",
            f.kind,
            f.dts
        );
    }
}

#[test]
fn packaging_waits_for_a_keyframe() {
    let mut p = Packager::new(PackagerConfig::default(), None);
    p.set_tracks(&[h264_track(), aac_track()]).unwrap();
    // Start 0.5 s in: nothing until the keyframe at 2 s.
    let late: Vec<_> = stream(3, true, true)
        .into_iter()
        .filter(|(f, _)| f.dts >= 500)
        .collect();
    for (f, wall) in &late {
        let out = p.push_frame(f, *wall).unwrap();
        assert!(
            f.dts >= 2000 || out.is_empty(),
            "output before the keyframe at {}",
            f.dts
        );
    }
    assert_eq!(
        described(&p.end(), &["start", "end", "ended"]),
        ["end 0 1000", "ended"]
    );
    assert_eq!(p.push_frame(&late[0].0, 0), Err(HlsError::Ended));
}

#[test]
fn track_change_and_timestamp_reset_are_discontinuities() {
    let (mut p, mut w, before) = packaged(PackagerConfig::default(), 3);
    // The same tracks again (a repeated sequence header) change nothing.
    assert!(p
        .set_tracks(&[h264_track(), aac_track()])
        .unwrap()
        .is_empty());
    let mut updates = p.set_tracks(&[h264_track()]).unwrap();
    updates.iter().for_each(|u| w.apply(u));
    // Timestamps restart from 0 on the new tracks, then go back once more.
    updates.extend(feed(&mut p, &mut w, &stream(3, true, false)));
    updates.extend(feed(&mut p, &mut w, &stream(1, true, false)));
    let expected = [
        "end 1 1000",
        "init 1",
        "start 2 disc seq 1 init 1 @0",
        "end 2 2000",
        "start 3 seq 1 init 1 @2000",
        "end 3 1000",
        "start 4 disc seq 2 init 1 @0",
    ];
    assert_eq!(described(&updates, &["init", "start", "end"]), expected);
    // Part sequence numbers go on through both.
    let seqs = part_seqs(&[before, updates].concat());
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    let playlist = w.media_playlist(&Default::default());
    assert_eq!(
        playlist.matches("#EXT-X-DISCONTINUITY\n").count(),
        2,
        "{playlist}"
    );
    assert!(playlist.contains("seg-1.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\""));
}

#[test]
fn republish_continues_numbering() {
    let (mut p, mut w, before) = packaged(PackagerConfig::default(), 5);
    assert_eq!(part_seqs(&before).last(), Some(&24));
    p.end().iter().for_each(|u| w.apply(u));
    let mut p2 = Packager::new(PackagerConfig::default(), Some(&w));
    let mut fresh = Window::new(PackagerConfig::default());
    let mut updates = p2.set_tracks(&[h264_track(), aac_track()]).unwrap();
    for (f, wall) in stream(1, true, true).iter().filter(|(f, _)| f.dts < 300) {
        updates.extend(p2.push_frame(f, *wall).unwrap());
    }
    for u in &updates {
        w.apply(u);
        fresh.apply(u);
    }
    let expected = ["init 1", "start 3 disc seq 1 init 1 @0"];
    assert_eq!(described(&updates, &["init", "start"]), expected);
    assert_eq!(described(&updates, &["part"]), ["part 3.0 #25 200 I"]);
    assert!(matches!(w.part(25), crate::PartLookup::Found(_)));
    assert!(matches!(fresh.part(25), crate::PartLookup::Found(_)));
    assert_eq!(fresh.part(26), crate::PartLookup::NotYet);
    assert!(!w.ended());
    // The same window goes on; a fresh one starts at segment 3.
    let same = w.media_playlist(&Default::default());
    assert!(same.contains("#EXT-X-MEDIA-SEQUENCE:0\n") && !same.contains("DISCONTINUITY-SEQ"));
    assert!(same.contains("seg-2.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\""));
    let new = fresh.media_playlist(&Default::default());
    assert!(new.contains("#EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-SERVER") && !new.contains("-SEQUENCE:0"));
    assert!(
        new.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\""),
        "{new}"
    );
}

#[test]
fn audio_only_parts_are_independent() {
    let cfg = PackagerConfig::default();
    let (mut p, mut w) = (Packager::new(cfg, None), Window::new(cfg));
    p.set_tracks(&[aac_track()])
        .unwrap()
        .iter()
        .for_each(|u| w.apply(u));
    let updates = feed(&mut p, &mut w, &stream(5, false, true));
    // 1024-sample frames (21.3 ms): nine make a part (192 ms), 94 a segment.
    let parts = described(&updates, &["part 0."]);
    assert!(
        parts
            .iter()
            .take(10)
            .all(|l| l.ends_with(" 192 I") || l.ends_with(" 191 I")),
        "{parts:?}"
    );
    assert_eq!(described(&updates, &["end"]), ["end 0 2005", "end 1 2006"]);
    let info = w.stream_info().unwrap();
    assert_eq!((&*info.codecs, info.width), ("mp4a.40.2", None));
}

#[test]
fn unsupported_codecs_are_errors() {
    let mut p = Packager::new(PackagerConfig::default(), None);
    let vp8 = Track {
        codec: CodecId::Vp8,
        ..h264_track()
    };
    let data = Track {
        kind: MediaKind::Data,
        ..aac_track()
    };
    let err = p.set_tracks(&[data.clone(), vp8]).unwrap_err();
    assert_eq!(
        err,
        HlsError::UnsupportedCodec {
            track: 1,
            codec: CodecId::Vp8
        }
    );
    assert_eq!(p.set_tracks(&[data]), Err(HlsError::NoTracks));
    assert_eq!(
        p.push_frame(&stream(1, true, false)[0].0, 0),
        Err(HlsError::NoTracks)
    );
}

#[test]
fn updates_are_send_and_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<HlsUpdate>();
}

#[test]
fn hostile_timestamps_never_panic() {
    let cfg = PackagerConfig {
        part_duration: Duration::from_millis(50),
        window_segments: 3,
        ..Default::default()
    };
    let (mut p, mut w) = (Packager::new(cfg, None), Window::new(cfg));
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut dts = 0i64;
    let mut all = Vec::new();
    for i in 0..20_000 {
        if i % 5000 == 0 {
            let tracks = [
                vec![h264_track(), aac_track()],
                vec![aac_track()],
                vec![h264_track()],
            ];
            let updates = p.set_tracks(&tracks[rand(3) as usize]).unwrap();
            updates.iter().for_each(|u| w.apply(u));
            all.extend(updates);
        }
        dts = match rand(100) {
            0 => rand(1 << 40) as i64 - (1 << 20),
            1 => i64::MAX - rand(3) as i64,
            2..=5 => dts.wrapping_sub(10),
            _ => dts.wrapping_add(rand(80) as i64),
        };
        let kind = [MediaKind::Video, MediaKind::Audio, MediaKind::Data][rand(3) as usize];
        let payload = FramePayload::Raw(ByteRope::from(vec![0u8; rand(4) as usize]));
        let f = frame(kind, dts, rand(20) == 0, payload);
        if let Ok(updates) = p.push_frame(&f, rand(u64::MAX)) {
            updates.iter().for_each(|u| w.apply(u));
            all.extend(updates);
        }
        if i % 97 == 0 {
            let msn = w.last_msn().unwrap_or(0);
            let _ = (
                w.media_playlist(&Req {
                    msn: Some(msn),
                    part: Some(1),
                    skip: true,
                }),
                w.part(rand(100)),
            );
            assert!(matches!(
                w.readiness(&Req {
                    msn: Some(msn + 3),
                    part: None,
                    skip: false
                }),
                Readiness::BadRequest(_) | Readiness::Ready
            ));
        }
    }
    let end = p.end();
    end.iter().for_each(|u| w.apply(u));
    all.extend(end);
    assert!(w
        .media_playlist(&Req::default())
        .ends_with("#EXT-X-ENDLIST\n"));
    // Whatever the timestamps did, part sequence numbers count up by one.
    let seqs = part_seqs(&all);
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
}
