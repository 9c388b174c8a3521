//! The counters one shard keeps: plain `Cell`s, touched only by that shard's tasks, so an
//! increment is one load and one store (no atomics, no locks). A scrape reads them through
//! [`Query::Metrics`](crate::control::Query::Metrics) on every shard and sums them.
//!
//! Every label takes a value from a small closed set (an enum here), so the number of series
//! is fixed and a peer cannot create new ones.

use std::cell::Cell;
use std::rc::Rc;

use zerocast_codecs::MediaKind;

/// The protocol of a connection (its listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RTMP over TCP.
    Rtmp,
    /// RTMP over TLS.
    Rtmps,
    /// HTTP/1.1.
    Http,
    /// HTTP/1.1 over TLS.
    Https,
    /// SRT (UDP): publishers and players.
    Srt,
}

/// Number of [`Protocol`]s: the length of the rows indexed by protocol.
pub const PROTOCOLS: usize = Protocol::ALL.len();

impl Protocol {
    /// Every protocol, in label order.
    pub const ALL: [Protocol; 5] = [
        Protocol::Rtmp,
        Protocol::Rtmps,
        Protocol::Http,
        Protocol::Https,
        Protocol::Srt,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::Rtmps => "rtmps",
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Srt => "srt",
        }
    }

    /// The protocol a label names (`PublishInfo::protocol`, `Event` protocols).
    pub fn from_label(label: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.label() == label)
    }

    /// RTMP or RTMPS, as TLS says.
    pub fn rtmp(tls: bool) -> Protocol {
        if tls {
            Protocol::Rtmps
        } else {
            Protocol::Rtmp
        }
    }

    /// HTTP or HTTPS, as TLS says.
    pub fn http(tls: bool) -> Protocol {
        if tls {
            Protocol::Https
        } else {
            Protocol::Http
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `limits.max_connections` reached.
    MaxConnections,
    /// `limits.max_connections_per_ip` reached.
    MaxConnectionsPerIp,
}

impl Refused {
    /// Every reason, in label order.
    pub const ALL: [Refused; 2] = [Refused::MaxConnections, Refused::MaxConnectionsPerIp];

    /// The label value (the config key that refused).
    pub fn label(self) -> &'static str {
        match self {
            Refused::MaxConnections => "max_connections",
            Refused::MaxConnectionsPerIp => "max_connections_per_ip",
        }
    }
}

/// What went wrong on a connection that ended with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The peer broke its protocol's rules (bad chunk, bad AMF0, malformed HTTP).
    Protocol,
    /// Media that cannot be parsed or is not supported (a publisher's bad FLV tag).
    BadMedia,
    /// A peer went quiet (`limits.idle_timeout`).
    Timeout,
    /// The socket failed (read or write error, TLS record error after the handshake).
    Io,
    /// A player took nothing for `limits.viewer_stall` and was dropped.
    ViewerStall,
}

impl ErrorKind {
    /// Every kind, in label order.
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::Protocol,
        ErrorKind::BadMedia,
        ErrorKind::Timeout,
        ErrorKind::Io,
        ErrorKind::ViewerStall,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Protocol => "protocol",
            ErrorKind::BadMedia => "bad_media",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Io => "io",
            ErrorKind::ViewerStall => "viewer_stall",
        }
    }
}

/// Why a request to publish, play or use the API was refused for its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// A publish with a key that matches no stream.
    StreamKey,
    /// The `on_publish` hook refused (or could not be asked and `hooks` says refuse).
    Hook,
    /// A publish refused unchecked: too many failed attempts from that address.
    RateLimited,
    /// An HTTP request without the right bearer token (401).
    ApiToken,
}

impl AuthFailure {
    /// Every reason, in label order.
    pub const ALL: [AuthFailure; 4] = [
        AuthFailure::StreamKey,
        AuthFailure::Hook,
        AuthFailure::RateLimited,
        AuthFailure::ApiToken,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::StreamKey => "stream_key",
            AuthFailure::Hook => "hook",
            AuthFailure::RateLimited => "rate_limited",
            AuthFailure::ApiToken => "api_token",
        }
    }
}

