//! The exposition: a merged [`ShardMetricsSnapshot`] in the OpenMetrics text format, written
//! by the `prometheus-client` crate's encoder through a [`Collector`] that reads the snapshot.
//!
//! Family names follow OpenMetrics: a counter family `zerocast_ingest_bytes` has the sample
//! `zerocast_ingest_bytes_total`; families with a unit carry a `# UNIT` line and end with it.

use std::fmt::{self, Write};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::counters::{
    AuthFailure, Egress, ErrorKind, Protocol, Refused, Route, FRAME_KINDS, INGEST_PROTOCOLS,
    PLAYER_PROTOCOLS, PROTOCOLS, STATUS_CLASSES,
};
use super::snapshot::{Buckets, ShardMetricsSnapshot, BOUNDS_US};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders the sum of every shard's snapshot, ending with `# EOF`.
pub fn render(snapshot: &ShardMetricsSnapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition(snapshot.clone())));
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail; the encoder's own errors are formatting errors.
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        out.clear();
        let _ = writeln!(out, "# EOF");
    }
    out
}

#[derive(Debug)]
struct Exposition(ShardMetricsSnapshot);

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels<'_>, u64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        if labels.is_empty() {
            m.encode_gauge(v)?;
        } else {
            m.encode_family(labels)?.encode_gauge(v)?;
        }
    }
    Ok(())
}

/// A counter family; `name` is without `_total` (and without the unit's suffix).
fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &[(Labels<'_>, u64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, v) in series {
        if labels.is_empty() {
            m.encode_counter::<NoLabelSet, _, u64>(v, None)?;
        } else {
            m.encode_family(labels)?
                .encode_counter::<NoLabelSet, _, u64>(v, None)?;
        }
    }
    Ok(())
}

/// A latency histogram in seconds; `name` is without `_seconds`.
fn histograms(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels<'_>, &Buckets)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for (labels, b) in series {
        // The encoder takes per-bucket counts and writes them cumulatively.
        let buckets: Vec<(f64, u64)> = BOUNDS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain(std::iter::once(f64::INFINITY))
            .zip(b.counts.iter().copied())
            .collect();
        let sum = b.sum_us / 1e6;
        if labels.is_empty() {
            m.encode_histogram::<NoLabelSet>(sum, b.count, &buckets, None)?;
        } else {
            m.encode_family(labels)?
                .encode_histogram::<NoLabelSet>(sum, b.count, &buckets, None)?;
        }
    }
    Ok(())
}

