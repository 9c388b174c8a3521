//! LL-HLS end to end: ffmpeg publishes RTMP; ffprobe/ffmpeg, hls.js in Chromium and a caching
//! nginx read `/hls/NAME/...`. Playlists are checked with a playlist library (m3u8-rs) and
//! against the LL-HLS rules by hand.

mod common;

use std::time::{Duration, Instant};

use common::http::{get, request};
use common::*;

/// One `#EXT-X-PART` line: its position (segment, index within it) and the stream-global
/// sequence number its URI spells.
#[derive(Debug, Clone)]
struct Part {
    msn: u64,
    index: u32,
    seq: u64,
    duration: f64,
    independent: bool,
    uri: String,
}

/// One complete segment (`#EXTINF` + URI).
#[derive(Debug, Clone)]
struct Segment {
    msn: u64,
    duration: f64,
    discontinuity: bool,
    program_date_time: Option<String>,
}

/// The LL-HLS facts of a media playlist, read line by line.
#[derive(Debug, Default)]
struct LlPlaylist {
    target_duration: f64,
    media_sequence: u64,
    part_target: f64,
    server_control: String,
    parts: Vec<Part>,
    segments: Vec<Segment>,
    preload_hint: Option<String>,
    /// (msn, index) of the hinted part, by position.
    hint_position: Option<(u64, u32)>,
    skipped: Option<u64>,
    maps: Vec<String>,
    ended: bool,
}

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=");
    line.split(',')
        .find_map(|kv| kv.trim().strip_prefix(&key))
        .map(|v| v.trim_matches('"'))
}

/// `part-<seq>.m4s` → seq.
fn part_seq(uri: &str) -> u64 {
    let s = uri
        .strip_prefix("part-")
        .and_then(|s| s.strip_suffix(".m4s"))
        .unwrap_or_else(|| panic!("part URI {uri:?}"));
    s.parse()
        .unwrap_or_else(|_| panic!("part URI {uri:?}: not part-<seq>.m4s"))
}

