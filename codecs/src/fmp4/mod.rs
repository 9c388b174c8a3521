//! Fragmented MP4 / CMAF muxing (ISO/IEC 14496-12, ISO/IEC 14496-15, ISO/IEC 23000-19).
//!
//! Two outputs, both sans-IO:
//!
//! - [`init_segment`]: `ftyp` + `moov` describing the tracks (CMAF header). Track ids are
//!   1, 2, ... in the order given.
//! - [`FragmentBuilder`]: collects frames and cuts them into [`Fragment`]s, each
//!   `[styp] moof mdat`. The fragment's header (`styp`, `moof` and the `mdat` box header) is
//!   one small contiguous `Bytes`; the `mdat` body is a [`ByteRope`](crate::ByteRope) of the frames' own
//!   slices. H.264/H.265 NAL units get their length prefixes from one allocation per
//!   fragment, written as small `Bytes` beside the shared NAL slices: media is never copied.
//!
//! ```text
//! init:      ftyp | moov { mvhd, trak* { tkhd, mdia { mdhd, hdlr, minf { vmhd|smhd, dinf,
//!            stbl { stsd, stts, stsc, stsz, stco } } } }, mvex { trex* } }
//! fragment:  [styp] | moof { mfhd, traf* { tfhd, tfdt, trun } } | mdat { samples of track 1,
//!            then of track 2, ... }
//! ```
//!
//! # Timescales
//!
//! Video tracks use 90 000 ticks per second, audio tracks their sample rate (48 000 for
//! Opus, as its mapping requires). Frame timestamps arrive in the track's own timescale
//! (milliseconds from RTMP) and each *absolute* timestamp is rescaled and rounded to the
//! nearest tick (halves up). Sample durations are differences of rescaled timestamps, so
//! rounding never accumulates: the fragment timeline stays within half a tick of the input.
//! Millisecond AAC timestamps therefore give durations that jitter around 1024 samples
//! (1008 or 1056 at 48 kHz) while their sum stays exact.
//!
//! # Why hand-written boxes
//!
//! The architecture names mp4-atom for fMP4. Its `Mdat` owns a `Vec<u8>`, so muxing through
//! it would copy every media byte into the box, which the zero-copy data path forbids; and
//! only about twenty write-only boxes are needed, most of them constant. So the boxes are
//! written here: each fragment box ([`Mfhd`], [`Tfhd`], [`Tfdt`], [`Trun`]) is a type with `KIND`, `encode_body` and
//! `decode_body` and a round-trip test; the init boxes are written by one function each.
//! mp4-atom stays a good choice for *reading* recordings later.

mod boxes;
mod fragment;
mod init;
#[cfg(test)]
mod tests;

use bytes::{BufMut, BytesMut};

use crate::aac::{AacError, AudioSpecificConfig};
use crate::h264::{AvcDecoderConfig, H264Error};
use crate::h265::H265Error;
use crate::media::{CodecId, MediaKind, Track};
use crate::opus::OpusError;

pub use boxes::{Mfhd, Mp4Box, Tfdt, Tfhd, Trun, TrunSample};
pub use fragment::{Fragment, FragmentBuilder};
pub use init::init_segment;

