//! H.264 / AVC headers: NAL unit types, the AVCDecoderConfigurationRecord (ISO/IEC 14496-15
//! 5.3.3.1), the sequence parameter set (ITU-T H.264 7.3.2.1.1, VUI in E.1.1) and SEI messages
//! (7.3.2.3, D.1).
//!
//! Parameter sets and SEI are small, so they are made contiguous and stripped of
//! emulation-prevention bytes before they are read. Slice data is never touched.

use bytes::{BufMut, Bytes, BytesMut};

use crate::bits::{add_emulation_prevention, remove_emulation_prevention, BitReader, BitsError};

/// Errors of the H.264 header parsers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum H264Error {
    /// A byte-aligned structure ended early.
    #[error("{what} truncated at byte {offset}: need {needed} more bytes")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Offset of the read that failed.
        offset: usize,
        /// Bytes missing.
        needed: usize,
    },
    /// AVCDecoderConfigurationRecord.configurationVersion is not 1.
    #[error("AVCDecoderConfigurationRecord version {version} at byte 0 (expected 1)")]
    BadConfigVersion {
        /// The version found.
        version: u8,
    },
    /// A parameter set in the record has length zero.
    #[error("empty parameter set in AVCDecoderConfigurationRecord at byte {offset}")]
    EmptyParameterSet {
        /// Offset of the length field.
        offset: usize,
    },
    /// The NAL unit is not of the expected type.
    #[error("expected NAL unit type {expected}, found {found}")]
    WrongNalType {
        /// Expected `nal_unit_type`.
        expected: u8,
        /// Found `nal_unit_type`.
        found: u8,
    },
    /// A bit-level read failed (offsets count bytes of the RBSP, after the NAL header).
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
    /// The cropping window is larger than the decoded picture.
    #[error("cropping window removes more than the {width}x{height} picture")]
    CropTooLarge {
        /// Decoded width in pixels.
        width: u64,
        /// Decoded height in pixels.
        height: u64,
    },
    /// An SEI message claims more bytes than the NAL unit has.
    #[error(
        "SEI payload of {size} bytes at RBSP byte {offset} exceeds the {remaining} bytes left"
    )]
    SeiPayloadTooLong {
        /// RBSP offset of the payload.
        offset: usize,
        /// Declared payload size.
        size: usize,
        /// Bytes left in the RBSP.
        remaining: usize,
    },
    /// A parameter set list holds more entries than its count field can say.
    #[error("{what}: {count} entries do not fit the record's count field")]
    TooManyParameterSets {
        /// Which list.
        what: &'static str,
        /// How many there were.
        count: usize,
    },
}

/// `nal_unit_type` values (H.264 Table 7-1) that zerocast looks at.
pub mod nal_type {
    /// Coded slice of a non-IDR picture.
    pub const SLICE: u8 = 1;
    /// Coded slice data partition A.
    pub const SLICE_DPA: u8 = 2;
    /// Coded slice of an IDR picture.
    pub const IDR: u8 = 5;
    /// Supplemental enhancement information.
    pub const SEI: u8 = 6;
    /// Sequence parameter set.
    pub const SPS: u8 = 7;
    /// Picture parameter set.
    pub const PPS: u8 = 8;
    /// Access unit delimiter.
    pub const AUD: u8 = 9;
    /// End of sequence.
    pub const END_OF_SEQUENCE: u8 = 10;
    /// End of stream.
    pub const END_OF_STREAM: u8 = 11;
    /// Filler data.
    pub const FILLER: u8 = 12;
    /// Sequence parameter set extension.
    pub const SPS_EXT: u8 = 13;
}

/// The `nal_unit_type` of a NAL unit whose first byte is `header`.
pub fn nal_unit_type(header: u8) -> u8 {
    header & 0x1f
}

/// The `nal_ref_idc` of a NAL unit whose first byte is `header`.
pub fn nal_ref_idc(header: u8) -> u8 {
    (header >> 5) & 3
}

/// True for IDR slices, the NAL units that make an access unit a keyframe.
pub fn is_idr(header: u8) -> bool {
    nal_unit_type(header) == nal_type::IDR
}

/// True for parameter sets (SPS, PPS, SPS extension).
pub fn is_parameter_set(header: u8) -> bool {
    matches!(
        nal_unit_type(header),
        nal_type::SPS | nal_type::PPS | nal_type::SPS_EXT
    )
}

