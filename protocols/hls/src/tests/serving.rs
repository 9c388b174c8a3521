//! The window: trimming, playlists, blocking reload, lookups, request parsing.

use super::*;
use crate::window::playlist::iso8601;
use crate::{PartLookup, PlaylistRequest as Req, QueryError, Readiness, Resource};

fn req(q: &str) -> Req {
    Req::parse(q).unwrap()
}

fn lines_with<'a>(playlist: &'a str, prefix: &str) -> Vec<&'a str> {
    playlist.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn window_keeps_the_last_segments() {
    let cfg = PackagerConfig {
        window_segments: 4,
        ..Default::default()
    };
    // Keyframes at 0, 2, ... 12 s; at 13 s segment 6 is in progress with 5 parts.
    let (_, w, _) = packaged(cfg, 13);
    let pl = w.media_playlist(&Req::default());
    let header = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:2\n\
        #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600,CAN-SKIP-UNTIL=12.0\n\
        #EXT-X-PART-INF:PART-TARGET=0.200\n#EXT-X-MAP:URI=\"init-0.mp4\"\n\
        #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24.000Z\n";
    assert!(pl.starts_with(header), "{pl}");
    assert_eq!(lines_with(&pl, "#EXTINF:"), ["#EXTINF:2.000,"; 4]);
    assert_eq!(
        lines_with(&pl, "seg-"),
        ["seg-2.m4s", "seg-3.m4s", "seg-4.m4s", "seg-5.m4s"]
    );
    // Parts are numbered across segments: segment n has parts 10n.. (ten per segment).
    // Segment 2 ends 7 s before the end, more than 3 target durations: its parts are not listed.
    assert!(!pl.contains("part-29.m4s") && pl.contains("part-30.m4s"));
    assert!(pl.contains("#EXT-X-PART:DURATION=0.200,URI=\"part-60.m4s\",INDEPENDENT=YES\n"));
    assert!(pl.contains("#EXT-X-PART:DURATION=0.200,URI=\"part-61.m4s\"\n"));
    assert!(
        pl.ends_with("URI=\"part-64.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-65.m4s\"\n"),
        "{pl}"
    );
    assert_eq!(w.last_msn(), Some(6));

    // Lookups: trimmed segments are gone, the hinted part is not yet there.
    assert!(w.segment(1).is_none() && w.segment(6).is_none());
    let seg = w.segment(5).unwrap();
    let joined: Vec<u8> = seg.iter().flat_map(|b| b.iter().copied()).collect();
    let parts: Vec<u8> = (50..60)
        .flat_map(|seq| match w.part(seq) {
            PartLookup::Found(body) => body.concat(),
            other => panic!("part {seq}: {other:?}"),
        })
        .collect();
    assert_eq!(joined, parts, "a segment is its parts back to back");
    assert_eq!(&joined[4..8], b"moof");
    // Segment 2 is still in the window (only its part lines are left out); segment 1 is not.
    assert!(matches!(w.part(20), PartLookup::Found(_)));
    assert!(matches!(w.part(64), PartLookup::Found(_)));
    assert_eq!(w.part(65), PartLookup::NotYet);
    assert_eq!(
        (w.part(66), w.part(19), w.part(0), w.part(u64::MAX)),
        (
            PartLookup::Gone,
            PartLookup::Gone,
            PartLookup::Gone,
            PartLookup::Gone
        )
    );
    assert!(w.init(0).is_some_and(|i| &i[4..8] == b"ftyp") && w.init(1).is_none());
}

