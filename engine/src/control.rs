//! Questions one shard asks another about state only that shard holds: a live stream's
//! statistics (its origin shard), viewer counts (every shard), the list of live streams (the
//! arbiter, shard 0), an operator stop. The API and metrics handlers, which run on whatever
//! shard took the HTTP connection, use these; answers are plain `Send` data.
//!
//! [`Shard::ask`](crate::shard::Shard::ask) sends a [`Query`] through the mesh (or handles it
//! locally) and waits, bounded, for the [`Answer`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use zerocast_codecs::{MediaKind, Track};

use crate::events::IngestStats;

/// What a shard can be asked.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Query {
    /// To shard 0: every live stream, with its origin shard and generation.
    LiveStreams,
    /// To every shard: its counters and latency distributions (`GET /metrics`).
    Metrics,
    /// To a stream's origin shard: its ingest statistics.
    Ingest {
        /// Stream name.
        name: String,
    },
    /// To every shard: its viewers of a stream (origin or mirror: RTMP and MPEG-TS players;
    /// LL-HLS clients).
    Viewers {
        /// Stream name.
        name: String,
    },
    /// To a stream's origin shard: end its publisher.
    Stop {
        /// Stream name.
        name: String,
        /// Why, for the log and the `stream.ended` event.
        reason: String,
    },
}

/// The answer to a [`Query`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Answer {
    /// Live streams: (name, origin shard, generation).
    LiveStreams(Vec<(String, usize, u64)>),
    /// Ingest statistics, `None` when the stream is not published on that shard.
    Ingest(Option<Box<IngestInfo>>),
    /// That shard's viewers of the stream.
    Viewers(ViewerCounts),
    /// Whether a publisher was found and told to stop.
    Stopped(bool),
    /// That shard's metrics.
    Metrics(Box<crate::metrics::ShardMetricsSnapshot>),
}

/// Facts of a track, as the stats API shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackSummary {
    /// `video` or `audio`.
    pub kind: &'static str,
    /// Codec name (`h264`, `aac`, ...).
    pub codec: &'static str,
    /// Codec profile (H.264 `profile_idc`, AAC object type), when known.
    pub profile: Option<u8>,
    /// Picture width.
    pub width: Option<u32>,
    /// Picture height.
    pub height: Option<u32>,
    /// Frames per second.
    pub fps: Option<f64>,
    /// Audio sample rate.
    pub sample_rate: Option<u32>,
    /// Audio channels.
    pub channels: Option<u8>,
}

impl TrackSummary {
    /// The summary of `track`.
    pub fn of(track: &Track) -> Self {
        let i = &track.info;
        TrackSummary {
            kind: match track.kind {
                MediaKind::Video => "video",
                MediaKind::Audio => "audio",
                MediaKind::Data => "data",
            },
            codec: track.codec.name(),
            profile: i.profile,
            width: i.width,
            height: i.height,
            fps: i.fps,
            sample_rate: i.sample_rate,
            channels: i.channels,
        }
    }
}

/// A live stream's ingest side, from its origin shard.
#[derive(Debug, Clone)]
pub struct IngestInfo {
    /// Publish generation.
    pub generation: u64,
    /// Origin shard.
    pub shard: usize,
    /// Ingest protocol.
    pub protocol: &'static str,
    /// Publisher's address.
    pub remote: SocketAddr,
    /// When publishing started, Unix ms.
    pub started_at_ms: u64,
    /// Time since publishing started.
    pub uptime: Duration,
    /// Current tracks.
    pub tracks: Vec<TrackSummary>,
    /// Counters and bitrates.
    pub stats: IngestStats,
    /// Frames not forwarded to other shards because a mesh channel was full.
    pub mirror_drops: u64,
    /// The publisher's SRT link, when it publishes over SRT.
    pub srt_link: Option<SrtLinkStats>,
}

