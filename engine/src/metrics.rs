//! `GET /metrics`: every shard's counters and latency histograms, summed, in the OpenMetrics
//! text format (which Prometheus scrapes natively).
//!
//! Each shard counts on its own, with plain `Cell`s ([`ShardMetrics`]) and shard-local
//! hdrhistograms ([`ShardStats`](crate::shard::ShardStats)); nothing on the media path takes
//! a lock or touches an atomic for a metric. A scrape, on whatever shard took the HTTP
//! connection, asks every shard for a [`ShardMetricsSnapshot`] through the channel mesh
//! ([`Query::Metrics`]), adds them up and renders the sum. Gauges that state already knows
//! (live streams, publishers, LL-HLS clients) are read from that state at scrape time rather
//! than counted.
//!
//! The families and their labels are listed in the README ("Metrics").

mod counters;
mod render;
mod snapshot;

use std::rc::Rc;

use http::{header, StatusCode};

pub use counters::{
    AuthFailure, CounterValues, Egress, ErrorKind, OpenConnection, PlayerGauge, Protocol, Refused,
    Route, ShardMetrics, EGRESSES, FRAME_KINDS, INGEST_PROTOCOLS, PLAYER_PROTOCOLS, PROTOCOLS,
    STATUS_CLASSES,
};
pub use render::{render, CONTENT_TYPE};
pub use snapshot::{Buckets, ShardMetricsSnapshot, BOUNDS_US};

use crate::control::{Answer, Query};
use crate::http::{error, Body, ConnInfo, Request, Response};
use crate::shard::Shard;

/// This shard's snapshot. `publishers` are the protocols of the streams published here.
pub fn snapshot<'a>(
    shard: &Shard,
    publishers: impl Iterator<Item = &'a str>,
) -> ShardMetricsSnapshot {
    let mut s = ShardMetricsSnapshot {
        counters: shard.metrics.read(),
        hls_clients: shard.hls.active_clients(std::time::Instant::now()),
        ..Default::default()
    };
    for p in publishers {
        s.live_streams += 1;
        if let Some(p) = Protocol::from_label(p) {
            s.publishers[p as usize] += 1;
        }
    }
    let stats = shard.stats.borrow();
    s.rtmp_egress_latency = Buckets::of(&stats.rtmp_egress_latency_us);
    s.srt_egress_latency = Buckets::of(&stats.srt_egress_latency_us);
    s.rtmp_queue_wait = Buckets::of(&stats.rtmp_queue_wait_us);
    s.hls_part_latency = Buckets::of(&stats.hls_part_latency_us);
    s
}

/// Every shard's snapshot, summed; `None` when a shard did not answer (a partial sum would
/// look like a counter reset to Prometheus).
pub async fn gather(shard: &Rc<Shard>) -> Option<ShardMetricsSnapshot> {
    let answers = shard.ask_all(Query::Metrics).await;
    let mut total = ShardMetricsSnapshot::default();
    let mut answered = 0;
    for a in &answers {
        if let Answer::Metrics(s) = a {
            total.add(s);
            answered += 1;
        }
    }
    (answered == shard.count).then_some(total)
}

/// Answers `GET /metrics` (and `HEAD`; hyper leaves the body out).
pub async fn serve(shard: &Rc<Shard>, _conn: &ConnInfo, req: Request) -> Response {
    if shard.cfg.metrics.require_token {
        if let Some(refusal) = crate::api::token::check(&shard.cfg, req.headers()) {
            return refusal;
        }
    }
    let Some(total) = gather(shard).await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shard_unavailable",
            "a shard did not answer within 5 s; try again",
        );
    };
    http::Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, CONTENT_TYPE)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(render(&total)))
        .unwrap_or_default()
}
