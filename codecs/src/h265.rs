//! H.265 / HEVC headers, minimal: NAL unit types, the HEVCDecoderConfigurationRecord
//! (ISO/IEC 14496-15 8.3.3.1) and the picture size from the SPS (ITU-T H.265 7.3.2.2.1).

use bytes::Bytes;

use crate::bits::{remove_emulation_prevention, BitReader, BitsError};

/// Errors of the H.265 header parsers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum H265Error {
    /// The record ended early.
    #[error("HEVCDecoderConfigurationRecord truncated at byte {offset}: need {needed} more bytes")]
    Truncated {
        /// Offset of the read that failed.
        offset: usize,
        /// Bytes missing.
        needed: usize,
    },
    /// configurationVersion is not 1.
    #[error("HEVCDecoderConfigurationRecord version {version} at byte 0 (expected 1)")]
    BadConfigVersion {
        /// The version found.
        version: u8,
    },
    /// A bit-level read failed in a parameter set (offsets count RBSP bytes).
    #[error(transparent)]
    Bits(#[from] BitsError),
    /// A syntax element has a value the specification forbids.
    #[error("{what} = {value} out of range at RBSP byte {offset}")]
    OutOfRange {
        /// The syntax element.
        what: &'static str,
        /// Its value.
        value: u64,
        /// RBSP byte offset after reading it.
        offset: usize,
    },
    /// The NAL unit is not an SPS.
    #[error("expected an SPS (NAL unit type 33), found type {found}")]
    NotSps {
        /// Found `nal_unit_type`.
        found: u8,
    },
}

/// `nal_unit_type` values (H.265 Table 7-1) that zerocast looks at.
pub mod nal_type {
    /// First IRAP type (BLA_W_LP); IRAP pictures are 16 to 23.
    pub const BLA_W_LP: u8 = 16;
    /// Last reserved IRAP type.
    pub const RSV_IRAP_23: u8 = 23;
    /// Video parameter set.
    pub const VPS: u8 = 32;
    /// Sequence parameter set.
    pub const SPS: u8 = 33;
    /// Picture parameter set.
    pub const PPS: u8 = 34;
    /// Access unit delimiter.
    pub const AUD: u8 = 35;
    /// Prefix SEI.
    pub const PREFIX_SEI: u8 = 39;
    /// Suffix SEI.
    pub const SUFFIX_SEI: u8 = 40;
}

/// The `nal_unit_type` of a NAL unit whose first header byte is `b0`.
pub fn nal_unit_type(b0: u8) -> u8 {
    (b0 >> 1) & 0x3f
}

/// True for IRAP pictures (BLA, IDR, CRA), where decoding can start.
pub fn is_irap(b0: u8) -> bool {
    (nal_type::BLA_W_LP..=nal_type::RSV_IRAP_23).contains(&nal_unit_type(b0))
}

/// One array of the record: NAL units of one type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcNalArray {
    /// `array_completeness`.
    pub complete: bool,
    /// `NAL_unit_type`.
    pub nal_type: u8,
    /// The NAL units, with their 2-byte headers (slices of the record).
    pub nalus: Vec<Bytes>,
}

/// The fields of an HEVCDecoderConfigurationRecord that zerocast uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcDecoderConfig {
    /// `general_profile_space`.
    pub profile_space: u8,
    /// `general_tier_flag`.
    pub tier: bool,
    /// `general_profile_idc`.
    pub profile_idc: u8,
    /// `general_level_idc` (30 times the level number).
    pub level_idc: u8,
    /// `chromaFormat`.
    pub chroma_format: u8,
    /// `lengthSizeMinusOne` (byte 21, low two bits).
    pub length_size_minus_one: u8,
    /// Parameter set and SEI arrays.
    pub arrays: Vec<HevcNalArray>,
}

impl HevcDecoderConfig {
    /// Parses a record; NAL units are slices of `record` (no copy).
    pub fn parse(record: &Bytes) -> Result<Self, H265Error> {
        let need = |pos: usize, n: usize| -> Result<(), H265Error> {
            let left = record.len().saturating_sub(pos);
            if left < n {
                Err(H265Error::Truncated {
                    offset: pos,
                    needed: n - left,
                })
            } else {
                Ok(())
            }
        };
        need(0, 23)?;
        if record[0] != 1 {
            return Err(H265Error::BadConfigVersion { version: record[0] });
        }
        let mut pos = 23;
        let num_arrays = record[22];
        let mut arrays = Vec::with_capacity(usize::from(num_arrays).min(8));
        for _ in 0..num_arrays {
            need(pos, 3)?;
            let b = record[pos];
            let count = u16::from_be_bytes([record[pos + 1], record[pos + 2]]);
            pos += 3;
            let mut nalus = Vec::with_capacity(usize::from(count).min(8));
            for _ in 0..count {
                need(pos, 2)?;
                let len = usize::from(u16::from_be_bytes([record[pos], record[pos + 1]]));
                pos += 2;
                need(pos, len)?;
                nalus.push(record.slice(pos..pos + len));
                pos += len;
            }
            arrays.push(HevcNalArray {
                complete: b & 0x80 != 0,
                nal_type: b & 0x3f,
                nalus,
            });
        }
        Ok(HevcDecoderConfig {
            profile_space: record[1] >> 6,
            tier: record[1] & 0x20 != 0,
            profile_idc: record[1] & 0x1f,
            level_idc: record[12],
            chroma_format: record[16] & 3,
            length_size_minus_one: record[21] & 3,
            arrays,
        })
    }

