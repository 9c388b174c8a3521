//! The API's request and response bodies. Their `ToSchema` derives are the OpenAPI document's
//! schemas, so what is declared here is exactly what goes over the wire.
//!
//! Requests are strict: unknown fields and wrong types are refused (400) with serde's message.
//! Times are unix seconds (`*_at`), as in `zerocast streams list --json`; durations are
//! milliseconds.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// A JSON error: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code (`unauthorized`, `not_found`, `invalid_name`, `bad_request`, ...).
    pub code: String,
    /// What happened, for people.
    pub message: String,
}

/// Where a stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamStatus {
    /// Never published.
    Idle,
    /// A publisher is sending.
    Live,
    /// The last publisher left or was stopped.
    Ended,
    /// The last publish ended with an error (`error` says which) until the next publish.
    Error,
    /// Publishing is refused (`enabled` is false).
    Disabled,
}

impl StreamStatus {
    /// The value of the `status` query parameter.
    pub fn parse(s: &str) -> Option<StreamStatus> {
        Some(match s {
            "idle" => StreamStatus::Idle,
            "live" => StreamStatus::Live,
            "ended" => StreamStatus::Ended,
            "error" => StreamStatus::Error,
            "disabled" => StreamStatus::Disabled,
            _ => return None,
        })
    }
}

/// `POST /api/v1/streams`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStream {
    /// Public name (used to play); generated when absent. 1 to 64 of `A-Z a-z 0-9 _ -`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64)]
    #[serde(default)]
    pub name: Option<String>,
    /// Record this stream (true/false); absent or null follows `recording.record`.
    #[serde(default)]
    pub record: Option<bool>,
    /// Free text for operators.
    #[schema(max_length = 1024)]
    #[serde(default)]
    pub description: Option<String>,
}

/// `PATCH /api/v1/streams/{name}`: only the fields present change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateStream {
    /// true/false, or null to follow `recording.record`. Applies from the next publish.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<bool>)]
    pub record: Option<Option<bool>>,
    /// New description, or null for none.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 1024)]
    pub description: Option<Option<String>>,
    /// false refuses every publish and stops the current publisher.
    #[serde(default, deserialize_with = "non_null")]
    #[schema(value_type = bool)]
    pub enabled: Option<bool>,
}

/// A field that is present (possibly null): `Some(value)`; absent fields stay `None` through
/// `#[serde(default)]`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A field that may be absent but never null.
fn non_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Where to play a stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlayUrls {
    /// RTMP play URL.
    pub rtmp_play: String,
    /// RTMPS play URL; null when RTMPS is off.
    pub rtmps_play: Option<String>,
    /// LL-HLS multivariant playlist; null when LL-HLS is off or HTTP is not served.
    pub hls: Option<String>,
    /// SRT play URL (caller mode, `streamid` `#!::r=live/NAME,m=request`); null when SRT is
    /// off.
    pub srt_play: Option<String>,
}

/// Where to publish and play a stream (the publish URLs carry the key; no `Debug`, so they
/// cannot end up in a log line).
#[derive(Serialize, ToSchema)]
pub struct KeyUrls {
    /// RTMP publish URL (server `rtmp://HOST:PORT/live`, stream key `KEY`).
    pub rtmp_publish: String,
    /// RTMPS publish URL; null when RTMPS is off.
    pub rtmps_publish: Option<String>,
    /// RTMP play URL.
    pub rtmp_play: String,
    /// RTMPS play URL; null when RTMPS is off.
    pub rtmps_play: Option<String>,
    /// LL-HLS multivariant playlist; null when LL-HLS is off or HTTP is not served.
    pub hls: Option<String>,
    /// SRT publish URL (caller mode, `streamid` `#!::r=live/KEY,m=publish`); null when SRT
    /// is off.
    pub srt_publish: Option<String>,
    /// SRT play URL (caller mode, `streamid` `#!::r=live/NAME,m=request`); null when SRT is
    /// off.
    pub srt_play: Option<String>,
}

