//! The movie-fragment boxes (ISO/IEC 14496-12 8.8), one type each, with the encoders the
//! muxer uses and decoders for tests and future readers.

use bytes::{BufMut, BytesMut};

use super::{write_box, Fmp4Error};

/// A bounds-checked big-endian reader over one box; errors name the box and the offset.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    kind: [u8; 4],
}

impl<'a> Reader<'a> {
    fn err(&self) -> Fmp4Error {
        Fmp4Error::Malformed {
            kind: self.kind,
            offset: self.pos,
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], Fmp4Error> {
        let s = self
            .data
            .get(self.pos..self.pos + n)
            .ok_or_else(|| self.err())?;
        self.pos += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, Fmp4Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, Fmp4Error> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }
    /// Version and flags of a full box; versions above `max` are an error.
    fn version_flags(&mut self, max: u8) -> Result<(u8, u32), Fmp4Error> {
        let v = self.u32()?;
        if (v >> 24) as u8 > max {
            return Err(Fmp4Error::Malformed {
                kind: self.kind,
                offset: self.pos - 4,
            });
        }
        Ok(((v >> 24) as u8, v & 0x00ff_ffff))
    }
}

/// A box type: its four-character code and body codec. Full boxes write their own version
/// and flags as the first body bytes.
pub trait Mp4Box: Sized {
    /// The box type.
    const KIND: [u8; 4];
    /// Appends the body (everything after the 8-byte header).
    fn encode_body(&self, buf: &mut BytesMut);
    /// Reads a body that spans exactly `body`; error offsets count from the body start.
    fn decode_body(body: &[u8]) -> Result<Self, Fmp4Error>;

    /// Appends the whole box.
    fn encode(&self, buf: &mut BytesMut) {
        write_box(buf, &Self::KIND, |b| self.encode_body(b));
    }

    /// Decodes one whole box that spans exactly `data`.
    fn decode(data: &[u8]) -> Result<Self, Fmp4Error> {
        let mut r = Reader {
            data,
            pos: 0,
            kind: Self::KIND,
        };
        let size = r.u32()? as usize;
        if r.take(4)? != Self::KIND || size != data.len() {
            return Err(Fmp4Error::Malformed {
                kind: Self::KIND,
                offset: 0,
            });
        }
        Self::decode_body(&data[8..]).map_err(|e| match e {
            Fmp4Error::Malformed { kind, offset } => Fmp4Error::Malformed {
                kind,
                offset: offset + 8,
            },
            e => e,
        })
    }
}

/// Runs a body decoder over `data` and checks that it read all of it.
fn read<T>(
    data: &[u8],
    kind: [u8; 4],
    f: impl FnOnce(&mut Reader<'_>) -> Result<T, Fmp4Error>,
) -> Result<T, Fmp4Error> {
    let mut r = Reader { data, pos: 0, kind };
    let v = f(&mut r)?;
    if r.pos != data.len() {
        return Err(r.err());
    }
    Ok(v)
}

/// Movie fragment header (8.8.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mfhd {
    /// `sequence_number`, increasing from fragment to fragment.
    pub sequence_number: u32,
}

impl Mp4Box for Mfhd {
    const KIND: [u8; 4] = *b"mfhd";
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u32(0);
        buf.put_u32(self.sequence_number);
    }
    fn decode_body(body: &[u8]) -> Result<Self, Fmp4Error> {
        read(body, Self::KIND, |r| {
            r.version_flags(0)?;
            Ok(Mfhd {
                sequence_number: r.u32()?,
            })
        })
    }
}

/// Track fragment header (8.8.7) as written here: flag `default-base-is-moof` (0x020000),
/// no defaults (every sample field is in the `trun`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tfhd {
    /// `track_ID`.
    pub track_id: u32,
}

impl Mp4Box for Tfhd {
    const KIND: [u8; 4] = *b"tfhd";
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u32(0x02_0000);
        buf.put_u32(self.track_id);
    }
    fn decode_body(body: &[u8]) -> Result<Self, Fmp4Error> {
        read(body, Self::KIND, |r| {
            let flags = r.version_flags(0)?.1;
            let track_id = r.u32()?;
            // Optional fields, in flag order: base_data_offset u64, then four u32 defaults.
            let optional = [(0x1, 8), (0x2, 4), (0x8, 4), (0x10, 4), (0x20, 4)];
            for (bit, len) in optional {
                if flags & bit != 0 {
                    r.take(len)?;
                }
            }
            Ok(Tfhd { track_id })
        })
    }
}

/// Track fragment decode time (8.8.12), written as version 1 (64 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tfdt {
    /// `baseMediaDecodeTime`: dts of the fragment's first sample, in media timescale ticks.
    pub base_media_decode_time: u64,
}

impl Mp4Box for Tfdt {
    const KIND: [u8; 4] = *b"tfdt";
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u32(1 << 24);
        buf.put_u64(self.base_media_decode_time);
    }
    fn decode_body(body: &[u8]) -> Result<Self, Fmp4Error> {
        read(body, Self::KIND, |r| {
            let base_media_decode_time = match r.version_flags(1)?.0 {
                0 => r.u32()?.into(),
                _ => r.u64()?,
            };
            Ok(Tfdt {
                base_media_decode_time,
            })
        })
    }
}

