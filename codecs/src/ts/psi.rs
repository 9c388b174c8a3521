//! Program specific information (ISO/IEC 13818-1 2.4.4): the program association table
//! (2.4.4.3), the program map table (2.4.4.8), long-form section framing with CRC_32, and the
//! reassembly of sections from packet payloads (`pointer_field`, 2.4.4.2).
//!
//! ```text
//! table_id u8 | syntax_indicator u1, '0', reserved u2, section_length u12
//! table_id_extension u16 | reserved u2, version u5, current_next u1
//! section_number u8 | last_section_number u8 | body | CRC_32 u32
//! ```

use super::{crc32, Reader, TsError};

/// `table_id` of the PAT.
pub const PAT_TABLE_ID: u8 = 0x00;
/// `table_id` of the PMT.
pub const PMT_TABLE_ID: u8 = 0x02;
/// Largest `section_length` of a PAT or PMT.
pub const MAX_SECTION_LENGTH: usize = 1021;

/// Checks framing and CRC of the section at the start of `data`; returns the
/// `table_id_extension`, `version_number` and a reader over the body.
fn decode_section(
    data: &[u8],
    table_id: u8,
    pid: u16,
    base: u64,
) -> Result<(u16, u8, Reader<'_>), TsError> {
    if data.len() < 3 {
        return Err(TsError::Incomplete {
            needed: 3 - data.len(),
        });
    }
    let len = usize::from(u16::from_be_bytes([data[1], data[2]]) & 0xfff);
    let invalid = |at: u64, what| TsError::Invalid {
        offset: base + at,
        what,
    };
    if len > MAX_SECTION_LENGTH {
        return Err(invalid(1, "section_length over 1021"));
    }
    if data.len() < 3 + len {
        return Err(TsError::Incomplete {
            needed: 3 + len - data.len(),
        });
    }
    if len < 9 {
        return Err(invalid(
            1,
            "section_length shorter than a long-form header and CRC_32",
        ));
    }
    let section = &data[..3 + len];
    let (covered, crc) = section.split_at(len - 1);
    let found = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc32(covered);
    if computed != found {
        return Err(TsError::Crc {
            pid,
            offset: base,
            computed,
            found,
        });
    }
    if section[0] != table_id {
        return Err(invalid(0, "unexpected table_id on this PID"));
    }
    if section[1] & 0x80 == 0 {
        return Err(invalid(1, "section_syntax_indicator is 0"));
    }
    let ext = u16::from_be_bytes([section[3], section[4]]);
    Ok((
        ext,
        (section[5] >> 1) & 0x1f,
        Reader::new(&section[8..len - 1], base + 8),
    ))
}

/// Writes a long-form section: header, `body`, patched `section_length`, CRC_32.
fn encode_section(table_id: u8, ext: u16, version: u8, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut s = vec![table_id, 0, 0];
    s.extend_from_slice(&ext.to_be_bytes());
    s.extend_from_slice(&[0xc1 | ((version & 0x1f) << 1), 0, 0]);
    body(&mut s);
    let len = (s.len() + 4 - 3) as u16;
    s[1] = 0xb0 | (len >> 8) as u8;
    s[2] = len as u8;
    let crc = crc32(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    s
}

/// One program of the PAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatEntry {
    /// `program_number` (0 names the network information PID).
    pub program_number: u16,
    /// The PID of the program's PMT (or of the NIT for program 0).
    pub pid: u16,
}

/// The program association table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pat {
    /// `transport_stream_id`.
    pub transport_stream_id: u16,
    /// `version_number`.
    pub version: u8,
    /// The programs.
    pub programs: Vec<PatEntry>,
}

impl Pat {
    /// Decodes and CRC-checks a PAT section; `base` is its offset for error messages.
    pub fn decode(section: &[u8], base: u64) -> Result<Pat, TsError> {
        let (transport_stream_id, version, mut r) = decode_section(section, PAT_TABLE_ID, 0, base)?;
        let mut programs = Vec::with_capacity(r.remaining() / 4);
        while r.remaining() > 0 {
            let program_number = r.u16("PAT entry truncated")?;
            let pid = r.u16("PAT entry truncated")? & 0x1fff;
            programs.push(PatEntry {
                program_number,
                pid,
            });
        }
        Ok(Pat {
            transport_stream_id,
            version,
            programs,
        })
    }