/// A stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stream {
    /// Stable public id.
    pub id: String,
    /// Public name.
    pub name: String,
    /// Where it stands.
    pub status: StreamStatus,
    /// Why, when `status` is `error`.
    pub error: Option<String>,
    /// Free text for operators.
    pub description: Option<String>,
    /// Own recording choice; null follows `recording.record`.
    pub record: Option<bool>,
    /// false: publishing is refused.
    pub enabled: bool,
    /// Creation time, unix seconds.
    pub created_at: i64,
    /// Where to play it.
    pub urls: PlayUrls,
    /// Live statistics: only in `GET /api/v1/streams/{name}`, while live.
    pub live: Option<LiveStats>,
}

/// A stream with its secret publish key: only answered by create and rotate-key (no `Debug`,
/// so the key cannot end up in a log line).
#[derive(Serialize, ToSchema)]
pub struct StreamWithKey {
    /// Stable public id.
    pub id: String,
    /// Public name.
    pub name: String,
    /// Secret publish key (the RTMP stream key). Shown only here.
    pub key: String,
    /// Where it stands.
    pub status: StreamStatus,
    /// Why, when `status` is `error`.
    pub error: Option<String>,
    /// Free text for operators.
    pub description: Option<String>,
    /// Own recording choice; null follows `recording.record`.
    pub record: Option<bool>,
    /// false: publishing is refused.
    pub enabled: bool,
    /// Creation time, unix seconds.
    pub created_at: i64,
    /// Where to publish and play it.
    pub urls: KeyUrls,
}

/// A page of streams.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamList {
    /// The streams of this page, oldest first.
    pub streams: Vec<Stream>,
    /// This page (from 1).
    pub page: u32,
    /// Page size.
    pub per_page: u32,
    /// Streams matching the filter, over all pages.
    pub total: u64,
}

/// Track kind.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrackKind {
    /// Video.
    Video,
    /// Audio.
    Audio,
    /// Timed data.
    Data,
}

/// One track of a live stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrackInfo {
    /// Video, audio or data.
    pub kind: TrackKind,
    /// Codec (`h264`, `h265`, `av1`, `aac`, `opus`, ...).
    pub codec: String,
    /// Codec profile (H.264 `profile_idc`, AAC object type), when known.
    pub profile: Option<u8>,
    /// Picture width.
    pub width: Option<u32>,
    /// Picture height.
    pub height: Option<u32>,
    /// Frames per second.
    pub fps: Option<f64>,
    /// Audio sample rate, Hz.
    pub sample_rate: Option<u32>,
    /// Audio channels.
    pub channels: Option<u8>,
}

/// Viewers now, per protocol.
#[derive(Debug, Serialize, ToSchema)]
pub struct Viewers {
    /// RTMP(S) players.
    pub rtmp: u64,
    /// SRT players.
    pub srt: u64,
    /// LL-HLS clients that fetched something in the last 10 s.
    pub hls: u64,
    /// All of them.
    pub total: u64,
}

/// Live statistics of a stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveStats {
    /// When this publish started, unix seconds.
    pub started_at: i64,
    /// Time since then, ms.
    pub uptime_ms: u64,
    /// Ingest protocol (`rtmp`, `rtmps`, `srt`).
    pub protocol: String,
    /// Publisher's address.
    pub remote: String,
    /// Shard that holds the stream.
    pub shard: u32,
    /// Tracks.
    pub tracks: Vec<TrackInfo>,
    /// Ingest bitrate over the last second, bits/s.
    pub bitrate_in_1s: u64,
    /// Ingest bitrate over the last ten seconds, bits/s.
    pub bitrate_in_10s: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Media bytes received.
    pub bytes_in: u64,
    /// Viewers now.
    pub viewers: Viewers,
    /// Bytes sent to viewers (RTMP, SRT and LL-HLS).
    pub bytes_out: u64,
    /// Frames skipped for slow RTMP and SRT players.
    pub dropped_frames: u64,
    /// Frames not forwarded to other shards because a shard channel was full.
    pub mesh_dropped_frames: u64,
    /// The publisher's SRT link (RTT, losses, retransmissions), when it publishes over SRT.
    pub srt: Option<crate::control::SrtLinkStats>,
}

