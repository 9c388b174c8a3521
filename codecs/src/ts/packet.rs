//! The transport stream packet (ISO/IEC 13818-1 2.4.3.2) and its adaptation field (2.4.3.4).
//!
//! ```text
//! sync_byte 0x47 | TEI u1, PUSI u1, priority u1, PID u13 | scrambling u2, AFC u2, CC u4
//! [adaptation_field: length u8 | flags u8 (discontinuity, random_access, ..., PCR_flag)
//!  | PCR: base u33, reserved u6, extension u9 | ... | stuffing 0xFF*]  [payload]
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use super::{Reader, TsError, PACKET_SIZE, SYNC_BYTE};

/// The PID of the program association table.
pub const PAT_PID: u16 = 0;
/// The PID of null packets.
pub const NULL_PID: u16 = 0x1fff;

/// The 4-byte packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketHeader {
    /// `transport_error_indicator`: the link layer flagged the packet as damaged.
    pub error: bool,
    /// `payload_unit_start_indicator`: a PES packet or PSI section starts in this packet.
    pub unit_start: bool,
    /// The 13-bit `PID`.
    pub pid: u16,
    /// `transport_scrambling_control` (0: clear).
    pub scrambling: u8,
    /// `adaptation_field_control` bit 1: an adaptation field follows the header.
    pub has_adaptation: bool,
    /// `adaptation_field_control` bit 0: the packet carries payload.
    pub has_payload: bool,
    /// `continuity_counter`, incremented per payload-carrying packet of a PID.
    pub cc: u8,
}

impl PacketHeader {
    /// Decodes the header from the first four bytes of a packet.
    pub fn decode(b: [u8; 4], base: u64) -> Result<Self, TsError> {
        if b[0] != SYNC_BYTE {
            return Err(TsError::Invalid {
                offset: base,
                what: "sync_byte is not 0x47",
            });
        }
        let afc = (b[3] >> 4) & 3;
        if afc == 0 {
            return Err(TsError::Invalid {
                offset: base + 3,
                what: "adaptation_field_control '00' is reserved",
            });
        }
        Ok(PacketHeader {
            error: b[1] & 0x80 != 0,
            unit_start: b[1] & 0x40 != 0,
            pid: u16::from_be_bytes([b[1] & 0x1f, b[2]]),
            scrambling: b[3] >> 6,
            has_adaptation: afc & 2 != 0,
            has_payload: afc & 1 != 0,
            cc: b[3] & 0xf,
        })
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; 4] {
        let afc = (u8::from(self.has_adaptation) << 1) | u8::from(self.has_payload);
        [
            SYNC_BYTE,
            (u8::from(self.error) << 7)
                | (u8::from(self.unit_start) << 6)
                | (self.pid >> 8) as u8 & 0x1f,
            self.pid as u8,
            (self.scrambling << 6) | (afc << 4) | (self.cc & 0xf),
        ]
    }
}

/// The adaptation field fields zerocast reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdaptationField {
    /// `discontinuity_indicator`.
    pub discontinuity: bool,
    /// `random_access_indicator`: a decoder can start at this packet.
    pub random_access: bool,
    /// `program_clock_reference` in 27 MHz ticks (base × 300 + extension).
    pub pcr: Option<u64>,
}

impl AdaptationField {
    /// Bytes needed, length byte included.
    pub fn min_len(&self) -> usize {
        if self.pcr.is_some() {
            8
        } else if self.discontinuity || self.random_access {
            2
        } else {
            1
        }
    }