    /// Encodes the section.
    pub fn encode(&self) -> Vec<u8> {
        encode_section(PAT_TABLE_ID, self.transport_stream_id, self.version, |s| {
            for p in &self.programs {
                s.extend_from_slice(&p.program_number.to_be_bytes());
                s.extend_from_slice(&(0xe000 | p.pid).to_be_bytes());
            }
        })
    }
}

/// One elementary stream of a PMT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmtStream {
    /// `stream_type` (see [`super::stream_type`]).
    pub stream_type: u8,
    /// `elementary_PID`.
    pub pid: u16,
    /// The ES_info descriptor loop, raw.
    pub descriptors: Vec<u8>,
}

/// The program map table of one program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pmt {
    /// `program_number`.
    pub program_number: u16,
    /// `version_number`.
    pub version: u8,
    /// `PCR_PID`.
    pub pcr_pid: u16,
    /// The program_info descriptor loop, raw.
    pub program_info: Vec<u8>,
    /// The elementary streams.
    pub streams: Vec<PmtStream>,
}

/// Checks a descriptor loop: `{ tag u8, length u8, body }*` with nothing trailing.
fn check_descriptors(mut r: Reader<'_>) -> Result<Vec<u8>, TsError> {
    let all = r.take(r.remaining(), "descriptor loop")?.to_vec();
    let mut d = Reader::new(&all, r.offset() - all.len() as u64);
    while d.remaining() > 0 {
        d.u8("descriptor_tag")?;
        let len = d.u8("descriptor_length missing")?;
        d.take(usize::from(len), "descriptor overruns its loop")?;
    }
    Ok(all)
}

/// The body of the first descriptor with `tag` in a (checked) descriptor loop.
pub fn find_descriptor(descriptors: &[u8], tag: u8) -> Option<&[u8]> {
    let mut rest = descriptors;
    while let [t, len, tail @ ..] = rest {
        let body = tail.get(..usize::from(*len))?;
        if *t == tag {
            return Some(body);
        }
        rest = &tail[body.len()..];
    }
    None
}

impl Pmt {
    /// Decodes and CRC-checks a PMT section found on `pid`.
    pub fn decode(section: &[u8], pid: u16, base: u64) -> Result<Pmt, TsError> {
        let (program_number, version, mut r) = decode_section(section, PMT_TABLE_ID, pid, base)?;
        let pcr_pid = r.u16("PCR_PID missing")? & 0x1fff;
        let n = usize::from(r.u16("program_info_length missing")? & 0xfff);
        let program_info =
            check_descriptors(r.sub(n, "program_info_length overruns the section")?)?;
        let mut streams = Vec::new();
        while r.remaining() > 0 {
            let stream_type = r.u8("stream_type")?;
            let pid = r.u16("elementary_PID truncated")? & 0x1fff;
            let n = usize::from(r.u16("ES_info_length truncated")? & 0xfff);
            let descriptors = check_descriptors(r.sub(n, "ES_info_length overruns the section")?)?;
            streams.push(PmtStream {
                stream_type,
                pid,
                descriptors,
            });
        }
        Ok(Pmt {
            program_number,
            version,
            pcr_pid,
            program_info,
            streams,
        })
    }

    /// Encodes the section.
    pub fn encode(&self) -> Vec<u8> {
        encode_section(PMT_TABLE_ID, self.program_number, self.version, |s| {
            s.extend_from_slice(&(0xe000 | self.pcr_pid).to_be_bytes());
            s.extend_from_slice(&(0xf000 | self.program_info.len() as u16).to_be_bytes());
            s.extend_from_slice(&self.program_info);
            for e in &self.streams {
                s.push(e.stream_type);
                s.extend_from_slice(&(0xe000 | e.pid).to_be_bytes());
                s.extend_from_slice(&(0xf000 | e.descriptors.len() as u16).to_be_bytes());
                s.extend_from_slice(&e.descriptors);
            }
        })
    }
}

/// Reassembles sections of one PID from packet payloads. Holds at most one section.
#[derive(Debug, Default)]
pub(crate) struct SectionAssembler {
    buf: Vec<u8>,
    start: u64,
}

