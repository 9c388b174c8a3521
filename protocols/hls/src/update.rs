//! What the packager emits and every window applies, and the packager's errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zerocast_codecs::fmp4::Fmp4Error;
use zerocast_codecs::{ByteRope, CodecId};

/// Facts about the packaged stream, for the multivariant playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    /// RFC 6381 codecs list, for example `avc1.64001f,mp4a.40.2`.
    pub codecs: Arc<str>,
    /// Picture width, when there is video and it is known.
    pub width: Option<u32>,
    /// Picture height, when there is video and it is known.
    pub height: Option<u32>,
    /// Video frames per second, when known.
    pub frame_rate: Option<f64>,
    /// A guess of the peak bitrate in bits per second, used until a segment has been measured.
    pub bandwidth: u64,
}

/// One step of a live HLS stream. The packager emits them in order; apply each, in that order,
/// to every [`Window`](crate::Window) of the stream.
///
/// `Send + Clone` and cheap to clone: media sits in refcounted [`Bytes`], so the engine can
/// fan an update out to other shards without copying media.
#[derive(Debug, Clone, PartialEq)]
pub enum HlsUpdate {
    /// A new initialization segment (`init-<id>.mp4`); segments that follow use it.
    Init {
        /// Its id, unique within the stream (republishes included).
        id: u64,
        /// `ftyp` + `moov`.
        data: Bytes,
        /// Codecs, picture size, frame rate, bandwidth guess.
        info: StreamInfo,
    },
    /// A segment begins (its parts follow).
    SegmentStart {
        /// Media sequence number.
        msn: u64,
        /// True when the segment follows a discontinuity (new tracks, timestamp jump, republish).
        discontinuity: bool,
        /// Discontinuity sequence number of this segment: EXT-X-DISCONTINUITY tags from the start
        /// of the stream up to and including this segment's own.
        discontinuity_sequence: u64,
        /// EXT-X-PROGRAM-DATE-TIME of its first frame, Unix milliseconds.
        program_date_time_ms: u64,
        /// The init segment it uses.
        init_id: u64,
    },
    /// A part (one CMAF chunk, `moof` + `mdat`) of segment `msn`, named `part-<seq>.m4s`.
    Part {
        /// The segment.
        msn: u64,
        /// Index within the segment, from 0 (its position for `_HLS_msn`/`_HLS_part`).
        index: u32,
        /// Stream-global part sequence number: one more than the previous part's, across
        /// segments, track changes and resumed republishes. The part's URI is `part-<seq>.m4s`.
        seq: u64,
        /// Duration in whole milliseconds, at most the part target unless one frame is longer.
        duration: Duration,
        /// True when the part starts with a video keyframe (always for audio-only streams).
        independent: bool,
        /// `moof` and the `mdat` box header.
        header: Bytes,
        /// The `mdat` body: slices of the frames' own buffers.
        payload: ByteRope,
        /// Ingest instant of the part's oldest frame (for ingest-to-part latency).
        first_ingest: Instant,
    },
    /// Segment `msn` is complete.
    SegmentEnd {
        /// The segment.
        msn: u64,
        /// The sum of its parts' durations.
        duration: Duration,
    },
    /// The stream ended: the playlist gets EXT-X-ENDLIST.
    Ended,
}

/// Why the packager refused tracks or a frame.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum HlsError {
    /// `set_tracks` got neither a video nor an audio track, or `push_frame` came before it.
    #[error("no video or audio track to package")]
    NoTracks,
    /// A track whose codec has no fMP4 mapping or no RFC 6381 codecs string.
    #[error("track {track}: codec {codec:?} cannot be packaged as HLS fMP4")]
    UnsupportedCodec {
        /// Index of the track in the slice given to `set_tracks`.
        track: usize,
        /// Its codec.
        codec: CodecId,
    },
    /// A frame whose decode timestamp is negative (fMP4 decode times are unsigned) or beyond
    /// 2^62 ticks (no real stream gets there; the bound keeps tick arithmetic from overflowing).
    #[error("frame dts {dts} out of range")]
    DtsOutOfRange {
        /// The dts, in the track timescale.
        dts: i64,
    },
    /// The fMP4 muxer refused the tracks or the frame (bad codec configuration, oversized sample).
    /// The frame was dropped; packaging goes on.
    #[error(transparent)]
    Fmp4(#[from] Fmp4Error),
    /// `set_tracks` or `push_frame` after `end`.
    #[error("the stream has ended")]
    Ended,
}