impl LlPlaylist {
    fn parse(text: &str) -> LlPlaylist {
        assert!(text.starts_with("#EXTM3U"), "not a playlist: {text}");
        // The library must accept it as a media playlist (what an ordinary player sees).
        match m3u8_rs::parse_playlist_res(text.as_bytes()) {
            Ok(m3u8_rs::Playlist::MediaPlaylist(_)) => {}
            other => panic!("m3u8-rs does not read a media playlist: {other:?}\n{text}"),
        }
        let mut p = LlPlaylist::default();
        // Parts are numbered by position: the parts before a segment's URI line are its own,
        // from index 0; the parts after the last URI line belong to the segment in progress.
        let mut next_msn = None;
        let mut index = 0u32;
        let mut pending_inf = None;
        let mut pending_disc = false;
        let mut pending_pdt = None;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                p.target_duration = v.parse().unwrap();
            } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                p.media_sequence = v.parse().unwrap();
                next_msn = Some(p.media_sequence);
            } else if let Some(v) = line.strip_prefix("#EXT-X-PART-INF:") {
                p.part_target = attr(v, "PART-TARGET").unwrap().parse().unwrap();
            } else if let Some(v) = line.strip_prefix("#EXT-X-SERVER-CONTROL:") {
                p.server_control = v.to_owned();
            } else if let Some(v) = line.strip_prefix("#EXT-X-SKIP:") {
                let n: u64 = attr(v, "SKIPPED-SEGMENTS").unwrap().parse().unwrap();
                p.skipped = Some(n);
                next_msn = next_msn.map(|m| m + n);
            } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
                p.maps.push(attr(v, "URI").unwrap().to_owned());
            } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
                let uri = attr(v, "URI").unwrap().to_owned();
                let seq = part_seq(&uri);
                if let Some(prev) = p.parts.last() {
                    assert_eq!(seq, prev.seq + 1, "part sequence numbers: {text}");
                }
                p.parts.push(Part {
                    msn: next_msn.expect("media sequence before parts"),
                    index,
                    seq,
                    duration: attr(v, "DURATION").unwrap().parse().unwrap(),
                    independent: attr(v, "INDEPENDENT") == Some("YES"),
                    uri,
                });
                index += 1;
            } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
                assert_eq!(attr(v, "TYPE"), Some("PART"), "{line}");
                let uri = attr(v, "URI").unwrap().to_owned();
                let seq = part_seq(&uri);
                if let Some(last) = p.parts.last() {
                    assert_eq!(seq, last.seq + 1, "the hint names the next part: {text}");
                }
                assert!(
                    !p.maps.is_empty(),
                    "a preload hint without EXT-X-MAP: {text}"
                );
                p.preload_hint = Some(uri);
            } else if let Some(v) = line.strip_prefix("#EXTINF:") {
                pending_inf = Some(v.trim_end_matches(',').parse::<f64>().unwrap());
            } else if line == "#EXT-X-DISCONTINUITY" {
                pending_disc = true;
            } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
                pending_pdt = Some(v.to_owned());
            } else if line == "#EXT-X-ENDLIST" {
                p.ended = true;
            } else if !line.starts_with('#') && !line.is_empty() {
                let msn = next_msn.expect("media sequence before segments");
                assert_eq!(line, format!("seg-{msn}.m4s"), "segment URI");
                p.segments.push(Segment {
                    msn,
                    duration: pending_inf.take().expect("EXTINF before a segment URI"),
                    discontinuity: std::mem::take(&mut pending_disc),
                    program_date_time: pending_pdt.take(),
                });
                next_msn = Some(msn + 1);
                index = 0;
            }
        }
        if p.preload_hint.is_some() {
            p.hint_position = Some((next_msn.expect("a media sequence"), index));
        }
        p
    }

    fn last_msn(&self) -> u64 {
        self.segments.last().map(|s| s.msn).expect("a segment")
    }

    /// The position of the part the preload hint names, as a player asks for it in a
    /// blocking reload (`_HLS_msn`, `_HLS_part`): the part after the last one listed in the
    /// segment in progress, or part 0 of the next segment when the last segment listed is
    /// complete. When the segment in progress ends before that part, the hinted part is part
    /// 0 of the next segment, and the reload is answered when that appears.
    fn hinted(&self) -> (u64, u32) {
        self.hint_position.expect("a preload hint")
    }

    /// The sequence number of the hinted part.
    fn hinted_seq(&self) -> u64 {
        part_seq(self.preload_hint.as_deref().expect("a preload hint"))
    }

    /// The listed part with sequence number `seq`.
    fn part(&self, seq: u64) -> Option<&Part> {
        self.parts.iter().find(|p| p.seq == seq)
    }
}

fn hls_server(shards: u32) -> Server {
    require_ffmpeg();
    Server::start(ServerOpts {
        shards,
        publish: "open",
        ..Default::default()
    })
}

/// Publishes the 720p clip (GOP 2 s) as `name`; the publisher runs until dropped.
fn publish_main(server: &Server, name: &str) -> Proc {
    let clip = clip(MAIN_CLIP);
    publish(
        &format!("publisher-{name}"),
        server.dir.path(),
        &clip,
        &server.publish_url(name),
    )
}

#[test]
fn ffprobe_and_ffmpeg_read_the_ll_hls_playlists() {
    let _serial = serial();
    let server = hls_server(2);
    let mut publisher = publish_main(&server, "cam");
    server.wait_hls("cam", 2, Duration::from_secs(20));

    let streams = probe(&server.hls_url("cam"), Duration::from_secs(30)).expect("ffprobe");
    let video = streams
        .iter()
        .find(|s| s.codec_type == "video")
        .expect("video stream");
    assert_eq!(video.codec_name, "h264");
    assert_eq!((video.width, video.height), (Some(1280), Some(720)));
    let audio = streams
        .iter()
        .find(|s| s.codec_type == "audio")
        .expect("audio stream");
    assert_eq!(audio.codec_name, "aac");

    // ffmpeg 5.1 ignores the parts and plays the segments, as a player without LL-HLS does.
    let out = server.dir.path().join("hls.mp4");
    let mut cmd = std::process::Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(server.hls_url("cam"))
        .args(["-t", "4", "-c", "copy", "-y"])
        .arg(&out);
    let (st, _, err) = run_bounded(cmd, Duration::from_secs(40));
    assert!(
        st.is_some_and(|s| s.success()),
        "ffmpeg HLS read failed: {err}"
    );
    let rec = analyze(&out).expect("analyze hls.mp4");
    assert_eq!((rec.width, rec.height), (Some(1280), Some(720)));
    assert_eq!(rec.video_codec, "h264");
    assert_eq!(rec.audio_codec, "aac");
    rec.assert_complete(3.8, 0.5, "ffmpeg reading LL-HLS");
    assert!(rec.video[0].key, "the HLS read starts on a keyframe");
    assert_running(&mut publisher);
}

