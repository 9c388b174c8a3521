//! The REST API end to end, with a raw HTTP/1.1 client and real ffmpeg peers: create a stream,
//! publish with the key it returns, watch it go live with the right codec, size and frame rate,
//! stop it (ffmpeg is kicked), read the history, rotate the key (the old one is refused),
//! disable and delete it. Also: every route needs the token, bad input gets a 4xx with a JSON
//! error, the `error` status, the failed-publish limit, recording downloads with `Range`, and
//! the CLI and the API agreeing.

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::http::{send, HttpResponse};
use common::*;
use serde_json::{json, Value};

const SECS: Duration = Duration::from_secs(1);

/// `METHOD /api/v1PATH` with the test token and an optional JSON body.
fn api(server: &Server, method: &str, path: &str, body: Option<Value>) -> HttpResponse {
    let auth = format!("Bearer {API_TOKEN}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut headers = vec![("Authorization", auth.as_str())];
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    send(
        server.http_port,
        method,
        &format!("/api/v1{path}"),
        &headers,
        body.as_bytes(),
    )
}

/// Asserts the status and returns the JSON body (`Null` when there is none).
fn expect(r: &HttpResponse, status: u16, what: &str) -> Value {
    assert_eq!(r.status, status, "{what}: {} {}", r.status, r.text());
    if r.body.is_empty() {
        return Value::Null;
    }
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{what}: content type"
    );
    r.json()
}

/// Asserts an error response: status, JSON `{error: {code, message}}`, the code.
fn expect_error(r: &HttpResponse, status: u16, code: &str, what: &str) -> String {
    let v = expect(r, status, what);
    assert_eq!(v["error"]["code"], code, "{what}: {v}");
    let message = v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!message.is_empty(), "{what}: empty message in {v}");
    message
}

