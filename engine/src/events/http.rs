//! `GET /api/v1/events`: live events as Server-Sent Events or over a WebSocket.
//!
//! The request subscribes to the shard's [`EventBus`](super::EventBus) (which sees the events
//! of every shard), then either
//!
//! * **SSE** (any request without `Upgrade: websocket`): `200 text/event-stream`, one
//!   `event: <type>` / `data: <json>` block per event, a `: keep-alive` comment after
//!   [`STREAM_HEARTBEAT`] of silence, and `event: dropped` / `data: {"count":N}` when the
//!   client read too slowly and its queue lost its oldest events; the body ends when the shard
//!   shuts down;
//! * **WebSocket** (RFC 6455 handshake, version 13): `101`, then one text frame of JSON per
//!   event (`{"type":"dropped","count":N}` for losses), pings every 15 s, the closing
//!   handshake on a client Close or at shutdown (1001), and 1002/1009 when the client breaks
//!   the protocol (see [`super::ws`]).
//!
//! Query parameters: `stream=NAME` (repeatable: only these streams), `types=a,b` (only these
//! event types; an unknown one is a 400), and `token=` for clients that cannot send an
//! `Authorization` header (browsers' `EventSource` and `WebSocket`); it is compared in
//! constant time like the header.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt, Stream};
use http::{header, HeaderMap, Method, StatusCode, Version};
use subtle::ConstantTimeEq;
use tracing::debug;

use super::ws::{self, Input, Output, ServerConn, WsEvent};
use super::{Event, Subscription};
use crate::api::token;
use crate::config::Config;
use crate::http::{
    error, method_not_allowed, Body, ConnInfo, Request, Response, UpgradeSlot, Upgraded,
    STREAM_HEARTBEAT,
};
use crate::rt;
use crate::shard::Shard;

/// Every event type, as `types=` accepts them.
pub const EVENT_TYPES: [&str; 6] = [
    "stream.live",
    "stream.ended",
    "viewer.joined",
    "viewer.left",
    "recording.done",
    "stream.stats",
];

/// Largest read from a WebSocket client at once.
const WS_READ_CHUNK: usize = 16 * 1024;

/// Answers `/api/v1/events`.
pub async fn serve(
    shard: &Rc<Shard>,
    conn: &ConnInfo,
    upgrade: &UpgradeSlot,
    req: Request,
) -> Response {
    if req.method() != Method::GET {
        return method_not_allowed("GET");
    }
    let params = crate::http::query::pairs(req.uri().query().unwrap_or(""));
    if let Some(denied) = token::check(&shard.cfg, req.headers()) {
        let given = params
            .as_ref()
            .ok()
            .and_then(|ps| ps.iter().find(|(k, _)| k == "token"))
            .map(|(_, v)| v.as_str());
        if !given.is_some_and(|t| query_token_ok(&shard.cfg, t)) {
            return denied;
        }
    }
    let filter = match params.and_then(Filter::from_params) {
        Ok(f) => f,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", message),
    };
    if wants_websocket(req.headers()) {
        return websocket(shard, conn, upgrade, &req, filter);
    }
    sse(shard, conn, filter)
}