#[test]
fn the_hint_at_a_segment_end_names_the_next_segments_first_part() {
    // At 4 s segment 1 has all ten parts (10..=19) but ends only with the keyframe at 4 s.
    let (mut p, mut w, _) = packaged(PackagerConfig::default(), 4);
    let pl = w.media_playlist(&Req::default());
    assert!(
        pl.ends_with("URI=\"part-19.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-20.m4s\"\n"),
        "{pl}"
    );
    assert_eq!(w.part(20), PartLookup::NotYet);
    // A player's blocking reload for the hint asks for part 10 of segment 1.
    assert_eq!(
        w.readiness(&req("_HLS_msn=1&_HLS_part=10")),
        Readiness::Wait
    );
    let rest: Vec<_> = stream(5, true, true)
        .into_iter()
        .filter(|(f, _)| f.dts >= 4000)
        .collect();
    let updates = feed(&mut p, &mut w, &rest);
    let first = updates.iter().find_map(|u| match u {
        HlsUpdate::Part {
            msn, index, seq, ..
        } => Some((*msn, *index, *seq)),
        _ => None,
    });
    assert_eq!(first, Some((2, 0, 20)), "the hinted part opens segment 2");
    assert!(matches!(w.part(20), PartLookup::Found(_)));
    assert_eq!(
        w.readiness(&req("_HLS_msn=1&_HLS_part=10")),
        Readiness::Ready
    );
    let pl = w.media_playlist(&Req::default());
    assert!(pl.contains("seg-1.m4s\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24.000Z\n#EXT-X-PART:DURATION=0.200,URI=\"part-20.m4s\",INDEPENDENT=YES\n"), "{pl}");
}

#[test]
fn the_first_playlist_maps_the_init_of_the_hinted_part() {
    let cfg = PackagerConfig::default();
    let (mut p, mut w) = (Packager::new(cfg, None), Window::new(cfg));
    p.set_tracks(&[h264_track(), aac_track()])
        .unwrap()
        .iter()
        .for_each(|u| w.apply(u));
    let tail = "#EXT-X-MAP:URI=\"init-0.mp4\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-0.m4s\"\n";
    let pl = w.media_playlist(&Req::default());
    assert!(pl.ends_with(&format!("PART-TARGET=0.200\n{tail}")), "{pl}");
    assert_eq!(w.part(0), PartLookup::NotYet);
    // The segment has started, its first part is not complete yet.
    let frames = stream(1, true, true);
    feed(&mut p, &mut w, &frames[..3]);
    assert_eq!(w.last_msn(), Some(0));
    let pl = w.media_playlist(&Req::default());
    assert!(pl.ends_with(&format!("PART-TARGET=0.200\n{tail}")), "{pl}");
    // Once parts are listed, their segment carries the map, once.
    feed(&mut p, &mut w, &frames[3..]);
    let pl = w.media_playlist(&Req::default());
    assert_eq!(pl.matches("#EXT-X-MAP:").count(), 1, "{pl}");
    assert!(pl.contains("#EXT-X-MAP:URI=\"init-0.mp4\"\n#EXT-X-PROGRAM-DATE-TIME"));
    // Tracks that change before the first segment: the current init.
    let (mut p, mut w) = (Packager::new(cfg, None), Window::new(cfg));
    for tracks in [vec![h264_track(), aac_track()], vec![h264_track()]] {
        p.set_tracks(&tracks)
            .unwrap()
            .iter()
            .for_each(|u| w.apply(u));
    }
    assert!(w.media_playlist(&Req::default()).ends_with(
        "#EXT-X-MAP:URI=\"init-1.mp4\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-0.m4s\"\n"
    ));
    // No init at all: nothing to map.
    assert!(!Window::new(cfg)
        .media_playlist(&Req::default())
        .contains("EXT-X-MAP"));
}

#[test]
fn blocking_reload_readiness() {
    let (_, w, _) = packaged(PackagerConfig::default(), 5); // 0, 1 complete; 2 has 5 parts
    let r = |q: &str| w.readiness(&req(q));
    assert_eq!(r(""), Readiness::Ready);
    assert_eq!(r("_HLS_msn=1"), Readiness::Ready);
    assert_eq!(r("_HLS_msn=2"), Readiness::Wait);
    assert_eq!(r("_HLS_msn=3"), Readiness::Wait);
    assert!(matches!(r("_HLS_msn=4"), Readiness::BadRequest(_)));
    assert_eq!(r("_HLS_msn=2&_HLS_part=4"), Readiness::Ready);
    assert_eq!(r("_HLS_msn=2&_HLS_part=5"), Readiness::Wait);
    assert_eq!(r("_HLS_msn=1&_HLS_part=99"), Readiness::Ready);
    assert_eq!(r("_HLS_msn=3&_HLS_part=0"), Readiness::Wait);
    // Advance Part Limit at 200 ms parts: 15 parts ahead of the last one.
    assert_eq!(r("_HLS_msn=2&_HLS_part=19"), Readiness::Wait);
    assert!(matches!(
        r("_HLS_msn=2&_HLS_part=20"),
        Readiness::BadRequest(_)
    ));
    assert!(matches!(
        r("_HLS_msn=3&_HLS_part=15"),
        Readiness::BadRequest(_)
    ));
}