impl SectionAssembler {
    /// Feeds one packet payload at stream offset `base`; complete sections go to `out`
    /// with their offsets.
    pub(crate) fn push(
        &mut self,
        mut data: &[u8],
        unit_start: bool,
        mut base: u64,
        out: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<(), TsError> {
        if unit_start {
            let ptr = usize::from(*data.first().ok_or(TsError::Invalid {
                offset: base,
                what: "pointer_field missing",
            })?);
            let tail = data.get(1..1 + ptr).ok_or(TsError::Invalid {
                offset: base,
                what: "pointer_field points past the packet",
            })?;
            if !self.buf.is_empty() {
                self.buf.extend_from_slice(tail);
                self.drain(out)?;
            }
            self.buf.clear();
            data = &data[1 + ptr..];
            base += 1 + ptr as u64;
            self.start = base;
        } else if self.buf.is_empty() {
            return Ok(());
        }
        self.buf.extend_from_slice(data);
        self.drain(out)
    }

    fn drain(&mut self, out: &mut Vec<(u64, Vec<u8>)>) -> Result<(), TsError> {
        while self.buf.len() >= 3 && self.buf[0] != 0xff {
            let total = 3 + usize::from(u16::from_be_bytes([self.buf[1], self.buf[2]]) & 0xfff);
            if total > 3 + MAX_SECTION_LENGTH {
                self.buf.clear();
                return Err(TsError::Invalid {
                    offset: self.start + 1,
                    what: "section_length over 1021",
                });
            }
            if self.buf.len() < total {
                return Ok(());
            }
            out.push((self.start, self.buf.drain(..total).collect()));
            self.start += total as u64;
        }
        if self.buf.first() == Some(&0xff) {
            self.buf.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_check_value() {
        assert_eq!(crc32(b"123456789"), 0x0376_e6e7);
    }

    #[test]
    fn pat_round_trip_and_crc() {
        let pat = Pat {
            transport_stream_id: 1,
            version: 3,
            programs: vec![PatEntry {
                program_number: 1,
                pid: 0x1000,
            }],
        };
        let s = pat.encode();
        assert_eq!(crc32(&s), 0, "a section followed by its CRC gives 0");
        assert_eq!(Pat::decode(&s, 0).unwrap(), pat);
        assert_eq!(
            Pat::decode(&s[..10], 0),
            Err(TsError::Incomplete {
                needed: s.len() - 10
            })
        );
        let mut bad = s.clone();
        bad[9] ^= 1;
        assert!(matches!(
            Pat::decode(&bad, 5),
            Err(TsError::Crc {
                pid: 0,
                offset: 5,
                ..
            })
        ));
    }

    #[test]
    fn pmt_round_trip_and_descriptors() {
        let pmt = Pmt {
            program_number: 1,
            version: 0,
            pcr_pid: 0x100,
            program_info: vec![],
            streams: vec![
                PmtStream {
                    stream_type: 0x1b,
                    pid: 0x100,
                    descriptors: vec![],
                },
                PmtStream {
                    stream_type: 0x06,
                    pid: 0x101,
                    descriptors: b"\x05\x04Opus\x7f\x02\x80\x02".to_vec(),
                },
            ],
        };
        let s = pmt.encode();
        let back = Pmt::decode(&s, 0x1000, 0).unwrap();
        assert_eq!(back, pmt);
        assert_eq!(
            find_descriptor(&back.streams[1].descriptors, 0x7f),
            Some(&[0x80, 2][..])
        );
        // An ES_info_length past the end of the section, with a valid CRC.
        let mut bad = s[..s.len() - 4].to_vec();
        bad[s.len() - 4 - 11] = 0xff;
        let crc = crc32(&bad);
        bad.extend_from_slice(&crc.to_be_bytes());
        assert!(
            matches!(Pmt::decode(&bad, 0x1000, 0), Err(TsError::Invalid { .. })),
            "{bad:x?}"
        );
    }

    #[test]
    fn sections_span_packets() {
        let s = Pat {
            transport_stream_id: 7,
            version: 0,
            programs: vec![PatEntry {
                program_number: 1,
                pid: 0x20,
            }],
        }
        .encode();
        let mut a = SectionAssembler::default();
        let mut out = Vec::new();
        let mut first = vec![2, 0xaa, 0xbb];
        first.extend_from_slice(&s[..5]);
        a.push(&first, true, 100, &mut out).unwrap();
        assert!(out.is_empty());
        let mut rest = s[5..].to_vec();
        rest.extend_from_slice(&[0xff; 4]);
        a.push(&rest, false, 288, &mut out).unwrap();
        assert_eq!(out, vec![(103, s)]);
    }
}