/// Whether `given` (from `?token=`) is the API token; constant time wherever they differ.
fn query_token_ok(cfg: &Config, given: &str) -> bool {
    let expected = cfg.auth.api_token.as_deref().unwrap_or_default();
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// Which events a client asked for.
#[derive(Debug, Default)]
struct Filter {
    /// Empty: every stream.
    streams: Vec<String>,
    /// `None`: every type.
    types: Option<Vec<&'static str>>,
}

impl Filter {
    fn from_params(params: Vec<(String, String)>) -> Result<Filter, String> {
        let mut f = Filter::default();
        for (k, v) in params {
            match k.as_str() {
                "token" => {}
                "stream" if v.is_empty() => return Err("stream= needs a stream name".into()),
                "stream" => f.streams.push(v),
                "types" => {
                    let types = f.types.get_or_insert_with(Vec::new);
                    for t in v.split(',').map(str::trim) {
                        match EVENT_TYPES.iter().find(|k| **k == t) {
                            Some(k) => types.push(k),
                            None => {
                                return Err(format!(
                                    "unknown event type {t:?} in types= (known: {})",
                                    EVENT_TYPES.join(", ")
                                ))
                            }
                        }
                    }
                }
                other => {
                    return Err(format!(
                        "unknown query parameter {other:?} (known: stream, types, token)"
                    ))
                }
            }
        }
        Ok(f)
    }

    fn admits(&self, e: &Event) -> bool {
        (self.streams.is_empty() || self.streams.iter().any(|s| s == e.stream()))
            && self.types.as_ref().is_none_or(|t| t.contains(&e.kind()))
    }
}

/// `event:`/`data:` blocks for `events` (and a `dropped` block first when some were lost).
fn render_sse(events: &[Arc<Event>], dropped: u64, filter: &Filter) -> String {
    let mut out = String::new();
    if dropped > 0 {
        let _ = write!(out, "event: dropped\ndata: {{\"count\":{dropped}}}\n\n");
    }
    for e in events.iter().filter(|e| filter.admits(e)) {
        // Compact JSON has no raw newline, so one `data:` line carries it.
        if let Ok(json) = serde_json::to_string(&**e) {
            let _ = write!(out, "event: {}\ndata: {json}\n\n", e.kind());
        }
    }
    out
}

fn sse(shard: &Rc<Shard>, conn: &ConnInfo, filter: Filter) -> Response {
    debug!(conn = conn.id, peer = %conn.peer, "events client (SSE) subscribed");
    let state = SseState {
        shard: shard.clone(),
        sub: shard.events.subscribe(),
        filter,
        // Sent at once, so the client knows it is subscribed; `retry` is EventSource's
        // reconnection delay.
        first: Some(Bytes::from(format!(
            ": zerocast live events (shard {})\nretry: 2000\n\n",
            shard.id
        ))),
    };
    http::Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        // nginx and friends: pass the stream through without buffering.
        .header("x-accel-buffering", "no")
        .body(Body::stream(sse_stream(state)))
        .unwrap_or_default()
}

struct SseState {
    shard: Rc<Shard>,
    sub: Rc<Subscription>,
    filter: Filter,
    first: Option<Bytes>,
}

/// The body of an SSE response: ends when the shard shuts down (or when hyper drops it
/// because the client left).
fn sse_stream(state: SseState) -> impl Stream<Item = Bytes> {
    futures_lite::stream::unfold(state, |mut st| async move {
        if let Some(first) = st.first.take() {
            return Some((first, st));
        }
        let heartbeat = rt::now() + STREAM_HEARTBEAT;
        loop {
            if st.shard.shutdown.is_set() {
                return None;
            }
            let wake = future::or(
                async {
                    st.sub.ready().await;
                    SseWake::Events
                },
                future::or(
                    async {
                        rt::sleep_until(heartbeat).await;
                        SseWake::Heartbeat
                    },
                    async {
                        st.shard.shutdown.wait().await;
                        SseWake::Shutdown
                    },
                ),
            )
            .await;
            match wake {
                SseWake::Events => {
                    let (events, dropped) = st.sub.take();
                    let text = render_sse(&events, dropped, &st.filter);
                    if !text.is_empty() {
                        return Some((Bytes::from(text), st));
                    }
                }
                SseWake::Heartbeat => return Some((Bytes::from_static(b": keep-alive\n\n"), st)),
                SseWake::Shutdown => return None,
            }
        }
    })
}

enum SseWake {
    Events,
    Heartbeat,
    Shutdown,
}

enum Wake {
    Events,
    Timer,
    Shutdown,
    Read(std::io::Result<usize>),
}

/// Whether the request asks for a WebSocket (`Upgrade: websocket`).
fn wants_websocket(h: &HeaderMap) -> bool {
    has_token(h, header::UPGRADE, "websocket")
}

/// Whether the comma-separated header `name` lists `token` (case-insensitive).
fn has_token(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The opening handshake (RFC 6455 §4.2): 101 and the session task, or why not.
fn websocket(
    shard: &Rc<Shard>,
    conn: &ConnInfo,
    upgrade: &UpgradeSlot,
    req: &Request,
    filter: Filter,
) -> Response {
    let h = req.headers();
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "bad_websocket_handshake", m);
    if req.version() != Version::HTTP_11 {
        return bad("a WebSocket handshake needs HTTP/1.1");
    }
    if !has_token(h, header::CONNECTION, "upgrade") {
        return bad("a WebSocket handshake needs Connection: Upgrade");
    }
    let version = h
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok());
    if version.map(str::trim) != Some("13") {
        let mut r = error(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported_websocket_version",
            "only WebSocket version 13 is supported",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            http::HeaderValue::from_static("13"),
        );
        return r;
    }
    let Some(key) = h
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| ws::valid_key(k))
    else {
        return bad("Sec-WebSocket-Key must be the base64 of 16 bytes");
    };
    let accept = ws::accept_key(key);
    // Subscribed now, so nothing raised between this answer and the session's start is lost.
    let sub = shard.events.subscribe();
    let (shard2, peer, id) = (shard.clone(), conn.peer, conn.id);
    upgrade.set(move |up| run_websocket(shard2, sub, filter, up, peer, id));
    debug!(conn = conn.id, peer = %conn.peer, "events client (WebSocket) subscribed");
    http::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_default()
}

