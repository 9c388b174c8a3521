//! End-to-end SRT tests against peers we did not write: ffmpeg 5.1 (libsrt) and
//! srt-live-transmit (Debian srt-tools, libsrt 1.5.1). What a real peer publishes over SRT, real
//! players (SRT, RTMP, LL-HLS) must receive intact; encryption, refusals, a lossy link and
//! hostile datagrams are checked from the peers' side.
//!
//! The lossy-link tests put a UDP relay of our own (tests/common/srt.rs) between caller and
//! server; `lossy_relay_carries_libsrt_to_libsrt_intact` checks that relay with libsrt on both
//! ends, so a failure of the server-side tests is the server's.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::srt::*;
use common::*;

const SECS: Duration = Duration::from_secs(1);
/// The passphrase of the encrypted servers (10..79 characters).
const PASSPHRASE: &str = "zerocast-e2e-srt-passphrase";

fn srt_server(srt: SrtOpts) -> Server {
    Server::start(ServerOpts {
        srt: Some(srt),
        ..Default::default()
    })
}

fn srt_addr(server: &Server) -> SocketAddr {
    ([127, 0, 0, 1], server.srt()).into()
}

/// Waits (bounded) until `path` holds at least `bytes` bytes, failing early when `p` exits.
fn wait_bytes(p: &mut Proc, path: &Path, bytes: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while fs_len(path) < bytes {
        if let Some(st) = p.try_status() {
            panic!(
                "{} exited ({st}) before writing {bytes} bytes to {}\n--- stderr ---\n{}",
                p.name,
                path.display(),
                p.stderr()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} wrote only {} bytes to {} within {limit:?}\n--- stderr ---\n{}",
            p.name,
            fs_len(path),
            path.display(),
            p.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) until `p`'s stderr contains `text`.
fn wait_stderr(p: &mut Proc, text: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !p.stderr().contains(text) {
        if let Some(st) = p.try_status() {
            panic!(
                "{} exited ({st}) without printing {text:?}\n--- stderr ---\n{}",
                p.name,
                p.stderr()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} did not print {text:?} within {limit:?}\n--- stderr ---\n{}",
            p.name,
            p.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts what a player saved is H.264 1280x720 + AAC, starts on a keyframe, spans at least
/// `min_span` s with ≥ 95% of the frames of that span and no gap over 0.5 s, and that at least
/// 95% of `expected_frames` video frames decode.
fn assert_received(path: &Path, p: &Proc, min_span: f64, expected_frames: f64) {
    let rec = analyze_or_panic(path, p);
    assert_eq!(rec.video_codec, "h264", "{}: video codec", p.name);
    assert_eq!(rec.audio_codec, "aac", "{}: audio codec", p.name);
    assert_eq!(
        (rec.width, rec.height),
        (Some(1280), Some(720)),
        "{}: picture size",
        p.name
    );
    rec.assert_complete(min_span, 0.5, &p.name);
    let d = decoded(path, None).unwrap_or_else(|e| panic!("{}: {e}", p.name));
    eprintln!(
        "{}: {} video frames decoded ({} audio) over {:.2} s of video, {expected_frames:.0} expected",
        p.name,
        d.video_frames,
        d.audio_frames,
        rec.video_span()
    );
    assert!(
        d.video_frames as f64 >= 0.95 * expected_frames,
        "{}: {} video frames decoded, expected ≈ {expected_frames:.0} (≥ 95%)",
        p.name,
        d.video_frames
    );
    assert!(d.audio_frames > 0, "{}: no audio frame decoded", p.name);
}

/// Asserts a lossy-link recording is intact: ≥ 99% of the frames of its span (a frame lost for
/// good in a 6 s window is 1 of 180, 0.56%), no two consecutive frames missing (gap ≤ 70 ms
/// at 30 fps), and every frame in the first `clean_secs` decodes without a decoder complaint.
fn assert_intact(path: &Path, p: &Proc, min_span: f64, clean_secs: Option<f64>) {
    let rec = analyze_or_panic(path, p);
    assert_eq!(rec.video_codec, "h264", "{}: video codec", p.name);
    assert_eq!(
        (rec.width, rec.height),
        (Some(1280), Some(720)),
        "{}",
        p.name
    );
    let n = rec.video.len();
    let span = rec.video_span();
    let expected = span * FPS + 1.0;
    eprintln!(
        "{}: {n} video packets over {span:.3} s (expected {expected:.0}), largest gap {:.0} ms, {} audio packets",
        p.name,
        rec.max_video_gap() * 1000.0,
        rec.audio
    );
    assert!(span >= min_span, "{}: only {span:.2} s of video", p.name);
    assert!(
        n as f64 >= 0.99 * expected,
        "{}: {n} video frames over {span:.3} s, expected {expected:.0} (≥ 99%)",
        p.name
    );
    assert!(
        rec.max_video_gap() <= 0.070,
        "{}: {:.0} ms without video: frames are missing",
        p.name,
        rec.max_video_gap() * 1000.0
    );
    assert!(rec.audio > 0, "{}: no audio", p.name);
    let errors = decode_errors(path, clean_secs);
    assert!(
        errors.is_empty(),
        "{}: the received stream does not decode cleanly:\n{errors}",
        p.name
    );
}

/// The server's log lines that tell of a refused or rejected SRT connection.
fn refusal_lines(server: &Server) -> Vec<String> {
    server
        .log()
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("srt") && (l.contains("refus") || l.contains("reject"))
        })
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. ffmpeg publishes over SRT
// ---------------------------------------------------------------------------------------------

#[test]
fn ffmpeg_srt_publish_plays_over_rtmp_srt_and_llhls() {
    let _serial = serial();
    require_ffmpeg_srt();
    let clip = clip(MAIN_CLIP);
    let mut server = srt_server(SrtOpts::default());
    let key = server.create_stream("cam");
    let dir = server.scratch("peers");

    let url = caller_url(
        server.srt(),
        &publish_sid(&key),
        &["pkt_size=1316", "latency=120000"],
    );
    let mut publisher = ffmpeg_publish_srt("publisher", &dir, &clip, &url, None);
    let live = server.wait_live("cam", 15 * SECS);
    assert_eq!(live["protocol"], "srt", "ingest protocol in {live}");

    let streams = probe(&server.play_url("cam"), 20 * SECS)
        .unwrap_or_else(|e| panic!("ffprobe over RTMP of the SRT-published stream: {e}"));
    assert_av(&streams, 1280, 720, "ffprobe over RTMP");

    let srt_out = dir.join("srt.ts");
    let rtmp_out = dir.join("rtmp.flv");
    let read_url = caller_url(server.srt(), &request_sid("cam"), &["latency=120000"]);
    let mut srt_player = ffmpeg_read_srt("srt-player", &dir, &read_url, 5.0, &srt_out);
    let mut rtmp_player = record("rtmp-player", &dir, &server.play_url("cam"), 5.0, &rtmp_out);

    // While both play, the API counts the SRT viewer.
    // DEPENDS ON THE API: live.viewers.srt (GET /api/v1/streams/NAME).
    let deadline = Instant::now() + 10 * SECS;
    loop {
        let v = server.stream_info("cam");
        let viewers = &v["live"]["viewers"];
        if viewers["srt"].as_u64().unwrap_or(0) >= 1 && viewers["rtmp"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the API does not report one SRT and one RTMP viewer: {viewers}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    finish_player(&mut srt_player, 25 * SECS);
    finish_player(&mut rtmp_player, 25 * SECS);
    assert_received(&srt_out, &srt_player, 4.5, 5.0 * FPS);
    assert_received(&rtmp_out, &rtmp_player, 4.5, 5.0 * FPS);

    let playlist = server.wait_hls("cam", 1, 20 * SECS);
    assert!(
        playlist.contains("#EXT-X-PART:"),
        "the LL-HLS playlist of the SRT-published stream has no parts:\n{playlist}"
    );

    assert_running(&mut publisher);
    drop(publisher);
    server.stop_ok();
}

// ---------------------------------------------------------------------------------------------
// 2. Encryption
// ---------------------------------------------------------------------------------------------

/// srt-live-transmit publishes (fed MPEG-TS by ffmpeg through a pipe) and reads with the server's
/// passphrase and `pbkeylen`; both go through clean taps that check the wire is encrypted.
fn encrypted_round_trip(pbkeylen: u32) {
    let _serial = serial();
    require_srt_tools();
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    let mut server = srt_server(SrtOpts {
        passphrase: Some(PASSPHRASE.into()),
        pbkeylen: Some(pbkeylen),
        ..Default::default()
    });
    let key = server.create_stream("vault");
    let dir = server.scratch("peers");
    let pass = format!("passphrase={PASSPHRASE}");
    let keylen = format!("pbkeylen={pbkeylen}");

    let pub_tap = LossyRelay::start(srt_addr(&server), RelayConfig::clean());
    let (mut sender, mut feed) = Slt::spawn_fed(
        "slt-publisher",
        &dir,
        &clip,
        None,
        &caller_url(pub_tap.port(), &publish_sid(&key), &[&pass, &keylen]),
        90,
    );
    let live = server.wait_live("vault", 15 * SECS);
    assert_eq!(live["protocol"], "srt", "ingest protocol in {live}");

    let read_tap = LossyRelay::start(srt_addr(&server), RelayConfig::clean());
    let mut reader = Slt::spawn(
        "slt-reader",
        &dir,
        &caller_url(read_tap.port(), &request_sid("vault"), &[&pass, &keylen]),
        "file://con",
        40,
    );
    let out = reader.output().to_owned();
    wait_bytes(&mut reader.proc, &out, 1, 10 * SECS);
    std::thread::sleep(5 * SECS);
    assert!(
        reader.interrupt(5 * SECS),
        "srt-live-transmit reader ignored SIGINT"
    );
    let pub_wire = pub_tap.stop().up;
    let read_wire = read_tap.stop().down;
    eprintln!("publisher → server: {pub_wire:?}\nserver → reader: {read_wire:?}");
    for (what, w) in [
        ("publisher → server", &pub_wire),
        ("server → reader", &read_wire),
    ] {
        assert!(
            w.data_packets > 100,
            "{what}: only {} data packets",
            w.data_packets
        );
        assert_eq!(
            w.encrypted_data, w.data_packets,
            "{what}: data packets without the encryption (KK) flag"
        );
        assert_eq!(w.clear_ts_data, 0, "{what}: MPEG-TS in clear on the wire");
    }

    assert_received(&out, &reader.proc, 4.0, 5.0 * FPS);
    // What srt-live-transmit wrote is the server's TS as it went out: one continuous stream,
    // though the server's TS muxer is rebuilt when the demuxed tracks fill in. (A packet the
    // reader gave up on, which a loaded machine can cause even on loopback, breaks it too.)
    let jumps = ts_continuity_errors(&out);
    let gave_up = reader
        .stats()
        .map_or(0, |s| s.get("recv", "packetsDropped"));
    assert!(
        jumps.is_empty() || gave_up > 0,
        "TS continuity errors: {jumps:?}"
    );
    assert_running(&mut sender.proc);
    assert_running(&mut feed);
    drop(feed);
    drop(sender);
    server.stop_ok();
}

#[test]
fn encrypted_aes128_publish_and_read_with_srt_live_transmit() {
    encrypted_round_trip(16);
}

#[test]
fn encrypted_aes256_publish_and_read_with_srt_live_transmit() {
    encrypted_round_trip(32);
}

/// srt-live-transmit must be refused (not time out): within 10 s it reports the server's
/// REJECT, and it received nothing. Its exit is not the verdict: srt-live-transmit 1.5.1
/// sometimes stays after a rejection (seen against libsrt's own listener too, about 2 runs in
/// 100 on a busy machine), so it is killed here.
fn assert_refused(p: &mut Slt, what: &str) -> String {
    let deadline = Instant::now() + 10 * SECS;
    while !p.proc.stderr().contains("REJECT") && p.proc.try_status().is_none() {
        assert!(
            Instant::now() < deadline,
            "{what}: srt-live-transmit neither rejected nor ended within 10 s\n{}",
            p.proc.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Had it been let in, media would flow within this second.
    std::thread::sleep(SECS);
    let st = p.proc.try_status();
    p.proc.kill9();
    let err = p.proc.stderr();
    assert!(
        err.contains("REJECT"),
        "{what}: srt-live-transmit was not rejected by the server (exit {st:?}):\n{err}"
    );
    assert_eq!(
        fs_len(p.output()),
        0,
        "{what}: srt-live-transmit received media"
    );
    err
}

#[test]
fn wrong_or_missing_passphrase_is_refused() {
    let _serial = serial();
    require_srt_tools();
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    let mut server = srt_server(SrtOpts {
        passphrase: Some(PASSPHRASE.into()),
        pbkeylen: Some(16),
        ..Default::default()
    });
    let key = server.create_stream("vault");
    let dir = server.scratch("peers");
    let port = server.srt();
    let sid = publish_sid(&key);
    let wrong: [&str; 2] = ["passphrase=not-the-passphrase-at-all", "pbkeylen=16"];

    // Publishing: a wrong passphrase, then none.
    for (label, params) in [("wrong", &wrong[..]), ("missing", &[][..])] {
        let udp_in = free_port();
        let mut p = Slt::spawn(
            &format!("publisher-{label}"),
            &dir,
            &format!("udp://127.0.0.1:{udp_in}"),
            &caller_url(port, &sid, params),
            30,
        );
        let err = assert_refused(&mut p, &format!("publish with a {label} passphrase"));
        eprintln!("publish, {label} passphrase: {}", err.trim());
        assert!(
            !server.is_live("vault"),
            "the stream went live with a {label} passphrase"
        );
    }
    assert_eq!(
        server.session_count("vault"),
        0,
        "refused publishes left sessions"
    );
    let refusals = refusal_lines(&server);
    assert!(
        refusals.len() >= 2,
        "the server logged no SRT refusal for the two refused publishers:\n{}",
        server.log()
    );

    // Reading: a good publisher is live; a wrong passphrase and none are refused.
    let pass = format!("passphrase={PASSPHRASE}");
    let (mut sender, mut feed) = Slt::spawn_fed(
        "publisher-good",
        &dir,
        &clip,
        None,
        &caller_url(port, &sid, &[&pass, "pbkeylen=16"]),
        90,
    );
    server.wait_live("vault", 15 * SECS);
    for (label, params) in [("wrong", &wrong[..]), ("missing", &[][..])] {
        let mut r = Slt::spawn(
            &format!("reader-{label}"),
            &dir,
            &caller_url(port, &request_sid("vault"), params),
            "file://con",
            30,
        );
        let err = assert_refused(&mut r, &format!("read with a {label} passphrase"));
        eprintln!("read, {label} passphrase: {}", err.trim());
    }
    assert!(
        refusal_lines(&server).len() >= 4,
        "the server logged no SRT refusal for the two refused readers:\n{}",
        refusal_lines(&server).join("\n")
    );

    // Control: the right passphrase reads, so the refusals were about the passphrase.
    let mut good = Slt::spawn(
        "reader-good",
        &dir,
        &caller_url(port, &request_sid("vault"), &[&pass, "pbkeylen=16"]),
        "file://con",
        30,
    );
    let out = good.output().to_owned();
    wait_bytes(&mut good.proc, &out, 200_000, 15 * SECS);
    good.interrupt(5 * SECS);
    let d = decoded(&out, None).unwrap_or_else(|e| panic!("reader-good: {e}"));
    assert_eq!(
        (d.video_codec.as_str(), d.width, d.height),
        ("h264", Some(1280), Some(720))
    );
    assert!(d.video_frames > 0, "reader-good decoded no frame");
    assert_running(&mut sender.proc);
    assert_running(&mut feed);
    drop(feed);
    drop(sender);
    server.stop_ok();
}

// ---------------------------------------------------------------------------------------------
// 3. RTMP in, SRT out
// ---------------------------------------------------------------------------------------------

#[test]
fn rtmp_publish_reads_over_srt_with_ffmpeg_and_srt_live_transmit() {
    let _serial = serial();
    require_ffmpeg_srt();
    require_srt_tools();
    let clip = clip(MAIN_CLIP);
    let mut server = srt_server(SrtOpts::default());
    let key = server.create_stream("studio");
    let dir = server.scratch("peers");
    let mut publisher = publish("publisher", &dir, &clip, &server.publish_url(&key));
    server.wait_live("studio", 10 * SECS);

    let read_url = caller_url(server.srt(), &request_sid("studio"), &["latency=120000"]);
    let ff_out = dir.join("ffmpeg.ts");
    let mut ff = ffmpeg_read_srt("ffmpeg-reader", &dir, &read_url, 5.0, &ff_out);
    let mut slt = Slt::spawn(
        "slt-reader",
        &dir,
        &caller_url(server.srt(), &request_sid("studio"), &["latency=120"]),
        "file://con",
        40,
    );
    let slt_out = slt.output().to_owned();
    wait_bytes(&mut slt.proc, &slt_out, 1, 10 * SECS);
    let started = Instant::now();

    finish_player(&mut ff, 25 * SECS);
    if let Some(left) = (5 * SECS).checked_sub(started.elapsed()) {
        std::thread::sleep(left);
    }
    let read_for = started.elapsed().as_secs_f64();
    assert!(
        slt.interrupt(5 * SECS),
        "srt-live-transmit reader ignored SIGINT"
    );

    assert_received(&ff_out, &ff, 4.5, 5.0 * FPS);
    // srt-live-transmit ran for `read_for` seconds after its first bytes (and the first bytes
    // are the GOP cache, up to 2 s of frames at once).
    assert_received(&slt_out, &slt.proc, 4.0, read_for * FPS);
    assert_running(&mut publisher);
    drop(publisher);
    server.stop_ok();
}

// ---------------------------------------------------------------------------------------------
// 4. A lossy link
// ---------------------------------------------------------------------------------------------

/// The relay itself, with libsrt on both ends (no zerocast): it really loses, delays and
/// reorders, and libsrt with 400 ms latency recovers everything through it. The server-side
/// lossy tests below rely on this.
#[test]
fn lossy_relay_carries_libsrt_to_libsrt_intact() {
    let _serial = serial();
    require_srt_tools();
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    let tmp = KeepOnPanic(Some(tempfile::tempdir().unwrap()));
    let dir = tmp.0.as_ref().unwrap().path();

    let lport = free_port();
    let mut listener = Slt::spawn(
        "slt-listener",
        dir,
        &format!("srt://127.0.0.1:{lport}?mode=listener&latency=400"),
        "file://con",
        60,
    );
    // The hand-built induction gets libsrt's HSv5 answer (this checks the packet code too).
    let deadline = Instant::now() + 10 * SECS;
    let answer = loop {
        if let Some(h) = induction_probe(lport, Duration::from_millis(200)) {
            break h;
        }
        assert_running(&mut listener.proc);
        assert!(
            Instant::now() < deadline,
            "srt-live-transmit listener never answered an induction"
        );
    };
    assert_eq!(
        (answer.version, answer.extension),
        (5, SRT_MAGIC),
        "{answer:?}"
    );
    assert_ne!(answer.cookie, 0, "{answer:?}");

    let relay = LossyRelay::start(([127, 0, 0, 1], lport).into(), RelayConfig::lossy(7));
    // 8 s of the clip: 240 frames.
    let (mut caller, mut feed) = Slt::spawn_fed(
        "slt-caller",
        dir,
        &clip,
        Some(8),
        &format!("srt://127.0.0.1:{}?mode=caller&latency=400", relay.port()),
        60,
    );
    wait_stderr(&mut caller.proc, "SRT target connected", 15 * SECS);
    finish_player(&mut feed, 30 * SECS);
    // Everything fed comes out of the listener (bounded): then stop both ends.
    let deadline = Instant::now() + 20 * SECS;
    let mut stable = 0;
    while stable < 3 && Instant::now() < deadline {
        let (fed, got) = (fs_len(&feed.stdout_path), fs_len(listener.output()));
        stable = if fed > 0 && got >= fed { stable + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(listener.interrupt(5 * SECS), "listener ignored SIGINT");
    assert!(caller.interrupt(5 * SECS), "caller ignored SIGINT");
    let wire = relay.stop();
    eprintln!("relay: {wire:?}");
    let (cs, ls) = (caller.stats(), listener.stats());
    eprintln!("caller stats: {cs:?}\nlistener stats: {ls:?}");

    assert!(wire.up.received > 500, "relay saw too little: {wire:?}");
    let up = wire.up.drop_percent();
    assert!((3.0..=7.0).contains(&up), "caller → listener lost {up:.1}%");
    assert!(wire.down.dropped > 0, "nothing lost listener → caller");
    assert!(wire.up.reordered > 0, "nothing reordered");
    assert_eq!(
        wire.up.overflow + wire.down.overflow,
        0,
        "relay queue overflow"
    );
    let cs = cs.expect("caller wrote no statistics");
    let ls = ls.expect("listener wrote no statistics");
    assert!(
        cs.get("send", "packetsRetransmitted") > 0,
        "libsrt caller retransmitted nothing"
    );
    assert!(
        ls.get("recv", "packetsLost") > 0,
        "libsrt listener saw no loss"
    );
    assert_eq!(
        ls.get("recv", "packetsDropped"),
        0,
        "libsrt listener gave up on packets"
    );

    // Byte for byte what was fed (then null padding), so nothing was lost, duplicated or
    // reordered for good.
    let fed = std::fs::read(&feed.stdout_path).unwrap();
    let got = std::fs::read(listener.output()).unwrap();
    let first_diff = fed.iter().zip(&got).position(|(a, b)| a != b);
    assert!(
        fed.len() > 2_000_000 && Slt::is_fed_then_padding(&fed, &got),
        "the listener wrote {} bytes, {} were fed; first difference at {first_diff:?}",
        got.len(),
        fed.len()
    );
    let d = decoded(listener.output(), None).unwrap_or_else(|e| panic!("listener output: {e}"));
    eprintln!("listener decoded {d:?}");
    assert_eq!(
        (d.video_codec.as_str(), d.width, d.height),
        ("h264", Some(1280), Some(720))
    );
    assert!(
        d.video_frames >= 238,
        "{} of 240 frames came through the relay",
        d.video_frames
    );
    let errors = decode_errors(listener.output(), None);
    assert!(errors.is_empty(), "decode errors:\n{errors}");
}

/// A temp dir kept (and named) when the test fails with `ZEROCAST_KEEP_TMP` set.
struct KeepOnPanic(Option<tempfile::TempDir>);

impl Drop for KeepOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("ZEROCAST_KEEP_TMP").is_some() {
            if let Some(d) = self.0.take() {
                eprintln!("keeping {}", d.path().display());
                std::mem::forget(d);
            }
        }
    }
}

#[test]
fn srt_publish_over_lossy_link_arrives_intact() {
    let _serial = serial();
    require_ffmpeg_srt();
    let clip = clip(MAIN_CLIP);
    let mut server = srt_server(SrtOpts {
        latency: Some("400ms".into()),
        ..Default::default()
    });
    let key = server.create_stream("lossy");
    let dir = server.scratch("peers");
    let relay = LossyRelay::start(srt_addr(&server), RelayConfig::lossy(11));
    let url = caller_url(
        relay.port(),
        &publish_sid(&key),
        &["pkt_size=1316", "latency=400000"],
    );
    let mut publisher = ffmpeg_publish_srt("publisher", &dir, &clip, &url, None);
    server.wait_live("lossy", 20 * SECS);
    std::thread::sleep(SECS);

    // A direct RTMP reader: what the server made of the lossy ingest, over a clean path.
    let out = dir.join("rtmp.flv");
    let mut player = record("rtmp-player", &dir, &server.play_url("lossy"), 6.0, &out);
    finish_player(&mut player, 30 * SECS);
    let info = server.stream_info("lossy");
    assert_running(&mut publisher);
    let wire = relay.stop();
    eprintln!("relay: {wire:?}\nlive: {}", info["live"]);

    assert!(
        wire.up.dropped > 20,
        "the relay dropped too little: {wire:?}"
    );
    assert!(
        wire.down.dropped > 0,
        "the relay dropped nothing towards the publisher"
    );
    assert_intact(&out, &player, 5.5, None);
    let d = decoded(&out, None).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        d.video_frames as f64 >= 0.99 * 6.0 * FPS,
        "{} video frames decoded of 180",
        d.video_frames
    );

    // The API's SRT ingest statistics (live.srt): the server saw the losses, received
    // retransmissions, filled the gaps and gave up on nothing, at the negotiated 400 ms.
    let srt = &info["live"]["srt"];
    assert!(
        srt.is_object(),
        "GET /api/v1/streams/lossy has no live.srt statistics: {}",
        info["live"]
    );
    let count = |f: &str| {
        srt[f]
            .as_u64()
            .unwrap_or_else(|| panic!("no live.srt.{f} in {srt}"))
    };
    assert_eq!(count("latency_ms"), 400, "negotiated latency: {srt}");
    assert!(
        count("lost") > 0,
        "live.srt.lost is 0 over a 5% lossy link: {srt}"
    );
    assert!(
        count("retransmitted") > 0,
        "live.srt.retransmitted is 0 over a 5% lossy link: {srt}"
    );
    assert!(
        count("recovered") > 0,
        "live.srt.recovered is 0 over a 5% lossy link: {srt}"
    );
    assert_eq!(
        count("dropped_too_late"),
        0,
        "live.srt says packets were given up: {srt}\n{}",
        wire.unrepaired(Dir::Up, Duration::from_millis(400))
    );
    drop(publisher);
    server.stop_ok();
}

#[test]
fn srt_read_over_lossy_link_arrives_intact() {
    let _serial = serial();
    require_srt_tools();
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    let mut server = srt_server(SrtOpts {
        latency: Some("400ms".into()),
        ..Default::default()
    });
    let key = server.create_stream("far");
    let dir = server.scratch("peers");
    let mut publisher = publish("publisher", &dir, &clip, &server.publish_url(&key));
    server.wait_live("far", 10 * SECS);

    let relay = LossyRelay::start(srt_addr(&server), RelayConfig::lossy(13));
    let mut reader = Slt::spawn(
        "slt-reader",
        &dir,
        &caller_url(relay.port(), &request_sid("far"), &["latency=400"]),
        "file://con",
        60,
    );
    let out = reader.output().to_owned();
    wait_bytes(&mut reader.proc, &out, 1, 15 * SECS);
    std::thread::sleep(8 * SECS);
    assert!(reader.interrupt(5 * SECS), "reader ignored SIGINT");
    let wire = relay.stop();
    let stats = reader.stats();
    eprintln!("relay: {wire:?}\nreader stats: {stats:?}");

    assert!(
        wire.down.dropped > 20,
        "the relay dropped too little: {wire:?}"
    );
    assert!(
        wire.up.dropped > 0,
        "the relay dropped nothing towards the server"
    );
    let stats = stats.expect("srt-live-transmit wrote no statistics");
    assert!(
        stats.get("recv", "packetsLost") > 0,
        "the reader saw no loss"
    );
    assert!(
        stats.get("recv", "packetsRetransmitted") > 0,
        "the server retransmitted nothing to the reader"
    );
    assert_eq!(
        stats.get("recv", "packetsDropped"),
        0,
        "the reader gave up on packets the server did not retransmit in time\n{}",
        wire.unrepaired(Dir::Down, Duration::from_millis(400))
    );
    // The reader was interrupted mid-frame: check decoding up to 1 s before its end.
    let span = analyze_or_panic(&out, &reader.proc).video_span();
    assert_intact(&out, &reader.proc, 7.0, Some(span - 1.0));
    assert_running(&mut publisher);
    drop(publisher);
    server.stop_ok();
}

/// A libsrt listener (srt-live-transmit, one connection) on a free port, answering inductions.
fn libsrt_listener(dir: &Path, name: &str) -> (Slt, u16) {
    let port = free_port();
    let mut listener = Slt::spawn(
        name,
        dir,
        &format!("srt://127.0.0.1:{port}?mode=listener"),
        "file://con",
        30,
    );
    let deadline = Instant::now() + 10 * SECS;
    while induction_probe(port, Duration::from_millis(200)).is_none() {
        assert_running(&mut listener.proc);
        assert!(Instant::now() < deadline, "libsrt listener never answered");
    }
    (listener, port)
}

/// The hand-built handshakes of the tests below, against libsrt (no zerocast): a well-formed
/// induction + conclusion is accepted, and the forgeries of [`forged_conclusions`] marked
/// `must_refuse` are refused (each against a fresh listener: srt-live-transmit takes one
/// connection).
#[test]
fn libsrt_accepts_hand_built_handshake_and_refuses_forgeries() {
    let _serial = serial();
    require_srt_tools();
    let tmp = tempfile::tempdir().unwrap();
    let sid = publish_sid("SomeKey0123456789");
    let probe = udp_client(Duration::from_millis(500));
    let count = forged_conclusions(&probe, libsrt_listener(tmp.path(), "count").1, &sid).len();
    for i in 0..count {
        let (listener, port) = libsrt_listener(tmp.path(), &format!("listener{i}"));
        let sock = udp_client(Duration::from_millis(500));
        let f = forged_conclusions(&sock, port, &sid).swap_remove(i);
        if f.must_refuse {
            assert_not_accepted(&sock, port, &f.pkt, f.what);
        } else {
            let r = exchange(&sock, port, &f.pkt);
            eprintln!("{}: libsrt answered {:?}", f.what, r.map(|h| h.hs_type));
        }
        drop(listener);
    }

    let (listener, port) = libsrt_listener(tmp.path(), "control");
    let sock = udp_client(Duration::from_millis(500));
    let c = cookie(&sock, port);
    let ok = exchange(
        &sock,
        port,
        &Handshake::conclusion(0x7777_0001, c, &sid).to_bytes(),
    )
    .unwrap_or_else(|| {
        panic!(
            "libsrt did not answer the conclusion\n{}",
            listener.proc.stderr()
        )
    });
    assert_eq!(
        ok.hs_type,
        HS_CONCLUSION,
        "libsrt refused the hand-built conclusion: {ok:?}\n{}",
        listener.proc.stderr()
    );
    assert_eq!(ok.version, 5, "{ok:?}");
    assert_ne!(ok.socket_id, 0, "{ok:?}");
    let _ = sock.send_to(&shutdown_packet(ok.socket_id), ("127.0.0.1", port));
}

// ---------------------------------------------------------------------------------------------
// 5. Hostile datagrams
// ---------------------------------------------------------------------------------------------

/// A server with SRT, HLS off (steady memory), a live ffmpeg SRT publisher on "live1".
fn hostile_setup() -> (Server, Proc, std::path::PathBuf) {
    require_ffmpeg_srt();
    let clip = clip(MAIN_CLIP);
    let server = Server::start(ServerOpts {
        srt: Some(SrtOpts::default()),
        hls: vec!["enabled = false".into()],
        ..Default::default()
    });
    let key = server.create_stream("live1");
    let dir = server.scratch("peers");
    let url = caller_url(
        server.srt(),
        &publish_sid(&key),
        &["pkt_size=1316", "latency=120000"],
    );
    let publisher = ffmpeg_publish_srt("publisher", &dir, &clip, &url, None);
    server.wait_live("live1", 15 * SECS);
    (server, publisher, dir)
}

/// Highest RSS over `window` (sampled every 100 ms), KiB.
fn peak_rss(server: &Server, window: Duration) -> u64 {
    let end = Instant::now() + window;
    let mut peak = 0;
    while Instant::now() < end {
        peak = peak.max(server.rss_kib());
        std::thread::sleep(Duration::from_millis(100));
    }
    peak
}

/// Induction from `sock`; the cookie of the answer.
fn cookie(sock: &UdpSocket, port: u16) -> u32 {
    let h = exchange(sock, port, &Handshake::induction(0x1111_2222).to_bytes())
        .expect("the server did not answer an induction");
    assert_eq!(h.hs_type, HS_INDUCTION, "{h:?}");
    h.cookie
}

/// Asserts the server did not accept `pkt` (sent from `sock`): no answer, or a rejection,
/// never a conclusion response.
fn assert_not_accepted(sock: &UdpSocket, port: u16, pkt: &[u8], what: &str) {
    match exchange(sock, port, pkt) {
        None => eprintln!("{what}: no answer"),
        Some(h) => {
            assert_ne!(
                h.hs_type, HS_CONCLUSION,
                "{what}: the server accepted it: {h:?}"
            );
            eprintln!("{what}: answered type {:#x}", h.hs_type);
        }
    }
}

/// A forged or malformed conclusion: what it is, the datagram, and whether a listener must
/// refuse it (libsrt 1.5.1 does: `libsrt_accepts_hand_built_handshake_and_refuses_forgeries`).
/// libsrt accepts the others (it reads what fits), so for those only survival is asked.
struct Forgery {
    what: &'static str,
    pkt: Vec<u8>,
    must_refuse: bool,
}

/// Conclusions for stream id `sid`, to be sent from `sock` (which gets a valid cookie first, by
/// an induction to `port`): a made-up cookie, a wrong one, and valid cookies with extensions
/// whose lengths lie, are cut short or are too long.
fn forged_conclusions(sock: &UdpSocket, port: u16, sid: &str) -> Vec<Forgery> {
    let c = cookie(sock, port);
    let mut id = 0x3333_4400u32;
    let mut next_id = || {
        id += 1;
        id
    };
    let mut with_ext = |ext: Vec<u8>, flags: u16| {
        let mut h = Handshake::conclusion(next_id(), c, "");
        h.extension = flags;
        h.extensions = ext;
        h.to_bytes()
    };
    let hsreq: Vec<u8> = [0x0001_0501u32, 0x3B, (120 << 16) | 120]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect();
    let mut hsreq_ext = Vec::new();
    push_extension(&mut hsreq_ext, EXT_HSREQ, 3, &hsreq);
    let sid_ext = |e: &mut Vec<u8>, sid: &str| {
        let w = sid_words(sid);
        push_extension(e, EXT_SID, (w.len() / 4) as u16, &w);
    };
    let list: Vec<(&str, bool, Vec<u8>)> = vec![
        ("conclusion with a made-up cookie", true, {
            Handshake::conclusion(0x3333_4300, 0xDEAD_BEEF, sid).to_bytes()
        }),
        ("conclusion with a wrong cookie", true, {
            Handshake::conclusion(0x3333_4301, c ^ 0x5A5A_5A5A, sid).to_bytes()
        }),
        ("stream id extension claiming 65535 words", false, {
            let mut e = hsreq_ext.clone();
            push_extension(&mut e, EXT_SID, 0xFFFF, &sid_words(sid));
            with_ext(e, HSEXT_HSREQ | HSEXT_CONFIG)
        }),
        ("HSREQ extension claiming 65535 words", true, {
            let mut e = Vec::new();
            push_extension(&mut e, EXT_HSREQ, 0xFFFF, &hsreq);
            sid_ext(&mut e, sid);
            with_ext(e, HSEXT_HSREQ | HSEXT_CONFIG)
        }),
        ("extension header cut in half", false, {
            let mut e = hsreq_ext.clone();
            sid_ext(&mut e, sid);
            e.extend_from_slice(&EXT_SID.to_be_bytes());
            with_ext(e, HSEXT_HSREQ | HSEXT_CONFIG)
        }),
        ("stream id of 1020 bytes (SRT allows 512)", true, {
            let long = format!("{sid},x={}", "y".repeat(1020 - sid.len() - 3));
            let mut e = hsreq_ext.clone();
            sid_ext(&mut e, &long);
            with_ext(e, HSEXT_HSREQ | HSEXT_CONFIG)
        }),
        ("HSREQ of one word", true, {
            let mut e = Vec::new();
            push_extension(&mut e, EXT_HSREQ, 1, &hsreq[..4]);
            sid_ext(&mut e, sid);
            with_ext(e, HSEXT_HSREQ | HSEXT_CONFIG)
        }),
    ];
    list.into_iter()
        .map(|(what, must_refuse, pkt)| Forgery {
            what,
            pkt,
            must_refuse,
        })
        .collect()
}

#[test]
fn garbage_and_forged_handshakes_leave_live_srt_stream_intact() {
    let _serial = serial();
    let (mut server, mut publisher, dir) = hostile_setup();
    let port = server.srt();
    let target_key = server.create_stream("target");
    let control_key = server.create_stream("control");
    let started_at = server.stream_info("live1")["live"]["started_at"].clone();
    std::thread::sleep(2 * SECS);
    let rss_before = peak_rss(&server, 2 * SECS);

    // Control: a hand-built handshake with the right cookie is accepted (so the refusals below
    // are about the forgery), then shut down.
    let sock = udp_client(Duration::from_millis(500));
    let c = cookie(&sock, port);
    let ok = exchange(
        &sock,
        port,
        &Handshake::conclusion(0x2222_3333, c, &publish_sid(&control_key)).to_bytes(),
    )
    .expect("no answer to a well-formed conclusion");
    assert_eq!(
        ok.hs_type, HS_CONCLUSION,
        "a well-formed hand-built conclusion was not accepted: {ok:?}"
    );
    let _ = sock.send_to(&shutdown_packet(ok.socket_id), ("127.0.0.1", port));
    std::thread::sleep(Duration::from_millis(500));
    let accepted = server.srt_accepted();

    // Garbage: random datagrams of every size, short headers, data packets to unknown sockets,
    // control packets of every type with no body.
    let mut rng = Rng::new(0x5e7_6a7b);
    let socks: Vec<UdpSocket> = (0..16)
        .map(|_| udp_client(Duration::from_millis(50)))
        .collect();
    let mut sent = 0;
    for i in 0..3000usize {
        let len = match i % 10 {
            0 => 0,
            1 => 1 + i % 15,
            2 => 16,
            _ => (rng.next_u64() % 1500) as usize,
        };
        let mut d = vec![0u8; len];
        rng.fill(&mut d);
        if i % 10 == 2 {
            // A bare control header of type i/10 % 0x8000 (no CIF).
            let ty = ((i / 10) as u32 % 0x8000) << 16;
            d[..4].copy_from_slice(&(0x8000_0000 | ty).to_be_bytes());
        }
        if sock_send(&socks[i % socks.len()], port, &d) {
            sent += 1;
        }
        if i % 200 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let big = vec![0xA5u8; 65_000];
    sock_send(&socks[0], port, &big);
    eprintln!("sent {sent} garbage datagrams");

    // Forged and malformed handshakes towards "target".
    // Those libsrt refuses go to "target" with its real key and must be refused; those libsrt
    // takes (it reads what fits) carry a key that does not exist: any answer but a crash will do.
    let forged = udp_client(Duration::from_millis(500));
    for f in forged_conclusions(&forged, port, &publish_sid(&target_key)) {
        if f.must_refuse {
            assert_not_accepted(&forged, port, &f.pkt, f.what);
        }
    }
    let no_key = publish_sid("NoSuchKey0123456789abcdef");
    for f in forged_conclusions(&forged, port, &no_key) {
        if !f.must_refuse {
            if let Some(h) = exchange(&forged, port, &f.pkt) {
                eprintln!("{} (unknown key): answered type {:#x}", f.what, h.hs_type);
                if h.hs_type == HS_CONCLUSION {
                    let _ = forged.send_to(&shutdown_packet(h.socket_id), ("127.0.0.1", port));
                }
            }
        }
    }
    // Inductions with absurd fields: only survival is asked.
    let mut absurd = Vec::new();
    let mut h = Handshake::induction(0x4444_5555);
    absurd.push(h.to_bytes()[..36].to_vec()); // CIF cut short
    h.version = 0xFFFF_FFFF;
    h.encryption = 0xFFFF;
    h.extension = 0xFFFF;
    h.mtu = 0xFFFF_FFFF;
    h.flow_window = 0;
    let mut e = Vec::new();
    push_extension(&mut e, 0xFFFF, 0xFFFF, &[0xEE; 8]);
    h.extensions = e;
    absurd.push(h.to_bytes());
    h.mtu = 0;
    h.extensions = (0..300).flat_map(|_| [0x7F, 0xFF, 0, 0]).collect();
    absurd.push(h.to_bytes());
    for pkt in &absurd {
        let _ = exchange(&forged, port, pkt);
    }

    std::thread::sleep(2 * SECS);
    server.assert_alive();
    assert_running(&mut publisher);
    assert_eq!(
        server.srt_accepted(),
        accepted,
        "garbage or forged handshakes opened SRT connections"
    );
    assert!(
        !server.is_live("target"),
        "a forged handshake put \"target\" live"
    );
    assert_eq!(
        server.session_count("target"),
        0,
        "forged sessions on target"
    );
    let live = server.wait_live("live1", SECS);
    assert_eq!(
        live["started_at"], started_at,
        "the publisher was reconnected"
    );
    assert_eq!(
        server.session_count("live1"),
        1,
        "the publisher was reconnected"
    );

    // A new reader still gets the live stream.
    let out = dir.join("after.ts");
    let url = caller_url(port, &request_sid("live1"), &["latency=120000"]);
    let mut reader = ffmpeg_read_srt("reader", &dir, &url, 4.0, &out);
    finish_player(&mut reader, 25 * SECS);
    assert_received(&out, &reader, 3.5, 4.0 * FPS);

    let rss_after = server.rss_kib();
    eprintln!("RSS {rss_before} KiB before, {rss_after} KiB after");
    assert!(
        rss_after <= rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert_running(&mut publisher);
    drop(publisher);
    server.stop_ok();
}

fn sock_send(s: &UdpSocket, port: u16, d: &[u8]) -> bool {
    s.send_to(d, ("127.0.0.1", port)).is_ok()
}

#[test]
fn induction_flood_creates_no_sessions() {
    let _serial = serial();
    let (mut server, mut publisher, dir) = hostile_setup();
    let port = server.srt();
    let started_at = server.stream_info("live1")["live"]["started_at"].clone();
    std::thread::sleep(2 * SECS);
    let rss_before = peak_rss(&server, 2 * SECS);

    // A reader that plays through the flood.
    let url = caller_url(port, &request_sid("live1"), &["latency=120000"]);
    let during = dir.join("during.ts");
    let mut reader = ffmpeg_read_srt("reader-during", &dir, &url, 8.0, &during);
    wait_bytes(&mut reader, &during, 1, 10 * SECS);
    let accepted = server.srt_accepted();

    // 200 source ports, 5 inductions each (distinct socket ids), never a conclusion.
    let socks: Vec<UdpSocket> = (0..200)
        .map(|_| {
            let s = udp_client(Duration::from_millis(1));
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let mut answers = 0u64;
    let mut buf = [0u8; 2048];
    for round in 0..5u32 {
        for (i, s) in socks.iter().enumerate() {
            let pkt = Handshake::induction(0x5000_0000 + round * 1000 + i as u32).to_bytes();
            sock_send(s, port, &pkt);
        }
        std::thread::sleep(Duration::from_millis(100));
        for s in &socks {
            while let Ok(n) = s.recv(&mut buf) {
                if Handshake::parse(&buf[..n]).is_some_and(|h| h.hs_type == HS_INDUCTION) {
                    answers += 1;
                }
            }
        }
    }
    eprintln!("{answers} induction answers to 1000 inductions");
    std::thread::sleep(SECS);
    assert_eq!(
        server.srt_accepted(),
        accepted,
        "the induction flood opened SRT connections"
    );

    finish_player(&mut reader, 30 * SECS);
    assert_received(&during, &reader, 7.5, 8.0 * FPS);

    std::thread::sleep(SECS);
    let rss_after = peak_rss(&server, SECS);
    eprintln!("RSS {rss_before} KiB before, {rss_after} KiB after");
    server.assert_alive();
    assert_running(&mut publisher);
    let live = server.wait_live("live1", SECS);
    assert_eq!(
        live["started_at"], started_at,
        "the publisher was reconnected"
    );
    assert_eq!(
        server.session_count("live1"),
        1,
        "the publisher was reconnected"
    );
    assert!(
        rss_after <= rss_before + 8 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB after 1000 inductions"
    );

    // The listener still takes new callers.
    let after = dir.join("after.ts");
    let mut reader = ffmpeg_read_srt("reader-after", &dir, &url, 4.0, &after);
    finish_player(&mut reader, 25 * SECS);
    assert_received(&after, &reader, 3.5, 4.0 * FPS);
    drop(publisher);
    server.stop_ok();
}