#[test]
fn end_lists_everything_and_stops_hinting() {
    let (mut p, mut w, _) = packaged(PackagerConfig::default(), 3);
    assert_eq!(w.part(15), PartLookup::NotYet);
    let before = w.revision();
    p.end().iter().for_each(|u| w.apply(u));
    assert!(w.revision() > before && w.ended());
    let pl = w.media_playlist(&Req::default());
    assert!(
        pl.ends_with("seg-1.m4s\n#EXT-X-ENDLIST\n") && !pl.contains("PRELOAD-HINT"),
        "{pl}"
    );
    // The last segment is the flushed remainder: 30 frames, 1 s.
    assert!(pl.contains("#EXTINF:1.000,\nseg-1.m4s"));
    assert!(matches!(w.part(14), PartLookup::Found(_)));
    assert_eq!(
        (w.part(15), w.part(16)),
        (PartLookup::Gone, PartLookup::Gone)
    );
    assert_eq!(w.readiness(&req("_HLS_msn=2")), Readiness::Ready);
}

#[test]
fn delta_updates_skip_old_segments() {
    let (_, w, _) = packaged(PackagerConfig::default(), 25); // 0..=11 complete, 12 in progress
    let full = w.media_playlist(&Req::default());
    assert_eq!(lines_with(&full, "seg-").len(), 10);
    let delta = w.media_playlist(&req("_HLS_skip=YES"));
    assert_eq!(delta, w.media_playlist(&req("_HLS_skip=v2")));
    // CAN-SKIP-UNTIL is 12 s: segments 2..=5 end at least 12 s before the end (1 s in progress).
    assert!(delta.contains("#EXT-X-MEDIA-SEQUENCE:2\n"));
    assert!(
        delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n#EXT-X-MAP:URI=\"init-0.mp4\"\n"),
        "{delta}"
    );
    assert_eq!(lines_with(&delta, "seg-")[0], "seg-6.m4s");
    assert_eq!(delta.lines().count() + 4 * 3 - 1, full.lines().count());
    // A short playlist has nothing to skip.
    let (_, short, _) = packaged(PackagerConfig::default(), 9);
    assert!(!short
        .media_playlist(&req("_HLS_skip=YES"))
        .contains("SKIP:"));
}

#[test]
fn discontinuity_sequence_counts_trimmed_discontinuities() {
    let cfg = PackagerConfig {
        window_segments: 2,
        ..Default::default()
    };
    let (mut p, mut w, _) = packaged(cfg, 3);
    p.set_tracks(&[h264_track()])
        .unwrap()
        .iter()
        .for_each(|u| w.apply(u));
    feed(&mut p, &mut w, &stream(7, true, false));
    // Segments 0, 1 (init 0), 2 (discontinuity, init 1) ... 5; the window holds 3, 4 and 5.
    let pl = w.media_playlist(&Req::default());
    assert!(
        pl.contains("#EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"),
        "{pl}"
    );
    assert!(!pl.contains("#EXT-X-DISCONTINUITY\n") && !pl.contains("init-0"));
    assert!(w.init(0).is_none() && w.init(1).is_some());
}

#[test]
fn multivariant_playlist() {
    let empty = Window::new(PackagerConfig::default());
    assert!(empty.multivariant_playlist("media.m3u8").is_none());
    let (_, w, _) = packaged(PackagerConfig::default(), 5);
    let mv = w.multivariant_playlist("media.m3u8\n#EVIL").unwrap();
    let lines: Vec<&str> = mv.lines().collect();
    let inf = lines[1]
        .strip_prefix("#EXT-X-STREAM-INF:BANDWIDTH=")
        .unwrap();
    let (bandwidth, rest) = inf.split_once(',').unwrap();
    assert_eq!(
        rest,
        "CODECS=\"avc1.42c01f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=30.000"
    );
    // Measured: about 14 kB of IDR plus small slices and audio per 2 s.
    assert!(
        (20_000..200_000).contains(&bandwidth.parse::<u64>().unwrap()),
        "{mv}"
    );
    assert_eq!(lines[2], "media.m3u8#EVIL");
}