/// `profile_idc` values whose SPS carries chroma format, bit depths and scaling lists
/// (H.264 7.3.2.1.1), and whose AVCDecoderConfigurationRecord may carry the extension fields.
pub fn is_high_profile(profile_idc: u8) -> bool {
    matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    )
}

/// The optional tail of an AVCDecoderConfigurationRecord for high profiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfigExt {
    /// `chroma_format_idc` (0 to 3).
    pub chroma_format: u8,
    /// `bit_depth_luma_minus8` (0 to 7).
    pub bit_depth_luma_minus8: u8,
    /// `bit_depth_chroma_minus8` (0 to 7).
    pub bit_depth_chroma_minus8: u8,
    /// SPS extension NAL units.
    pub sps_ext: Vec<Bytes>,
}

/// AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1): the `avcC` of MP4 and the body
/// of an FLV AVC sequence header.
///
/// ```text
/// configurationVersion u8 = 1 | AVCProfileIndication u8 | profile_compatibility u8
/// AVCLevelIndication u8 | reserved '111111'b, lengthSizeMinusOne u2
/// reserved '111'b, numOfSequenceParameterSets u5 | { sequenceParameterSetLength u16, SPS }*
/// numOfPictureParameterSets u8 | { pictureParameterSetLength u16, PPS }*
/// [high profiles: chroma_format, bit depths, numOfSequenceParameterSetExt, SPS ext*]
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcDecoderConfig {
    /// `AVCProfileIndication` (profile_idc of the SPS).
    pub profile: u8,
    /// `profile_compatibility` (the constraint flags byte of the SPS).
    pub compatibility: u8,
    /// `AVCLevelIndication` (level_idc of the SPS).
    pub level: u8,
    /// `lengthSizeMinusOne`: NAL unit length prefixes are this plus one bytes long.
    pub length_size_minus_one: u8,
    /// Sequence parameter sets, with their NAL header byte.
    pub sps: Vec<Bytes>,
    /// Picture parameter sets, with their NAL header byte.
    pub pps: Vec<Bytes>,
    /// The high-profile extension, when the record carries it.
    pub ext: Option<AvcConfigExt>,
}

struct ByteCursor<'a> {
    data: &'a Bytes,
    pos: usize,
    what: &'static str,
}

impl ByteCursor<'_> {
    fn need(&self, n: usize) -> Result<(), H264Error> {
        let left = self.data.len() - self.pos;
        if left < n {
            return Err(H264Error::Truncated {
                what: self.what,
                offset: self.pos,
                needed: n - left,
            });
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, H264Error> {
        self.need(1)?;
        let v = self.data[self.pos];
        self.pos += 1;
        Ok(v)
    }
    fn u16(&mut self) -> Result<u16, H264Error> {
        self.need(2)?;
        let v = u16::from_be_bytes([self.data[self.pos], self.data[self.pos + 1]]);
        self.pos += 2;
        Ok(v)
    }
    fn take(&mut self, n: usize) -> Result<Bytes, H264Error> {
        self.need(n)?;
        let v = self.data.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(v)
    }
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    fn parameter_sets(&mut self, count: usize) -> Result<Vec<Bytes>, H264Error> {
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let at = self.pos;
            let len = usize::from(self.u16()?);
            if len == 0 {
                return Err(H264Error::EmptyParameterSet { offset: at });
            }
            out.push(self.take(len)?);
        }
        Ok(out)
    }
}

impl AvcDecoderConfig {
    /// Parses a record. Parameter sets are slices of `record` (no copy).
    ///
    /// A missing or malformed high-profile extension is tolerated (many encoders omit it) and
    /// leaves `ext` as `None`.
    pub fn parse(record: &Bytes) -> Result<Self, H264Error> {
        let mut c = ByteCursor {
            data: record,
            pos: 0,
            what: "AVCDecoderConfigurationRecord",
        };
        let version = c.u8()?;
        if version != 1 {
            return Err(H264Error::BadConfigVersion { version });
        }
        let profile = c.u8()?;
        let compatibility = c.u8()?;
        let level = c.u8()?;
        let length_size_minus_one = c.u8()? & 3;
        let num_sps = usize::from(c.u8()? & 0x1f);
        let sps = c.parameter_sets(num_sps)?;
        let num_pps = usize::from(c.u8()?);
        let pps = c.parameter_sets(num_pps)?;
        let mut ext = None;
        if is_high_profile(profile) && c.remaining() >= 4 {
            let mut e = ByteCursor {
                data: record,
                pos: c.pos,
                what: "AVCDecoderConfigurationRecord extension",
            };
            let parsed = (|| -> Result<AvcConfigExt, H264Error> {
                let chroma_format = e.u8()? & 3;
                let bit_depth_luma_minus8 = e.u8()? & 7;
                let bit_depth_chroma_minus8 = e.u8()? & 7;
                let n = usize::from(e.u8()?);
                let sps_ext = e.parameter_sets(n)?;
                Ok(AvcConfigExt {
                    chroma_format,
                    bit_depth_luma_minus8,
                    bit_depth_chroma_minus8,
                    sps_ext,
                })
            })();
            ext = parsed.ok();
        }
        Ok(AvcDecoderConfig {
            profile,
            compatibility,
            level,
            length_size_minus_one,
            sps,
            pps,
            ext,
        })
    }

