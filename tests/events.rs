//! Live events (`GET /api/v1/events`) end to end.
//!
//! On a two-shard server, Server-Sent Events clients (raw `std` sockets that undo the chunked
//! encoding by hand, at least one on each shard) and a WebSocket client (Python `websockets`, a
//! third-party client, from the test virtualenv that `./scripts/test` creates at
//! `$ZEROCAST_VENV`, default `~/.cache/zerocast/venv`) watch ffmpeg publish and an ffmpeg RTMP
//! player come and go: every client sees `stream.live`, `viewer.joined`, `stream.stats` ticks
//! about a second apart with growing frame counts, `viewer.left` and `stream.ended`, in that
//! order, whichever shard raised them. Also: the API token (header or `?token=`), filters,
//! the WebSocket handshake and protocol errors (1002, 1009), the idle watchdog leaving an SSE
//! stream alone, and shutdown ending both kinds of client.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::http::{request, HttpResponse};
use common::*;
use serde_json::Value;

/// The pinned client package (see `scripts/test`).
const WEBSOCKETS: &str = "websockets==15.0.1";

const STREAM: &str = "ev";

/// A WebSocket client: prints `open`, pings the server and prints `pong` when answered, then
/// prints every message; after a message of type argv[2] (at once for `-`) it closes (1000)
/// and prints the close code the server answered with. `wss://` accepts the server's
/// self-signed certificate.
const WS_CLIENT: &str = r#"
import asyncio, json, ssl, sys
from websockets.asyncio.client import connect