/// Where media bytes leave the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// RTMP players (bytes handed to their sockets).
    Rtmp,
    /// RTMPS players (plaintext bytes handed to TLS).
    Rtmps,
    /// LL-HLS responses (playlists, init segments, parts, segments).
    Hls,
    /// SRT players (MPEG-TS bytes handed to SRT, before SRT's own headers).
    Srt,
}

/// Number of [`Egress`] outputs: the length of the row indexed by output.
pub const EGRESSES: usize = Egress::ALL.len();

impl Egress {
    /// Every output, in label order.
    pub const ALL: [Egress; 4] = [Egress::Rtmp, Egress::Rtmps, Egress::Hls, Egress::Srt];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Egress::Rtmp => "rtmp",
            Egress::Rtmps => "rtmps",
            Egress::Hls => "hls",
            Egress::Srt => "srt",
        }
    }

    /// RTMP or RTMPS, as TLS says.
    pub fn rtmp(tls: bool) -> Egress {
        if tls {
            Egress::Rtmps
        } else {
            Egress::Rtmp
        }
    }
}

/// The area of the HTTP surface a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/api/v1/...` but events.
    Api,
    /// `/api/v1/events`.
    Events,
    /// `/metrics`.
    Metrics,
    /// `/healthz`.
    Healthz,
    /// `/hls/...`.
    Hls,
    /// Anything else.
    Other,
}

impl Route {
    /// Every route, in label order.
    pub const ALL: [Route; 6] = [
        Route::Api,
        Route::Events,
        Route::Metrics,
        Route::Healthz,
        Route::Hls,
        Route::Other,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Route::Api => "api",
            Route::Events => "events",
            Route::Metrics => "metrics",
            Route::Healthz => "healthz",
            Route::Hls => "hls",
            Route::Other => "other",
        }
    }

    /// The route of a request path's segments (after the leading `/`).
    pub fn of(segments: &[&str]) -> Route {
        match segments {
            ["api", "v1", "events"] => Route::Events,
            ["api", ..] => Route::Api,
            ["metrics"] => Route::Metrics,
            ["healthz"] => Route::Healthz,
            ["hls", ..] => Route::Hls,
            _ => Route::Other,
        }
    }
}

/// HTTP status classes, `1xx` to `5xx`.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Media kinds counted at ingest, in label order.
pub const FRAME_KINDS: [&str; 2] = ["video", "audio"];

/// Protocols that ingest (publishers), in label order.
pub const INGEST_PROTOCOLS: [Protocol; 3] = [Protocol::Rtmp, Protocol::Rtmps, Protocol::Srt];

/// Protocols whose players are counted by connection (LL-HLS clients are counted from the
/// HLS windows instead).
pub const PLAYER_PROTOCOLS: [Protocol; 3] = [Protocol::Rtmp, Protocol::Rtmps, Protocol::Srt];

type Row<const N: usize> = [Cell<u64>; N];

/// One shard's counters. Shared (`Rc`) by the shard and its connections' outboxes.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    connections_open: Row<PROTOCOLS>,
    connections_accepted: Row<PROTOCOLS>,
    connections_refused: Row<2>,
    players: Row<PROTOCOLS>,
    ingest_bytes: Row<PROTOCOLS>,
    ingest_frames: [Row<2>; PROTOCOLS],
    egress_bytes: Row<EGRESSES>,
    dropped_frames: Cell<u64>,
    errors: [Row<5>; PROTOCOLS],
    handshake_failures: Row<PROTOCOLS>,
    auth_failures: Row<4>,
    http_requests: [Row<5>; 6],
}