    /// Builds a record from parameter sets (for example from an Annex-B stream), taking
    /// profile, compatibility and level from the first SPS; NAL lengths are 4 bytes.
    pub fn from_parameter_sets(sps: Vec<Bytes>, pps: Vec<Bytes>) -> Result<Self, H264Error> {
        let first = sps.first().cloned().unwrap_or_default();
        let parsed = Sps::parse(&first)?;
        let ext = is_high_profile(parsed.profile_idc).then(|| AvcConfigExt {
            chroma_format: parsed.chroma_format_idc,
            bit_depth_luma_minus8: parsed.bit_depth_luma.saturating_sub(8),
            bit_depth_chroma_minus8: parsed.bit_depth_chroma.saturating_sub(8),
            sps_ext: Vec::new(),
        });
        Ok(AvcDecoderConfig {
            profile: parsed.profile_idc,
            compatibility: parsed.constraint_flags,
            level: parsed.level_idc,
            length_size_minus_one: 3,
            sps,
            pps,
            ext,
        })
    }

    /// Size in bytes of the NAL unit length prefixes (1 to 4).
    pub fn nalu_length_size(&self) -> u8 {
        self.length_size_minus_one + 1
    }

    /// Serializes the record.
    pub fn encode(&self) -> Result<Bytes, H264Error> {
        if self.sps.len() > 31 {
            return Err(H264Error::TooManyParameterSets {
                what: "SPS",
                count: self.sps.len(),
            });
        }
        let too_many = |what, v: &Vec<Bytes>| {
            if v.len() > 255 || v.iter().any(|p| p.len() > 0xffff) {
                Err(H264Error::TooManyParameterSets {
                    what,
                    count: v.len(),
                })
            } else {
                Ok(())
            }
        };
        too_many("SPS", &self.sps)?;
        too_many("PPS", &self.pps)?;
        let mut out = BytesMut::with_capacity(64);
        out.put_u8(1);
        out.put_u8(self.profile);
        out.put_u8(self.compatibility);
        out.put_u8(self.level);
        out.put_u8(0xfc | (self.length_size_minus_one & 3));
        out.put_u8(0xe0 | self.sps.len() as u8);
        for s in &self.sps {
            out.put_u16(s.len() as u16);
            out.put_slice(s);
        }
        out.put_u8(self.pps.len() as u8);
        for p in &self.pps {
            out.put_u16(p.len() as u16);
            out.put_slice(p);
        }
        if let Some(e) = &self.ext {
            too_many("SPS extension", &e.sps_ext)?;
            out.put_u8(0xfc | (e.chroma_format & 3));
            out.put_u8(0xf8 | (e.bit_depth_luma_minus8 & 7));
            out.put_u8(0xf8 | (e.bit_depth_chroma_minus8 & 7));
            out.put_u8(e.sps_ext.len() as u8);
            for s in &e.sps_ext {
                out.put_u16(s.len() as u16);
                out.put_slice(s);
            }
        }
        Ok(out.freeze())
    }
}

/// Timing information of the VUI (H.264 E.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VuiTiming {
    /// `num_units_in_tick`.
    pub num_units_in_tick: u32,
    /// `time_scale`.
    pub time_scale: u32,
    /// `fixed_frame_rate_flag`.
    pub fixed_frame_rate: bool,
}

