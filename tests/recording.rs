//! Recordings end to end: ffmpeg publishes, the server records, ffprobe and ffmpeg 5.1 read
//! the files, and the index (`zerocast recordings list --json`) agrees with them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const SECS: Duration = Duration::from_secs(1);

/// Runs `zerocast ARGS --config CONFIG`; panics unless it exits 0. Returns stdout.
fn zerocast(server: &Server, args: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--config")
        .arg(&server.config)
        .env_remove("RUST_LOG");
    let (st, out, err) = run_bounded(cmd, 20 * SECS);
    assert!(
        st.map(|s| s.success()).unwrap_or(false),
        "zerocast {args:?} failed ({st:?}): {err}"
    );
    out
}

/// The recordings index, as the CLI prints it.
fn recordings(server: &Server) -> Vec<serde_json::Value> {
    let out = zerocast(server, &["recordings", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("recordings list --json printed non-JSON ({e}): {out:?}"));
    v.as_array().cloned().expect("a JSON array")
}

fn recordings_dir(server: &Server) -> PathBuf {
    server.dir.path().join("data").join("recordings")
}

/// Files under `data/recordings/STREAM/`, sorted.
fn files_of(server: &Server, stream: &str) -> Vec<PathBuf> {
    let dir = recordings_dir(server).join(stream);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// ffprobe's container duration, seconds.
fn probe_duration(path: &Path) -> f64 {
    let mut cmd = Command::new("ffprobe");
    cmd.args([
        "-v",
        "error",
        "-show_entries",
        "format=duration",
        "-of",
        "default=noprint_wrappers=1:nokey=1",
    ])
    .arg(path);
    let (st, out, err) = run_bounded(cmd, 30 * SECS);
    assert!(
        st.map(|s| s.success()).unwrap_or(false),
        "ffprobe {} failed: {err}",
        path.display()
    );
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("ffprobe duration {out:?}: {e}"))
}

/// `ffmpeg -v error -i FILE -f null -`: decodes every frame; panics unless it exits 0.
fn assert_decodes(path: &Path) {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"]);
    let (st, _out, err) = run_bounded(cmd, 60 * SECS);
    assert!(
        st.map(|s| s.success()).unwrap_or(false),
        "ffmpeg could not decode {} ({st:?}): {err}",
        path.display()
    );
}

/// Top-level MP4 boxes that are complete in `data`, and the bytes they cover.
fn complete_boxes(data: &[u8]) -> (Vec<[u8; 4]>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= data.len() {
        let size = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        if size < 8 || pos + size > data.len() {
            break;
        }
        out.push(data[pos + 4..pos + 8].try_into().unwrap());
        pos += size;
    }
    (out, pos)
}

fn wait_for_exit(p: &mut Proc, limit: Duration) {
    let st = p.wait_for(limit);
    assert!(
        st.map(|s| s.success()).unwrap_or(false),
        "{} did not finish cleanly within {limit:?}: {st:?}\n{}",
        p.name,
        p.stderr()
    );
}

#[test]
fn twenty_seconds_published_give_twenty_seconds_recorded() {
    let _serial = serial();
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    let mut server = Server::start(ServerOpts {
        recording: vec!["record = true".into()],
        ..Default::default()
    });
    let key = server.create_stream("rec");
    let dir = server.scratch("peers");
    let mut publisher = publish_limited(
        "publisher",
        &dir,
        &clip,
        &server.publish_url(&key),
        Some(20),
    );
    server.expect_log(&["publishing", "stream=rec", "record=true"], 10 * SECS);
    wait_for_exit(&mut publisher, 40 * SECS);
    let closed = server.expect_log(&["recording closed", "stream=rec"], 10 * SECS);
    eprintln!("{closed}");

    let files = files_of(&server, "rec");
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(
        name.len() == "YYYYMMDD-HHMMSS.mp4".len()
            && name.ends_with(".mp4")
            && name.as_bytes()[8] == b'-',
        "{name}"
    );
    let duration = probe_duration(file);
    assert!(
        (duration - 20.0).abs() <= 0.5,
        "ffprobe says {duration:.3} s for 20 s published"
    );
    let rec = analyze(file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rec.video_codec, "h264");
    assert_eq!(rec.audio_codec, "aac");
    assert_eq!((rec.width, rec.height), (Some(1280), Some(720)));
    rec.assert_complete(19.4, 0.5, "recording");
    assert!(
        rec.video[0].pts < 0.2,
        "the timeline starts near 0: {:?}",
        rec.video[0]
    );
    assert_decodes(file);

    let rows = recordings(&server);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["stream"], "rec");
    assert_eq!(row["format"], "fmp4");
    assert_eq!(row["status"], "complete", "{row}");
    assert_eq!(row["reason"], "stream ended");
    assert_eq!(
        PathBuf::from(row["path"].as_str().unwrap()),
        std::fs::canonicalize(file).unwrap()
    );
    assert_eq!(row["bytes"].as_u64(), Some(fs_len(file)), "{row}");
    let indexed = row["duration_ms"].as_f64().unwrap() / 1000.0;
    assert!(
        (indexed - duration).abs() <= 0.2,
        "index says {indexed} s, ffprobe {duration} s"
    );
    assert!(row["ended_at"].as_i64() >= row["started_at"].as_i64());
    eprintln!(
        "20 s published: ffprobe {duration:.3} s, index {indexed:.3} s, {} video frames, {} bytes",
        rec.video.len(),
        fs_len(file)
    );
    server.stop_ok();
}

