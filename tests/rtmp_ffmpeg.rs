//! End-to-end RTMP(S) tests against ffmpeg/ffprobe 5.1: what a real publisher sends, a real
//! player must receive.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

const SECS: Duration = Duration::from_secs(1);

fn wait_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Counts log lines containing every one of `parts`.
fn count_lines(log: &str, parts: &[&str]) -> usize {
    log.lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

/// Waits (bounded) until at least `n` log lines contain every one of `parts`.
fn wait_count(server: &Server, parts: &[&str], n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if count_lines(&server.log(), parts) >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} log lines with {parts:?} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn publish_and_play() {
    let _serial = serial();
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    let mut server = Server::start(ServerOpts::default());
    let key = server.create_stream("cam1");
    let dir = server.scratch("peers");

    let t0 = Instant::now();
    let mut publisher = publish("publisher", &dir, &clip, &server.publish_url(&key));
    server.expect_log(&["publishing", "stream=cam1"], 10 * SECS);

    // ffprobe the play URL while the player below waits for its mid-GOP join instant.
    let probe_url = server.play_url("cam1");
    let prober = std::thread::spawn(move || probe(&probe_url, 20 * SECS));

    // GOP is 60 frames (2 s): 3.3 s after the publisher started is not a keyframe instant, so
    // the player must be served from the GOP cache to start on a keyframe.
    wait_until(t0 + Duration::from_millis(3300));
    let out = dir.join("play.flv");
    let mut player = record("player", &dir, &server.play_url("cam1"), 5.0, &out);

    let streams = prober
        .join()
        .expect("probe thread")
        .unwrap_or_else(|e| panic!("ffprobe of the play URL: {e}"));
    assert_av(&streams, 1280, 720, "ffprobe of the play URL");

    finish_player(&mut player, 25 * SECS);
    assert_running(&mut publisher);
    let rec = analyze_or_panic(&out, &player);
    assert_eq!(rec.video_codec, "h264");
    assert_eq!(rec.audio_codec, "aac");
    assert_eq!((rec.width, rec.height), (Some(1280), Some(720)));
    rec.assert_complete(4.5, 0.5, "player joining mid-GOP");

    drop(publisher);
    server.stop_ok();
}

#[test]
fn viewers_on_both_shards() {
    let _serial = serial();
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    let mut server = Server::start(ServerOpts {
        shards: 2,
        ..Default::default()
    });
    let key = server.create_stream("multi");
    let dir = server.scratch("peers");
    let mut publisher = publish("publisher", &dir, &clip, &server.publish_url(&key));
    let line = server.expect_log(&["publishing", "stream=multi"], 10 * SECS);
    eprintln!("publisher: {line}");

    let mut checked = 0;
    let mut batch = 0;
    let mut round = |n: usize, secs: f64, min_span: f64, server: &Server| {
        batch += 1;
        let mut players: Vec<(Proc, PathBuf)> = (0..n)
            .map(|i| {
                let out = dir.join(format!("b{batch}-p{i}.flv"));
                let p = record(
                    &format!("b{batch}-player{i}"),
                    &dir,
                    &server.play_url("multi"),
                    secs,
                    &out,
                );
                (p, out)
            })
            .collect();
        for (p, out) in players.iter_mut() {
            finish_player(p, 30 * SECS);
            let rec = analyze_or_panic(out, p);
            assert_eq!(
                (rec.width, rec.height),
                (Some(1280), Some(720)),
                "{}",
                p.name
            );
            rec.assert_complete(min_span, 0.5, &p.name);
        }
        checked += n;
    };

    round(8, 3.0, 2.5, &server);
    // SO_REUSEPORT spreads connections by hash: if all landed on one shard, open more (bounded).
    let mut shards = playing_shards(&server.log());
    for _ in 0..6 {
        if shards.len() >= 2 {
            break;
        }
        round(4, 1.5, 1.0, &server);
        shards = playing_shards(&server.log());
    }
    eprintln!("players per shard: {shards:?} ({checked} players checked)");
    assert!(
        shards.contains_key(&0) && shards.contains_key(&1),
        "viewers were not seen on both shards: {shards:?}"
    );
    assert_running(&mut publisher);
    drop(publisher);
    server.stop_ok();
}

#[test]
fn four_publishers_eight_players() {
    let _serial = serial();
    require_ffmpeg();
    let specs = [
        ("s360", clip(small_clip(640, 360, 440)), 640, 360),
        ("s540", clip(small_clip(960, 540, 660)), 960, 540),
        ("s720", clip(MAIN_CLIP), 1280, 720),
        ("s240", clip(small_clip(320, 240, 880)), 320, 240),
    ];
    let mut server = Server::start(ServerOpts {
        shards: 2,
        ..Default::default()
    });
    let dir = server.scratch("peers");
    let mut publishers = Vec::new();
    for (name, clip, _, _) in &specs {
        let key = server.create_stream(name);
        publishers.push(publish(
            &format!("pub-{name}"),
            &dir,
            clip,
            &server.publish_url(&key),
        ));
    }
    for (name, _, _, _) in &specs {
        server.expect_log(&["publishing", &format!("stream={name} ")], 10 * SECS);
    }

    let mut players = Vec::new();
    for i in 0..8 {
        for (name, _, w, h) in &specs {
            let out = dir.join(format!("{name}-{i}.flv"));
            let p = record(
                &format!("play-{name}-{i}"),
                &dir,
                &server.play_url(name),
                3.0,
                &out,
            );
            players.push((p, out, *w, *h));
        }
    }
    for (p, out, w, h) in players.iter_mut() {
        finish_player(p, 40 * SECS);
        let rec = analyze_or_panic(out, p);
        assert_eq!(
            (rec.width, rec.height),
            (Some(*w as u64), Some(*h as u64)),
            "{} received another stream's video",
            p.name
        );
        rec.assert_complete(2.5, 0.5, &p.name);
    }
    for p in publishers.iter_mut() {
        assert_running(p);
    }
    drop(publishers);
    server.stop_ok();
}

#[test]
fn publisher_killed_then_republish() {
    let _serial = serial();
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    let mut server = Server::start(ServerOpts::default());
    let key = server.create_stream("phoenix");
    let dir = server.scratch("peers");
    let mut publisher = publish("publisher1", &dir, &clip, &server.publish_url(&key));
    server.expect_log(&["publishing", "stream=phoenix"], 10 * SECS);

    let mut players: Vec<(Proc, PathBuf)> = (0..3)
        .map(|i| {
            let out = dir.join(format!("long{i}.flv"));
            let p = record(
                &format!("long-player{i}"),
                &dir,
                &server.play_url("phoenix"),
                60.0,
                &out,
            );
            (p, out)
        })
        .collect();
    wait_count(&server, &["playing", "stream=phoenix"], 3, 10 * SECS);
    std::thread::sleep(2 * SECS);
    for (p, _) in players.iter_mut() {
        assert_running(p);
    }

    publisher.kill9();
    let killed = Instant::now();
    for (p, out) in players.iter_mut() {
        let st = p.wait_for(8 * SECS);
        let waited = killed.elapsed();
        let Some(st) = st else {
            panic!(
                "{} still running {waited:?} after the publisher was killed\n--- stderr ---\n{}",
                p.name,
                p.stderr()
            );
        };
        eprintln!("{} exited with {st} {waited:?} after the kill", p.name);
        // Clean exit, or at least a valid recording with frames.
        let rec = analyze_or_panic(out, p);
        assert!(
            rec.video.len() >= 30,
            "{}: only {} video frames before the publisher died (exit {st})",
            p.name,
            rec.video.len()
        );
        assert!(rec.video[0].key, "{}: first frame not a keyframe", p.name);
    }

    // The same key publishes again, and a new player gets frames.
    let mut publisher2 = publish("publisher2", &dir, &clip, &server.publish_url(&key));
    wait_count(&server, &["publishing", "stream=phoenix"], 2, 10 * SECS);
    let out = dir.join("after.flv");
    let mut player = record("player-after", &dir, &server.play_url("phoenix"), 3.0, &out);
    finish_player(&mut player, 25 * SECS);
    let rec = analyze_or_panic(&out, &player);
    rec.assert_complete(2.5, 0.5, "player after republish");
    assert_running(&mut publisher2);
    drop(publisher2);
    server.stop_ok();
}

#[test]
fn wrong_key_refused() {
    let _serial = serial();
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    let mut server = Server::start(ServerOpts::default());
    let key = server.create_stream("guarded");
    let dir = server.scratch("peers");
    let wrong = "WrongKey0x5eed5eed5eed5eed5eed";
    assert_ne!(wrong, key);

    let mut bad = publish("bad-publisher", &dir, &clip, &server.publish_url(wrong));
    let st = bad.wait_for(10 * SECS);
    let err = bad.stderr();
    let st =
        st.unwrap_or_else(|| panic!("publisher with a wrong key still running after 10 s\n{err}"));
    assert!(!st.success(), "publisher with a wrong key exited 0\n{err}");
    assert!(
        err.contains("BadName") || err.contains("invalid stream key"),
        "ffmpeg's stderr does not mention the refusal:\n{err}"
    );
    server.expect_log(&["publish refused"], 5 * SECS);

    // Not playable under its name, nor under the wrong key.
    for name in ["guarded", wrong] {
        match probe(&server.play_url(name), 10 * SECS) {
            Ok(streams) => assert!(
                streams.is_empty(),
                "stream {name} is playable after a refused publish: {streams:?}"
            ),
            Err(e) => eprintln!(
                "play {name} refused as expected: {}",
                e.lines().next().unwrap_or("")
            ),
        }
    }

    // Control: the right key publishes and plays, so the refusal above was about the key.
    let mut good = publish("good-publisher", &dir, &clip, &server.publish_url(&key));
    server.expect_log(&["publishing", "stream=guarded"], 10 * SECS);
    let streams = probe(&server.play_url("guarded"), 20 * SECS)
        .unwrap_or_else(|e| panic!("ffprobe with the right key: {e}"));
    assert_av(
        &streams,
        1280,
        720,
        "ffprobe after publishing with the right key",
    );
    assert_running(&mut good);
    drop(good);
    server.stop_ok();

    let log = server.log();
    assert!(!log.contains(wrong), "the server logged the wrong key");
    assert!(!log.contains(&key), "the server logged the stream key");
}

#[test]
fn rtmps_publish_and_play() {
    let _serial = serial();
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    let mut server = Server::start(ServerOpts {
        tls: true,
        ..Default::default()
    });
    let tls_dir = server.dir.path().join("data").join("tls");
    assert!(
        std::fs::read_dir(&tls_dir)
            .map(|d| d.count() > 0)
            .unwrap_or(false),
        "no self-signed certificate generated in {}",
        tls_dir.display()
    );
    let key = server.create_stream("secure");
    let dir = server.scratch("peers");
    let mut publisher = publish("publisher", &dir, &clip, &server.rtmps_publish_url(&key));
    server.expect_log(&["publishing", "stream=secure"], 10 * SECS);

    let streams = probe(&server.rtmps_play_url("secure"), 20 * SECS)
        .unwrap_or_else(|e| panic!("ffprobe over rtmps: {e}"));
    assert_av(&streams, 1280, 720, "ffprobe over rtmps");

    let out = dir.join("play.flv");
    let mut player = record("player", &dir, &server.rtmps_play_url("secure"), 4.0, &out);
    finish_player(&mut player, 25 * SECS);
    let rec = analyze_or_panic(&out, &player);
    assert_eq!((rec.width, rec.height), (Some(1280), Some(720)));
    rec.assert_complete(3.5, 0.5, "rtmps player");
    assert_running(&mut publisher);
    drop(publisher);
    server.stop_ok();
}

#[test]
fn graceful_shutdown() {
    let _serial = serial();
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    let mut server = Server::start(ServerOpts::default());
    let key = server.create_stream("bye");
    let dir = server.scratch("peers");
    let mut publisher = publish("publisher", &dir, &clip, &server.publish_url(&key));
    server.expect_log(&["publishing", "stream=bye"], 10 * SECS);
    let out = dir.join("play.flv");
    let mut player = record("player", &dir, &server.play_url("bye"), 60.0, &out);
    server.expect_log(&["playing", "stream=bye"], 10 * SECS);
    // Let media flow: wait until the recording holds data (bounded).
    let deadline = Instant::now() + 10 * SECS;
    while fs_len(&out) < 100_000 {
        assert_running(&mut player);
        assert!(Instant::now() < deadline, "player recorded nothing in 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_running(&mut publisher);

    let t = Instant::now();
    let st = server.stop_gracefully(5 * SECS);
    eprintln!("server stopped after {:?}: {st:?}", t.elapsed());
    assert!(
        st.map(|s| s.success()).unwrap_or(false),
        "server did not exit 0 within 5 s of SIGTERM with a publisher and a player: {st:?}\n{}",
        server.log()
    );

    // The peers notice: both exit (bounded), and the recording holds what was delivered.
    let pst = player.wait_for(10 * SECS);
    let bst = publisher.wait_for(10 * SECS);
    eprintln!("after shutdown: player {pst:?}, publisher {bst:?}");
    assert!(
        pst.is_some(),
        "player still running 10 s after the server stopped"
    );
    assert!(
        bst.is_some(),
        "publisher still running 10 s after the server stopped"
    );
    let rec = analyze_or_panic(&out, &player);
    assert!(
        rec.video.len() >= 30,
        "only {} frames recorded",
        rec.video.len()
    );
}