/// The facts zerocast needs from a sequence parameter set.
#[derive(Debug, Clone, PartialEq)]
pub struct Sps {
    /// `profile_idc`.
    pub profile_idc: u8,
    /// The byte of `constraint_set0..5_flag` and reserved bits.
    pub constraint_flags: u8,
    /// `level_idc`.
    pub level_idc: u8,
    /// `seq_parameter_set_id`.
    pub sps_id: u32,
    /// `chroma_format_idc` (1, 4:2:0, unless a high profile says otherwise).
    pub chroma_format_idc: u8,
    /// `separate_colour_plane_flag`.
    pub separate_colour_plane: bool,
    /// Luma bit depth.
    pub bit_depth_luma: u8,
    /// Chroma bit depth.
    pub bit_depth_chroma: u8,
    /// `frame_mbs_only_flag`: false when the stream may contain field pictures.
    pub frame_mbs_only: bool,
    /// `max_num_ref_frames`.
    pub max_num_ref_frames: u32,
    /// Picture width in pixels after cropping.
    pub width: u32,
    /// Picture height in pixels after cropping.
    pub height: u32,
    /// Sample aspect ratio, when the VUI says.
    pub sar: Option<(u16, u16)>,
    /// VUI timing, when present.
    pub timing: Option<VuiTiming>,
}

impl Sps {
    /// Parses an SPS NAL unit (starting with its NAL header byte, emulation prevention
    /// still in place).
    pub fn parse(nal: &[u8]) -> Result<Sps, H264Error> {
        let header = *nal.first().ok_or(H264Error::Truncated {
            what: "SPS",
            offset: 0,
            needed: 1,
        })?;
        if nal_unit_type(header) != nal_type::SPS {
            return Err(H264Error::WrongNalType {
                expected: nal_type::SPS,
                found: nal_unit_type(header),
            });
        }
        let rbsp = remove_emulation_prevention(&nal[1..]);
        Self::parse_rbsp(&rbsp)
    }