/// Drives one WebSocket session on the connection's raw stream until it closes, the client
/// leaves or stalls, or the shard shuts down.
async fn run_websocket(
    shard: Rc<Shard>,
    sub: Rc<Subscription>,
    filter: Filter,
    up: Upgraded,
    peer: SocketAddr,
    id: u64,
) {
    let Upgraded { mut io, read_buf } = up;
    let write_limit = shard.cfg.limits.viewer_stall.max(Duration::from_secs(1));
    let mut ws = ServerConn::new(rt::now());
    ws.handle_input(Input::Receive(rt::now(), &read_buf));
    let mut buf = vec![0u8; WS_READ_CHUNK];
    loop {
        // Drain the session's output.
        let mut out = BytesMut::new();
        let deadline = loop {
            match ws.poll_output() {
                Output::Transmit(b) => out.extend_from_slice(&b),
                Output::Event(e) => log_ws_event(id, peer, &e),
                Output::Timeout(t) => break Some(t),
                Output::Closed => break None,
            }
        };
        if !out.is_empty() {
            let written = rt::timeout(write_limit, async {
                io.write_all(&out).await?;
                io.flush().await
            })
            .await;
            match written {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    debug!(conn = id, %peer, "events WebSocket write failed: {e}");
                    return;
                }
                None => {
                    debug!(conn = id, %peer, "events WebSocket client stopped reading");
                    return;
                }
            }
        }
        let Some(deadline) = deadline else {
            let _ = rt::timeout(Duration::from_secs(1), io.close()).await;
            return;
        };
        let open = ws.is_open();
        let wake = future::or(
            async { Wake::Read(io.read(&mut buf).await) },
            future::or(
                async {
                    rt::sleep_until(deadline).await;
                    Wake::Timer
                },
                async {
                    if !open {
                        // Closing: only the client's Close or the timer matter now.
                        future::pending::<()>().await;
                    }
                    future::or(
                        async {
                            sub.ready().await;
                            Wake::Events
                        },
                        async {
                            shard.shutdown.wait().await;
                            Wake::Shutdown
                        },
                    )
                    .await
                },
            ),
        )
        .await;
        let now = rt::now();
        match wake {
            Wake::Read(Ok(0)) => {
                debug!(conn = id, %peer, "events WebSocket client closed the connection");
                return;
            }
            Wake::Read(Ok(n)) => ws.handle_input(Input::Receive(now, &buf[..n])),
            Wake::Read(Err(e)) => {
                debug!(conn = id, %peer, "events WebSocket read failed: {e}");
                return;
            }
            Wake::Timer | Wake::Events | Wake::Shutdown => {}
        }
        // `or` prefers the read: whatever woke us, look at everything, so a client that keeps
        // sending cannot hold back its timers or its events.
        if now >= deadline {
            ws.handle_input(Input::Timeout(now));
        }
        if ws.is_open() {
            let (events, dropped) = sub.take();
            if dropped > 0 {
                let lost = serde_json::json!({ "type": "dropped", "count": dropped });
                ws.send_text(lost.to_string().as_bytes());
            }
            for e in events.iter().filter(|e| filter.admits(e)) {
                if let Ok(json) = serde_json::to_vec(&**e) {
                    ws.send_text(&json);
                }
            }
        }
        if shard.shutdown.is_set() {
            ws.close(now, 1001, "server shutting down");
        }
        rt::yield_if_needed().await;
    }
}