fn add(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

fn sub(c: &Cell<u64>, n: u64) {
    c.set(c.get().saturating_sub(n));
}

fn read<const N: usize>(row: &Row<N>) -> [u64; N] {
    std::array::from_fn(|i| row[i].get())
}

impl ShardMetrics {
    /// Fresh counters.
    pub fn new() -> Rc<Self> {
        Rc::new(ShardMetrics::default())
    }

    /// A connection was accepted; it counts as open until the guard drops.
    pub fn connection_opened(self: &Rc<Self>, protocol: Protocol) -> OpenConnection {
        add(&self.connections_accepted[protocol.index()], 1);
        add(&self.connections_open[protocol.index()], 1);
        OpenConnection {
            metrics: self.clone(),
            protocol,
        }
    }

    /// A connection was refused at accept.
    pub fn connection_refused(&self, why: Refused) {
        add(&self.connections_refused[why as usize], 1);
    }

    /// A player started; it counts as a viewer until the guard drops.
    pub fn player_joined(self: &Rc<Self>, protocol: Protocol) -> PlayerGauge {
        add(&self.players[protocol.index()], 1);
        PlayerGauge {
            metrics: self.clone(),
            protocol,
        }
    }

    /// A publisher's frame of `kind` with `bytes` of payload entered the engine.
    pub fn ingested(&self, protocol: Protocol, kind: MediaKind, bytes: u64) {
        let p = protocol.index();
        add(&self.ingest_bytes[p], bytes);
        match kind {
            MediaKind::Video => add(&self.ingest_frames[p][0], 1),
            MediaKind::Audio => add(&self.ingest_frames[p][1], 1),
            MediaKind::Data => {}
        }
    }

    /// `bytes` left for viewers through `output`.
    pub fn sent(&self, output: Egress, bytes: u64) {
        add(&self.egress_bytes[output as usize], bytes);
    }

    /// `n` frames were skipped for a slow viewer.
    pub fn frames_dropped(&self, n: u64) {
        add(&self.dropped_frames, n);
    }

    /// A connection ended with an error.
    pub fn error(&self, protocol: Protocol, kind: ErrorKind) {
        add(&self.errors[protocol.index()][kind as usize], 1);
    }

    /// A handshake failed or timed out (RTMP C0–C2 and `connect`, TLS, an HTTP request head,
    /// an SRT handshake).
    pub fn handshake_failed(&self, protocol: Protocol) {
        add(&self.handshake_failures[protocol.index()], 1);
    }

    /// Credentials were refused.
    pub fn auth_failed(&self, why: AuthFailure) {
        add(&self.auth_failures[why as usize], 1);
    }

    /// An HTTP request to `route` was answered with `status`.
    pub fn http_request(&self, route: Route, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        add(&self.http_requests[route as usize][class], 1);
    }

    /// The counters now, as plain data.
    pub fn read(&self) -> CounterValues {
        CounterValues {
            connections_open: read(&self.connections_open),
            connections_accepted: read(&self.connections_accepted),
            connections_refused: read(&self.connections_refused),
            players: read(&self.players),
            ingest_bytes: read(&self.ingest_bytes),
            ingest_frames: std::array::from_fn(|p| read(&self.ingest_frames[p])),
            egress_bytes: read(&self.egress_bytes),
            dropped_frames: self.dropped_frames.get(),
            errors: std::array::from_fn(|p| read(&self.errors[p])),
            handshake_failures: read(&self.handshake_failures),
            auth_failures: read(&self.auth_failures),
            http_requests: std::array::from_fn(|r| read(&self.http_requests[r])),
        }
    }
}

/// Counts an open connection until dropped.
#[derive(Debug)]
pub struct OpenConnection {
    metrics: Rc<ShardMetrics>,
    protocol: Protocol,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        sub(&self.metrics.connections_open[self.protocol.index()], 1);
    }
}

/// Counts a player until dropped.
#[derive(Debug)]
pub struct PlayerGauge {
    metrics: Rc<ShardMetrics>,
    protocol: Protocol,
}

impl Drop for PlayerGauge {
    fn drop(&mut self) {
        sub(&self.metrics.players[self.protocol.index()], 1);
    }
}

/// A copy of a shard's counters (or of their sum over shards), indexed like the label enums.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterValues {
    /// Open connections, by [`Protocol`].
    pub connections_open: [u64; PROTOCOLS],
    /// Accepted connections, by [`Protocol`].
    pub connections_accepted: [u64; PROTOCOLS],
    /// Refused connections, by [`Refused`].
    pub connections_refused: [u64; 2],
    /// Players now, by [`Protocol`].
    pub players: [u64; PROTOCOLS],
    /// Ingested payload bytes, by [`Protocol`].
    pub ingest_bytes: [u64; PROTOCOLS],
    /// Ingested frames, by [`Protocol`] and [`FRAME_KINDS`].
    pub ingest_frames: [[u64; 2]; PROTOCOLS],
    /// Bytes sent, by [`Egress`].
    pub egress_bytes: [u64; EGRESSES],
    /// Frames dropped for slow viewers.
    pub dropped_frames: u64,
    /// Connection errors, by [`Protocol`] and [`ErrorKind`].
    pub errors: [[u64; 5]; PROTOCOLS],
    /// Handshake failures, by [`Protocol`].
    pub handshake_failures: [u64; PROTOCOLS],
    /// Authentication failures, by [`AuthFailure`].
    pub auth_failures: [u64; 4],
    /// HTTP requests, by [`Route`] and [`STATUS_CLASSES`].
    pub http_requests: [[u64; 5]; 6],
}