#[test]
fn query_parsing() {
    assert_eq!(
        req("?_HLS_msn=5&_HLS_part=2&x=%41&_HLS_skip=YES"),
        Req {
            msn: Some(5),
            part: Some(2),
            skip: true
        }
    );
    assert_eq!(req("foo&bar=1"), Req::default());
    let err = |q| Req::parse(q).unwrap_err();
    assert!(matches!(
        err("_HLS_msn=-1"),
        QueryError::NotANumber {
            param: "_HLS_msn",
            ..
        }
    ));
    assert!(matches!(err("_HLS_msn=+1"), QueryError::NotANumber { .. }));
    assert!(matches!(err("_HLS_msn=1e3"), QueryError::NotANumber { .. }));
    assert!(matches!(err("_HLS_msn="), QueryError::NotANumber { .. }));
    assert!(matches!(err("_HLS_msn"), QueryError::NotANumber { .. }));
    assert!(matches!(
        err("_HLS_msn=99999999999999999999999"),
        QueryError::TooLarge { .. }
    ));
    assert!(matches!(
        err("_HLS_msn=9007199254740992"),
        QueryError::TooLarge { .. }
    ));
    assert!(matches!(
        err("_HLS_msn=1&_HLS_part=65536"),
        QueryError::TooLarge {
            param: "_HLS_part",
            ..
        }
    ));
    assert_eq!(err("_HLS_part=1"), QueryError::PartWithoutMsn);
    assert!(matches!(err("_HLS_skip=yes"), QueryError::BadSkip { .. }));
    assert_eq!(
        err("_HLS_msn=1&_HLS_msn=2"),
        QueryError::Repeated { param: "_HLS_msn" }
    );
    let long = format!("_HLS_msn={}", "x".repeat(10_000));
    assert!(
        err(&long).to_string().len() < 100,
        "error messages do not echo huge input"
    );
}

#[test]
fn resource_names() {
    use Resource::*;
    assert_eq!(Resource::parse("index.m3u8"), Some(Multivariant));
    assert_eq!(Resource::parse("media.m3u8"), Some(Media));
    assert_eq!(Resource::parse("init-0.mp4"), Some(Init { id: 0 }));
    assert_eq!(
        Resource::parse("seg-18446744073709551615.m4s"),
        Some(Segment { msn: u64::MAX })
    );
    assert_eq!(Resource::parse("part-123.m4s"), Some(Part { seq: 123 }));
    assert_eq!(Resource::parse("part-0.m4s"), Some(Part { seq: 0 }));
    assert_eq!(
        Resource::parse("part-18446744073709551615.m4s"),
        Some(Part { seq: u64::MAX })
    );
    for bad in [
        "",
        "index.m3u8?x",
        "../media.m3u8",
        "init-.mp4",
        "init-01.mp4",
        "init--1.mp4",
        "init-+1.mp4",
        "seg-18446744073709551616.m4s",
        "seg-1.mp4",
        "seg-1.m4s/..",
        "part-12-3.m4s",
        "part-1-2-3.m4s",
        "part-1-4294967296.m4s",
        "part-1-00.m4s",
        "part- 1-2.m4s",
        "part-.m4s",
        "part-01.m4s",
        "part--1.m4s",
        "part-18446744073709551616.m4s",
        "part-1.mp4",
        "seg-١.m4s",
        "SEG-1.m4s",
    ] {
        assert_eq!(Resource::parse(bad), None, "{bad:?}");
    }
    assert_eq!(Media.content_type(), "application/vnd.apple.mpegurl");
    assert_eq!(Part { seq: 0 }.content_type(), "video/mp4");
}

#[test]
fn program_date_time_format() {
    assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(iso8601(T0 + 123), "2023-11-14T22:13:20.123Z");
    assert_eq!(iso8601(951_825_600_000), "2000-02-29T12:00:00.000Z");
}