fn by_protocol(values: &[u64; PROTOCOLS], protocols: &[Protocol]) -> Vec<(Labels<'static>, u64)> {
    protocols
        .iter()
        .map(|&p| (vec![("protocol", p.label())], values[p as usize]))
        .collect()
}

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        let c = &s.counters;
        gauges(
            &mut enc,
            "zerocast_connections",
            "Open connections, by listener protocol",
            &by_protocol(&c.connections_open, &Protocol::ALL),
        )?;
        counters(
            &mut enc,
            "zerocast_connections_accepted",
            "Connections accepted, by listener protocol",
            None,
            &by_protocol(&c.connections_accepted, &Protocol::ALL),
        )?;
        counters(
            &mut enc,
            "zerocast_connections_refused",
            "Connections refused at accept, by the limit that refused them",
            None,
            &Refused::ALL
                .iter()
                .map(|&r| {
                    (
                        vec![("reason", r.label())],
                        c.connections_refused[r as usize],
                    )
                })
                .collect::<Vec<_>>(),
        )?;
        gauges(
            &mut enc,
            "zerocast_live_streams",
            "Streams being published now",
            &[(vec![], s.live_streams)],
        )?;
        gauges(
            &mut enc,
            "zerocast_publishers",
            "Publishers now, by ingest protocol",
            &by_protocol(&s.publishers, &INGEST_PROTOCOLS),
        )?;
        let mut viewers = by_protocol(&c.players, &PLAYER_PROTOCOLS);
        viewers.push((vec![("protocol", "hls")], s.hls_clients));
        gauges(
            &mut enc,
            "zerocast_viewers",
            "Viewers now: RTMP(S) and SRT players, and LL-HLS clients that fetched within the last 10 s",
            &viewers,
        )?;
        counters(
            &mut enc,
            "zerocast_ingest",
            "Media payload bytes received from publishers, by ingest protocol",
            Some(&Unit::Bytes),
            &by_protocol(&c.ingest_bytes, &INGEST_PROTOCOLS),
        )?;
        let frames: Vec<_> = INGEST_PROTOCOLS
            .iter()
            .flat_map(|&p| {
                FRAME_KINDS.iter().enumerate().map(move |(k, kind)| {
                    (
                        vec![("protocol", p.label()), ("kind", *kind)],
                        c.ingest_frames[p as usize][k],
                    )
                })
            })
            .collect();
        counters(
            &mut enc,
            "zerocast_ingest_frames",
            "Media frames received from publishers, by ingest protocol and kind",
            None,
            &frames,
        )?;
        counters(
            &mut enc,
            "zerocast_egress",
            "Bytes sent: to the sockets of RTMP(S) connections (players, and small replies to publishers), MPEG-TS to SRT players, and LL-HLS response bodies",
            Some(&Unit::Bytes),
            &Egress::ALL
                .iter()
                .map(|&e| (vec![("protocol", e.label())], c.egress_bytes[e as usize]))
                .collect::<Vec<_>>(),
        )?;
        counters(
            &mut enc,
            "zerocast_dropped_frames",
            "Frames skipped for slow viewers (their queue was full; they resume at a keyframe)",
            None,
            &[(vec![], c.dropped_frames)],
        )?;
        let errors: Vec<_> = Protocol::ALL
            .iter()
            .flat_map(|&p| {
                ErrorKind::ALL.iter().map(move |&k| {
                    (
                        vec![("protocol", p.label()), ("kind", k.label())],
                        c.errors[p as usize][k as usize],
                    )
                })
            })
            .collect();
        counters(
            &mut enc,
            "zerocast_errors",
            "Connections ended by an error, by protocol and kind",
            None,
            &errors,
        )?;
        counters(
            &mut enc,
            "zerocast_handshake_failures",
            "Failed or timed-out handshakes: RTMP handshake and connect, TLS, HTTP request heads, SRT handshakes",
            None,
            &by_protocol(&c.handshake_failures, &Protocol::ALL),
        )?;
        counters(
            &mut enc,
            "zerocast_auth_failures",
            "Refused credentials: publish keys, on_publish hook refusals, rate-limited publishes, API tokens",
            None,
            &AuthFailure::ALL
                .iter()
                .map(|&a| (vec![("reason", a.label())], c.auth_failures[a as usize]))
                .collect::<Vec<_>>(),
        )?;
        // Only the (route, class) pairs that occurred: most never do.
        let requests: Vec<_> = Route::ALL
            .iter()
            .flat_map(|&r| {
                STATUS_CLASSES
                    .iter()
                    .enumerate()
                    .map(move |(i, class)| (r, i, *class))
            })
            .filter(|&(r, i, _)| c.http_requests[r as usize][i] > 0)
            .map(|(r, i, class)| {
                (
                    vec![("route", r.label()), ("status_class", class)],
                    c.http_requests[r as usize][i],
                )
            })
            .collect();
        counters(
            &mut enc,
            "zerocast_http_requests",
            "HTTP requests answered, by route and status class",
            None,
            &requests,
        )?;
        histograms(
            &mut enc,
            "zerocast_ingest_to_egress",
            "Video frames from entering the engine to being handed to a player's socket (srt: to the player's SRT session), by output protocol (rtmp: RTMP and RTMPS players)",
            &[
                (vec![("protocol", "rtmp")], &s.rtmp_egress_latency),
                (vec![("protocol", "srt")], &s.srt_egress_latency),
            ],
        )?;
        histograms(
            &mut enc,
            "zerocast_queue_wait",
            "Time a live video frame waited in a player's send queue before its socket took it, by output protocol",
            &[(vec![("protocol", "rtmp")], &s.rtmp_queue_wait)],
        )?;
        histograms(
            &mut enc,
            "zerocast_hls_part_latency",
            "LL-HLS: the oldest frame of a part entering the engine until the part can be served",
            &[(vec![], &s.hls_part_latency)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openmetrics() {
        let mut s = ShardMetricsSnapshot {
            live_streams: 1,
            ..Default::default()
        };
        s.counters.ingest_bytes[0] = 1234;
        s.counters.http_requests[Route::Hls as usize][1] = 7;
        s.rtmp_egress_latency.counts[3] = 2;
        s.rtmp_egress_latency.counts[BOUNDS_US.len()] = 1;
        s.rtmp_egress_latency.count = 3;
        s.rtmp_egress_latency.sum_us = 20_001_500.0;
        let text = render(&s);
        assert!(text.ends_with("# EOF\n"), "{text}");
        for line in [
            "# TYPE zerocast_live_streams gauge",
            "zerocast_live_streams 1",
            "# TYPE zerocast_ingest_bytes counter",
            "# UNIT zerocast_ingest_bytes bytes",
            "zerocast_ingest_bytes_total{protocol=\"rtmp\"} 1234",
            "zerocast_http_requests_total{route=\"hls\",status_class=\"2xx\"} 7",
            "# TYPE zerocast_ingest_to_egress_seconds histogram",
            "zerocast_ingest_to_egress_seconds_bucket{le=\"0.0005\",protocol=\"rtmp\"} 0",
            "zerocast_ingest_to_egress_seconds_bucket{le=\"0.001\",protocol=\"rtmp\"} 2",
            "zerocast_ingest_to_egress_seconds_bucket{le=\"10.0\",protocol=\"rtmp\"} 2",
            "zerocast_ingest_to_egress_seconds_bucket{le=\"+Inf\",protocol=\"rtmp\"} 3",
            "zerocast_ingest_to_egress_seconds_count{protocol=\"rtmp\"} 3",
            "zerocast_viewers{protocol=\"hls\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        assert!(
            !text.contains("status_class=\"5xx\""),
            "unseen request classes are left out"
        );
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(l.starts_with("zerocast_"), "{l}");
        }
    }
}
