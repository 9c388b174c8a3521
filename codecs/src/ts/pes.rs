//! PES packet headers (ISO/IEC 13818-1 2.4.3.6) and their 33-bit timestamps (2.4.3.7).
//!
//! ```text
//! packet_start_code_prefix 0x000001 | stream_id u8 | PES_packet_length u16 (0: unbounded video)
//! '10' scrambling u2 priority alignment copyright original | PTS_DTS_flags u2 ... u6
//! PES_header_data_length u8 | [PTS: '001x' ts[32..30] 1 ts[29..15] 1 ts[14..0] 1] [DTS: '0001' ...]
//! ```

use bytes::{BufMut, BytesMut};

use super::TsError;
use crate::rope::ByteRope;

/// The mask of 33-bit timestamps.
pub const TIMESTAMP_MASK: u64 = (1 << 33) - 1;
/// `stream_id` of the first video stream.
pub const STREAM_ID_VIDEO: u8 = 0xe0;
/// `stream_id` of the first MPEG audio stream.
pub const STREAM_ID_AUDIO: u8 = 0xc0;
/// `stream_id` of private_stream_1 (Opus).
pub const STREAM_ID_PRIVATE_1: u8 = 0xbd;

/// The fields of a PES header zerocast uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PesHeader {
    /// `stream_id`.
    pub stream_id: u8,
    /// `PES_packet_length`: bytes after this field, or 0 for an unbounded video PES.
    pub packet_length: u16,
    /// Presentation timestamp, 90 kHz, 33 bits.
    pub pts: Option<u64>,
    /// Decode timestamp, 90 kHz, 33 bits (only with a PTS).
    pub dts: Option<u64>,
}

/// True for stream ids whose PES packets have no optional header (Table 2-21 conditions).
fn has_no_optional_header(stream_id: u8) -> bool {
    matches!(
        stream_id,
        0xbc | 0xbe | 0xbf | 0xf0 | 0xf1 | 0xf2 | 0xf8 | 0xff
    )
}

fn read_timestamp(b: &[u8], prefix: u8, offset: u64) -> Result<u64, TsError> {
    if b[0] >> 4 != prefix || b[0] & 1 == 0 || b[2] & 1 == 0 || b[4] & 1 == 0 {
        return Err(TsError::Invalid {
            offset,
            what: "PTS/DTS prefix or marker_bit wrong",
        });
    }
    Ok((u64::from(b[0] >> 1 & 7) << 30)
        | (u64::from(b[1]) << 22)
        | (u64::from(b[2] >> 1) << 15)
        | (u64::from(b[3]) << 7)
        | u64::from(b[4] >> 1))
}

fn write_timestamp(out: &mut BytesMut, prefix: u8, ts: u64) {
    let ts = ts & TIMESTAMP_MASK;
    out.put_u8((prefix << 4) | ((ts >> 29) as u8 & 0x0e) | 1);
    out.put_u16((((ts >> 14) as u16) & 0xfffe) | 1);
    out.put_u16(((ts << 1) as u16) | 1);
}