    /// Size in bytes of the NAL unit length prefixes (1 to 4).
    pub fn nalu_length_size(&self) -> u8 {
        self.length_size_minus_one + 1
    }

    /// The NAL units of one type.
    pub fn nalus_of(&self, nal_type: u8) -> impl Iterator<Item = &Bytes> {
        self.arrays
            .iter()
            .filter(move |a| a.nal_type == nal_type)
            .flat_map(|a| a.nalus.iter())
    }

    /// Picture size from the first SPS that parses.
    pub fn picture_size(&self) -> Option<(u32, u32)> {
        self.nalus_of(nal_type::SPS)
            .find_map(|s| sps_picture_size(s).ok())
    }
}

/// Picture width and height after the conformance window, from an SPS NAL unit (with its
/// 2-byte header, emulation prevention in place).
pub fn sps_picture_size(nal: &[u8]) -> Result<(u32, u32), H265Error> {
    if nal.len() < 2 {
        return Err(H265Error::Bits(BitsError::End {
            offset: 0,
            needed: 16,
        }));
    }
    if nal_unit_type(nal[0]) != nal_type::SPS {
        return Err(H265Error::NotSps {
            found: nal_unit_type(nal[0]),
        });
    }
    let rbsp = remove_emulation_prevention(&nal[2..]);
    let mut r = BitReader::new(&rbsp);
    let _vps_id = r.bits(4)?;
    let max_sub_layers_minus1 = r.bits(3)?;
    let _temporal_id_nesting = r.flag()?;
    // profile_tier_level(1, max_sub_layers_minus1), H.265 7.3.3: general part is 88 + 8 bits.
    r.skip(88)?;
    let _general_level_idc = r.bits(8)?;
    let mut present = [(false, false); 8];
    for p in present.iter_mut().take(max_sub_layers_minus1 as usize) {
        *p = (r.flag()?, r.flag()?);
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(2 * (8 - max_sub_layers_minus1 as usize))?;
    }
    for &(profile, level) in present.iter().take(max_sub_layers_minus1 as usize) {
        if profile {
            r.skip(88)?;
        }
        if level {
            r.skip(8)?;
        }
    }
    let sps_id = r.ue()?;
    if sps_id > 15 {
        return Err(H265Error::OutOfRange {
            what: "sps_seq_parameter_set_id",
            value: sps_id.into(),
            offset: r.byte_offset(),
        });
    }
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc > 3 {
        return Err(H265Error::OutOfRange {
            what: "chroma_format_idc",
            value: chroma_format_idc.into(),
            offset: r.byte_offset(),
        });
    }
    let separate_colour_plane = chroma_format_idc == 3 && r.flag()?;
    let width = u64::from(r.ue()?);
    let height = u64::from(r.ue()?);
    let (sub_w, sub_h) = match (chroma_format_idc, separate_colour_plane) {
        (1, _) => (2, 2),
        (2, _) => (2, 1),
        _ => (1, 1),
    };
    let (mut cut_w, mut cut_h) = (0u64, 0u64);
    if r.flag()? {
        cut_w = (u64::from(r.ue()?) + u64::from(r.ue()?)) * sub_w;
        cut_h = (u64::from(r.ue()?) + u64::from(r.ue()?)) * sub_h;
    }
    if cut_w >= width || cut_h >= height {
        return Err(H265Error::OutOfRange {
            what: "conf_win offsets",
            value: cut_w.max(cut_h),
            offset: r.byte_offset(),
        });
    }
    // Both fit in u32: ue() values are at most u32::MAX - 1.
    Ok(((width - cut_w) as u32, (height - cut_h) as u32))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// VPS, SPS and PPS arrays of a libx265 1280x720 Main profile record (the SEI array of
    /// the original is left out and numOfArrays set to 3).
    pub(crate) fn x265_720p_hvcc() -> Bytes {
        let h = "0101600000009000000000005df000fcfdf8f800000f03\
            a00001001840010c01ffff01600000030090000003000003005d959809\
            a10001002b42010101600000030090000003000003005da00280802d165959a4932bc05a020000030002000003003c10\
            a2000100074401c172b46240";
        Bytes::from(
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>(),
        )
    }

    #[test]
    fn x265_record() {
        let rec = x265_720p_hvcc();
        let c = HevcDecoderConfig::parse(&rec).unwrap();
        assert_eq!((c.profile_idc, c.level_idc, c.tier), (1, 93, false));
        assert_eq!(c.nalu_length_size(), 4);
        assert_eq!(c.arrays.len(), 3);
        assert_eq!(c.nalus_of(nal_type::SPS).count(), 1);
        assert_eq!(c.picture_size(), Some((1280, 720)));
        for n in 0..rec.len() {
            assert!(HevcDecoderConfig::parse(&rec.slice(..n)).is_err());
        }
        let mut v = rec.to_vec();
        v[0] = 0;
        assert_eq!(
            HevcDecoderConfig::parse(&Bytes::from(v)),
            Err(H265Error::BadConfigVersion { version: 0 })
        );
    }
}
