//! MPEG-2 transport stream (ISO/IEC 13818-1), the container of SRT and HLS.
//!
//! - [`packet`]: the 188-byte packet header and adaptation field (2.4.3.2, 2.4.3.4).
//! - [`psi`]: the program association and program map tables (2.4.4), CRC-checked.
//! - [`pes`]: PES packet headers and their 33-bit timestamps (2.4.3.6, 2.4.3.7).
//! - [`Demuxer`]: sans-IO, bytes in any split → [`DemuxEvent`]s in the media model.
//! - [`Muxer`]: frames → TS packets written beside the frames' shared payload slices.
//!
//! # Timestamps
//!
//! PTS/DTS are 33-bit counters of a 90 kHz clock that wrap about every 26.5 hours. The
//! demuxer unwraps them into an `i64` by taking, for each new value, the candidate nearest to
//! the last timestamp seen on any PID, then converts to milliseconds (rounding down) for the
//! [`Frame`](crate::Frame)s; demuxed tracks have `timescale` 1000, as RTMP does. The muxer
//! converts a frame's timestamps from its track's timescale to 90 kHz and writes them modulo
//! 2^33, so a millisecond timestamp survives mux → demux exactly.
//!
//! # Programs and streams
//!
//! The demuxer follows the first program of the PAT and, in its PMT, the first video stream
//! (H.264 `0x1B`, H.265 `0x24`) and the first audio stream (AAC ADTS `0x0F`, Opus as private
//! data `0x06` with an `Opus` registration descriptor). Other streams are ignored, so a frame's
//! [`crate::MediaKind`] tells which track it belongs to.

use crate::aac::AacError;
use crate::h264::H264Error;
use crate::media::{CodecId, MediaKind};

mod demux;
mod mux;
pub mod packet;
pub mod pes;
pub mod psi;
#[cfg(test)]
mod tests;

pub use demux::{DemuxConfig, DemuxEvent, Demuxer};
pub use mux::Muxer;

/// Size of a transport stream packet.
pub const PACKET_SIZE: usize = 188;
/// The sync byte that starts every packet.
pub const SYNC_BYTE: u8 = 0x47;
/// The 90 kHz clock of PTS, DTS and the PCR base.
pub const CLOCK_HZ: i64 = 90_000;

/// `stream_type` values (ISO/IEC 13818-1 Table 2-34 and its amendments) zerocast handles.
pub mod stream_type {
    /// PES packets with private data (Opus, with a registration descriptor).
    pub const PRIVATE_PES: u8 = 0x06;
    /// AAC in ADTS (ISO/IEC 13818-7).
    pub const AAC_ADTS: u8 = 0x0f;
    /// H.264 / AVC, Annex-B.
    pub const H264: u8 = 0x1b;
    /// H.265 / HEVC, Annex-B.
    pub const H265: u8 = 0x24;
}

/// Errors of the transport stream parsers, demuxer and muxer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TsError {
    /// A structure parsed on its own (a section, a PES header) needs more bytes.
    #[error("incomplete: need {needed} more bytes")]
    Incomplete {
        /// Bytes missing.
        needed: usize,
    },
    /// A field breaks a rule of the specification. `offset` counts bytes from the start of
    /// the stream (demuxer) or of the structure (standalone parsers).
    #[error("invalid transport stream at byte {offset}: {what}")]
    Invalid {
        /// Offset of the offending byte.
        offset: u64,
        /// The rule that was broken.
        what: &'static str,
    },
    /// A PSI section's CRC_32 does not match its bytes.
    #[error("section CRC_32 mismatch on PID {pid:#x} at byte {offset}: computed {computed:#010x}, found {found:#010x}")]
    Crc {
        /// PID of the section.
        pid: u16,
        /// Offset of the section's first byte.
        offset: u64,
        /// CRC computed over the section.
        computed: u32,
        /// CRC carried by the section.
        found: u32,
    },
    /// A PES packet grew past [`DemuxConfig::max_pes_size`].
    #[error(
        "PES on PID {pid:#x} at byte {offset} reached {size} bytes, over the {max}-byte limit"
    )]
    PesTooLarge {
        /// PID of the PES.
        pid: u16,
        /// Offset of the packet that crossed the limit.
        offset: u64,
        /// Size reached.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// No two sync bytes 188 bytes apart within [`DemuxConfig::max_resync`] bytes.
    #[error("no transport stream sync in {skipped} bytes before byte {offset}")]
    NoSync {
        /// Offset where the search gave up.
        offset: u64,
        /// Bytes skipped.
        skipped: usize,
    },
    /// An H.264 parameter set in the stream did not parse.
    #[error("H.264 parameter set at byte {offset}: {source}")]
    H264 {
        /// Offset of the PES packet that carried it.
        offset: u64,
        /// The parser's error.
        source: H264Error,
    },
    /// An ADTS header did not parse or cannot be written.
    #[error("ADTS at byte {offset}: {source}")]
    Aac {
        /// Offset of the PES packet (demuxer) or 0 (muxer).
        offset: u64,
        /// The parser's error.
        source: AacError,
    },
    /// The muxer has no track of a frame's kind.
    #[error("no {kind:?} track to mux this frame into")]
    NoTrack {
        /// The frame's kind.
        kind: MediaKind,
    },
    /// The muxer cannot carry this codec, or the frame's payload shape does not fit it.
    #[error("cannot mux {codec:?} into MPEG-TS: {what}")]
    Unsupported {
        /// The codec.
        codec: CodecId,
        /// Why.
        what: &'static str,
    },
}

/// CRC-32/MPEG-2 (ISO/IEC 13818-1 Annex A): polynomial 0x04C11DB7, initial value all ones,
/// no reflection, no final XOR. A section followed by its CRC_32 gives 0.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A bounds-checked big-endian reader over one structure; a read past its end is
/// [`TsError::Invalid`] naming the field, at `base` + position.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    base: u64,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8], base: u64) -> Self {
        Reader { data, pos: 0, base }
    }
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }
    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    pub(crate) fn invalid(&self, what: &'static str) -> TsError {
        TsError::Invalid {
            offset: self.offset(),
            what,
        }
    }
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], TsError> {
        if self.remaining() < n {
            return Err(self.invalid(what));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// A reader over the next `n` bytes, with offsets that continue this one's.
    pub(crate) fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, TsError> {
        let base = self.offset();
        Ok(Reader::new(self.take(n, what)?, base))
    }
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, TsError> {
        Ok(self.take(1, what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, TsError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
}
