//! The media model shared by every protocol: tracks and frames.
//!
//! A [`Frame`] carries its payload as slices of the buffers it arrived in. Video in NAL-unit
//! codecs (H.264, H.265) is a list of NAL units without start codes or length prefixes; each
//! output adds its own framing beside the shared slices.

use std::time::Instant;

use bytes::Bytes;

use crate::rope::ByteRope;

/// What a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Pictures.
    Video,
    /// Sound.
    Audio,
    /// Timed metadata (for example AMF0 `onMetaData`).
    Data,
}

/// A codec, as far as zerocast needs to tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CodecId {
    /// H.264 / AVC.
    H264,
    /// H.265 / HEVC.
    H265,
    /// AV1.
    Av1,
    /// VP8.
    Vp8,
    /// VP9.
    Vp9,
    /// AAC (any profile), configured by an AudioSpecificConfig.
    Aac,
    /// Opus, configured by an OpusHead.
    Opus,
    /// MPEG-1/2 Layer III audio.
    Mp3,
    /// FLAC (Enhanced RTMP `fLaC`).
    Flac,
    /// AC-3 (Enhanced RTMP `ac-3`).
    Ac3,
    /// E-AC-3 (Enhanced RTMP `ec-3`).
    Eac3,
    /// A legacy FLV codec passed through untouched; the value is the FLV codec id
    /// (video: 4 bits of the tag header, audio: 4 bits of the sound format).
    FlvLegacy(MediaKind, u8),
}

impl CodecId {
    /// True for codecs whose frames are lists of NAL units.
    pub fn is_nal_based(self) -> bool {
        matches!(self, CodecId::H264 | CodecId::H265)
    }

    /// A short lowercase name (`h264`, `aac`, ...), as ffprobe prints it.
    pub fn name(self) -> &'static str {
        match self {
            CodecId::H264 => "h264",
            CodecId::H265 => "hevc",
            CodecId::Av1 => "av1",
            CodecId::Vp8 => "vp8",
            CodecId::Vp9 => "vp9",
            CodecId::Aac => "aac",
            CodecId::Opus => "opus",
            CodecId::Mp3 => "mp3",
            CodecId::Flac => "flac",
            CodecId::Ac3 => "ac3",
            CodecId::Eac3 => "eac3",
            CodecId::FlvLegacy(_, _) => "flv-legacy",
        }
    }
}

/// Facts derived from a track's configuration, when known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackInfo {
    /// Picture width in pixels.
    pub width: Option<u32>,
    /// Picture height in pixels.
    pub height: Option<u32>,
    /// Frames per second, when the bitstream says.
    pub fps: Option<f64>,
    /// Codec profile (for H.264, profile_idc).
    pub profile: Option<u8>,
    /// Codec level (for H.264, level_idc).
    pub level: Option<u8>,
    /// Audio sample rate in Hz.
    pub sample_rate: Option<u32>,
    /// Audio channels.
    pub channels: Option<u8>,
}

/// One elementary stream of a live stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// Video, audio or data.
    pub kind: MediaKind,
    /// The codec.
    pub codec: CodecId,
    /// Codec configuration as it travels in containers: AVCDecoderConfigurationRecord,
    /// HEVCDecoderConfigurationRecord, AV1CodecConfigurationRecord, VPCodecConfigurationRecord,
    /// AudioSpecificConfig, OpusHead. Empty when the codec has none.
    pub config: Bytes,
    /// Ticks per second of this track's timestamps.
    pub timescale: u32,
    /// Facts parsed from `config`.
    pub info: TrackInfo,
}

/// The body of a [`Frame`].
#[derive(Debug, Clone, PartialEq)]
pub enum FramePayload {
    /// NAL units (H.264, H.265), each without start code or length prefix. A NAL unit may span
    /// several slices when it crossed a receive-buffer boundary.
    Nalus(Vec<ByteRope>),
    /// A codec frame as one opaque payload (AV1 temporal unit, VP9 frame, AAC or Opus packet).
    Raw(ByteRope),
}

impl FramePayload {
    /// Total payload size in bytes (without any framing).
    pub fn len(&self) -> usize {
        match self {
            FramePayload::Nalus(n) => n.iter().map(ByteRope::len).sum(),
            FramePayload::Raw(r) => r.len(),
        }
    }

    /// True when there are no payload bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One access unit of one track.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Video, audio or data.
    pub kind: MediaKind,
    /// Decode timestamp, in the track's timescale.
    pub dts: i64,
    /// Presentation timestamp, in the track's timescale.
    pub pts: i64,
    /// True when decoding can start here.
    pub keyframe: bool,
    /// When the first byte of the frame entered the engine (for latency histograms).
    pub ingest: Instant,
    /// The payload slices.
    pub payload: FramePayload,
}