/// Polls `f` every 100 ms until it returns `Some`, at most `limit`; panics with `what` and the
/// server log after that.
fn wait_for<T>(
    server: &Server,
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}\n--- server stderr ---\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `GET /streams/NAME` says `status` (and, for `live`, that it has a video track
/// with a size); returns the stream.
fn wait_status(server: &Server, name: &str, status: &str, limit: Duration) -> Value {
    wait_status_of(server, name, status, status == "live", limit)
}

/// [`wait_status`], for publishers that may send no media (`tracks`: wait for a video track).
fn wait_status_of(
    server: &Server,
    name: &str,
    status: &str,
    tracks: bool,
    limit: Duration,
) -> Value {
    wait_for(server, limit, &format!("{name} {status}"), || {
        let v = api(server, "GET", &format!("/streams/{name}"), None).json();
        let ready = v["status"] == status
            && (!tracks
                || v["live"]["tracks"].as_array().is_some_and(|t| {
                    t.iter()
                        .any(|t| t["kind"] == "video" && t["width"].is_u64())
                }));
        ready.then_some(v)
    })
}

/// Asserts that a publisher is refused: ffmpeg exits unsuccessfully within 10 s.
fn assert_refused(p: &mut Proc, what: &str) {
    match p.wait_for(10 * SECS) {
        Some(st) => assert!(!st.success(), "{what}: ffmpeg exited 0\n{}", p.stderr()),
        None => panic!("{what}: ffmpeg still publishing after 10 s\n{}", p.stderr()),
    }
}

/// Asserts that a running publisher is kicked: it exits within 10 s.
fn assert_kicked(p: &mut Proc, what: &str) {
    assert!(
        p.wait_for(10 * SECS).is_some(),
        "{what}: ffmpeg still publishing 10 s later\n{}",
        p.stderr()
    );
}

#[test]
fn create_publish_stop_history_rotate_disable_delete() {
    let _serial = serial();
    require_ffmpeg();
    let server = Server::start(ServerOpts {
        shards: 2,
        ..ServerOpts::default()
    });
    let clip = clip(MAIN_CLIP);

    // Create: 201 with the key and the URLs to use.
    let r = api(
        &server,
        "POST",
        "/streams",
        Some(json!({"name": "studio", "description": "main camera"})),
    );
    let created = expect(&r, 201, "create");
    assert_eq!(r.header("location"), Some("/api/v1/streams/studio"));
    assert_eq!(created["name"], "studio");
    assert_eq!(created["status"], "idle");
    assert_eq!(created["description"], "main camera");
    assert_eq!(created["enabled"], true);
    assert!(created["created_at"].is_i64(), "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.len() >= 22, "{key}");
    let urls = &created["urls"];
    assert_eq!(urls["rtmp_publish"], server.publish_url(&key));
    assert_eq!(urls["rtmps_publish"], Value::Null, "RTMPS is off");
    assert_eq!(urls["rtmp_play"], server.play_url("studio"));
    assert_eq!(urls["hls"], server.hls_url("studio"));

    // Publish with exactly the URL the API gave.
    let dir = server.scratch("peers");
    let mut publisher = publish("pub", &dir, &clip, urls["rtmp_publish"].as_str().unwrap());
    let live = wait_status(&server, "studio", "live", 15 * SECS);
    assert_eq!(live["id"], id.as_str());
    let stats = &live["live"];
    assert_eq!(stats["protocol"], "rtmp");
    assert!(
        stats["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{stats}"
    );
    let tracks = stats["tracks"].as_array().unwrap();
    let video = tracks.iter().find(|t| t["kind"] == "video").unwrap();
    assert_eq!(video["codec"], "h264", "{video}");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(1280), Some(720))
    );
    let fps = video["fps"]
        .as_f64()
        .unwrap_or_else(|| panic!("no fps in {video}"));
    assert!((fps - 30.0).abs() < 0.5, "fps {fps}");
    let audio = tracks.iter().find(|t| t["kind"] == "audio").unwrap();
    assert_eq!(audio["codec"], "aac", "{audio}");
    assert_eq!(audio["sample_rate"], 48000);
    assert_eq!(audio["channels"], 2);

    // A player: counted, and the counters move.
    let mut player = record(
        "player",
        &dir,
        &server.play_url("studio"),
        60.0,
        &dir.join("played.flv"),
    );
    let watched = wait_for(
        &server,
        15 * SECS,
        "an RTMP viewer and 2 s of ingest",
        || {
            let v = api(&server, "GET", "/streams/studio", None).json();
            let s = &v["live"];
            (s["viewers"]["rtmp"] == 1 && s["uptime_ms"].as_u64() >= Some(2500)).then_some(v)
        },
    );
    let s = &watched["live"];
    assert_eq!(s["viewers"]["total"], 1);
    assert!(s["frames_in"].as_u64().unwrap() > 30, "{s}");
    assert!(s["bytes_in"].as_u64().unwrap() > 100_000, "{s}");
    // The clip is 2.5 Mb/s video + 128 kb/s audio.
    for window in ["bitrate_in_1s", "bitrate_in_10s"] {
        let b = s[window].as_u64().unwrap();
        assert!((1_000_000..6_000_000).contains(&b), "{window} = {b}: {s}");
    }
    let s = wait_for(&server, 10 * SECS, "bytes out", || {
        let v = api(&server, "GET", "/streams/studio", None).json();
        (v["live"]["bytes_out"].as_u64() > Some(10_000)).then_some(v)
    });
    assert_eq!(s["live"]["dropped_frames"], 0);

    // The list and its status filter.
    let names = |q: &str| -> Vec<String> {
        let v = expect(&api(&server, "GET", &format!("/streams{q}"), None), 200, q);
        v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("?status=live"), ["studio"]);
    assert_eq!(names("?status=idle"), ["demo"]);
    assert_eq!(names(""), ["demo", "studio"]);
    let page = expect(
        &api(&server, "GET", "/streams?page=2&per_page=1", None),
        200,
        "page 2",
    );
    assert_eq!(
        (page["total"].as_u64(), page["streams"][0]["name"].as_str()),
        (Some(2), Some("studio"))
    );

    // Stop: ffmpeg is kicked, the stream ends.
    let stopped = expect(
        &api(&server, "POST", "/streams/studio/stop", None),
        200,
        "stop",
    );
    assert_eq!(stopped["status"], "ended", "{stopped}");
    assert_eq!(stopped["live"], Value::Null);
    assert_kicked(&mut publisher, "stopped publisher");
    assert!(
        player.wait_for(10 * SECS).is_some(),
        "the player ends with the stream"
    );
    expect_error(
        &api(&server, "POST", "/streams/studio/stop", None),
        409,
        "not_live",
        "stop again",
    );

    // The history shows the session.
    let history = expect(
        &api(&server, "GET", "/streams/studio/sessions", None),
        200,
        "sessions",
    );
    assert_eq!(history["total"], 1, "{history}");
    let session = &history["sessions"][0];
    assert_eq!(session["end_reason"], "stopped by operator", "{session}");
    assert_eq!(session["live"], false);
    assert_eq!(session["protocol"], "rtmp");
    assert!(session["remote"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(session["ended_at"].as_i64() >= session["started_at"].as_i64());
    assert!(
        session["duration_ms"].as_u64().unwrap() >= 2500,
        "{session}"
    );
    assert!(session["frames"].as_u64().unwrap() > 60, "{session}");
    assert!(session["bytes"].as_u64().unwrap() > 100_000, "{session}");

    // Rotate: the old key is refused, the new one publishes; live again on republish.
    let rotated = expect(
        &api(&server, "POST", "/streams/studio/rotate-key", None),
        200,
        "rotate",
    );
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, key);
    assert_eq!(
        rotated["urls"]["rtmp_publish"],
        server.publish_url(&new_key)
    );
    assert_eq!(rotated["status"], "ended");
    let mut old = publish("old-key", &dir, &clip, &server.publish_url(&key));
    assert_refused(&mut old, "publish with the rotated-out key");
    server.expect_log(&["publish refused", "invalid stream key"], 5 * SECS);
    let mut publisher = publish("pub2", &dir, &clip, &server.publish_url(&new_key));
    wait_status(&server, "studio", "live", 15 * SECS);
    let history = expect(
        &api(&server, "GET", "/streams/studio/sessions", None),
        200,
        "sessions",
    );
    assert_eq!(history["total"], 2);
    assert_eq!(
        history["sessions"][0]["live"], true,
        "newest first: {history}"
    );
    assert_eq!(history["sessions"][0]["ended_at"], Value::Null);

    // Disable: the publisher is stopped and refused until enabled again.
    let disabled = expect(
        &api(
            &server,
            "PATCH",
            "/streams/studio",
            Some(json!({"enabled": false})),
        ),
        200,
        "disable",
    );
    assert_eq!(disabled["status"], "disabled", "{disabled}");
    assert_kicked(&mut publisher, "disabled stream's publisher");
    let mut refused = publish("disabled", &dir, &clip, &server.publish_url(&new_key));
    assert_refused(&mut refused, "publish to a disabled stream");
    server.expect_log(&["publish refused", "disabled"], 5 * SECS);
    let enabled = expect(
        &api(
            &server,
            "PATCH",
            "/streams/studio",
            Some(json!({"enabled": true, "description": null, "record": false})),
        ),
        200,
        "enable",
    );
    assert_eq!(enabled["status"], "ended", "{enabled}");
    assert_eq!(enabled["description"], Value::Null);
    assert_eq!(enabled["record"], false);

    // Delete while live: kicked, then gone; the key stops working.
    let mut publisher = publish("pub3", &dir, &clip, &server.publish_url(&new_key));
    wait_status(&server, "studio", "live", 15 * SECS);
    let r = api(&server, "DELETE", "/streams/studio", None);
    assert_eq!(r.status, 204, "delete: {}", r.text());
    assert_kicked(&mut publisher, "deleted stream's publisher");
    expect_error(
        &api(&server, "GET", "/streams/studio", None),
        404,
        "not_found",
        "after delete",
    );
    expect_error(
        &api(&server, "GET", "/streams/studio/sessions", None),
        404,
        "not_found",
        "history after delete",
    );
    expect_error(
        &api(&server, "DELETE", "/streams/studio", None),
        404,
        "not_found",
        "delete twice",
    );
    let mut gone = publish("gone", &dir, &clip, &server.publish_url(&new_key));
    assert_refused(&mut gone, "publish to a deleted stream");

    let log = server.log();
    assert!(
        !log.contains(&key) && !log.contains(&new_key),
        "keys are never logged"
    );
    assert!(!log.contains("panicked"), "{log}");
}

/// Every route needs the token; bad input is a 4xx with a JSON error, never a 5xx.
#[test]
fn token_and_bad_input() {
    let server = Server::start(ServerOpts::default());
    let routes = [
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/api/v1/streams"),
        ("POST", "/api/v1/streams"),
        ("GET", "/api/v1/streams/demo"),
        ("PATCH", "/api/v1/streams/demo"),
        ("DELETE", "/api/v1/streams/demo"),
        ("POST", "/api/v1/streams/demo/stop"),
        ("POST", "/api/v1/streams/demo/rotate-key"),
        ("GET", "/api/v1/streams/demo/sessions"),
        ("GET", "/api/v1/recordings"),
        ("GET", "/api/v1/recordings/1"),
        ("GET", "/api/v1/recordings/1/download"),
        ("GET", "/api/v1/no-such-thing"),
    ];
    for (method, path) in routes {
        for auth in [None, Some("Bearer wrong-token-0123456789"), Some(API_TOKEN)] {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
            let r = send(server.http_port, method, path, &headers, b"");
            let what = format!("{method} {path} with {auth:?}");
            expect_error(&r, 401, "unauthorized", &what);
            assert_eq!(
                r.header("www-authenticate"),
                Some("Bearer realm=\"zerocast\""),
                "{what}"
            );
        }
    }
    // The demo stream survived all that.
    expect(&api(&server, "GET", "/streams/demo", None), 200, "demo");

    let doc = expect(
        &api(&server, "GET", "/openapi.json", None),
        200,
        "openapi.json",
    );
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert!(doc["paths"]["/api/v1/streams/{name}/sessions"]["get"].is_object());

    let create = |body: &[u8]| {
        let auth = format!("Bearer {API_TOKEN}");
        send(
            server.http_port,
            "POST",
            "/api/v1/streams",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    };
    let m = expect_error(
        &create(br#"{"name":"a.b"}"#),
        400,
        "invalid_name",
        "dot in name",
    );
    assert!(m.contains("'.'"), "{m}");
    expect_error(
        &create(br#"{"name":""}"#),
        400,
        "invalid_name",
        "empty name",
    );
    expect_error(
        &create(format!(r#"{{"name":"{}"}}"#, "n".repeat(65)).as_bytes()),
        400,
        "invalid_name",
        "long name",
    );
    let m = expect_error(
        &create(br#"{"nmae":"x"}"#),
        400,
        "bad_request",
        "unknown field",
    );
    assert!(m.contains("unknown field"), "{m}");
    let m = expect_error(
        &create(br#"{"record":"yes"}"#),
        400,
        "bad_request",
        "wrong type",
    );
    assert!(m.contains("invalid type"), "{m}");
    for bad in [
        &b"not json"[..],
        b"[]",
        b"null",
        b"{\"name\":",
        "{\"name\":\"\u{e9}\"}".as_bytes(),
    ] {
        let r = create(bad);
        assert_eq!(
            r.status,
            400,
            "{:?}: {}",
            String::from_utf8_lossy(bad),
            r.text()
        );
    }
    let long = json!({"description": "d".repeat(1025)}).to_string();
    expect_error(
        &create(long.as_bytes()),
        400,
        "bad_request",
        "long description",
    );
    let huge = vec![b' '; 20_000];
    expect_error(&create(&huge), 413, "payload_too_large", "20 kB body");
    expect_error(
        &create(br#"{"name":"demo"}"#),
        409,
        "conflict",
        "duplicate name",
    );
    let generated = expect(&create(b""), 201, "no body");
    assert!(
        generated["name"].as_str().unwrap().starts_with("stream-"),
        "{generated}"
    );

    for q in [
        "page=0",
        "page=x",
        "per_page=0",
        "per_page=501",
        "status=bogus",
        "page=1&page=2",
    ] {
        expect_error(
            &api(&server, "GET", &format!("/streams?{q}"), None),
            400,
            "bad_request",
            q,
        );
    }
    expect_error(
        &api(&server, "GET", "/streams/nope", None),
        404,
        "not_found",
        "missing stream",
    );
    expect_error(
        &api(&server, "GET", "/streams/a%2Fb", None),
        400,
        "invalid_name",
        "encoded slash",
    );
    expect_error(
        &api(&server, "GET", "/recordings/abc", None),
        400,
        "bad_request",
        "recording id",
    );
    expect_error(
        &api(&server, "GET", "/recordings/0", None),
        400,
        "bad_request",
        "recording id 0",
    );
    expect_error(
        &api(&server, "GET", "/recordings/999", None),
        404,
        "not_found",
        "missing recording",
    );
    expect_error(
        &api(&server, "GET", "/recordings/999/download", None),
        404,
        "not_found",
        "missing file",
    );
    expect_error(
        &api(&server, "GET", "/recordings?stream=a.b", None),
        400,
        "invalid_name",
        "filter",
    );
    expect_error(
        &api(&server, "PATCH", "/streams/demo", None),
        400,
        "bad_request",
        "PATCH without body",
    );
    expect_error(
        &api(
            &server,
            "PATCH",
            "/streams/demo",
            Some(json!({"enabled": null})),
        ),
        400,
        "bad_request",
        "enabled null",
    );
    expect_error(
        &api(&server, "POST", "/streams/demo/stop", None),
        409,
        "not_live",
        "stop idle",
    );
    let r = api(&server, "PUT", "/streams", None);
    expect_error(&r, 405, "method_not_allowed", "PUT");
    assert_eq!(r.header("allow"), Some("GET, POST"));
    expect_error(
        &api(&server, "GET", "/nothing/here", None),
        404,
        "not_found",
        "unknown route",
    );
    assert!(!server.log().contains("panicked"));
}

// ---------------------------------------------------------------------------------------------
// A raw RTMP publisher (to end a session with an error, and to count failed attempts fast)
// ---------------------------------------------------------------------------------------------

fn amf_null(out: &mut Vec<u8>) {
    out.push(0x05);
}

/// `connect("live")`, `createStream`, `publish(key)` on message stream 1.
fn raw_publish(server: &Server, key: &str) -> TcpStream {
    let mut s = connect(server.addr(), 5 * SECS).expect("connect");
    handshake(&mut s, &mut Rng::new(0x5eed)).expect("handshake");
    let mut c = Vec::new();
    amf_string(&mut c, "connect");
    amf_number(&mut c, 1.0);
    c.push(0x03);
    for (k, v) in [("app", "live"), ("tcUrl", "rtmp://127.0.0.1/live")] {
        c.extend_from_slice(&(k.len() as u16).to_be_bytes());
        c.extend_from_slice(k.as_bytes());
        amf_string(&mut c, v);
    }
    c.extend_from_slice(&[0, 0, 9]);
    let mut create = Vec::new();
    amf_string(&mut create, "createStream");
    amf_number(&mut create, 2.0);
    amf_null(&mut create);
    let mut publish = Vec::new();
    amf_string(&mut publish, "publish");
    amf_number(&mut publish, 3.0);
    amf_null(&mut publish);
    amf_string(&mut publish, key);
    amf_string(&mut publish, "live");
    let mut bytes = chunked_message(3, 0, 20, 0, &c, 128);
    bytes.extend(chunked_message(3, 0, 20, 0, &create, 128));
    bytes.extend(chunked_message(8, 0, 20, 1, &publish, 128));
    write_lossy(&mut s, &bytes);
    s
}

/// The error status, and the failed-publish limit per address.
#[test]
fn error_status_and_failed_publish_limit() {
    let server = Server::start(ServerOpts {
        auth: vec!["max_failed_publish_per_minute = 3".into()],
        ..ServerOpts::default()
    });
    let created = expect(
        &api(&server, "POST", "/streams", Some(json!({"name": "cam"}))),
        201,
        "create",
    );
    let key = created["key"].as_str().unwrap().to_owned();

    // A publisher whose video tag is malformed: the session ends with an error.
    let mut s = raw_publish(&server, &key);
    server.expect_log(&["publishing", "stream=cam"], 5 * SECS);
    // An AVC tag with packet type 9 (only 0..=2 exist).
    write_lossy(
        &mut s,
        &chunked_message(6, 0, 9, 1, &[0x17, 0x09, 0, 0, 0], 128),
    );
    expect_closed(&mut s, 5 * SECS).expect("the server closes the bad publisher");
    let v = wait_status(&server, "cam", "error", 5 * SECS);
    let reason = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error reason: {v}"));
    assert!(reason.starts_with("error:"), "{reason}");
    let history = expect(
        &api(&server, "GET", "/streams/cam/sessions", None),
        200,
        "sessions",
    );
    assert_eq!(history["sessions"][0]["end_reason"], reason);
    let listed = expect(
        &api(&server, "GET", "/streams?status=error", None),
        200,
        "filter",
    );
    assert_eq!(listed["streams"][0]["name"], "cam");

    // Three wrong keys use up the minute's budget: the right key is then refused too.
    for i in 0..3 {
        let mut s = raw_publish(&server, &format!("wrong-key-{i}"));
        expect_closed(&mut s, 5 * SECS).expect("wrong key refused");
    }
    let mut s = raw_publish(&server, &key);
    expect_closed(&mut s, 5 * SECS).expect("refused after too many failures");
    server.expect_log(&["publish refused", "too many failed attempts"], 5 * SECS);
    assert_eq!(
        server.log().matches("publishing conn=").count(),
        1,
        "only the first publish was accepted"
    );
    let v = api(&server, "GET", "/streams/cam", None).json();
    assert_eq!(v["status"], "error", "still the last session's status: {v}");
    assert!(!server.log().contains(&key), "keys are never logged");
}

/// Recordings through the API: listed with metadata, downloaded whole and by range.
#[test]
fn recording_metadata_and_ranged_download() {
    let _serial = serial();
    require_ffmpeg();
    let server = Server::start(ServerOpts::default());
    let created = expect(
        &api(
            &server,
            "POST",
            "/streams",
            Some(json!({"name": "rec", "record": true})),
        ),
        201,
        "create",
    );
    assert_eq!(created["record"], true);
    let key = created["key"].as_str().unwrap().to_owned();
    // One pass of a 4 s clip (no loop): ffmpeg ends by itself.
    let clip = clip(small_clip(320, 240, 440));
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-i",
    ])
    .arg(&clip)
    .args(["-c", "copy", "-f", "flv", &server.publish_url(&key)]);
    let (st, _, err) = run_bounded(cmd, 30 * SECS);
    assert!(st.is_some_and(|s| s.success()), "publish: {err}");

    let list = wait_for(&server, 10 * SECS, "a complete recording", || {
        let v = api(&server, "GET", "/recordings?stream=rec", None).json();
        (v["recordings"][0]["status"] == "complete").then_some(v)
    });
    assert_eq!(list["total"], 1);
    let rec = &list["recordings"][0];
    let id = rec["id"].as_i64().unwrap();
    assert_eq!(rec["stream"], "rec");
    assert_eq!(rec["format"], "fmp4");
    assert!(rec["duration_ms"].as_u64().unwrap() >= 3000, "{rec}");
    assert_eq!(rec["download"], format!("/api/v1/recordings/{id}/download"));
    let one = expect(
        &api(&server, "GET", &format!("/recordings/{id}"), None),
        200,
        "get",
    );
    assert_eq!(&one, rec);
    let on_disk = std::fs::read(rec["path"].as_str().unwrap()).unwrap();
    assert_eq!(rec["bytes"].as_u64(), Some(on_disk.len() as u64));

    let auth = format!("Bearer {API_TOKEN}");
    let path = format!("/api/v1/recordings/{id}/download");
    let whole = send(
        server.http_port,
        "GET",
        &path,
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-type"), Some("video/mp4"));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert!(whole.body == on_disk, "the download is the file");
    let len = on_disk.len();
    for (range, first, last) in [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, len - 1),
        ("bytes=-500", len - 500, len - 1),
    ] {
        let r = send(
            server.http_port,
            "GET",
            &path,
            &[("Authorization", &auth), ("Range", range)],
            b"",
        );
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.header("content-range").map(str::to_owned),
            Some(format!("bytes {first}-{last}/{len}")),
            "{range}"
        );
        assert!(r.body == on_disk[first..=last], "{range}: wrong bytes");
    }
    let r = send(
        server.http_port,
        "GET",
        &path,
        &[
            ("Authorization", &auth),
            ("Range", &format!("bytes={len}-")),
        ],
        b"",
    );
    expect_error(&r, 416, "range_not_satisfiable", "range past the end");
    assert_eq!(
        r.header("content-range").map(str::to_owned),
        Some(format!("bytes */{len}"))
    );
    // ffprobe reads what came over HTTP.
    let file = server.scratch("dl").join("rec.mp4");
    std::fs::write(&file, &whole.body).unwrap();
    let streams = probe(file.to_str().unwrap(), 20 * SECS).unwrap();
    assert!(
        streams
            .iter()
            .any(|s| s.codec_name == "h264" && s.width == Some(320)),
        "{streams:?}"
    );
}

/// The CLI and the API read and write the same streams.
#[test]
fn cli_and_api_agree() {
    let server = Server::start(ServerOpts::default());
    let cli = |args: &[&str]| -> Value {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .arg("--config")
            .arg(&server.config)
            .env_remove("RUST_LOG");
        let (st, out, err) = run_bounded(cmd, 20 * SECS);
        assert!(st.is_some_and(|s| s.success()), "{args:?}: {err}");
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
    };
    let created = expect(
        &api(
            &server,
            "POST",
            "/streams",
            Some(json!({"name": "viaapi", "description": "d1"})),
        ),
        201,
        "create",
    );
    let listed = cli(&["streams", "list", "--json"]);
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "viaapi")
        .unwrap_or_else(|| panic!("CLI does not list the API's stream: {listed}"))
        .clone();
    for field in [
        "id",
        "created_at",
        "description",
        "enabled",
        "record",
        "status",
    ] {
        assert_eq!(
            row[field], created[field],
            "{field}: CLI {row} vs API {created}"
        );
    }
    assert!(row.get("key").is_none(), "the list shows no keys");

    let made = cli(&[
        "streams",
        "create",
        "viacli",
        "--description",
        "d2",
        "--json",
    ]);
    let got = expect(&api(&server, "GET", "/streams/viacli", None), 200, "get");
    for field in [
        "id",
        "name",
        "created_at",
        "description",
        "enabled",
        "record",
        "status",
    ] {
        assert_eq!(got[field], made[field], "{field}: API {got} vs CLI {made}");
    }
    let set = cli(&[
        "streams",
        "set",
        "viacli",
        "--enabled",
        "false",
        "--record",
        "true",
        "--json",
    ]);
    assert_eq!(set["status"], "disabled");
    let got = expect(&api(&server, "GET", "/streams/viacli", None), 200, "get");
    assert_eq!(
        (got["status"].as_str(), got["record"].as_bool()),
        (Some("disabled"), Some(true))
    );

    // A key rotated by the CLI is the key the API would have given: publish works with it.
    let rotated = cli(&["streams", "rotate-key", "viaapi", "--json"]);
    assert_ne!(rotated["key"], created["key"]);
    expect(
        &api(&server, "DELETE", "/streams/viacli", None),
        204,
        "delete",
    );
    let listed = cli(&["streams", "list", "--json"]);
    assert!(!listed.to_string().contains("viacli"), "{listed}");
}

/// History survives restarts: a clean stop ends the session (`ended`); a crash while live
/// leaves it open, and the next start closes it with an error (`error`).
#[test]
fn history_across_restart_and_crash() {
    let server = Server::start(ServerOpts::default());
    let created = expect(
        &api(&server, "POST", "/streams", Some(json!({"name": "cam"}))),
        201,
        "create",
    );
    let key = created["key"].as_str().unwrap().to_owned();

    let _s = raw_publish(&server, &key);
    wait_status_of(&server, "cam", "live", false, 5 * SECS);
    let mut server = server;
    server.stop_ok();
    let server = Server::restart(server);
    let v = expect(
        &api(&server, "GET", "/streams/cam", None),
        200,
        "after restart",
    );
    assert_eq!(v["status"], "ended", "{v}");
    let h = expect(
        &api(&server, "GET", "/streams/cam/sessions", None),
        200,
        "history",
    );
    assert_eq!(h["sessions"][0]["end_reason"], "server stopping", "{h}");

    let _s = raw_publish(&server, &key);
    wait_status_of(&server, "cam", "live", false, 5 * SECS);
    let mut server = server;
    signal(server.pid(), libc::SIGKILL);
    let deadline = Instant::now() + 5 * SECS;
    while server.try_status().is_none() {
        assert!(Instant::now() < deadline, "SIGKILL did not end the server");
        std::thread::sleep(Duration::from_millis(20));
    }
    let server = Server::restart(server);
    let v = expect(
        &api(&server, "GET", "/streams/cam", None),
        200,
        "after a crash",
    );
    assert_eq!(v["status"], "error", "{v}");
    assert!(v["error"].as_str().unwrap().starts_with("error:"), "{v}");
    let h = expect(
        &api(&server, "GET", "/streams/cam/sessions", None),
        200,
        "history",
    );
    assert_eq!(h["total"], 2);
}
