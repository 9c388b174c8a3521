//! The HTTP(S) server of a shard: hyper 1.x (HTTP/1.1, keep-alive) on the shard's own TCP
//! connections. It serves `/healthz` and LL-HLS under `/hls`; the API, WHIP/WHEP and the
//! console will hang off the same router (`http/router.rs`).
//!
//! Limits: request heads are capped (`http.max_header_bytes`, `http.max_headers`; hyper answers
//! 431), a started head must complete within `http.header_timeout`, a keep-alive connection
//! with no request in progress is closed after `http.idle_timeout`, and connections count
//! against the same per-IP and total limits as RTMP.
//!
//! Two kinds of response outlive their handler: a streaming body ([`Body::stream`], Server-Sent
//! Events), during which the connection counts as busy, not idle, and a protocol switch
//! (`101 Switching Protocols`, WebSocket), after which the connection's task runs what the
//! handler left in the [`UpgradeSlot`] on the raw stream. hyper's own upgrade support needs a
//! `Send` I/O type, which a shard's connection is not, so the switch uses hyper's
//! `poll_without_shutdown`/`into_parts`: the connection stays this task's, and keeps counting
//! against the connection limits until the new protocol ends.

mod body;
mod hls;
mod io;
pub mod query;
mod router;

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{future, AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use crate::metrics::{ErrorKind, Protocol};
use crate::rt::{self, TcpConn};
use crate::shard::Shard;
pub use body::Body;
use io::{Activity, HyperIo};
pub use router::{error, method_not_allowed, read_body, text};

/// A response of this server.
pub type Response = http::Response<Body>;
/// A request as hyper hands it over.
pub type Request = http::Request<hyper::body::Incoming>;

/// How often a connection's watchdog looks at its activity.
const WATCHDOG_PERIOD: Duration = Duration::from_millis(500);
/// Time an in-progress response gets to finish when the process stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// A streaming body yields something (data or a keep-alive comment) at least this often.
pub const STREAM_HEARTBEAT: Duration = Duration::from_secs(15);
/// A streaming response that could write nothing for this long (or `http.idle_timeout`, if
/// longer) has a client that stopped reading; the connection is closed.
const STREAM_STALL: Duration = Duration::from_secs(2 * STREAM_HEARTBEAT.as_secs());

/// A connection's raw stream after `101 Switching Protocols`.
pub struct Upgraded {
    /// The stream (plain TCP or TLS) as it was under HTTP.
    pub io: Box<dyn UpgradedIo>,
    /// Bytes the client sent after its request head, which hyper had already read.
    pub read_buf: Bytes,
}

/// The stream type of [`Upgraded`].
pub trait UpgradedIo: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> UpgradedIo for T {}

type UpgradeTask = Box<dyn FnOnce(Upgraded) -> Pin<Box<dyn Future<Output = ()>>>>;

/// What a connection runs after its handler answered `101 Switching Protocols`.
///
/// A handler that switches protocols puts the new protocol's task here and returns the 101;
/// once hyper has sent it, the connection's task runs the new protocol on the raw stream.
#[derive(Default)]
pub struct UpgradeSlot(RefCell<Option<UpgradeTask>>);

impl UpgradeSlot {
    /// Runs `task` on the connection once the 101 response is out. Call this only when
    /// returning a 101 to an HTTP/1.1 request that carries `Upgrade`.
    pub fn set<F, Fut>(&self, task: F)
    where
        F: FnOnce(Upgraded) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        *self.0.borrow_mut() = Some(Box::new(move |up| Box::pin(task(up))));
    }

    fn take(&self) -> Option<UpgradeTask> {
        self.0.borrow_mut().take()
    }
}

/// The connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// Process-wide connection id.
    pub id: u64,
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// Whether it is HTTPS.
    pub tls: bool,
}

/// Serves one accepted connection until the peer leaves, a timeout fires or the shard stops.
pub async fn serve(
    shard: Rc<Shard>,
    conn: TcpConn,
    tls: Option<Arc<rustls::ServerConfig>>,
    id: u64,
) {
    let peer = conn.peer_addr();
    let info = ConnInfo {
        id,
        peer,
        tls: tls.is_some(),
    };
    let cfg = shard.cfg.clone();
    match tls {
        None => {
            drive(
                shard,
                info,
                HyperIo::new(conn, Activity::new(Instant::now())),
            )
            .await
        }
        Some(tls) => {
            let acceptor = futures_rustls::TlsAcceptor::from(tls);
            match rt::timeout(cfg.http.header_timeout, acceptor.accept(conn)).await {
                Some(Ok(stream)) => {
                    drive(
                        shard,
                        info,
                        HyperIo::new(stream, Activity::new(Instant::now())),
                    )
                    .await
                }
                Some(Err(e)) => {
                    debug!(%peer, "HTTPS handshake failed: {e}");
                    shard.metrics.handshake_failed(Protocol::Https);
                }
                None => {
                    debug!(%peer, "HTTPS handshake timed out");
                    shard.metrics.handshake_failed(Protocol::Https);
                }
            }
        }
    }
}