/// Errors of the fMP4 muxer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Fmp4Error {
    /// `init_segment` or `FragmentBuilder::new` got no tracks.
    #[error("no tracks to mux")]
    NoTracks,
    /// The codec (or a data track) has no fMP4 mapping here.
    #[error("track {track}: codec {codec:?} is not supported in fMP4")]
    UnsupportedCodec {
        /// Index of the track.
        track: usize,
        /// Its codec.
        codec: CodecId,
    },
    /// The track's `config` is empty or too short for its codec.
    #[error("track {track}: {codec:?} configuration record missing or truncated")]
    BadConfig {
        /// Index of the track.
        track: usize,
        /// Its codec.
        codec: CodecId,
    },
    /// A video track whose width and height are neither in `info` nor in its config.
    #[error("track {track}: picture size unknown")]
    MissingDimensions {
        /// Index of the track.
        track: usize,
    },
    /// A track timescale of zero.
    #[error("track {track}: timescale is 0")]
    ZeroTimescale {
        /// Index of the track.
        track: usize,
    },
    /// The avcC failed to parse.
    #[error(transparent)]
    H264(#[from] H264Error),
    /// The hvcC failed to parse.
    #[error(transparent)]
    H265(#[from] H265Error),
    /// The AudioSpecificConfig failed to parse.
    #[error(transparent)]
    Aac(#[from] AacError),
    /// The OpusHead failed to parse.
    #[error(transparent)]
    Opus(#[from] OpusError),
    /// `push` named a track the builder does not have.
    #[error("track index {index} out of range ({tracks} tracks)")]
    UnknownTrack {
        /// The index given.
        index: usize,
        /// How many tracks the builder has.
        tracks: usize,
    },
    /// A frame with a negative decode timestamp (`tfdt` is unsigned; rebase first).
    #[error("track {track}: negative dts {dts}")]
    NegativeDts {
        /// Index of the track.
        track: usize,
        /// The frame's dts, in the track timescale.
        dts: i64,
    },
    /// A frame whose dts is before the previous frame's.
    #[error("track {track}: dts went back from {previous} to {dts} (fMP4 ticks)")]
    DtsWentBack {
        /// Index of the track.
        track: usize,
        /// The previous rescaled dts.
        previous: i64,
        /// The new rescaled dts.
        dts: i64,
    },
    /// A NAL unit longer than the configured length prefix can say, or a sample over 4 GiB.
    #[error("track {track}: {len}-byte sample or NAL unit does not fit its size field")]
    SampleTooLarge {
        /// Index of the track.
        track: usize,
        /// The offending length.
        len: usize,
    },
    /// Box decoding: a box that is truncated, has trailing bytes, the wrong type or size,
    /// or a version this muxer does not read.
    #[error("malformed {} box at byte {offset}", String::from_utf8_lossy(.kind))]
    Malformed {
        /// The box type being read.
        kind: [u8; 4],
        /// Offset of the problem in the box.
        offset: usize,
    },
}

/// Timescale of video tracks in fMP4 output.
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// The fMP4 timescale of a track: 90 000 for video, the sample rate for audio (from `info`,
/// else from the AudioSpecificConfig), always 48 000 for Opus.
pub(crate) fn media_timescale(index: usize, track: &Track) -> Result<u32, Fmp4Error> {
    if track.timescale == 0 {
        return Err(Fmp4Error::ZeroTimescale { track: index });
    }
    let unsupported = Fmp4Error::UnsupportedCodec {
        track: index,
        codec: track.codec,
    };
    match (track.kind, track.codec) {
        (MediaKind::Video, CodecId::H264 | CodecId::H265 | CodecId::Av1) => Ok(VIDEO_TIMESCALE),
        (MediaKind::Audio, CodecId::Opus) => Ok(48_000),
        (MediaKind::Audio, CodecId::Aac) => {
            let rate = match track.info.sample_rate {
                Some(r) => r,
                None => AudioSpecificConfig::parse(&track.config)?.output_sample_rate(),
            };
            if rate == 0 {
                return Err(Fmp4Error::ZeroTimescale { track: index });
            }
            Ok(rate)
        }
        _ => Err(unsupported),
    }
}

/// Rescales `t` from timescale `from` to `to`, rounding to nearest (halves up).
pub(crate) fn rescale(t: i64, from: u32, to: u32) -> i64 {
    if from == to {
        return t;
    }
    let (from, to) = (i128::from(from), i128::from(to));
    let v = (i128::from(t) * to * 2 + from).div_euclid(2 * from);
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Writes a box: size placeholder, type, `body`, then patches the size.
pub(crate) fn write_box(buf: &mut BytesMut, kind: &[u8; 4], body: impl FnOnce(&mut BytesMut)) {
    let at = buf.len();
    buf.put_u32(0);
    buf.put_slice(kind);
    body(buf);
    // Boxes written here hold headers and codec configs, far below 4 GiB.
    let size = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&size.to_be_bytes());
}

/// Writes a full box (ISO/IEC 14496-12 4.2): like [`write_box`] with version and flags.
pub(crate) fn write_full_box(
    buf: &mut BytesMut,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut BytesMut),
) {
    write_box(buf, kind, |b| {
        b.put_u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
        body(b);
    });
}

/// The RFC 6381 `codecs` value of a track, when its codec has one here:
///
/// - H.264: `avc1.PPCCLL` from the first SPS in the avcC (profile, constraint flags, level).
/// - H.265: `hvc1.[A|B|C]P.C.{L|H}LL[.CC...]` from the hvcC (ISO/IEC 14496-15 E.3).
/// - AV1: `av01.P.LLT.DD` from the av1C (AV1 ISOBMFF binding, codecs parameter).
/// - AAC: `mp4a.40.N`, N the audio object type (5 or 29 with explicit SBR/PS signalling).
/// - Opus: `opus`.
pub fn cmaf_codecs_string(track: &Track) -> Option<String> {
    let c = &track.config;
    match track.codec {
        CodecId::H264 => {
            let rec = AvcDecoderConfig::parse(c).ok()?;
            let (p, f, l) = match rec.sps.first().filter(|s| s.len() >= 4) {
                Some(s) => (s[1], s[2], s[3]),
                None => (rec.profile, rec.compatibility, rec.level),
            };
            Some(format!("avc1.{p:02x}{f:02x}{l:02x}"))
        }
        CodecId::H265 => {
            if c.len() < 13 {
                return None;
            }
            let space = ["", "A", "B", "C"][usize::from(c[1] >> 6)];
            let tier = if c[1] & 0x20 != 0 { 'H' } else { 'L' };
            let compat = u32::from_be_bytes([c[2], c[3], c[4], c[5]]).reverse_bits();
            let mut s = format!("hvc1.{space}{}.{compat:x}.{tier}{}", c[1] & 0x1f, c[12]);
            let constraints = &c[6..12];
            let used = constraints
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |i| i + 1);
            for b in &constraints[..used] {
                s.push_str(&format!(".{b:X}"));
            }
            Some(s)
        }
        CodecId::Av1 => {
            if c.len() < 4 || c[0] & 0x80 == 0 {
                return None;
            }
            let (profile, level) = (c[1] >> 5, c[1] & 0x1f);
            let tier = if c[2] & 0x80 != 0 { 'H' } else { 'M' };
            let depth = match (c[2] & 0x40 != 0, c[2] & 0x20 != 0) {
                (false, _) => 8,
                (true, false) => 10,
                (true, true) => 12,
            };
            Some(format!("av01.{profile}.{level:02}{tier}.{depth:02}"))
        }
        CodecId::Aac => {
            let asc = AudioSpecificConfig::parse(c).ok()?;
            let ot = asc.extension_object_type.unwrap_or(asc.object_type);
            Some(format!("mp4a.40.{ot}"))
        }
        CodecId::Opus => Some("opus".to_owned()),
        _ => None,
    }
}

/// The MIME type of an fMP4 stream of `tracks` with its `codecs` parameter, for example
/// `video/mp4; codecs="avc1.64001f,mp4a.40.2"` (`audio/mp4` without video). Tracks without
/// a codecs value are left out of the list.
pub fn mime_codecs(tracks: &[Track]) -> String {
    let kind = if tracks.iter().any(|t| t.kind == MediaKind::Video) {
        "video/mp4"
    } else {
        "audio/mp4"
    };
    let codecs: Vec<String> = tracks.iter().filter_map(cmaf_codecs_string).collect();
    if codecs.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}; codecs=\"{}\"", codecs.join(","))
    }
}
