//! The HTTP(S) server of a shard: hyper 1.x (HTTP/1.1, keep-alive) on the shard's own TCP
//! connections. It serves `/healthz` and LL-HLS under `/hls`; the API, WHIP/WHEP and the
//! console will hang off the same router (`http/router.rs`).
//!
//! Limits: request heads are capped (`http.max_header_bytes`, `http.max_headers`; hyper answers
//! 431), a started head must complete within `http.header_timeout`, a keep-alive connection
//! with no request in progress is closed after `http.idle_timeout`, and connections count
//! against the same per-IP and total limits as RTMP.

mod body;
mod hls;
mod io;
mod router;

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use tracing::debug;

use crate::rt::{self, TcpConn};
use crate::shard::Shard;
pub use body::Body;
pub use router::{error, method_not_allowed, read_body, text};
use io::{Activity, HyperIo};

/// A response of this server.
pub type Response = http::Response<Body>;
/// A request as hyper hands it over.
pub type Request = http::Request<hyper::body::Incoming>;

/// How often a connection's watchdog looks at its activity.
const WATCHDOG_PERIOD: Duration = Duration::from_millis(500);
/// Time an in-progress response gets to finish when the process stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

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
                Some(Err(e)) => debug!(%peer, "HTTPS handshake failed: {e}"),
                None => debug!(%peer, "HTTPS handshake timed out"),
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
    let service = {
        let shard = shard.clone();
        let activity = activity.clone();
        hyper::service::service_fn(move |req| {
            let shard = shard.clone();
            let guard = activity.request();
            async move {
                let response = router::handle(&shard, &info, req).await;
                drop(guard);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
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
    let outcome = future::or(async { Stop::Done(conn.as_mut().await) }, watchdog).await;
    match outcome {
        Stop::Done(Err(e)) => debug!("HTTP connection error: {e}"),
        Stop::Done(Ok(())) => {}
        Stop::Expired(reason) => debug!("HTTP connection closed: {reason}"),
        Stop::Shutdown => {
            conn.as_mut().graceful_shutdown();
            let _ = rt::timeout(SHUTDOWN_GRACE, conn.as_mut()).await;
        }
    }
}

enum Stop {
    Done(Result<(), hyper::Error>),
    Expired(&'static str),
    Shutdown,
}

/// Whether the connection has been quiet or slow for too long.
fn expired(activity: &Activity, cfg: &crate::config::HttpConfig) -> Option<&'static str> {
    if activity.in_flight.get() > 0 {
        return None;
    }
    let now = Instant::now();
    match activity.head_started.get() {
        Some(started) if now.duration_since(started) > cfg.header_timeout => {
            Some("request head not completed within http.header_timeout")
        }
        Some(_) => None,
        None if now.duration_since(activity.last_io.get()) > cfg.idle_timeout => {
            Some("idle for http.idle_timeout")
        }
        None => None,
    }
}
