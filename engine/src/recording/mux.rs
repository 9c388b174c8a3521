//! The two file formats, cut into chunks the recorder thread appends: fragmented MP4
//! (`ftyp moov`, then `moof mdat` per fragment) and FLV (header and sequence headers, then
//! tags). Media is never copied: chunks are lists of `Bytes`, the frames' own slices beside
//! small new headers.

use bytes::{BufMut, Bytes, BytesMut};
use zerocast_codecs::fmp4::{self, Fmp4Error, FragmentBuilder};
use zerocast_codecs::{flv, ByteRope, CodecId, Frame, MediaKind, Track};

use crate::config::RecordingFormat;

/// FLV tag types (FLV spec E.4.1).
const TAG_AUDIO: u8 = 8;
const TAG_VIDEO: u8 = 9;

/// One piece of a file, ready to append.
#[derive(Debug)]
pub(super) struct Chunk {
    pub parts: Vec<Bytes>,
    pub bytes: usize,
    /// Media time at its end, milliseconds from the start of the file.
    pub end_ms: i64,
}

/// Whether `track` can go into a file of `format`.
pub(super) fn recordable(format: RecordingFormat, track: &Track) -> bool {
    match (format, track.kind) {
        (_, MediaKind::Data) => false,
        (RecordingFormat::Flv, _) => true,
        (RecordingFormat::Fmp4, MediaKind::Video) => {
            matches!(track.codec, CodecId::H264 | CodecId::H265 | CodecId::Av1)
        }
        (RecordingFormat::Fmp4, MediaKind::Audio) => {
            matches!(track.codec, CodecId::Aac | CodecId::Opus)
        }
    }
}

/// A file's muxer.
pub(super) enum Mux {
    Fmp4(Fmp4Mux),
    Flv(FlvMux),
}

/// What a new file starts with.
pub(super) struct Header {
    pub parts: Vec<Bytes>,
    /// Offsets of the 32-bit millisecond durations to patch when the file is closed.
    pub duration_fields: Vec<u64>,
}

impl Mux {
    /// A muxer for `tracks` (in this order) and the file header.
    pub fn new(format: RecordingFormat, tracks: &[Track]) -> Result<(Mux, Header), Fmp4Error> {
        match format {
            RecordingFormat::Fmp4 => {
                let init = fmp4::init_segment(tracks)?;
                let builder = FragmentBuilder::new(tracks)?;
                let header = Header {
                    duration_fields: duration_fields(&init),
                    parts: vec![init],
                };
                Ok((
                    Mux::Fmp4(Fmp4Mux {
                        builder,
                        sequence: 1,
                        pending: 0,
                        end_ms: 0,
                    }),
                    header,
                ))
            }
            RecordingFormat::Flv => {
                let (mux, parts) = FlvMux::new(tracks);
                Ok((
                    Mux::Flv(mux),
                    Header {
                        parts,
                        duration_fields: Vec::new(),
                    },
                ))
            }
        }
    }

    /// Adds a frame (timestamps already rebased to the file's start) of track `index`.
    pub fn push(&mut self, index: usize, frame: &Frame) -> Result<(), Fmp4Error> {
        match self {
            Mux::Fmp4(m) => {
                m.builder.push(index, frame)?;
                m.pending += frame.payload.len();
                Ok(())
            }
            Mux::Flv(m) => {
                m.push_frame(index, frame);
                Ok(())
            }
        }
    }

    /// Adds an FLV tag body as it came (codecs zerocast does not model); ignored by fMP4.
    pub fn push_passthrough(&mut self, kind: MediaKind, timestamp_ms: u32, body: &ByteRope) {
        if let Mux::Flv(m) = self {
            m.push_tag(kind, timestamp_ms, body);
        }
    }

    /// Media bytes waiting for the next cut.
    pub fn pending_bytes(&self) -> usize {
        match self {
            Mux::Fmp4(m) => m.pending,
            Mux::Flv(m) => m.bytes,
        }
    }

    /// Cuts what is waiting into a chunk; `next` is the track and rebased dts of the frame
    /// that follows (so the last sample's duration is exact). `None` when nothing waits.
    pub fn cut(&mut self, next: Option<(usize, i64)>) -> Option<Chunk> {
        match self {
            Mux::Fmp4(m) => m.cut(next),
            Mux::Flv(m) => m.cut(),
        }
    }
}

pub(super) struct Fmp4Mux {
    builder: FragmentBuilder,
    sequence: u32,
    pending: usize,
    end_ms: i64,
}

impl Fmp4Mux {
    fn cut(&mut self, next: Option<(usize, i64)>) -> Option<Chunk> {
        if self.builder.is_empty() {
            return None;
        }
        if let Some((index, dts)) = next {
            // The index came from this file's track list, so it is in range.
            let _ = self.builder.set_next_dts(index, dts);
        }
        let f = self.builder.finish(self.sequence);
        self.sequence = self.sequence.wrapping_add(1);
        self.pending = 0;
        self.end_ms = self.end_ms.max(f.start_ms + f.duration_ms);
        let bytes = f.size();
        let mut parts = Vec::with_capacity(1 + f.payload.parts().len());
        parts.push(f.header);
        parts.extend(f.payload.into_parts());
        Some(Chunk {
            parts,
            bytes,
            end_ms: self.end_ms,
        })
    }
}

/// FLV tags: for each, an 11-byte tag header and the 4-byte PreviousTagSize after the body,
/// written beside the body's shared slices. All the small headers of one chunk come from
/// one growing allocation.
pub(super) struct FlvMux {
    tracks: Vec<Track>,
    parts: Vec<Bytes>,
    framing: BytesMut,
    bytes: usize,
    /// Per kind (video, audio): last tag time and the step before it, milliseconds.
    clock: [(Option<i64>, i64); 2],
}