impl PesHeader {
    /// Decodes the header at the start of `pes`; returns it and its length in bytes.
    pub fn decode(pes: &ByteRope, base: u64) -> Result<(PesHeader, usize), TsError> {
        let mut fixed = [0u8; 9];
        let n = pes.len().min(9);
        let mut r = pes.reader();
        for b in fixed.iter_mut().take(n) {
            *b = r.u8().unwrap_or(0); // In bounds: n <= pes.len().
        }
        if n < 6 {
            return Err(TsError::Incomplete { needed: 6 - n });
        }
        if fixed[..3] != [0, 0, 1] {
            return Err(TsError::Invalid {
                offset: base,
                what: "packet_start_code_prefix is not 0x000001",
            });
        }
        let stream_id = fixed[3];
        let packet_length = u16::from_be_bytes([fixed[4], fixed[5]]);
        let mut h = PesHeader {
            stream_id,
            packet_length,
            pts: None,
            dts: None,
        };
        if has_no_optional_header(stream_id) {
            return Ok((h, 6));
        }
        if n < 9 {
            return Err(TsError::Incomplete { needed: 9 - n });
        }
        if fixed[6] >> 6 != 2 {
            return Err(TsError::Invalid {
                offset: base + 6,
                what: "PES header marker bits are not '10'",
            });
        }
        let flags = fixed[7] >> 6;
        let hdl = usize::from(fixed[8]);
        if packet_length != 0 && usize::from(packet_length) < 3 + hdl {
            return Err(TsError::Invalid {
                offset: base + 4,
                what: "PES_packet_length shorter than its header",
            });
        }
        let need = match flags {
            0 => 0,
            2 => 5,
            3 => 10,
            _ => {
                return Err(TsError::Invalid {
                    offset: base + 7,
                    what: "PTS_DTS_flags '01' is forbidden",
                })
            }
        };
        if hdl < need {
            return Err(TsError::Invalid {
                offset: base + 8,
                what: "PES_header_data_length too short for PTS/DTS",
            });
        }
        if pes.len() < 9 + hdl {
            return Err(TsError::Incomplete {
                needed: 9 + hdl - pes.len(),
            });
        }
        let ts = pes.slice(9, need).unwrap_or_default().to_contiguous();
        if need >= 5 {
            h.pts = Some(read_timestamp(&ts[..5], flags, base + 9)?);
        }
        if need == 10 {
            h.dts = Some(read_timestamp(&ts[5..], 1, base + 14)?);
        }
        Ok((h, 9 + hdl))
    }

    /// Header length as [`encode`](Self::encode) writes it.
    pub fn encoded_len(&self) -> usize {
        9 + if self.dts.is_some() {
            10
        } else if self.pts.is_some() {
            5
        } else {
            0
        }
    }

    /// Writes the header for `payload_len` bytes of payload; `PES_packet_length` becomes 0
    /// when it does not fit 16 bits (allowed for video only). `packet_length` is ignored.
    pub fn encode(&self, payload_len: usize, out: &mut BytesMut) {
        let hdl = self.encoded_len() - 9;
        let len = u16::try_from(3 + hdl + payload_len).unwrap_or(0);
        out.put_slice(&[0, 0, 1, self.stream_id]);
        out.put_u16(len);
        out.put_u8(0x84); // '10', data_alignment_indicator
        let flags = match (self.pts, self.dts) {
            (Some(_), Some(_)) => 3,
            (Some(_), None) => 2,
            _ => 0,
        };
        out.put_u8(flags << 6);
        out.put_u8(hdl as u8);
        if let Some(pts) = self.pts {
            write_timestamp(out, flags, pts);
        }
        if let Some(dts) = self.dts.filter(|_| self.pts.is_some()) {
            write_timestamp(out, 1, dts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rules() {
        let h = PesHeader {
            stream_id: 0xe0,
            packet_length: 0,
            pts: Some(TIMESTAMP_MASK),
            dts: Some(0x1_2345_6789),
        };
        let mut b = BytesMut::new();
        h.encode(70_000, &mut b);
        let rope = ByteRope::from(b.freeze());
        assert_eq!(PesHeader::decode(&rope, 0).unwrap(), (h, 19));
        let split = {
            let mut r = rope.slice(0, 10).unwrap();
            r.append(&rope.slice(10, 9).unwrap());
            r
        };
        assert_eq!(PesHeader::decode(&split, 0).unwrap().1, 19);
        assert_eq!(
            PesHeader::decode(&rope.slice(0, 12).unwrap(), 0),
            Err(TsError::Incomplete { needed: 7 })
        );
        let mut short = rope.to_contiguous().to_vec();
        short[4..6].copy_from_slice(&[0, 5]);
        assert!(matches!(
            PesHeader::decode(&ByteRope::from(short), 100),
            Err(TsError::Invalid { offset: 104, .. })
        ));
    }
}
