//! Webhooks end to end: a real HTTP server started by the test answers the hooks of a real
//! server, while ffmpeg publishes and plays.
//!
//! `on_publish` allows (2xx) or refuses (anything else), an unanswered one follows
//! `hooks.fail_open`, notifications carry their stats and are retried with backoff, and the
//! `X-Zerocast-Signature` header verifies with the secret.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SECS: Duration = Duration::from_secs(1);

/// One request the hook server received.
#[derive(Clone, Debug)]
struct HookRequest {
    path: String,
    /// Names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    at: Instant,
}

impl HookRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} body is not JSON ({e}): {}",
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// The status and delay of the `n`th (from 0) request to `path`.
type Behaviour = dyn Fn(&str, usize) -> (u16, Duration) + Send + Sync;

/// An HTTP/1.1 server on 127.0.0.1 that records every request and answers as told; one thread
/// per connection, so a slow answer does not hold up others.
struct HookServer {
    port: u16,
    requests: Arc<Mutex<Vec<HookRequest>>>,
}

impl HookServer {
    fn start(behaviour: impl Fn(&str, usize) -> (u16, Duration) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the hook server");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let behaviour: Arc<Behaviour> = Arc::new(behaviour);
        let seen = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let seen = seen.clone();
                let behaviour = behaviour.clone();
                std::thread::spawn(move || serve_hook(conn, &seen, &*behaviour));
            }
        });
        HookServer { port, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self, path: &str) -> Vec<HookRequest> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits (bounded) until `path` got `n` requests; returns them.
    fn wait(&self, path: &str, n: usize, limit: Duration, server: &Server) -> Vec<HookRequest> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.requests(path);
            if got.len() >= n {
                return got;
            }
            if Instant::now() >= deadline {
                let all: Vec<String> = self
                    .requests
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|r| format!("{} {}", r.path, String::from_utf8_lossy(&r.body)))
                    .collect();
                panic!(
                    "{path} got {} of {n} requests within {limit:?}; all requests: {all:#?}\n\
                     --- server log ---\n{}",
                    got.len(),
                    server.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve_hook(mut conn: TcpStream, seen: &Mutex<Vec<HookRequest>>, behaviour: &Behaviour) {
    conn.set_read_timeout(Some(10 * SECS)).ok();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let path = request_line
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(len);
    assert!(request_line.starts_with("POST "), "{request_line}");
    let nth = {
        let mut seen = seen.lock().unwrap();
        let nth = seen.iter().filter(|r| r.path == path).count();
        seen.push(HookRequest {
            path: path.clone(),
            headers,
            body,
            at: Instant::now(),
        });
        nth
    };
    let (status, delay) = behaviour(&path, nth);
    std::thread::sleep(delay);
    // The client may have given up (a timeout test): a failed write is expected then.
    let _ = write!(
        conn,
        "HTTP/1.1 {status} Hook\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

/// A keys-auth server with `hooks` lines.
fn server_with_hooks(hooks: Vec<String>) -> Server {
    Server::start(ServerOpts {
        hooks,
        ..ServerOpts::default()
    })
}

/// Asserts `body` is an `on_publish` question about `stream` from this machine.
fn assert_publish_body(req: &HookRequest, stream: &str, key: &str) {
    let body = req.json();
    assert_eq!(body["event"], "stream.publish", "{body}");
    assert_eq!(body["hook"], "on_publish", "{body}");
    assert_eq!(body["stream"], stream, "{body}");
    assert_eq!(body["protocol"], "rtmp", "{body}");
    assert_eq!(body["app"], "live", "{body}");
    let remote = body["remote"].as_str().unwrap_or_default();
    assert!(remote.starts_with("127.0.0.1:"), "remote in {body}");
    assert!(
        body["at_ms"].as_u64().unwrap_or(0) > 1_600_000_000_000,
        "{body}"
    );
    assert!(
        !String::from_utf8_lossy(&req.body).contains(key),
        "the stream key must never be sent: {body}"
    );
    assert_eq!(req.header("x-zerocast-event"), Some("stream.publish"));
    assert_eq!(req.header("content-type"), Some("application/json"));
}

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` keyed with `secret`.
fn signature_verifies(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    if hex.len() != 64 {
        return false;
    }
    let Ok(tag) = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

#[test]
fn on_publish_answering_403_refuses_the_publish() {
    let _serial = serial();
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    let hooks = HookServer::start(|_, _| (403, Duration::ZERO));
    let mut server = server_with_hooks(vec![format!("on_publish = {:?}", hooks.url("/publish"))]);
    let key = server.create_stream("hooked");
    let dir = server.scratch("peers");

    let started = Instant::now();
    let mut publisher = publish("publisher", &dir, &clip, &server.publish_url(&key));
    let st = publisher.wait_for(10 * SECS);
    let err = publisher.stderr();
    let st = st.unwrap_or_else(|| panic!("refused publisher still running after 10 s\n{err}"));
    assert!(!st.success(), "refused publisher exited 0\n{err}");
    assert!(
        started.elapsed() < 8 * SECS,
        "the refusal took {:?}",
        started.elapsed()
    );
    server.expect_log(
        &[
            "publish refused by on_publish hook",
            "status=403",
            "stream=hooked",
        ],
        5 * SECS,
    );
    assert!(
        server
            .wait_log(&["publishing", "stream=hooked"], SECS)
            .is_none(),
        "a refused stream was published"
    );
    let reqs = hooks.requests("/publish");
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_publish_body(&reqs[0], "hooked", &key);
    assert_eq!(
        reqs[0].header("x-zerocast-signature"),
        None,
        "no secret, no signature"
    );
    server.stop_ok();
}

#[test]
fn on_publish_answering_204_admits_and_on_publish_done_reports_the_session() {
    let _serial = serial();
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    let hooks = HookServer::start(|_, _| (204, Duration::ZERO));
    let mut server = server_with_hooks(vec![
        format!("on_publish = {:?}", hooks.url("/publish")),
        format!("on_publish_done = {:?}", hooks.url("/done")),
    ]);
    let key = server.create_stream("hooked");
    let dir = server.scratch("peers");

    let mut publisher = publish("publisher", &dir, &clip, &server.publish_url(&key));
    server.expect_log(&["publishing", "stream=hooked"], 10 * SECS);
    let streams = probe(&server.play_url("hooked"), 20 * SECS)
        .unwrap_or_else(|e| panic!("ffprobe of an admitted stream: {e}"));
    let video = streams.iter().find(|s| s.codec_type == "video");
    assert_eq!(
        video.map(|v| v.codec_name.as_str()),
        Some("h264"),
        "{streams:?}"
    );
    assert_running(&mut publisher);
    let reqs = hooks.requests("/publish");
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_publish_body(&reqs[0], "hooked", &key);
    assert!(hooks.requests("/done").is_empty(), "done before the end");

    publisher.kill9();
    let done = hooks.wait("/done", 1, 10 * SECS, &server);
    let body = done[0].json();
    assert_eq!(body["event"], "stream.ended", "{body}");
    assert_eq!(body["hook"], "on_publish_done", "{body}");
    assert_eq!(body["stream"], "hooked", "{body}");
    assert_eq!(body["protocol"], "rtmp", "{body}");
    assert!(
        body["remote"]
            .as_str()
            .unwrap_or_default()
            .starts_with("127.0.0.1:"),
        "{body}"
    );
    assert!(body["stats"]["frames"].as_u64().unwrap_or(0) > 0, "{body}");
    assert!(body["stats"]["bytes"].as_u64().unwrap_or(0) > 0, "{body}");
    assert!(
        !body["reason"].as_str().unwrap_or_default().is_empty(),
        "{body}"
    );
    let (started, ended) = (
        body["started_at_ms"].as_u64().unwrap_or(0),
        body["at_ms"].as_u64().unwrap_or(0),
    );
    assert!(started > 0 && started <= ended, "{body}");
    assert_eq!(done[0].header("x-zerocast-event"), Some("stream.ended"));
    server.stop_ok();
}

#[test]
fn an_unanswered_on_publish_follows_fail_open() {
    let _serial = serial();
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    // Answers (allowing!) only long after hooks.timeout.
    let hooks = HookServer::start(|_, _| (204, 3 * SECS));
    for fail_open in [false, true] {
        let mut server = server_with_hooks(vec![
            format!("on_publish = {:?}", hooks.url("/publish")),
            "timeout = \"500ms\"".into(),
            format!("fail_open = {fail_open}"),
        ]);
        let key = server.create_stream("hooked");
        let dir = server.scratch("peers");
        let started = Instant::now();
        let mut publisher = publish("publisher", &dir, &clip, &server.publish_url(&key));
        if fail_open {
            server.expect_log(
                &["on_publish hook did not answer", "fail_open = true"],
                10 * SECS,
            );
            server.expect_log(&["publishing", "stream=hooked"], 10 * SECS);
            std::thread::sleep(SECS);
            assert_running(&mut publisher);
        } else {
            let st = publisher.wait_for(10 * SECS);
            let err = publisher.stderr();
            let st = st.unwrap_or_else(|| panic!("publisher still running after 10 s\n{err}"));
            assert!(
                !st.success(),
                "publisher exited 0 with fail_open = false\n{err}"
            );
            let line = server.expect_log(
                &[
                    "publish refused: on_publish hook did not answer",
                    "fail_open = false",
                ],
                5 * SECS,
            );
            assert!(
                line.contains("timed out") || line.contains("no answer"),
                "{line}"
            );
            assert!(
                server
                    .wait_log(&["publishing", "stream=hooked"], SECS)
                    .is_none(),
                "published although the hook did not answer"
            );
            // It waited for hooks.timeout, not for the hook's late answer.
            assert!(
                started.elapsed() >= Duration::from_millis(500),
                "{:?}",
                started.elapsed()
            );
        }
        drop(publisher);
        server.stop_ok();
    }
}

#[test]
fn the_signature_verifies_with_the_secret() {
    let _serial = serial();
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    let secret = "hook-secret-0123456789";
    let hooks = HookServer::start(|_, _| (200, Duration::ZERO));
    let mut server = server_with_hooks(vec![
        format!("on_publish = {:?}", hooks.url("/publish")),
        format!("on_publish_done = {:?}", hooks.url("/done")),
        format!("secret = {secret:?}"),
    ]);
    let key = server.create_stream("signed");
    let dir = server.scratch("peers");
    let mut publisher = publish("publisher", &dir, &clip, &server.publish_url(&key));
    server.expect_log(&["publishing", "stream=signed"], 10 * SECS);
    publisher.kill9();
    let done = hooks.wait("/done", 1, 10 * SECS, &server);
    let publish_req = hooks.requests("/publish");
    for req in [&publish_req[0], &done[0]] {
        let sig = req
            .header("x-zerocast-signature")
            .unwrap_or_else(|| panic!("{} has no signature: {req:?}", req.path));
        assert!(
            signature_verifies(secret, &req.body, sig),
            "{} {sig}",
            req.path
        );
        let mut altered = req.body.clone();
        let i = altered.len() / 2;
        altered[i] ^= 0x01;
        assert!(
            !signature_verifies(secret, &altered, sig),
            "a body altered by one byte verified"
        );
        assert!(!signature_verifies("another-secret", &req.body, sig));
    }
    assert!(
        !server.log().contains(secret),
        "the secret appears in the server log"
    );
    server.stop_ok();
}

#[test]
fn on_play_and_on_play_done_for_an_rtmp_player() {
    let _serial = serial();
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    let hooks = HookServer::start(|_, _| (200, Duration::ZERO));
    let mut server = server_with_hooks(vec![
        format!("on_play = {:?}", hooks.url("/play")),
        format!("on_play_done = {:?}", hooks.url("/play_done")),
    ]);
    let key = server.create_stream("watched");
    let dir = server.scratch("peers");
    let mut publisher = publish("publisher", &dir, &clip, &server.publish_url(&key));
    server.expect_log(&["publishing", "stream=watched"], 10 * SECS);

    let out = dir.join("player.flv");
    let mut player = record("player", &dir, &server.play_url("watched"), 2.0, &out);
    let joined = hooks.wait("/play", 1, 10 * SECS, &server);
    finish_player(&mut player, 20 * SECS);
    let left = hooks.wait("/play_done", 1, 10 * SECS, &server);

    let j = joined[0].json();
    assert_eq!(j["event"], "viewer.joined", "{j}");
    assert_eq!(j["hook"], "on_play", "{j}");
    assert_eq!(j["stream"], "watched", "{j}");
    assert_eq!(j["protocol"], "rtmp", "{j}");
    let remote = j["remote"].as_str().unwrap_or_default().to_owned();
    assert!(remote.starts_with("127.0.0.1:"), "{j}");
    let l = left[0].json();
    assert_eq!(l["event"], "viewer.left", "{l}");
    assert_eq!(l["hook"], "on_play_done", "{l}");
    assert_eq!(l["stream"], "watched", "{l}");
    assert_eq!(l["remote"], remote.as_str(), "the same viewer: {l}");
    assert!(l["bytes"].as_u64().unwrap_or(0) > 0, "{l}");
    assert!(
        l["joined_at_ms"].as_u64().unwrap_or(0) <= l["at_ms"].as_u64().unwrap_or(0),
        "{l}"
    );
    assert_eq!(left[0].header("x-zerocast-event"), Some("viewer.left"));
    assert_running(&mut publisher);
    drop(publisher);
    server.stop_ok();
}

#[test]
fn a_failing_notification_is_retried_with_backoff() {
    let _serial = serial();
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    // 500 twice, then 200.
    let hooks = HookServer::start(|_, nth| (if nth < 2 { 500 } else { 200 }, Duration::ZERO));
    let mut server = server_with_hooks(vec![format!("on_publish_done = {:?}", hooks.url("/done"))]);
    let key = server.create_stream("flaky");
    let dir = server.scratch("peers");
    let mut publisher = publish("publisher", &dir, &clip, &server.publish_url(&key));
    server.expect_log(&["publishing", "stream=flaky"], 10 * SECS);
    std::thread::sleep(SECS);
    publisher.kill9();
    let tries = hooks.wait("/done", 3, 15 * SECS, &server);
    // Delivered on the third attempt: no fourth.
    std::thread::sleep(2 * SECS);
    let tries_now = hooks.requests("/done");
    assert_eq!(tries_now.len(), 3, "{tries_now:?}");
    let attempts: Vec<Option<&str>> = tries
        .iter()
        .map(|r| r.header("x-zerocast-attempt"))
        .collect();
    assert_eq!(attempts, [Some("1"), Some("2"), Some("3")]);
    assert!(
        tries.iter().all(|r| r.body == tries[0].body),
        "every attempt sends the same body"
    );
    let gap1 = tries[1].at - tries[0].at;
    let gap2 = tries[2].at - tries[1].at;
    assert!(
        gap1 >= Duration::from_millis(450) && gap1 < 3 * SECS,
        "first retry after {gap1:?} (want ≈ 500 ms)"
    );
    assert!(
        gap2 >= Duration::from_millis(950) && gap2 < 4 * SECS,
        "second retry after {gap2:?} (want ≈ 1 s)"
    );
    assert!(
        server
            .wait_log(&["webhook notification given up"], SECS)
            .is_none(),
        "delivered, not given up"
    );
    server.stop_ok();
}

#[test]
fn on_recording_done_reports_the_closed_file() {
    let _serial = serial();
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    let hooks = HookServer::start(|_, _| (200, Duration::ZERO));
    let mut server = Server::start(ServerOpts {
        hooks: vec![format!("on_recording_done = {:?}", hooks.url("/rec"))],
        recording: vec!["record = true".into()],
        ..ServerOpts::default()
    });
    let key = server.create_stream("taped");
    let dir = server.scratch("peers");
    let mut publisher = publish("publisher", &dir, &clip, &server.publish_url(&key));
    server.expect_log(&["recording stream=\"taped\""], 10 * SECS);
    std::thread::sleep(3 * SECS);
    publisher.kill9();
    let done = hooks.wait("/rec", 1, 10 * SECS, &server);
    let body = done[0].json();
    assert_eq!(body["event"], "recording.done", "{body}");
    assert_eq!(body["hook"], "on_recording_done", "{body}");
    assert_eq!(body["stream"], "taped", "{body}");
    assert_eq!(body["status"], "complete", "{body}");
    let path = std::path::PathBuf::from(body["path"].as_str().unwrap_or_default());
    assert!(path.is_file(), "{body}");
    assert_eq!(body["bytes"].as_u64(), Some(fs_len(&path)), "{body}");
    assert!(body["duration_ms"].as_u64().unwrap_or(0) >= 2000, "{body}");
    server.stop_ok();
}