    /// Decodes the field body (after `adaptation_field_length`).
    pub fn decode_body(body: &[u8], base: u64) -> Result<Self, TsError> {
        let mut r = Reader::new(body, base);
        if body.is_empty() {
            return Ok(AdaptationField::default());
        }
        let flags = r.u8("adaptation field flags")?;
        let pcr = if flags & 0x10 != 0 {
            let b = r.take(6, "PCR overruns adaptation_field_length")?;
            let base = (u64::from(b[0]) << 25)
                | (u64::from(b[1]) << 17)
                | (u64::from(b[2]) << 9)
                | (u64::from(b[3]) << 1)
                | u64::from(b[4] >> 7);
            let ext = (u64::from(b[4] & 1) << 8) | u64::from(b[5]);
            Some(base * 300 + ext)
        } else {
            None
        };
        Ok(AdaptationField {
            discontinuity: flags & 0x80 != 0,
            random_access: flags & 0x40 != 0,
            pcr,
        })
    }

    /// Writes exactly `len` bytes (length byte included, `len >= self.min_len()`), padding
    /// with stuffing bytes.
    pub fn encode(&self, len: usize, out: &mut BytesMut) {
        debug_assert!(len >= self.min_len() && len <= PACKET_SIZE - 4);
        out.put_u8((len - 1) as u8);
        if len == 1 {
            return;
        }
        let flags = (u8::from(self.discontinuity) << 7)
            | (u8::from(self.random_access) << 6)
            | (u8::from(self.pcr.is_some()) << 4);
        out.put_u8(flags);
        let mut used = 2;
        if let Some(pcr) = self.pcr {
            let (base, ext) = ((pcr / 300) & ((1 << 33) - 1), pcr % 300);
            out.put_u32((base >> 1) as u32);
            out.put_u8(((base as u8 & 1) << 7) | 0x7e | (ext >> 8) as u8);
            out.put_u8(ext as u8);
            used += 6;
        }
        out.put_bytes(0xff, len - used);
    }
}

/// One parsed packet; the payload is a slice of the packet (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The header.
    pub header: PacketHeader,
    /// The adaptation field, when present.
    pub adaptation: Option<AdaptationField>,
    /// The payload bytes (empty when none).
    pub payload: Bytes,
}

impl Packet {
    /// Parses one packet from the first 188 bytes of `data`; `base` is its stream offset.
    pub fn parse(data: &Bytes, base: u64) -> Result<Packet, TsError> {
        if data.len() < PACKET_SIZE {
            return Err(TsError::Incomplete {
                needed: PACKET_SIZE - data.len(),
            });
        }
        let header = PacketHeader::decode([data[0], data[1], data[2], data[3]], base)?;
        let mut start = 4;
        let mut adaptation = None;
        if header.has_adaptation {
            let len = usize::from(data[4]);
            let max = if header.has_payload { 182 } else { 183 };
            if len > max || (!header.has_payload && len != 183) {
                return Err(TsError::Invalid {
                    offset: base + 4,
                    what: "adaptation_field_length does not fit the packet",
                });
            }
            adaptation = Some(AdaptationField::decode_body(&data[5..5 + len], base + 5)?);
            start = 5 + len;
        }
        let payload = if header.has_payload {
            data.slice(start..PACKET_SIZE)
        } else {
            Bytes::new()
        };
        Ok(Packet {
            header,
            adaptation,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_pcr_and_stuffing() {
        let h = PacketHeader {
            unit_start: true,
            pid: 0x1fe,
            has_adaptation: true,
            has_payload: true,
            cc: 9,
            ..Default::default()
        };
        let af = AdaptationField {
            random_access: true,
            pcr: Some(12_345_678_901),
            ..Default::default()
        };
        let mut b = BytesMut::new();
        b.put_slice(&h.encode());
        af.encode(20, &mut b);
        b.put_bytes(0xab, PACKET_SIZE - b.len());
        let p = Packet::parse(&b.freeze(), 0).unwrap();
        assert_eq!(
            (p.header, p.adaptation, p.payload.len()),
            (h, Some(af), 164)
        );
        let mut bad = p.header.encode();
        bad[3] &= 0xcf;
        assert!(matches!(
            PacketHeader::decode(bad, 7),
            Err(TsError::Invalid { offset: 10, .. })
        ));
    }
}