#[test]
fn a_killed_server_leaves_a_file_that_plays_to_its_last_fragment() {
    let _serial = serial();
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    let mut server = Server::start(ServerOpts {
        recording: vec!["record = true".into(), "fragment_duration = \"2s\"".into()],
        ..Default::default()
    });
    let key = server.create_stream("crash");
    let dir = server.scratch("peers");
    let mut publisher = publish("publisher", &dir, &clip, &server.publish_url(&key));
    server.expect_log(&["publishing", "stream=crash"], 10 * SECS);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(11_000));
    assert_running(&mut publisher);
    signal(server.pid(), libc::SIGKILL);
    let deadline = Instant::now() + 5 * SECS;
    while server.is_alive() {
        assert!(Instant::now() < deadline, "server survived SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed_after = t0.elapsed().as_secs_f64();
    drop(publisher);

    let files = files_of(&server, "crash");
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    let data = std::fs::read(file).unwrap();
    let (boxes, complete) = complete_boxes(&data);
    let moofs = boxes.iter().filter(|b| *b == b"moof").count();
    // Keyframes every 2 s: fragments ended at 2, 4, 6, 8 (and 10) s before the kill.
    assert!(
        moofs >= 4,
        "{moofs} fragments after {killed_after:.1} s: {boxes:?}"
    );
    assert_eq!(&boxes[..2], [*b"ftyp", *b"moov"]);
    let duration = probe_duration(file);
    assert!(
        duration >= 8.0 && duration <= killed_after + 0.5,
        "ffprobe says {duration:.3} s after {killed_after:.1} s of publishing"
    );
    assert_decodes(file);
    let rec = analyze(file).unwrap_or_else(|e| panic!("{e}"));
    rec.assert_complete(7.5, 0.5, "killed recording");

    // The index row describes the fragments completed before the kill.
    let rows = recordings(&server);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["status"], "recording", "{row}");
    assert!(row["ended_at"].is_null());
    let bytes = row["bytes"].as_u64().unwrap();
    assert!(
        bytes <= complete as u64 && bytes >= (complete as u64) / 2,
        "index says {bytes} bytes; {complete} bytes of complete boxes"
    );
    let indexed = row["duration_ms"].as_f64().unwrap() / 1000.0;
    assert!(
        indexed >= 8.0 && indexed <= duration + 0.1,
        "index says {indexed} s, ffprobe {duration} s"
    );
    eprintln!(
        "killed after {killed_after:.1} s: {moofs} fragments, ffprobe {duration:.3} s, \
         index {indexed:.3} s / {bytes} bytes, file {} bytes",
        data.len()
    );
}

/// A cheap clip for streams whose content does not matter.
fn clip_for_optout() -> PathBuf {
    clip(small_clip(320, 240, 440))
}