/// The health of an SRT publisher's link, from its session's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SrtLinkStats {
    /// Smoothed round-trip time, microseconds.
    pub rtt_us: u32,
    /// Negotiated TSBPD latency, milliseconds.
    pub latency_ms: u32,
    /// Receive rate over the last second, bits/s.
    pub recv_rate_bps: u64,
    /// Data packets received (duplicates included).
    pub packets_received: u64,
    /// Packets found missing (sequence gaps).
    pub lost: u64,
    /// Missing packets that arrived later (retransmitted or reordered).
    pub recovered: u64,
    /// Retransmitted packets received.
    pub retransmitted: u64,
    /// Missing packets given up because their delivery time passed.
    pub dropped_too_late: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// Packets held by the receiver now.
    pub buffered_packets: u64,
}

/// One shard's viewers of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ViewerCounts {
    /// RTMP(S) players now.
    pub rtmp: u64,
    /// SRT players (MPEG-TS viewers) now.
    pub srt: u64,
    /// LL-HLS clients seen in the last [`HLS_ACTIVE_WINDOW`].
    pub hls: u64,
    /// Bytes sent to viewers of this stream (RTMP, SRT and LL-HLS), over the stream's life on
    /// this shard.
    pub bytes_out: u64,
    /// Frames skipped for slow RTMP and SRT players.
    pub dropped_frames: u64,
}

impl ViewerCounts {
    /// Adds another shard's counts.
    pub fn add(&mut self, other: &ViewerCounts) {
        self.rtmp += other.rtmp;
        self.srt += other.srt;
        self.hls += other.hls;
        self.bytes_out += other.bytes_out;
        self.dropped_frames += other.dropped_frames;
    }
}

/// An LL-HLS client counts as a viewer while it fetched something this recently.
pub const HLS_ACTIVE_WINDOW: Duration = Duration::from_secs(10);

/// Ingest bitrate over the last 1 and 10 seconds, from per-second byte buckets.
#[derive(Debug, Clone)]
pub struct RateMeter {
    start: Instant,
    /// (second index since `start`, bytes in that second), newest last, at most 11.
    buckets: Vec<(u64, u64)>,
}

impl RateMeter {
    /// A meter starting at `now`.
    pub fn new(now: Instant) -> Self {
        RateMeter {
            start: now,
            buckets: Vec::with_capacity(12),
        }
    }

    /// Counts `bytes` received at `now`.
    pub fn add(&mut self, now: Instant, bytes: u64) {
        let sec = now.saturating_duration_since(self.start).as_secs();
        match self.buckets.last_mut() {
            Some((s, b)) if *s == sec => *b += bytes,
            _ => {
                self.buckets.push((sec, bytes));
                if self.buckets.len() > 11 {
                    self.buckets.remove(0);
                }
            }
        }
    }

    /// Bits per second over the last complete second and the last ten complete seconds (or
    /// the time since the start, if shorter).
    pub fn rates(&self, now: Instant) -> (u64, u64) {
        let sec = now.saturating_duration_since(self.start).as_secs();
        let sum = |n: u64| -> u64 {
            self.buckets
                .iter()
                .filter(|(s, _)| *s < sec && *s + n >= sec)
                .map(|(_, b)| *b)
                .sum()
        };
        let ten = sec.clamp(1, 10);
        (sum(1) * 8, sum(10) * 8 / ten)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_cover_complete_seconds() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(t0);
        for s in 0..12u64 {
            m.add(t0 + Duration::from_millis(s * 1000 + 10), 1000 * (s + 1));
        }
        // At 12.5 s: last complete second is 11 (12_000 bytes); seconds 2..=11 sum to
        // 3_000 + ... + 12_000 = 75_000 bytes over 10 s.
        let (one, ten) = m.rates(t0 + Duration::from_millis(12_500));
        assert_eq!(one, 12_000 * 8);
        assert_eq!(ten, 75_000 * 8 / 10);
        let fresh = RateMeter::new(t0);
        assert_eq!(fresh.rates(t0), (0, 0));
    }
}