#[test]
fn playlists_follow_the_ll_hls_rules() {
    let _serial = serial();
    let server = hls_server(1);
    let _publisher = publish_main(&server, "rules");
    let port = server.http_port;
    // Wait for seven 2 s segments: more than CAN-SKIP-UNTIL (6 target durations) of playlist.
    let text = server.wait_hls("rules", 7, Duration::from_secs(40));
    let p = LlPlaylist::parse(&text);

    // Header tags.
    assert!(text.contains("#EXT-X-VERSION:"), "{text}");
    assert_eq!(p.target_duration, 2.0, "{text}");
    assert!((p.part_target - 0.2).abs() < 1e-9, "PART-TARGET: {text}");
    assert!(p.server_control.contains("CAN-BLOCK-RELOAD=YES"), "{text}");
    let hold: f64 = attr(&p.server_control, "PART-HOLD-BACK")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        hold >= 2.0 * p.part_target,
        "PART-HOLD-BACK {hold} < 2 part targets"
    );
    let skip: f64 = attr(&p.server_control, "CAN-SKIP-UNTIL")
        .unwrap()
        .parse()
        .unwrap();
    assert!(skip >= 6.0 * p.target_duration, "CAN-SKIP-UNTIL {skip}");
    assert_eq!(p.maps.len(), 1, "one EXT-X-MAP: {text}");
    assert!(!p.ended);

    // Segments: consecutive, within the target duration, dated, each from one keyframe.
    for w in p.segments.windows(2) {
        assert_eq!(w[1].msn, w[0].msn + 1);
    }
    for s in &p.segments {
        assert!(s.duration <= p.target_duration + 0.5, "{s:?}");
        assert!(s.duration > 1.5, "{s:?} is short for a 2 s GOP");
        assert!(
            s.program_date_time.is_some(),
            "no PROGRAM-DATE-TIME on {s:?}"
        );
        assert!(!s.discontinuity);
    }
    // Parts: within PART-TARGET, numbered 0.. per segment, the first independent, and the
    // parts of a complete segment add up to its EXTINF.
    assert!(!p.parts.is_empty(), "no EXT-X-PART: {text}");
    for part in &p.parts {
        assert!(
            part.duration <= p.part_target + 0.001,
            "part longer than PART-TARGET: {part:?}"
        );
    }
    let mut by_msn: std::collections::BTreeMap<u64, Vec<&Part>> = Default::default();
    for part in &p.parts {
        by_msn.entry(part.msn).or_default().push(part);
    }
    for (msn, parts) in &by_msn {
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(part.index as usize, i, "part numbering of segment {msn}");
        }
        assert!(
            parts[0].independent,
            "first part of {msn} is not INDEPENDENT"
        );
        if let Some(seg) = p.segments.iter().find(|s| s.msn == *msn) {
            let sum: f64 = parts.iter().map(|p| p.duration).sum();
            assert!(
                (sum - seg.duration).abs() < 0.01,
                "parts of {msn} sum to {sum}, EXTINF {}",
                seg.duration
            );
        }
    }
    // Parts are listed for recent segments only, and for the one in progress.
    let listed: Vec<u64> = by_msn.keys().copied().collect();
    assert!(listed.len() <= 4, "parts of too many segments: {listed:?}");
    assert!(*listed.last().unwrap() >= p.last_msn(), "{listed:?}");

    // Blocking reload of the hinted part: answered only once that part (or, when the segment
    // in progress ended first, part 0 of the next segment, which is then the hinted part) is
    // in the playlist.
    let (msn, part) = p.hinted();
    let hinted_seq = p.hinted_seq();
    let started = Instant::now();
    let r = get(
        port,
        &format!("/hls/rules/media.m3u8?_HLS_msn={msn}&_HLS_part={part}"),
    );
    let waited = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    let after = LlPlaylist::parse(&r.text());
    let got = after.part(hinted_seq).unwrap_or_else(|| {
        panic!(
            "blocking reload for {msn}.{part} returned without the hinted part {hinted_seq}:\n{}",
            r.text()
        )
    });
    assert!(
        (got.msn, got.index) == (msn, part) || (part > 0 && (got.msn, got.index) == (msn + 1, 0)),
        "the hinted part {hinted_seq} for {msn}.{part} is at {}.{}",
        got.msn,
        got.index
    );
    assert!(got.seq > p.parts.last().unwrap().seq);
    assert!(
        waited < Duration::from_secs(2),
        "blocking reload took {waited:?}"
    );
    eprintln!("blocking reload for {msn}.{part} waited {waited:?}");
    let cache = r.header("cache-control").unwrap_or_default().to_owned();
    assert!(
        cache.contains("max-age"),
        "blocking reload Cache-Control: {cache}"
    );

    // The part named by the new hint: fetched before it exists, it arrives when complete.
    let r = get(port, &format!("/hls/rules/part-{}.m4s", after.hinted_seq()));
    assert_eq!(r.status, 200, "hinted part: {}", r.text());
    assert!(r.body.len() > 100, "part of {} bytes", r.body.len());
    assert_eq!(
        &r.body[4..8],
        b"moof",
        "a part is one CMAF chunk (moof+mdat)"
    );
    let cache = r.header("cache-control").unwrap_or_default();
    assert!(cache.contains("immutable"), "part Cache-Control: {cache}");

    // Follow the hint as a player that preloads it does, for more than a segment: every
    // hinted part exists, including the ones hinted while a segment was about to end.
    let mut current = LlPlaylist::parse(&get(port, "/hls/rules/media.m3u8").text());
    let mut fetched: Vec<(u64, u64, u32)> = Vec::new();
    let mut rollovers = 0;
    for _ in 0..14 {
        let seq = current.hinted_seq();
        let (hmsn, hpart) = current.hinted();
        let r = get(port, &format!("/hls/rules/part-{seq}.m4s"));
        assert_eq!(
            r.status,
            200,
            "hinted part {seq} ({hmsn}.{hpart}, after {:?}): {}",
            current.parts.last(),
            r.text()
        );
        assert_eq!(&r.body[4..8], b"moof", "hinted part {seq}");
        current = LlPlaylist::parse(&get(port, "/hls/rules/media.m3u8").text());
        let listed = current
            .part(seq)
            .unwrap_or_else(|| panic!("part {seq} fetched but not listed"));
        if (listed.msn, listed.index) != (hmsn, hpart) {
            // Hinted while its segment was about to end: it opened the next one.
            assert_eq!(
                (listed.msn, listed.index),
                (hmsn + 1, 0),
                "hinted part {seq}"
            );
            rollovers += 1;
        }
        fetched.push((seq, listed.msn, listed.index));
    }
    eprintln!("hinted parts fetched (seq, msn, index): {fetched:?}; {rollovers} hinted at the end of a segment");
    assert!(
        fetched.windows(2).all(|w| w[1].0 > w[0].0),
        "hints went back: {fetched:?}"
    );
    assert!(
        fetched.iter().any(|&(_, m, i)| i == 0 && m > fetched[0].1),
        "no hinted part crossed a segment boundary: {fetched:?}"
    );

    // A complete segment is its parts, byte for byte.
    let seg = p.segments.last().unwrap().msn;
    let whole = get(port, &format!("/hls/rules/seg-{seg}.m4s"));
    assert_eq!(whole.status, 200);
    assert!(whole
        .header("cache-control")
        .unwrap_or_default()
        .contains("immutable"));
    if by_msn.contains_key(&seg) {
        let mut joined = Vec::new();
        for part in &by_msn[&seg] {
            let r = get(port, &format!("/hls/rules/{}", part.uri));
            assert_eq!(r.status, 200);
            joined.extend_from_slice(&r.body);
        }
        assert_eq!(
            joined, whole.body,
            "segment {seg} is not the concatenation of its parts"
        );
    }
    let init = get(port, &format!("/hls/rules/{}", p.maps[0]));
    assert_eq!(init.status, 200);
    assert_eq!(&init.body[4..8], b"ftyp");

    // Too far ahead: 400 at once, not a wait.
    let far = current.last_msn() + 3;
    let started = Instant::now();
    let r = get(port, &format!("/hls/rules/media.m3u8?_HLS_msn={far}"));
    assert_eq!(r.status, 400, "msn {far}: {}", r.text());
    assert!(started.elapsed() < Duration::from_millis(500));

    // Delta update: the oldest segments are skipped.
    let r = get(port, "/hls/rules/media.m3u8?_HLS_skip=YES");
    assert_eq!(r.status, 200);
    let delta = LlPlaylist::parse(&r.text());
    let skipped = delta.skipped.expect("EXT-X-SKIP in a delta update");
    assert!(skipped > 0);
    assert!(
        delta.segments.len()
            < LlPlaylist::parse(&get(port, "/hls/rules/media.m3u8").text())
                .segments
                .len()
                + 1
    );
    let kept: f64 = delta.segments.iter().map(|s| s.duration).sum();
    assert!(kept >= skip - p.target_duration, "delta kept only {kept} s");

    // The multivariant playlist describes the rendition.
    let mv = get(port, "/hls/rules/index.m3u8");
    assert_eq!(mv.status, 200);
    let mv_text = mv.text();
    match m3u8_rs::parse_playlist_res(mv.body.as_slice()) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(m)) => {
            let v = &m.variants[0];
            assert_eq!(v.uri, "media.m3u8");
            let codecs = v.codecs.clone().unwrap_or_default();
            assert!(
                codecs.contains("avc1.") && codecs.contains("mp4a.40.2"),
                "{mv_text}"
            );
            let res = v.resolution.expect("RESOLUTION");
            assert_eq!((res.width, res.height), (1280, 720));
            let fps = v.frame_rate.expect("FRAME-RATE");
            assert!((fps - 30.0).abs() < 0.5, "FRAME-RATE {fps}");
            assert!(v.bandwidth > 1_000_000, "BANDWIDTH {}", v.bandwidth);
        }
        other => panic!("not a multivariant playlist: {other:?}\n{mv_text}"),
    }
    assert_eq!(
        mv.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
}