fn add_row<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x = x.wrapping_add(*y);
    }
}

impl CounterValues {
    /// Adds another shard's values.
    pub fn add(&mut self, o: &CounterValues) {
        add_row(&mut self.connections_open, &o.connections_open);
        add_row(&mut self.connections_accepted, &o.connections_accepted);
        add_row(&mut self.connections_refused, &o.connections_refused);
        add_row(&mut self.players, &o.players);
        add_row(&mut self.ingest_bytes, &o.ingest_bytes);
        for (a, b) in self.ingest_frames.iter_mut().zip(&o.ingest_frames) {
            add_row(a, b);
        }
        add_row(&mut self.egress_bytes, &o.egress_bytes);
        self.dropped_frames = self.dropped_frames.wrapping_add(o.dropped_frames);
        for (a, b) in self.errors.iter_mut().zip(&o.errors) {
            add_row(a, b);
        }
        add_row(&mut self.handshake_failures, &o.handshake_failures);
        add_row(&mut self.auth_failures, &o.auth_failures);
        for (a, b) in self.http_requests.iter_mut().zip(&o.http_requests) {
            add_row(a, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_while_alive_and_values_add() {
        let m = ShardMetrics::new();
        let c1 = m.connection_opened(Protocol::Rtmp);
        let c2 = m.connection_opened(Protocol::Https);
        let p = m.player_joined(Protocol::Rtmps);
        let srt = m.player_joined(Protocol::Srt);
        m.ingested(Protocol::Srt, MediaKind::Video, 7);
        m.sent(Egress::Srt, 188);
        m.ingested(Protocol::Rtmp, MediaKind::Video, 1000);
        m.ingested(Protocol::Rtmp, MediaKind::Audio, 10);
        m.http_request(Route::Hls, 200);
        m.http_request(Route::Hls, 404);
        m.http_request(Route::Other, 999);
        let v = m.read();
        assert_eq!(v.connections_open, [1, 0, 0, 1, 0]);
        assert_eq!(v.players, [0, 1, 0, 0, 1]);
        assert_eq!(v.ingest_bytes[Protocol::Srt as usize], 7);
        assert_eq!(v.egress_bytes, [0, 0, 0, 188]);
        assert_eq!(v.ingest_bytes[0], 1010);
        assert_eq!(v.ingest_frames[0], [1, 1]);
        assert_eq!(v.http_requests[Route::Hls as usize], [0, 1, 0, 1, 0]);
        assert_eq!(v.http_requests[Route::Other as usize], [0, 0, 0, 0, 1]);
        drop((c1, c2, p, srt));
        let after = m.read();
        assert_eq!(after.connections_open, [0; PROTOCOLS]);
        assert_eq!(after.players, [0; PROTOCOLS]);
        assert_eq!(after.connections_accepted, [1, 0, 0, 1, 0]);
        let mut sum = v.clone();
        sum.add(&after);
        assert_eq!(sum.ingest_bytes[0], 2020);
        assert_eq!(sum.connections_open, [1, 0, 0, 1, 0]);
    }

    #[test]
    fn labels_round_trip() {
        for p in Protocol::ALL {
            assert_eq!(Protocol::from_label(p.label()), Some(p));
            assert_eq!(Protocol::ALL[p as usize], p, "ALL is in index order");
        }
        for e in Egress::ALL {
            assert_eq!(Egress::ALL[e as usize], e, "ALL is in index order");
        }
        assert_eq!(Protocol::from_label("srt"), Some(Protocol::Srt));
        assert_eq!(Route::of(&["api", "v1", "events"]), Route::Events);
        assert_eq!(Route::of(&["api", "v1", "streams"]), Route::Api);
        assert_eq!(Route::of(&["hls", "a", "b"]), Route::Hls);
        assert_eq!(Route::of(&[""]), Route::Other);
    }
}