async def main(url, last):
    tls = None
    if url.startswith("wss:"):
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    async with connect(url, open_timeout=10, ping_interval=None, max_size=1 << 20, ssl=tls) as ws:
        print("open", flush=True)
        await asyncio.wait_for(await ws.ping(b"zerocast"), 10)
        print("pong", flush=True)
        if last != "-":
            async for message in ws:
                print(message, flush=True)
                if json.loads(message).get("type") == last:
                    break
    print("closed", ws.close_code, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// One SSE block: its `event:` (or `:` for a comment) and its `data:`.
#[derive(Clone, Debug)]
struct SseBlock {
    event: String,
    data: String,
}

/// An SSE client on a raw socket; a thread reads the stream into `blocks`.
struct SseClient {
    name: String,
    socket: TcpStream,
    blocks: Arc<Mutex<Vec<SseBlock>>>,
    /// Set when the body ended properly (the last, empty chunk).
    ended: Arc<Mutex<bool>>,
    /// The shard that serves it (from the first comment).
    shard: usize,
}

impl SseClient {
    /// Connects with `path` (query included) and `auth` header lines; panics unless the answer
    /// is a 200 event stream whose first comment names the shard.
    fn connect(name: &str, port: u16, path: &str, auth: &str) -> SseClient {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).ok();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n{auth}\r\n"
        )
        .unwrap();
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            assert_eq!(
                s.read(&mut byte).expect("read the head"),
                1,
                "{name}: closed in the head"
            );
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{name}: {head}");
        for h in [
            "content-type: text/event-stream",
            "cache-control: no-store",
            "transfer-encoding: chunked",
        ] {
            assert!(head.contains(h), "{name}: no {h:?} in {head}");
        }
        let blocks = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(Mutex::new(false));
        let (b, e, mut r) = (blocks.clone(), ended.clone(), s.try_clone().unwrap());
        std::thread::spawn(move || read_sse(&mut r, &b, &e));
        let mut c = SseClient {
            name: name.to_owned(),
            socket: s,
            blocks,
            ended,
            shard: usize::MAX,
        };
        let first = c.wait(Duration::from_secs(10), |b| !b.is_empty())[0].clone();
        assert_eq!(first.event, ":", "{name}: first block {first:?}");
        c.shard = first
            .data
            .split("(shard ")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no shard in {first:?}"));
        c
    }

    /// Waits at most `limit` until `done(blocks)`; returns the blocks.
    fn wait(&self, limit: Duration, done: impl Fn(&[SseBlock]) -> bool) -> Vec<SseBlock> {
        let deadline = Instant::now() + limit;
        loop {
            let blocks = self.blocks.lock().unwrap().clone();
            if done(&blocks) {
                return blocks;
            }
            assert!(
                Instant::now() < deadline,
                "{}: not there within {limit:?}; got {blocks:#?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The events received (comments left out), with `event:` checked against the JSON type.
    fn events(&self) -> Vec<Value> {
        self.blocks
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b.event != ":")
            .map(|b| {
                let v: Value = serde_json::from_str(&b.data)
                    .unwrap_or_else(|e| panic!("{}: data is not JSON ({e}): {b:?}", self.name));
                if b.event != "dropped" {
                    assert_eq!(v["type"], b.event.as_str(), "{}: {b:?}", self.name);
                }
                v
            })
            .collect()
    }
}

impl Drop for SseClient {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// Undoes the chunked transfer coding and splits the text into SSE blocks.
fn read_sse(s: &mut TcpStream, blocks: &Mutex<Vec<SseBlock>>, ended: &Mutex<bool>) {
    let mut raw: Vec<u8> = Vec::new();
    let mut text = String::new();
    let mut chunk = [0u8; 8192];
    loop {
        // Whole chunks out of `raw`.
        while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
            let size_line = String::from_utf8_lossy(&raw[..eol]).into_owned();
            let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
            if size == 0 {
                *ended.lock().unwrap() = true;
                return;
            }
            if raw.len() < eol + 2 + size + 2 {
                break;
            }
            assert_eq!(
                &raw[eol + 2 + size..eol + 4 + size],
                b"\r\n",
                "chunk framing"
            );
            text.push_str(std::str::from_utf8(&raw[eol + 2..eol + 2 + size]).expect("UTF-8"));
            raw.drain(..eol + 4 + size);
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut b = SseBlock {
                event: String::new(),
                data: String::new(),
            };
            for line in block.lines() {
                if let Some(c) = line.strip_prefix(':') {
                    b.event = ":".into();
                    b.data.push_str(c.trim());
                } else if let Some(e) = line.strip_prefix("event: ") {
                    b.event = e.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    b.data.push_str(d);
                }
            }
            blocks.lock().unwrap().push(b);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The Python WebSocket client, running.
struct WsClient {
    proc: Proc,
}

impl WsClient {
    /// Starts it and waits until it is connected and its ping was answered.
    fn start(dir: &std::path::Path, url: &str, last: &str) -> WsClient {
        let mut cmd = Command::new(venv_program("bin/python", WEBSOCKETS));
        cmd.args(["-c", WS_CLIENT, url, last]);
        let mut c = WsClient {
            proc: Proc::spawn("ws-client", dir, cmd),
        };
        c.wait(Duration::from_secs(15), |lines| {
            lines.contains(&"pong".into())
        });
        c
    }

    fn lines(&self) -> Vec<String> {
        self.proc.stdout().lines().map(str::to_owned).collect()
    }

    fn wait(&mut self, limit: Duration, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            let lines = self.lines();
            if done(&lines) {
                return;
            }
            let exited = self.proc.try_status();
            assert!(
                Instant::now() < deadline && exited.is_none(),
                "WebSocket client: not there within {limit:?} (exit {exited:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.proc.stdout(),
                self.proc.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The messages received, as JSON.
    fn events(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn count(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["type"] == kind).count()
}

/// The lifecycle of one publish with one viewer, as every unfiltered client must see it.
fn assert_lifecycle(who: &str, events: &[Value]) {
    let lifecycle: Vec<&str> = kinds(events)
        .into_iter()
        .filter(|k| *k != "stream.stats")
        .collect();
    assert_eq!(
        lifecycle,
        [
            "stream.live",
            "viewer.joined",
            "viewer.left",
            "stream.ended"
        ],
        "{who}: {events:#?}"
    );
    for e in events {
        assert_eq!(e["stream"], STREAM, "{who}: {e}");
    }
    let at = |kind: &str| events.iter().position(|e| e["type"] == kind).unwrap();
    let (joined, left) = (at("viewer.joined"), at("viewer.left"));
    let stats: Vec<&Value> = events[at("stream.live")..at("stream.ended")]
        .iter()
        .filter(|e| e["type"] == "stream.stats")
        .collect();
    let while_watched = events[joined..left]
        .iter()
        .filter(|e| e["type"] == "stream.stats")
        .count();
    assert!(
        while_watched >= 2,
        "{who}: {while_watched} stats ticks between viewer.joined and viewer.left: {events:#?}"
    );
    assert_eq!(
        count(events, "stream.stats"),
        stats.len(),
        "{who}: stats outside the stream's life: {events:#?}"
    );
    for pair in stats.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let gap = b["at_ms"].as_u64().unwrap() - a["at_ms"].as_u64().unwrap();
        assert!(
            (700..=3000).contains(&gap),
            "{who}: stats ticks {gap} ms apart: {a} {b}"
        );
        assert!(
            b["ingest"]["frames"].as_u64() > a["ingest"]["frames"].as_u64(),
            "{who}: frames did not grow: {a} {b}"
        );
    }
    let ended = &events[at("stream.ended")];
    assert!(
        ended["stats"]["frames"].as_u64().unwrap() > 0,
        "{who}: {ended}"
    );
    assert!(ended["reason"].is_string(), "{who}: {ended}");
    let left = &events[left];
    assert!(left["bytes"].as_u64().unwrap() > 0, "{who}: {left}");
}

/// At least `n` blocks of type `kind`.
fn has(kind: &'static str, n: usize) -> impl Fn(&[SseBlock]) -> bool {
    move |b| b.iter().filter(|b| b.event == kind).count() >= n
}

/// A message of type `kind`.
fn ws_has(kind: &'static str) -> impl Fn(&[String]) -> bool {
    let needle = format!("\"type\":\"{kind}\"");
    move |lines| {
        lines
            .iter()
            .any(|l| l.starts_with('{') && l.contains(&needle))
    }
}

fn rtmp_player(dir: &std::path::Path, url: &str) -> Proc {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "info", "-i", url])
        .args(["-c", "copy", "-f", "null", "-"]);
    Proc::spawn("player", dir, cmd)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn sse_and_websocket_clients_see_a_stream_and_a_viewer_on_either_shard() {
    let _serial = serial();
    require_ffmpeg();
    venv_program("bin/python", WEBSOCKETS);
    let clip = clip(small_clip(320, 240, 440));
    let mut server = Server::start(ServerOpts {
        shards: 2,
        ..ServerOpts::default()
    });
    let key = server.create_stream(STREAM);
    let dir = server.scratch("peers");
    let port = server.http_port;
    let bearer = format!("Authorization: Bearer {API_TOKEN}\r\n");

    // SSE clients until both shards have one: events must cross the mesh to reach one of them.
    let mut by_shard: [Option<SseClient>; 2] = [None, None];
    for attempt in 0..64 {
        let c = SseClient::connect(&format!("sse-{attempt}"), port, "/api/v1/events", &bearer);
        let slot = &mut by_shard[c.shard];
        if slot.is_none() {
            *slot = Some(c);
        }
        if by_shard.iter().all(Option::is_some) {
            break;
        }
    }
    let [Some(sse0), Some(sse1)] = by_shard else {
        panic!("64 connections never reached both shards");
    };
    // The browser way: the token in the query.
    let sse_query = SseClient::connect(
        "sse-query-token",
        port,
        &format!("/api/v1/events?token={API_TOKEN}"),
        "",
    );
    let sse_filtered = SseClient::connect(
        "sse-filtered",
        port,
        &format!("/api/v1/events?stream={STREAM}&types=stream.live,stream.ended"),
        &bearer,
    );
    let sse_other = SseClient::connect(
        "sse-other-stream",
        port,
        "/api/v1/events?stream=other",
        &bearer,
    );
    let mut ws = WsClient::start(
        &dir,
        &format!("ws://127.0.0.1:{port}/api/v1/events?token={API_TOKEN}"),
        "stream.ended",
    );
    let sse = [&sse0, &sse1, &sse_query];
    let limit = Duration::from_secs(20);

    let mut publisher = publish("publisher", &dir, &clip, &server.publish_url(&key));
    for c in sse {
        c.wait(limit, has("stream.live", 1));
    }
    ws.wait(limit, ws_has("stream.live"));

    let mut player = rtmp_player(&dir, &server.play_url(STREAM));
    for c in sse {
        c.wait(limit, has("viewer.joined", 1));
    }
    ws.wait(limit, ws_has("viewer.joined"));
    // Three ticks while the player watches (two are required; one more for slack).
    let ticks = |b: &[SseBlock]| {
        let joined = b.iter().position(|b| b.event == "viewer.joined");
        joined.is_some_and(|j| b[j..].iter().filter(|b| b.event == "stream.stats").count() >= 3)
    };
    for c in sse {
        c.wait(limit, ticks);
    }
    player.kill9();
    for c in sse {
        c.wait(limit, has("viewer.left", 1));
    }
    publisher.kill9();
    for c in sse {
        c.wait(limit, has("stream.ended", 1));
    }
    sse_filtered.wait(limit, has("stream.ended", 1));
    ws.wait(limit, |lines| lines.iter().any(|l| l.starts_with("closed")));
    let st = ws.proc.wait_for(Duration::from_secs(10));
    assert!(
        st.is_some_and(|s| s.success()),
        "WebSocket client exit {st:?}\n--- stderr ---\n{}",
        ws.proc.stderr()
    );
    // It closed with 1000 after stream.ended, and the server echoed 1000.
    assert_eq!(ws.lines().last().map(String::as_str), Some("closed 1000"));

    for c in sse {
        assert_lifecycle(&c.name, &c.events());
    }
    assert_lifecycle("websocket", &ws.events());
    assert_eq!(
        kinds(&sse_filtered.events()),
        ["stream.live", "stream.ended"],
        "filtered client"
    );
    // A second later, still nothing for a stream nobody published.
    std::thread::sleep(Duration::from_secs(1));
    assert!(sse_other.events().is_empty(), "{:#?}", sse_other.events());
    // A clean exit with SSE clients still connected to both shards.
    server.stop_ok();
    for c in [&sse0, &sse1] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !*c.ended.lock().unwrap() {
            assert!(
                Instant::now() < deadline,
                "{}: body did not end at shutdown",
                c.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Sends a WebSocket handshake with `extra` header lines; returns the socket after the head
/// and the head.
fn ws_handshake(port: u16, path: &str, extra: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

/// Reads one server frame: (first byte, payload).
fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).expect("frame header");
    assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
    let len = match h[1] & 0x7F {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).unwrap();
            u16::from_be_bytes(l) as usize
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).unwrap();
            u64::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    (h[0], payload)
}

/// Reads frames until a Close; returns its code. Panics if the connection ends first.
fn read_close(s: &mut TcpStream) -> u16 {
    loop {
        let (b0, payload) = read_frame(s);
        if b0 == 0x88 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

fn assert_eof(s: &mut TcpStream, what: &str) {
    let mut rest = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let r = s.read_to_end(&mut rest);
    let closed = match &r {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(
        closed,
        "{what}: the server did not close the connection: {r:?}"
    );
}

#[test]
fn events_need_the_token_and_the_websocket_protocol_is_enforced() {
    let _serial = serial();
    venv_program("bin/python", WEBSOCKETS);
    let https_port = free_port();
    let mut server = Server::start(ServerOpts {
        http: vec![
            "idle_timeout = \"2s\"".into(),
            format!("tls_listen = \"127.0.0.1:{https_port}\""),
        ],
        ..ServerOpts::default()
    });
    let port = server.http_port;
    let bearer = format!("Authorization: Bearer {API_TOKEN}\r\n");
    let get = |path: &str, extra: &str| -> HttpResponse {
        request(
            port,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n"),
        )
        .unwrap()
    };

    // The token: missing, wrong in the header, wrong in the query.
    for (path, extra) in [
        ("/api/v1/events", ""),
        (
            "/api/v1/events",
            "Authorization: Bearer nope-nope-nope-nope\r\n",
        ),
        ("/api/v1/events?token=nope-nope-nope-nope", ""),
        ("/api/v1/events?token=", ""),
    ] {
        let r = get(path, extra);
        assert_eq!(r.status, 401, "{path} {extra}: {}", r.text());
        assert!(r.header("www-authenticate").is_some());
    }
    let (s, head) = ws_handshake(port, "/api/v1/events", "Sec-WebSocket-Version: 13\r\n");
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    drop(s);

    // Bad filters and methods.
    let r = get("/api/v1/events?types=stream.live,stream.exploded", &bearer);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("stream.exploded"), "{}", r.text());
    let r = get("/api/v1/events?tpyes=stream.live", &bearer);
    assert_eq!(r.status, 400, "{}", r.text());
    let r = request(
        port,
        &format!("POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n{bearer}\r\n"),
    )
    .unwrap();
    assert_eq!(r.status, 405);

    // Handshake errors: version, key.
    let (_s, head) = ws_handshake(
        port,
        "/api/v1/events",
        &format!("Sec-WebSocket-Version: 8\r\n{bearer}"),
    );
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    assert!(
        head.to_lowercase().contains("sec-websocket-version: 13"),
        "{head}"
    );

    // A good handshake (RFC 6455's sample key), then an unmasked client frame: 1002.
    let path = format!("/api/v1/events?token={API_TOKEN}");
    let (mut s, head) = ws_handshake(port, &path, "Sec-WebSocket-Version: 13\r\n");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "wrong Sec-WebSocket-Accept: {head}"
    );
    s.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    assert_eq!(read_close(&mut s), 1002);
    assert_eof(&mut s, "unmasked frame");

    // A frame announcing 1 MiB: 1009, before its payload is sent.
    let (mut s, head) = ws_handshake(port, &path, "Sec-WebSocket-Version: 13\r\n");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(&[0x82, 0xFF, 0, 0, 0, 0, 0, 0x10, 0, 0, 1, 2, 3, 4])
        .unwrap();
    assert_eq!(read_close(&mut s), 1009);
    assert_eof(&mut s, "oversized frame");

    // A ping is answered with a pong carrying its payload.
    let (mut ws, head) = ws_handshake(port, &path, "Sec-WebSocket-Version: 13\r\n");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mask = [9u8, 8, 7, 6];
    let mut ping = vec![0x89, 0x84];
    ping.extend_from_slice(&mask);
    ping.extend(b"zc42".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    ws.write_all(&ping).unwrap();
    assert_eq!(read_frame(&mut ws), (0x8A, b"zc42".to_vec()));

    // Over TLS (the self-signed pair): handshake, ping, closing handshake.
    let dir = server.scratch("peers");
    let mut wss = WsClient::start(
        &dir,
        &format!("wss://127.0.0.1:{https_port}/api/v1/events?token={API_TOKEN}"),
        "-",
    );
    let st = wss.proc.wait_for(Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "{}", wss.proc.stderr());
    assert_eq!(wss.lines(), ["open", "pong", "closed 1000"]);

    // An SSE stream outlives http.idle_timeout (2 s) while a plain keep-alive connection does
    // not.
    let sse = SseClient::connect("sse", port, "/api/v1/events", &bearer);
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let first = common::http::read_response(&mut idle, Instant::now()).unwrap();
    assert_eq!(first.status, 200);
    std::thread::sleep(Duration::from_secs(4));
    assert_eof(&mut idle, "idle keep-alive connection");
    assert!(!*sse.ended.lock().unwrap(), "the SSE stream ended early");

    // Shutdown ends both: the SSE body properly, the WebSocket with 1001.
    server.stop_ok();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !*sse.ended.lock().unwrap() {
        assert!(
            Instant::now() < deadline,
            "the SSE body did not end at shutdown"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(read_close(&mut ws), 1001);
}