fn log_ws_event(id: u64, peer: SocketAddr, e: &WsEvent) {
    match e {
        WsEvent::ProtocolError { offset, what } => {
            debug!(conn = id, %peer, offset, "events WebSocket closed: {what}")
        }
        other => debug!(conn = id, %peer, "events WebSocket: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, stream: &str) -> Arc<Event> {
        let stream: Arc<str> = Arc::from(stream);
        let remote: SocketAddr = ([127, 0, 0, 1], 9).into();
        Arc::new(match kind {
            "stream.live" => Event::StreamLive {
                stream,
                protocol: "rtmp",
                remote,
                generation: 1,
                at_ms: 5,
            },
            _ => Event::ViewerJoined {
                stream,
                protocol: "rtmp",
                remote,
                at_ms: 6,
            },
        })
    }

    fn filter(q: &str) -> Result<Filter, String> {
        crate::http::query::pairs(q).and_then(Filter::from_params)
    }

    #[test]
    fn query_filters_are_parsed_and_validated() {
        let f = filter("stream=a%20b&stream=c&types=stream.live,+viewer.joined&token=x").unwrap();
        assert_eq!(f.streams, vec!["a b".to_string(), "c".to_string()]);
        assert_eq!(f.types, Some(vec!["stream.live", "viewer.joined"]));
        assert!(filter("").unwrap().admits(&ev("stream.live", "z")));
        assert!(filter("types=stream.live,bogus")
            .unwrap_err()
            .contains("bogus"));
        assert!(filter("typo=1").unwrap_err().contains("typo"));
        assert!(filter("stream=%zz").is_err());
        assert!(filter("stream=").is_err());
        let f = filter("stream=a&types=viewer.joined").unwrap();
        assert!(f.admits(&ev("viewer.joined", "a")));
        assert!(!f.admits(&ev("viewer.joined", "b")));
        assert!(!f.admits(&ev("stream.live", "a")));
        // Every type the enum has is known here.
        for e in [ev("stream.live", "a"), ev("viewer.joined", "a")] {
            assert!(EVENT_TYPES.contains(&e.kind()));
        }
    }

    #[test]
    fn sse_blocks_carry_the_type_and_one_line_of_json() {
        let f = filter("types=stream.live").unwrap();
        let text = render_sse(&[ev("stream.live", "s"), ev("viewer.joined", "s")], 2, &f);
        let mut blocks = text.split("\n\n");
        assert_eq!(blocks.next(), Some("event: dropped\ndata: {\"count\":2}"));
        let live = blocks.next().unwrap();
        let (event, data) = live.split_once('\n').unwrap();
        assert_eq!(event, "event: stream.live");
        let json: serde_json::Value =
            serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(json["type"], "stream.live");
        assert_eq!(json["stream"], "s");
        assert_eq!(blocks.next(), Some(""));
        assert_eq!(blocks.next(), None);
    }

    #[test]
    fn query_token_is_compared_exactly() {
        let mut cfg = Config::default();
        assert!(!query_token_ok(&cfg, ""));
        cfg.auth.api_token = Some("0123456789abcdef-token".into());
        assert!(query_token_ok(&cfg, "0123456789abcdef-token"));
        assert!(!query_token_ok(&cfg, "0123456789abcdef-toke"));
        assert!(!query_token_ok(&cfg, "0123456789abcdef-tokeN"));
    }

    #[test]
    fn upgrade_tokens_are_matched_in_lists() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "WebSocket".parse().unwrap());
        assert!(has_token(&h, header::CONNECTION, "upgrade"));
        assert!(wants_websocket(&h));
        h.insert(header::UPGRADE, "h2c".parse().unwrap());
        assert!(!wants_websocket(&h));
    }
}