impl FlvMux {
    fn new(tracks: &[Track]) -> (FlvMux, Vec<Bytes>) {
        let has = |k| tracks.iter().any(|t| t.kind == k);
        let mut head = BytesMut::with_capacity(13);
        head.put_slice(b"FLV\x01");
        // TypeFlags: audio 0x04, video 0x01 (FLV spec E.2).
        head.put_u8(
            if has(MediaKind::Audio) { 0x04 } else { 0 }
                | if has(MediaKind::Video) { 0x01 } else { 0 },
        );
        head.put_u32(9); // DataOffset: header size
        head.put_u32(0); // PreviousTagSize0
        let mut mux = FlvMux {
            tracks: tracks.to_vec(),
            parts: vec![head.freeze()],
            framing: BytesMut::new(),
            bytes: 0,
            clock: [(None, 0); 2],
        };
        for t in tracks {
            let header = match t.kind {
                MediaKind::Video => flv::video_sequence_header(t),
                _ => flv::audio_sequence_header(t),
            };
            if !header.is_empty() {
                mux.push_tag(t.kind, 0, &header.into());
            }
        }
        let parts = std::mem::take(&mut mux.parts);
        mux.bytes = 0;
        mux.clock = [(None, 0); 2];
        (mux, parts)
    }

    fn push_frame(&mut self, index: usize, frame: &Frame) {
        let Some(track) = self.tracks.get(index) else {
            return;
        };
        let mut body = ByteRope::new();
        match track.kind {
            MediaKind::Video => flv::video_body(track, frame, &mut body),
            MediaKind::Audio => flv::audio_body(track, frame, &mut body),
            MediaKind::Data => return,
        }
        let ms = rescale_ms(frame.dts, track.timescale);
        let kind = track.kind;
        self.push_tag(kind, ms.clamp(0, i64::from(u32::MAX)) as u32, &body);
    }

    fn push_tag(&mut self, kind: MediaKind, ms: u32, body: &ByteRope) {
        let (tag_type, clock) = match kind {
            MediaKind::Video => (TAG_VIDEO, 0),
            MediaKind::Audio => (TAG_AUDIO, 1),
            MediaKind::Data => return,
        };
        // DataSize is 24 bits; bodies that large cannot come from RTMP (message lengths are
        // 24 bits too), so clamping only guards the arithmetic.
        let size = body.len().min(0xff_ffff) as u32;
        if self.framing.capacity() < 15 {
            // One allocation for the headers of many tags.
            self.framing.reserve(15 * 128);
        }
        self.framing.put_u8(tag_type);
        self.framing.put_uint(u64::from(size), 3);
        self.framing.put_uint(u64::from(ms & 0xff_ffff), 3);
        self.framing.put_u8((ms >> 24) as u8); // TimestampExtended
        self.framing.put_uint(0, 3); // StreamID
        self.parts.push(self.framing.split().freeze());
        self.parts.extend(body.parts().iter().cloned());
        self.framing.put_u32(11 + size);
        self.parts.push(self.framing.split().freeze());
        self.bytes += 15 + body.len();
        let (last, step) = &mut self.clock[clock];
        let ms = i64::from(ms);
        if let Some(l) = *last {
            if ms > l {
                *step = ms - l;
            }
        }
        *last = Some(last.map_or(ms, |l| l.max(ms)));
    }

    fn cut(&mut self) -> Option<Chunk> {
        if self.parts.is_empty() {
            return None;
        }
        let end_ms = self
            .clock
            .iter()
            .filter_map(|(last, step)| last.map(|l| l + step))
            .max()
            .unwrap_or(0);
        let bytes = std::mem::take(&mut self.bytes);
        Some(Chunk {
            parts: std::mem::take(&mut self.parts),
            bytes,
            end_ms,
        })
    }
}

/// `t` ticks of `timescale` in milliseconds, rounded down.
pub(super) fn rescale_ms(t: i64, timescale: u32) -> i64 {
    if timescale == 1000 || timescale == 0 {
        return t;
    }
    (i128::from(t) * 1000 / i128::from(timescale)) as i64
}

/// Offsets in an init segment of the 32-bit duration fields in the movie timescale (ms, as
/// [`fmp4::init_segment`] writes it): `mvhd` and each `tkhd`, version 0 only.
pub(super) fn duration_fields(init: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let boxes = |data: &[u8], base: usize| -> Vec<(usize, [u8; 4], usize)> {
        let mut v = Vec::new();
        let mut pos = 0;
        while pos + 8 <= data.len() {
            let size = u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]])
                as usize;
            if size < 8 || pos + size > data.len() {
                break;
            }
            let kind = [data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]];
            v.push((base + pos, kind, size));
            pos += size;
        }
        v
    };
    for (at, kind, size) in boxes(init, 0) {
        if &kind != b"moov" {
            continue;
        }
        for (at, kind, size) in boxes(&init[at + 8..at + size], at + 8) {
            match &kind {
                // version(1) flags(3) creation(4) modification(4) timescale(4) duration(4)
                b"mvhd" if size >= 28 && init[at + 8] == 0 => out.push(at as u64 + 24),
                b"trak" => {
                    for (at, kind, size) in boxes(&init[at + 8..at + size], at + 8) {
                        // version/flags(4) creation(4) modification(4) track_ID(4)
                        // reserved(4) duration(4)
                        if &kind == b"tkhd" && size >= 32 && init[at + 8] == 0 {
                            out.push(at as u64 + 28);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}