/// One sample of a [`Trun`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrunSample {
    /// Duration in media timescale ticks.
    pub duration: u32,
    /// Size in bytes.
    pub size: u32,
    /// Sample flags (8.8.3.1): dependency and sync bits.
    pub flags: u32,
    /// `pts - dts` in ticks (signed: `trun` version 1).
    pub composition_offset: i32,
}

/// Track fragment run (8.8.8), version 1: per-sample duration and size always, flags and
/// composition offsets when `sample_flags` / `composition_offsets` say.
///
/// ```text
/// sample_count u32 | [data_offset i32] | [first_sample_flags u32]
/// { [duration u32] [size u32] [flags u32] [composition_time_offset i32] }*
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trun {
    /// Offset of the first sample's bytes from the start of the `moof`.
    pub data_offset: Option<i32>,
    /// Whether each sample carries its flags.
    pub sample_flags: bool,
    /// Whether each sample carries a composition offset.
    pub composition_offsets: bool,
    /// The samples.
    pub samples: Vec<TrunSample>,
}

const TR_DATA_OFFSET: u32 = 0x001;
const TR_FIRST_FLAGS: u32 = 0x004;
const TR_DURATION: u32 = 0x100;
const TR_SIZE: u32 = 0x200;
const TR_FLAGS: u32 = 0x400;
const TR_CTO: u32 = 0x800;

impl Trun {
    /// Offset of `data_offset` from the start of the encoded box, for patching.
    pub const DATA_OFFSET_POS: usize = 16;
}

impl Mp4Box for Trun {
    const KIND: [u8; 4] = *b"trun";
    fn encode_body(&self, buf: &mut BytesMut) {
        let flags = TR_DURATION
            | TR_SIZE
            | if self.data_offset.is_some() {
                TR_DATA_OFFSET
            } else {
                0
            }
            | if self.sample_flags { TR_FLAGS } else { 0 }
            | if self.composition_offsets { TR_CTO } else { 0 };
        buf.put_u32((1 << 24) | flags);
        // A fragment never holds 2^32 samples: it is bounded by memory.
        buf.put_u32(self.samples.len() as u32);
        if let Some(o) = self.data_offset {
            buf.put_i32(o);
        }
        for s in &self.samples {
            buf.put_u32(s.duration);
            buf.put_u32(s.size);
            if self.sample_flags {
                buf.put_u32(s.flags);
            }
            if self.composition_offsets {
                buf.put_i32(s.composition_offset);
            }
        }
    }
    fn decode_body(body: &[u8]) -> Result<Self, Fmp4Error> {
        read(body, Self::KIND, |r| {
            let flags = r.version_flags(1)?.1;
            let count = r.u32()?;
            let opt = |r: &mut Reader<'_>, bit: u32| if flags & bit != 0 { r.u32() } else { Ok(0) };
            let data_offset = (flags & TR_DATA_OFFSET != 0).then(|| r.u32()).transpose()?;
            let first_flags = opt(r, TR_FIRST_FLAGS)?;
            let mut samples = Vec::with_capacity((count as usize).min(4096));
            for _ in 0..count {
                samples.push(TrunSample {
                    duration: opt(r, TR_DURATION)?,
                    size: opt(r, TR_SIZE)?,
                    flags: if flags & TR_FLAGS != 0 {
                        r.u32()?
                    } else {
                        first_flags
                    },
                    // Version 0 offsets are unsigned; none above i32::MAX occur in practice.
                    composition_offset: opt(r, TR_CTO)? as i32,
                });
            }
            Ok(Trun {
                data_offset: data_offset.map(|o| o as i32),
                sample_flags: flags & TR_FLAGS != 0,
                composition_offsets: flags & TR_CTO != 0,
                samples,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<B: Mp4Box + PartialEq + std::fmt::Debug>(b: B) {
        let mut buf = BytesMut::new();
        b.encode(&mut buf);
        assert_eq!(B::decode(&buf).unwrap(), b);
        for n in 0..buf.len() {
            assert!(B::decode(&buf[..n]).is_err(), "cut at {n}");
        }
        buf.put_u8(0);
        assert!(B::decode(&buf).is_err(), "trailing byte");
    }

    #[test]
    fn fragment_boxes_round_trip() {
        round_trip(Mfhd { sequence_number: 7 });
        round_trip(Tfhd { track_id: 2 });
        round_trip(Tfdt {
            base_media_decode_time: 1 << 40,
        });
        let s = |duration, size, flags, composition_offset| TrunSample {
            duration,
            size,
            flags,
            composition_offset,
        };
        let samples = vec![
            s(3000, 1234, 0x0200_0000, 6000),
            s(3000, 99, 0x0101_0000, -3000),
        ];
        round_trip(Trun {
            data_offset: Some(200),
            sample_flags: true,
            composition_offsets: true,
            samples,
        });
        let samples = vec![s(1024, 300, 0, 0), s(1024, 301, 0, 0)];
        round_trip(Trun {
            data_offset: None,
            sample_flags: false,
            composition_offsets: false,
            samples,
        });
        let mut buf = BytesMut::new();
        Mfhd { sequence_number: 1 }.encode(&mut buf);
        assert_eq!(
            Tfhd::decode(&buf),
            Err(Fmp4Error::Malformed {
                kind: *b"tfhd",
                offset: 0
            })
        );
    }
}