#[test]
fn a_stream_that_ends_and_returns_gets_endlist_then_a_discontinuity() {
    let _serial = serial();
    let server = hls_server(2);
    let port = server.http_port;
    let mut first = publish_main(&server, "again");
    let before = LlPlaylist::parse(&server.wait_hls("again", 2, Duration::from_secs(20)));
    first.kill9();
    let deadline = Instant::now() + Duration::from_secs(10);
    let ended = loop {
        let p = LlPlaylist::parse(&get(port, "/hls/again/media.m3u8").text());
        if p.ended {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no EXT-X-ENDLIST after the publisher left"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        ended.preload_hint.is_none(),
        "an ended playlist hints no part"
    );
    // A blocking reload of an ended playlist answers at once.
    let r = get(
        port,
        &format!("/hls/again/media.m3u8?_HLS_msn={}", ended.last_msn() + 1),
    );
    assert!(r.elapsed < Duration::from_millis(500) && r.status == 200);

    let _second = publish_main(&server, "again");
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let p = LlPlaylist::parse(&get(port, "/hls/again/media.m3u8").text());
        if !p.ended
            && p.segments.iter().any(|s| s.discontinuity)
            && p.segments.len() > ended.segments.len()
        {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no discontinuity after republishing"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let disc = after.segments.iter().find(|s| s.discontinuity).unwrap();
    assert!(
        disc.msn > before.last_msn(),
        "numbering went back: {disc:?}"
    );
    assert_eq!(
        after.maps.len(),
        2,
        "a new EXT-X-MAP after the discontinuity"
    );
    // A player that starts now reads across it.
    let streams = probe(&server.hls_url("again"), Duration::from_secs(30)).expect("ffprobe");
    assert!(streams.iter().any(|s| s.codec_name == "h264"));
}

#[test]
fn hls_js_plays_in_chromium_with_low_latency() {
    browser::require_chromium();
    let _serial = serial();
    let server = hls_server(2);
    let mut publisher = publish_main(&server, "web");
    server.wait_hls("web", 1, Duration::from_secs(20));
    let report = browser::play_hls(&server.hls_url("web"), 14, true);
    eprintln!("hls.js report: {}", report.summary());
    assert!(
        report.fatal_errors.is_empty(),
        "fatal hls.js errors: {}",
        report.summary()
    );
    report.assert_played(10.0, "hls.js on zerocast");
    assert_eq!((report.width, report.height), (1280, 720));
    assert!(
        report.parts_loaded > 0,
        "hls.js loaded no parts: {}",
        report.summary()
    );
    let latency = report.latency.median.expect("hls.latency samples");
    eprintln!("hls.js latency (median of samples): {latency:.3} s");
    assert!(latency < 1.5, "hls.latency {latency} s is not under 1.5 s");
    assert_running(&mut publisher);
}

#[test]
fn a_caching_nginx_serves_parts_and_segments_and_passes_blocking_reloads() {
    browser::require_chromium();
    let _serial = serial();
    let server = hls_server(1);
    let _publisher = publish_main(&server, "cdn");
    server.wait_hls("cdn", 1, Duration::from_secs(20));
    let nginx = nginx::CachingNginx::start(server.http_port);
    let url = format!("http://127.0.0.1:{}/hls/cdn/index.m3u8", nginx.port());
    let report = browser::play_hls(&url, 12, true);
    eprintln!("hls.js through nginx: {}", report.summary());
    assert!(report.fatal_errors.is_empty(), "{}", report.summary());
    report.assert_played(8.0, "hls.js through nginx");

    // A second reader of the same objects is served from nginx's cache.
    let p = LlPlaylist::parse(&get(nginx.port(), "/hls/cdn/media.m3u8").text());
    let seg = format!("/hls/cdn/seg-{}.m4s", p.last_msn());
    let part = format!("/hls/cdn/{}", p.parts[0].uri);
    for path in [&seg, &part] {
        let first = get(nginx.port(), path);
        assert_eq!(first.status, 200, "{path}");
        let second = get(nginx.port(), path);
        assert_eq!(second.status, 200, "{path}");
        assert_eq!(
            second.header("x-cache-status"),
            Some("HIT"),
            "{path} not cached"
        );
        assert_eq!(first.body, second.body);
    }
    let log = nginx.access_log();
    let blocking: Vec<&str> = log.lines().filter(|l| l.contains("_HLS_msn")).collect();
    assert!(
        !blocking.is_empty(),
        "hls.js made no blocking reloads through nginx:\n{log}"
    );
    assert!(
        blocking.iter().all(|l| !l.contains("HIT")),
        "a blocking reload was answered from the cache:\n{}",
        blocking.join("\n")
    );
    let hits = log
        .lines()
        .filter(|l| (l.contains(".m4s") || l.contains(".mp4")) && l.contains("HIT"))
        .count();
    assert!(hits >= 2, "no cache hits for media:\n{log}");
}

#[test]
fn bad_http_input_gets_a_clear_4xx_and_disturbs_nothing() {
    let _serial = serial();
    let server = Server::start(ServerOpts {
        shards: 1,
        publish: "open",
        http: vec!["header_timeout = \"2s\"".into()],
        ..Default::default()
    });
    let port = server.http_port;
    let _publisher = publish_main(&server, "calm");
    server.wait_hls("calm", 1, Duration::from_secs(20));

    let cases: &[(&str, u16)] = &[
        ("/hls/calm/media.m3u8?_HLS_msn=99999999999999999999999", 400),
        ("/hls/calm/media.m3u8?_HLS_msn=-1", 400),
        ("/hls/calm/media.m3u8?_HLS_msn=abc", 400),
        ("/hls/calm/media.m3u8?_HLS_part=2", 400),
        ("/hls/calm/media.m3u8?_HLS_msn=1&_HLS_part=99999999999", 400),
        ("/hls/calm/media.m3u8?_HLS_msn=18446744073709551615", 400),
        ("/hls/calm/media.m3u8?_HLS_skip=MAYBE", 400),
        ("/hls/../../etc/passwd", 404),
        ("/hls/..%2F..%2Fetc/passwd", 404),
        ("/hls/calm/..%2F..%2Fetc%2Fpasswd", 404),
        ("/hls/calm/../index.m3u8", 404),
        ("/hls/%2e%2e/index.m3u8", 404),
        ("/hls/calm/seg-99999999999999999999999999.m4s", 404),
        ("/hls/calm/part-1-99999999999.m4s", 404),
        ("/hls/calm/part-1-0.m4s", 404),
        ("/hls/calm/part-99999999999.m4s", 404),
        ("/hls/calm/part-007.m4s", 404),
        ("/hls/calm/seg-00001.m4s", 404),
        ("/hls/calm/init-0.mp4/../../x", 404),
        ("/hls/nosuchstream/index.m3u8", 404),
        ("/nothing/here", 404),
    ];
    for (path, want) in cases {
        let r = get(port, path);
        assert_eq!(r.status, *want, "{path}: {}", r.text());
        if *want >= 400 {
            assert!(
                r.text().contains("\"error\""),
                "{path}: no JSON error: {}",
                r.text()
            );
        }
    }
    // Oversized head and too many headers: 431.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let r = request(port, &big).expect("a response to an oversized head");
    assert_eq!(r.status, 431, "oversized head");
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = request(
        port,
        &format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n"),
    )
    .expect("a response to 200 headers");
    assert_eq!(r.status, 431, "too many headers");
    // A method the resource does not take.
    let r = request(port, "POST /hls/calm/index.m3u8 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(r.status, 405);
    // A slow head is cut off after http.header_timeout (2 s here).
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::{Read, Write};
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let n = slow.read(&mut buf).unwrap_or(0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "slow head held the connection {:?}",
        started.elapsed()
    );
    assert!(
        n == 0 || String::from_utf8_lossy(&buf[..n]).contains("408"),
        "slow head got {:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    // Everything still works.
    assert_eq!(get(port, "/healthz").status, 200);
    let p = LlPlaylist::parse(&get(port, "/hls/calm/media.m3u8").text());
    let (msn, part) = p.hinted();
    let r = get(
        port,
        &format!("/hls/calm/media.m3u8?_HLS_msn={msn}&_HLS_part={part}"),
    );
    assert_eq!(r.status, 200);
    assert!(
        server.log().lines().all(|l| !l.contains("panicked")),
        "{}",
        server.log()
    );
}

#[test]
fn https_serves_health_and_playlists() {
    let _serial = serial();
    let tls_port = free_port();
    let server = Server::start(ServerOpts {
        shards: 1,
        publish: "open",
        http: vec![format!("tls_listen = \"127.0.0.1:{tls_port}\"")],
        ..Default::default()
    });
    let _publisher = publish_main(&server, "secure");
    server.wait_hls("secure", 1, Duration::from_secs(20));
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sk", "--http1.1", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://127.0.0.1:{tls_port}/healthz"));
    let (st, out, err) = run_bounded(cmd, Duration::from_secs(10));
    assert!(
        st.is_some_and(|s| s.success()),
        "curl failed (apt-get install curl): {err}"
    );
    assert_eq!(out.trim(), "200");
    let streams = probe(
        &format!("https://127.0.0.1:{tls_port}/hls/secure/index.m3u8"),
        Duration::from_secs(30),
    )
    .expect("ffprobe over HTTPS");
    assert!(streams
        .iter()
        .any(|s| s.codec_name == "h264" && s.width == Some(1280)));
}