/// One publish of a stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    /// Row id.
    pub id: i64,
    /// Start, unix seconds.
    pub started_at: i64,
    /// End, unix seconds; null while live.
    pub ended_at: Option<i64>,
    /// Length, ms (so far, while live).
    pub duration_ms: u64,
    /// Whether this is the publish going on now.
    pub live: bool,
    /// Publisher's address.
    pub remote: String,
    /// Ingest protocol.
    pub protocol: String,
    /// Media bytes received.
    pub bytes: u64,
    /// Frames received.
    pub frames: u64,
    /// Why it ended (`publisher disconnected`, `stopped by operator`, `error: ...`).
    pub end_reason: Option<String>,
}

/// A page of a stream's publish history.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    /// Sessions of this page, newest first.
    pub sessions: Vec<Session>,
    /// This page (from 1).
    pub page: u32,
    /// Page size.
    pub per_page: u32,
    /// Sessions over all pages.
    pub total: u64,
}

/// Where a recording stands.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordingState {
    /// Being written.
    Recording,
    /// Closed cleanly.
    Complete,
    /// Stopped by an error; plays up to its last complete fragment.
    Failed,
    /// Left open by a server that died; plays up to its last complete fragment.
    Interrupted,
}

/// Container of a recording.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordingFormat {
    /// Fragmented MP4 (`video/mp4`).
    Fmp4,
    /// FLV (`video/x-flv`).
    Flv,
}

/// A recording's metadata.
#[derive(Debug, Serialize, ToSchema)]
pub struct Recording {
    /// Recording id.
    pub id: i64,
    /// Stream name.
    pub stream: String,
    /// Container.
    pub format: RecordingFormat,
    /// File on the server.
    pub path: String,
    /// Opened, unix seconds.
    pub started_at: i64,
    /// Closed, unix seconds; null while recording.
    pub ended_at: Option<i64>,
    /// Media time in the file, ms (completed fragments).
    pub duration_ms: u64,
    /// File size, bytes (completed fragments).
    pub bytes: u64,
    /// Where it stands.
    pub status: RecordingState,
    /// Why it ended, when it did.
    pub reason: Option<String>,
    /// Where to download it (`GET`, with `Range` support).
    pub download: String,
}

/// A page of recordings.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingList {
    /// Recordings of this page, oldest first.
    pub recordings: Vec<Recording>,
    /// This page (from 1).
    pub page: u32,
    /// Page size.
    pub per_page: u32,
    /// Recordings matching the filter, over all pages.
    pub total: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_strict() {
        let c: CreateStream = serde_json::from_str(r#"{"name":"a","record":null}"#).unwrap();
        assert_eq!(c.name.as_deref(), Some("a"));
        assert!(c.record.is_none());
        let e = serde_json::from_str::<CreateStream>(r#"{"nmae":"a"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        assert!(serde_json::from_str::<CreateStream>(r#"{"record":"yes"}"#).is_err());
    }

    #[test]
    fn update_tells_absent_from_null() {
        let u: UpdateStream = serde_json::from_str("{}").unwrap();
        assert_eq!((u.record, u.description, u.enabled), (None, None, None));
        let u: UpdateStream =
            serde_json::from_str(r#"{"record":null,"description":"d","enabled":false}"#).unwrap();
        assert_eq!(u.record, Some(None));
        assert_eq!(u.description, Some(Some("d".into())));
        assert_eq!(u.enabled, Some(false));
        assert!(serde_json::from_str::<UpdateStream>(r#"{"enabled":null}"#).is_err());
        assert!(serde_json::from_str::<UpdateStream>(r#"{"key":"x"}"#).is_err());
    }
}