#[test]
fn flv_recordings_play() {
    let _serial = serial();
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    let mut server = Server::start(ServerOpts {
        recording: vec!["record = true".into(), "format = \"flv\"".into()],
        ..Default::default()
    });
    let key = server.create_stream("flvrec");
    // A stream's own `false` beats the global `true`.
    let optout = server.create_stream("optout");
    zerocast(&server, &["streams", "set", "optout", "--record", "false"]);
    let dir = server.scratch("peers");
    let small = clip_for_optout();
    let mut publisher =
        publish_limited("publisher", &dir, &clip, &server.publish_url(&key), Some(6));
    let mut other = publish_limited(
        "optout",
        &dir,
        &small,
        &server.publish_url(&optout),
        Some(6),
    );
    server.expect_log(&["publishing", "stream=flvrec", "record=true"], 10 * SECS);
    server.expect_log(&["publishing", "stream=optout", "record=false"], 10 * SECS);
    wait_for_exit(&mut publisher, 20 * SECS);
    wait_for_exit(&mut other, 20 * SECS);
    server.expect_log(&["recording closed", "stream=flvrec"], 10 * SECS);
    assert!(!recordings_dir(&server).join("optout").exists());

    let files = files_of(&server, "flvrec");
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert_eq!(file.extension().and_then(|e| e.to_str()), Some("flv"));
    let streams = probe(file.to_str().unwrap(), 20 * SECS).unwrap_or_else(|e| panic!("{e}"));
    assert_av(&streams, 1280, 720, "FLV recording");
    let duration = probe_duration(file);
    assert!(
        (duration - 6.0).abs() <= 0.5,
        "ffprobe says {duration:.3} s for 6 s published"
    );
    let rec = analyze(file).unwrap_or_else(|e| panic!("{e}"));
    rec.assert_complete(5.4, 0.5, "FLV recording");
    assert_decodes(file);
    eprintln!(
        "6 s published as FLV: ffprobe {duration:.3} s, {} video frames",
        rec.video.len()
    );
    let rows = recordings(&server);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["format"], "flv");
    assert_eq!(rows[0]["bytes"].as_u64(), Some(fs_len(file)));
    server.stop_ok();
}

#[test]
fn only_streams_that_record_are_recorded() {
    let _serial = serial();
    require_ffmpeg();
    let clip = clip_for_optout();
    // The global default is off.
    let mut server = Server::start(ServerOpts::default());
    let plain = server.create_stream("plain");
    let out = zerocast(
        &server,
        &["streams", "create", "flagged", "--record", "--json"],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["record"], true);
    let flagged = v["key"].as_str().unwrap().to_owned();
    let out = zerocast(&server, &["streams", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let flag = |name: &str| {
        list.as_array()
            .and_then(|l| l.iter().find(|s| s["name"] == name))
            .map(|s| s["record"].clone())
    };
    assert_eq!(
        flag("flagged"),
        Some(serde_json::Value::Bool(true)),
        "{out}"
    );
    assert_eq!(flag("plain"), Some(serde_json::Value::Null), "{out}");
    let dir = server.scratch("peers");
    let mut a = publish_limited("plain", &dir, &clip, &server.publish_url(&plain), Some(4));
    let mut b = publish_limited(
        "flagged",
        &dir,
        &clip,
        &server.publish_url(&flagged),
        Some(4),
    );
    server.expect_log(&["publishing", "stream=plain", "record=false"], 10 * SECS);
    server.expect_log(&["publishing", "stream=flagged", "record=true"], 10 * SECS);
    wait_for_exit(&mut a, 20 * SECS);
    wait_for_exit(&mut b, 20 * SECS);
    server.expect_log(&["recording closed", "stream=flagged"], 10 * SECS);

    assert!(files_of(&server, "plain").is_empty());
    assert!(!recordings_dir(&server).join("plain").exists());
    assert_eq!(files_of(&server, "flagged").len(), 1);
    let rows = recordings(&server);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["stream"], "flagged");
    let only = zerocast(
        &server,
        &["recordings", "list", "--stream", "plain", "--json"],
    );
    assert_eq!(only.trim(), "[]");
    server.stop_ok();
}