async fn drive<S>(shard: Rc<Shard>, info: ConnInfo, io: HyperIo<S>)
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
{
    let activity = io.activity();
    let cfg = shard.cfg.clone();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .max_headers(cfg.http.max_headers)
        .max_buf_size(cfg.http.max_header_bytes.max(8192))
        .header_read_timeout(None) // enforced by the watchdog below
        .writev(true);
    let upgrade = Rc::new(UpgradeSlot::default());
    let service = {
        let shard = shard.clone();
        let activity = activity.clone();
        let upgrade = upgrade.clone();
        hyper::service::service_fn(move |req| {
            let shard = shard.clone();
            let activity = activity.clone();
            let upgrade = upgrade.clone();
            let guard = activity.request();
            // Boxed so the connection is `Unpin` (`poll_without_shutdown` needs it).
            let fut: Pin<Box<dyn Future<Output = Result<Response, Infallible>>>> =
                Box::pin(async move {
                    let mut response = router::handle(&shard, &info, &upgrade, req).await;
                    if response.body().is_stream() {
                        response.body_mut().hold(activity.streaming());
                    }
                    drop(guard);
                    Ok(response)
                });
            fut
        })
    };
    let mut conn = builder.serve_connection(io, service);
    let watchdog = async {
        loop {
            if shard.shutdown.is_set() {
                return Stop::Shutdown;
            }
            if let Some(reason) = expired(&activity, &cfg.http) {
                return Stop::Expired(reason);
            }
            future::or(rt::sleep(WATCHDOG_PERIOD), shard.shutdown.wait()).await;
        }
    };
    // Without shutdown: when a handler switched protocols the stream is taken back below.
    let outcome = future::or(
        async { Stop::Done(future::poll_fn(|cx| conn.poll_without_shutdown(cx)).await) },
        watchdog,
    )
    .await;
    let finished = match outcome {
        Stop::Done(Err(e)) => {
            debug!("HTTP connection error: {e}");
            count_error(&shard, info.tls, &e);
            false
        }
        Stop::Done(Ok(())) => true,
        Stop::Expired(reason) => {
            debug!("HTTP connection closed: {reason}");
            let protocol = Protocol::http(info.tls);
            if reason == HEAD_TIMEOUT {
                shard.metrics.handshake_failed(protocol);
            } else if reason == STREAM_STALLED {
                shard.metrics.error(protocol, ErrorKind::Timeout);
            }
            false
        }
        Stop::Shutdown => {
            Pin::new(&mut conn).graceful_shutdown();
            let done = rt::timeout(
                SHUTDOWN_GRACE,
                future::poll_fn(|cx| conn.poll_without_shutdown(cx)),
            )
            .await;
            matches!(done, Some(Ok(())))
        }
    };
    if !finished {
        return;
    }
    let parts = conn.into_parts();
    let mut stream = parts.io.into_inner();
    match upgrade.take() {
        // A protocol switch: the new protocol watches the shard's shutdown itself.
        Some(task) => {
            task(Upgraded {
                io: Box::new(stream),
                read_buf: parts.read_buf,
            })
            .await
        }
        // What hyper would have done: close our side (TLS: send close_notify).
        None => {
            let _ = rt::timeout(SHUTDOWN_GRACE, stream.close()).await;
        }
    }
}

/// Counts a connection that hyper ended with an error; a peer that just left is no error.
fn count_error(shard: &Shard, tls: bool, e: &hyper::Error) {
    let kind = if e.is_parse() || e.is_parse_too_large() || e.is_parse_status() {
        ErrorKind::Protocol
    } else if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_incomplete_message()
        || e.is_closed()
        || e.is_canceled()
        || e.is_body_write_aborted()
        || e.is_user()
    {
        return;
    } else {
        ErrorKind::Io
    };
    shard.metrics.error(Protocol::http(tls), kind);
}

/// Why [`expired`] closes a connection.
const HEAD_TIMEOUT: &str = "request head not completed within http.header_timeout";
const STREAM_STALLED: &str = "streaming response stalled: the client stopped reading";

enum Stop {
    Done(Result<(), hyper::Error>),
    Expired(&'static str),
    Shutdown,
}

/// Whether the connection has been quiet or slow for too long.
fn expired(activity: &Activity, cfg: &crate::config::HttpConfig) -> Option<&'static str> {
    let now = Instant::now();
    if activity.streaming.get() > 0 {
        // A streaming body writes at least every STREAM_HEARTBEAT: silence means the client
        // stopped reading and the socket is full.
        let limit = cfg.idle_timeout.max(STREAM_STALL);
        return (now.duration_since(activity.last_io.get()) > limit).then_some(STREAM_STALLED);
    }
    if activity.in_flight.get() > 0 {
        return None;
    }
    match activity.head_started.get() {
        Some(started) if now.duration_since(started) > cfg.header_timeout => Some(HEAD_TIMEOUT),
        Some(_) => None,
        None if now.duration_since(activity.last_io.get()) > cfg.idle_timeout => {
            Some("idle for http.idle_timeout")
        }
        None => None,
    }
}