    /// Parses an SPS RBSP (after the NAL header, emulation prevention removed).
    pub fn parse_rbsp(rbsp: &[u8]) -> Result<Sps, H264Error> {
        let mut r = BitReader::new(rbsp);
        let profile_idc = r.bits(8)? as u8;
        let constraint_flags = r.bits(8)? as u8;
        let level_idc = r.bits(8)? as u8;
        let sps_id = r.ue()?;
        check(&r, "seq_parameter_set_id", sps_id, 31)?;
        let mut chroma_format_idc = 1u8;
        let mut separate_colour_plane = false;
        let mut bit_depth_luma = 8u8;
        let mut bit_depth_chroma = 8u8;
        if is_high_profile(profile_idc) {
            let cf = r.ue()?;
            check(&r, "chroma_format_idc", cf, 3)?;
            chroma_format_idc = cf as u8;
            if chroma_format_idc == 3 {
                separate_colour_plane = r.flag()?;
            }
            let bl = r.ue()?;
            check(&r, "bit_depth_luma_minus8", bl, 6)?;
            let bc = r.ue()?;
            check(&r, "bit_depth_chroma_minus8", bc, 6)?;
            bit_depth_luma = 8 + bl as u8;
            bit_depth_chroma = 8 + bc as u8;
            let _qpprime_y_zero_transform_bypass = r.flag()?;
            if r.flag()? {
                // seq_scaling_matrix_present_flag: the lists only need skipping.
                let lists = if chroma_format_idc != 3 { 8 } else { 12 };
                for i in 0..lists {
                    if r.flag()? {
                        skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                    }
                }
            }
        }
        let log2_max_frame_num_minus4 = r.ue()?;
        check(
            &r,
            "log2_max_frame_num_minus4",
            log2_max_frame_num_minus4,
            12,
        )?;
        let poc_type = r.ue()?;
        check(&r, "pic_order_cnt_type", poc_type, 2)?;
        if poc_type == 0 {
            let v = r.ue()?;
            check(&r, "log2_max_pic_order_cnt_lsb_minus4", v, 12)?;
        } else if poc_type == 1 {
            let _delta_pic_order_always_zero = r.flag()?;
            let _offset_for_non_ref_pic = r.se()?;
            let _offset_for_top_to_bottom_field = r.se()?;
            let n = r.ue()?;
            check(&r, "num_ref_frames_in_pic_order_cnt_cycle", n, 255)?;
            for _ in 0..n {
                let _offset_for_ref_frame = r.se()?;
            }
        }
        let max_num_ref_frames = r.ue()?;
        let _gaps_in_frame_num_allowed = r.flag()?;
        let width_mbs = u64::from(r.ue()?) + 1;
        let height_map_units = u64::from(r.ue()?) + 1;
        let frame_mbs_only = r.flag()?;
        if !frame_mbs_only {
            let _mb_adaptive_frame_field = r.flag()?;
        }
        let _direct_8x8_inference = r.flag()?;
        let (mut crop_l, mut crop_r, mut crop_t, mut crop_b) = (0u64, 0u64, 0u64, 0u64);
        if r.flag()? {
            crop_l = r.ue()?.into();
            crop_r = r.ue()?.into();
            crop_t = r.ue()?.into();
            crop_b = r.ue()?.into();
        }
        // H.264 7.4.2.1.1: crop units depend on ChromaArrayType and field coding.
        let chroma_array_type = if separate_colour_plane {
            0
        } else {
            chroma_format_idc
        };
        let (sub_w, sub_h) = match chroma_array_type {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let field_factor = if frame_mbs_only { 1 } else { 2 };
        let (crop_unit_x, crop_unit_y) = if chroma_array_type == 0 {
            (1, field_factor)
        } else {
            (sub_w, sub_h * field_factor)
        };
        let full_w = width_mbs * 16;
        let full_h = height_map_units * 16 * field_factor;
        let cut_w = (crop_l + crop_r) * crop_unit_x;
        let cut_h = (crop_t + crop_b) * crop_unit_y;
        if cut_w >= full_w || cut_h >= full_h {
            return Err(H264Error::CropTooLarge {
                width: full_w,
                height: full_h,
            });
        }
        let width = u32::try_from(full_w - cut_w).map_err(|_| H264Error::OutOfRange {
            what: "pic_width_in_mbs_minus1",
            value: width_mbs - 1,
            offset: r.byte_offset(),
        })?;
        let height = u32::try_from(full_h - cut_h).map_err(|_| H264Error::OutOfRange {
            what: "pic_height_in_map_units_minus1",
            value: height_map_units - 1,
            offset: r.byte_offset(),
        })?;
        let mut sps = Sps {
            profile_idc,
            constraint_flags,
            level_idc,
            sps_id,
            chroma_format_idc,
            separate_colour_plane,
            bit_depth_luma,
            bit_depth_chroma,
            frame_mbs_only,
            max_num_ref_frames,
            width,
            height,
            sar: None,
            timing: None,
        };
        if r.flag()? {
            parse_vui(&mut r, &mut sps)?;
        }
        Ok(sps)
    }

    /// Frames per second from VUI timing (`time_scale / (2 * num_units_in_tick)`, H.264
    /// E.2.1 with one frame being two fields' worth of ticks).
    pub fn fps(&self) -> Option<f64> {
        let t = self.timing?;
        if t.num_units_in_tick == 0 || t.time_scale == 0 {
            return None;
        }
        Some(f64::from(t.time_scale) / (2.0 * f64::from(t.num_units_in_tick)))
    }
}

fn check(r: &BitReader<'_>, what: &'static str, value: u32, max: u32) -> Result<(), H264Error> {
    if value > max {
        return Err(H264Error::OutOfRange {
            what,
            value: value.into(),
            offset: r.byte_offset(),
        });
    }
    Ok(())
}

/// Skips `scaling_list()` (H.264 7.3.2.1.1.1).
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), H264Error> {
    let mut last_scale = 8i32;
    let mut next_scale = 8i32;
    for _ in 0..size {
        if next_scale != 0 {
            let delta = r.se()?;
            if !(-128..=127).contains(&delta) {
                return Err(H264Error::OutOfRange {
                    what: "delta_scale",
                    value: delta.unsigned_abs().into(),
                    offset: r.byte_offset(),
                });
            }
            next_scale = (last_scale + delta + 256) % 256;
        }
        if next_scale != 0 {
            last_scale = next_scale;
        }
    }
    Ok(())
}

/// Reads the VUI up to the timing information (H.264 E.1.1); later fields are not needed.
fn parse_vui(r: &mut BitReader<'_>, sps: &mut Sps) -> Result<(), H264Error> {
    if r.flag()? {
        let aspect_ratio_idc = r.bits(8)?;
        sps.sar = match aspect_ratio_idc {
            255 => Some((r.bits(16)? as u16, r.bits(16)? as u16)),
            // Table E-1.
            1..=16 => {
                const SAR: [(u16, u16); 16] = [
                    (1, 1),
                    (12, 11),
                    (10, 11),
                    (16, 11),
                    (40, 33),
                    (24, 11),
                    (20, 11),
                    (32, 11),
                    (80, 33),
                    (18, 11),
                    (15, 11),
                    (64, 33),
                    (160, 99),
                    (4, 3),
                    (3, 2),
                    (2, 1),
                ];
                SAR.get(aspect_ratio_idc as usize - 1).copied()
            }
            _ => None,
        };
    }
    if r.flag()? {
        let _overscan_appropriate = r.flag()?;
    }
    if r.flag()? {
        // video_format u3, video_full_range_flag u1
        r.skip(4)?;
        if r.flag()? {
            // colour_primaries, transfer_characteristics, matrix_coefficients
            r.skip(24)?;
        }
    }
    if r.flag()? {
        let _top = r.ue()?;
        let _bottom = r.ue()?;
    }
    if r.flag()? {
        let num_units_in_tick = r.bits(32)?;
        let time_scale = r.bits(32)?;
        let fixed_frame_rate = r.flag()?;
        sps.timing = Some(VuiTiming {
            num_units_in_tick,
            time_scale,
            fixed_frame_rate,
        });
    }
    Ok(())
}

/// SEI messages (H.264 7.3.2.3 and Annex D).
pub mod sei {
    use super::*;

    /// `payloadType` of user_data_unregistered (D.1.7).
    pub const USER_DATA_UNREGISTERED: u32 = 5;

    /// One SEI message.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct SeiMessage {
        /// `payloadType`.
        pub payload_type: u32,
        /// The payload bytes (emulation prevention removed).
        pub payload: Bytes,
    }

    impl SeiMessage {
        /// For user_data_unregistered messages: the 16-byte UUID and the user data.
        pub fn user_data_unregistered(&self) -> Option<([u8; 16], Bytes)> {
            if self.payload_type != USER_DATA_UNREGISTERED || self.payload.len() < 16 {
                return None;
            }
            let mut uuid = [0u8; 16];
            uuid.copy_from_slice(&self.payload[..16]);
            Some((uuid, self.payload.slice(16..)))
        }
    }

    /// Parses the messages of an SEI NAL unit (starting with its header byte, type 6).
    pub fn parse_nal(nal: &[u8]) -> Result<Vec<SeiMessage>, H264Error> {
        let header = *nal.first().ok_or(H264Error::Truncated {
            what: "SEI",
            offset: 0,
            needed: 1,
        })?;
        if nal_unit_type(header) != nal_type::SEI {
            return Err(H264Error::WrongNalType {
                expected: nal_type::SEI,
                found: nal_unit_type(header),
            });
        }
        parse_rbsp(Bytes::from(remove_emulation_prevention(&nal[1..])))
    }

    /// Parses the messages of an SEI RBSP (after the NAL header, emulation prevention
    /// removed). Also fits H.265 SEI RBSPs, whose message syntax is the same.
    pub fn parse_rbsp(rbsp: Bytes) -> Result<Vec<SeiMessage>, H264Error> {
        let mut out = Vec::new();
        let mut pos = 0usize;
        // more_rbsp_data(): stop at the trailing bits (0x80) or the end.
        while pos < rbsp.len() && !(pos + 1 == rbsp.len() && rbsp[pos] == 0x80) {
            let payload_type = read_ff_coded(&rbsp, &mut pos, "SEI payloadType")?;
            let size = read_ff_coded(&rbsp, &mut pos, "SEI payloadSize")? as usize;
            let remaining = rbsp.len() - pos;
            if size > remaining {
                return Err(H264Error::SeiPayloadTooLong {
                    offset: pos,
                    size,
                    remaining,
                });
            }
            out.push(SeiMessage {
                payload_type,
                payload: rbsp.slice(pos..pos + size),
            });
            pos += size;
        }
        Ok(out)
    }

    /// Reads a value coded as a run of 0xFF bytes plus a last byte (7.3.2.3.1).
    fn read_ff_coded(data: &[u8], pos: &mut usize, what: &'static str) -> Result<u32, H264Error> {
        let mut v = 0u32;
        loop {
            let b = *data.get(*pos).ok_or(H264Error::Truncated {
                what,
                offset: *pos,
                needed: 1,
            })?;
            *pos += 1;
            v = v.saturating_add(u32::from(b));
            if b != 0xff {
                return Ok(v);
            }
        }
    }

    /// Finds the first user_data_unregistered message with `uuid` among a frame's SEI NAL
    /// units and returns its user data. Malformed SEI NAL units are skipped.
    pub fn find_user_data_unregistered(
        nalus: &[crate::ByteRope],
        uuid: &[u8; 16],
    ) -> Option<Bytes> {
        nalus
            .iter()
            .filter(|n| n.get(0).map(nal_unit_type) == Some(nal_type::SEI))
            .filter_map(|n| parse_nal(&n.to_contiguous()).ok())
            .flatten()
            .filter_map(|m| m.user_data_unregistered())
            .find(|(u, _)| u == uuid)
            .map(|(_, data)| data)
    }

    /// Builds an SEI NAL unit (header byte 0x06) holding one user_data_unregistered message,
    /// with emulation prevention applied.
    pub fn build_user_data_unregistered(uuid: &[u8; 16], data: &[u8]) -> Bytes {
        let mut rbsp = Vec::with_capacity(data.len() + 24);
        put_ff_coded(&mut rbsp, USER_DATA_UNREGISTERED);
        put_ff_coded(&mut rbsp, (16 + data.len()) as u32);
        rbsp.extend_from_slice(uuid);
        rbsp.extend_from_slice(data);
        rbsp.push(0x80);
        let mut nal = Vec::with_capacity(rbsp.len() + rbsp.len() / 64 + 2);
        nal.push(nal_type::SEI);
        nal.extend_from_slice(&add_emulation_prevention(&rbsp));
        Bytes::from(nal)
    }

    fn put_ff_coded(out: &mut Vec<u8>, mut v: u32) {
        while v >= 255 {
            out.push(0xff);
            v -= 255;
        }
        out.push(v as u8);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bits::BitWriter;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// AVCDecoderConfigurationRecord written by ffmpeg/libx264 for testsrc2 1280x720 at 30 fps
    /// (High profile, level 3.1, with the high-profile extension).
    pub(crate) const X264_720P_AVCC: &str =
        "0164001fffe1001a6764001facd9405005bb011000000300100000\
        0303c0f183196001000668ebe3cb22c0fdf8f800";

    pub(crate) fn x264_720p_avcc() -> Bytes {
        Bytes::from(hex(&X264_720P_AVCC.replace(' ', "")))
    }

    #[test]
    fn x264_record_and_sps() {
        let rec = x264_720p_avcc();
        let c = AvcDecoderConfig::parse(&rec).unwrap();
        assert_eq!((c.profile, c.compatibility, c.level), (100, 0, 31));
        assert_eq!(c.nalu_length_size(), 4);
        assert_eq!(c.sps.len(), 1);
        assert_eq!(c.pps.len(), 1);
        assert_eq!(c.pps[0].len(), 6);
        let ext = c.ext.as_ref().unwrap();
        assert_eq!(ext.chroma_format, 1);
        assert_eq!(c.encode().unwrap(), rec);
        let sps = Sps::parse(&c.sps[0]).unwrap();
        assert_eq!((sps.profile_idc, sps.level_idc), (100, 31));
        assert_eq!((sps.width, sps.height), (1280, 720));
        assert_eq!(sps.fps(), Some(30.0));
        assert_eq!(sps.sar, Some((1, 1)));
        let rebuilt = AvcDecoderConfig::from_parameter_sets(c.sps.clone(), c.pps.clone()).unwrap();
        assert_eq!(rebuilt, c);
    }

    #[test]
    fn x264_sps_variants() {
        // (SPS hex from libx264, width, height, fps, chroma_format_idc, frame_mbs_only)
        let cases = [
            // 1920x1080: cropped from 1088.
            (
                "67640028acd940780227e5c044000003000400000300f03c60c658",
                1920,
                1080,
                30.0,
                1,
                true,
            ),
            // 640x360 4:4:4 (High 4:4:4 Predictive): crop units of one pixel.
            (
                "67f4001e919b281405ff1380880000030008000003019078b16cb0",
                640,
                360,
                25.0,
                3,
                true,
            ),
            // 352x288 Constrained Baseline at 50 fps.
            (
                "6742c015d9016096c044000003000400000301903c58b920",
                352,
                288,
                50.0,
                1,
                true,
            ),
            // 1280x720 4:2:2 interlaced (High 4:2:2, field coding).
            (
                "677a0028bcd940500bbf138088000003000800000303c0f8b16cb0",
                1280,
                720,
                60.0,
                2,
                false,
            ),
        ];
        for (h, w, ht, fps, cf, fmo) in cases {
            let sps = Sps::parse(&hex(h)).unwrap();
            assert_eq!((sps.width, sps.height), (w, ht), "{h}");
            assert_eq!(sps.fps(), Some(fps), "{h}");
            assert_eq!(sps.chroma_format_idc, cf, "{h}");
            assert_eq!(sps.frame_mbs_only, fmo, "{h}");
        }
    }

    /// A hand-written High profile SPS with scaling lists, cropping and no VUI, built from
    /// the syntax of H.264 7.3.2.1.1.
    #[test]
    fn scaling_lists_and_cropping() {
        let mut w = BitWriter::new();
        w.bits(8, 100);
        w.bits(8, 0);
        w.bits(8, 40);
        w.ue(0); // sps id
        w.ue(1); // chroma_format_idc
        w.ue(0);
        w.ue(0);
        w.flag(false); // qpprime
        w.flag(true); // seq_scaling_matrix_present_flag
        for i in 0..8 {
            w.flag(i % 2 == 0);
            if i % 2 == 0 {
                let size = if i < 6 { 16 } else { 64 };
                // Ramp deltas, then a delta that makes nextScale 0 ("repeat last").
                for j in 0..size - 1 {
                    w.se(if j == 0 { 2 } else { 1 });
                }
                w.se(-((8 + 2 + size - 2) % 256));
            }
        }
        w.ue(0); // log2_max_frame_num_minus4
        w.ue(2); // poc type 2
        w.ue(4); // max refs
        w.flag(false);
        w.ue(119); // 1920
        w.ue(67); // 1088
        w.flag(true);
        w.flag(true);
        w.flag(true); // cropping
        w.ue(2);
        w.ue(2);
        w.ue(0);
        w.ue(4);
        w.flag(false); // no VUI
        let mut nal = vec![0x67];
        nal.extend(add_emulation_prevention(&w.finish_rbsp()));
        let sps = Sps::parse(&nal).unwrap();
        assert_eq!((sps.width, sps.height), (1912, 1080));
        assert_eq!(sps.fps(), None);
    }

    #[test]
    fn bad_records() {
        let rec = x264_720p_avcc();
        let mut v = rec.to_vec();
        v[0] = 2;
        assert_eq!(
            AvcDecoderConfig::parse(&Bytes::from(v)),
            Err(H264Error::BadConfigVersion { version: 2 })
        );
        for n in 0..rec.len() - 4 {
            // Every truncation before the PPS ends fails (the extension is optional).
            if n < 43 {
                assert!(AvcDecoderConfig::parse(&rec.slice(..n)).is_err(), "{n}");
            }
        }
        let mut v = rec.to_vec();
        v[6] = 0xff; // SPS length 0xff1a, longer than the record
        assert!(matches!(
            AvcDecoderConfig::parse(&Bytes::from(v)),
            Err(H264Error::Truncated { offset: 8, .. })
        ));
        assert!(matches!(
            Sps::parse(&[0x68, 1, 2]),
            Err(H264Error::WrongNalType { .. })
        ));
        // Truncated SPSs fail up to the VUI timing; past it they may parse (later VUI
        // fields are not read), but never panic.
        let c = AvcDecoderConfig::parse(&rec).unwrap();
        let s = &c.sps[0];
        for n in 0..s.len() {
            let r = Sps::parse(&s[..n]);
            if n <= 16 {
                assert!(r.is_err(), "{n}");
            }
        }
    }

    #[test]
    fn sei_round_trip_and_x264_sei() {
        let uuid = [0u8, 0, 0, 1, 2, 3, 0, 0, 0, 9, 0xa, 0xb, 0xc, 0xd, 0xe, 0xf];
        let data: Vec<u8> = (0..400u32).map(|i| (i % 4) as u8 * (i as u8 & 1)).collect();
        let nal = sei::build_user_data_unregistered(&uuid, &data);
        assert!(!nal.windows(3).any(|w| w[0] == 0 && w[1] == 0 && w[2] <= 2));
        let msgs = sei::parse_nal(&nal).unwrap();
        assert_eq!(msgs.len(), 1);
        let (u, d) = msgs[0].user_data_unregistered().unwrap();
        assert_eq!(u, uuid);
        assert_eq!(&d[..], &data[..]);
        let rope = crate::ByteRope::from(nal.slice(..));
        assert_eq!(
            sei::find_user_data_unregistered(&[rope], &uuid).as_deref(),
            Some(&data[..])
        );
        // The head of x264's version SEI: type 5, size 680 (0xff 0xff 0xaa), cut short.
        let x264 = hex("0605ffffaadc45e9bde6d948b7962cd820d923eeef");
        let err = sei::parse_nal(&x264).unwrap_err();
        assert!(matches!(
            err,
            H264Error::SeiPayloadTooLong {
                offset: 4,
                size: 680,
                ..
            }
        ));
        assert!(sei::parse_nal(&[0x06, 0x05]).is_err());
        assert_eq!(sei::parse_nal(&[0x06, 0x80]).unwrap(), vec![]);
    }
}
