//! AAC headers: AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) and ADTS headers (1.A.2.2).

use bytes::Bytes;

use crate::bits::{BitReader, BitWriter, BitsError};

/// Errors of the AAC header parsers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AacError {
    /// The config ended early or was malformed at bit level.
    #[error(transparent)]
    Bits(#[from] BitsError),
    /// `samplingFrequencyIndex` 13 or 14, which are reserved.
    #[error("reserved samplingFrequencyIndex {index} at byte {offset}")]
    ReservedFrequencyIndex {
        /// The index.
        index: u8,
        /// Byte offset of the field.
        offset: usize,
    },
    /// An explicit sampling frequency of zero.
    #[error("explicit samplingFrequency of 0 Hz at byte {offset}")]
    ZeroSampleRate {
        /// Byte offset of the field.
        offset: usize,
    },
    /// An ADTS header did not start with the 12-bit syncword.
    #[error("ADTS syncword missing at byte 0")]
    AdtsSyncword,
    /// An ADTS header is shorter than 7 bytes.
    #[error("ADTS header truncated: {len} of 7 bytes")]
    AdtsTruncated {
        /// Bytes available.
        len: usize,
    },
    /// `aac_frame_length` is shorter than the header itself.
    #[error("ADTS aac_frame_length {frame_length} shorter than its {header_len}-byte header")]
    AdtsFrameLength {
        /// The frame length field.
        frame_length: u16,
        /// The header length.
        header_len: u16,
    },
    /// A value cannot be written in the requested header.
    #[error("{what} = {value} cannot be encoded")]
    Unencodable {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u32,
    },
}

/// Sampling frequencies by `samplingFrequencyIndex` (ISO/IEC 14496-3 Table 1.18).
pub const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// `audioObjectType` values zerocast names.
pub mod object_type {
    /// AAC Main.
    pub const AAC_MAIN: u8 = 1;
    /// AAC LC.
    pub const AAC_LC: u8 = 2;
    /// SBR (HE-AAC v1).
    pub const SBR: u8 = 5;
    /// Parametric stereo (HE-AAC v2).
    pub const PS: u8 = 29;
}

/// A parsed AudioSpecificConfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// `audioObjectType` (1 to 95, escape 31 resolved). For explicit SBR/PS signalling this is
    /// the underlying core type (usually 2, AAC LC).
    pub object_type: u8,
    /// `samplingFrequencyIndex` (15 when the frequency is explicit).
    pub frequency_index: u8,
    /// Core sampling frequency in Hz.
    pub sample_rate: u32,
    /// `channelConfiguration` (0 means defined by a program config element).
    pub channel_configuration: u8,
    /// 5 (SBR) or 29 (PS) when the config signals HE-AAC explicitly.
    pub extension_object_type: Option<u8>,
    /// SBR output sampling frequency, with explicit signalling.
    pub extension_sample_rate: Option<u32>,
}

fn object_type(r: &mut BitReader<'_>) -> Result<u8, AacError> {
    let t = r.bits(5)? as u8;
    Ok(if t == 31 { 32 + r.bits(6)? as u8 } else { t })
}

fn frequency(r: &mut BitReader<'_>) -> Result<(u8, u32), AacError> {
    let offset = r.byte_offset();
    let index = r.bits(4)? as u8;
    match index {
        15 => {
            let f = r.bits(24)?;
            if f == 0 {
                return Err(AacError::ZeroSampleRate { offset });
            }
            Ok((15, f))
        }
        // In bounds: SAMPLE_RATES has 13 entries.
        0..=12 => Ok((index, SAMPLE_RATES[usize::from(index)])),
        _ => Err(AacError::ReservedFrequencyIndex { index, offset }),
    }
}

impl AudioSpecificConfig {
    /// Parses the fields zerocast needs; the codec-specific tail (GASpecificConfig) is not read.
    pub fn parse(data: &[u8]) -> Result<Self, AacError> {
        let mut r = BitReader::new(data);
        let mut object_type = object_type(&mut r)?;
        let (frequency_index, sample_rate) = frequency(&mut r)?;
        let channel_configuration = r.bits(4)? as u8;
        let mut extension_object_type = None;
        let mut extension_sample_rate = None;
        if object_type == object_type::SBR || object_type == object_type::PS {
            extension_object_type = Some(object_type);
            extension_sample_rate = Some(frequency(&mut r)?.1);
            object_type = self::object_type(&mut r)?;
        }
        Ok(AudioSpecificConfig {
            object_type,
            frequency_index,
            sample_rate,
            channel_configuration,
            extension_object_type,
            extension_sample_rate,
        })
    }

    /// A two-byte (or five-byte, for non-standard rates) config for a plain object type,
    /// as built from an ADTS header.
    pub fn new(object_type: u8, sample_rate: u32, channel_configuration: u8) -> Self {
        let frequency_index = SAMPLE_RATES
            .iter()
            .position(|&f| f == sample_rate)
            .map_or(15, |i| i as u8);
        AudioSpecificConfig {
            object_type,
            frequency_index,
            sample_rate,
            channel_configuration,
            extension_object_type: None,
            extension_sample_rate: None,
        }
    }

    /// Serializes the config (explicit HE-AAC signalling included), with a GASpecificConfig
    /// of all zero flags.
    pub fn encode(&self) -> Result<Bytes, AacError> {
        let mut w = BitWriter::new();
        let put_type = |w: &mut BitWriter, t: u8| -> Result<(), AacError> {
            match t {
                0..=30 => w.bits(5, t.into()),
                32..=95 => {
                    w.bits(5, 31);
                    w.bits(6, u32::from(t - 32));
                }
                _ => {
                    return Err(AacError::Unencodable {
                        what: "audioObjectType",
                        value: t.into(),
                    })
                }
            }
            Ok(())
        };
        let put_freq = |w: &mut BitWriter, f: u32| -> Result<(), AacError> {
            match SAMPLE_RATES.iter().position(|&x| x == f) {
                Some(i) => w.bits(4, i as u32),
                None if f > 0 && f < (1 << 24) => {
                    w.bits(4, 15);
                    w.bits(24, f);
                }
                None => {
                    return Err(AacError::Unencodable {
                        what: "samplingFrequency",
                        value: f,
                    })
                }
            }
            Ok(())
        };
        put_type(
            &mut w,
            self.extension_object_type.unwrap_or(self.object_type),
        )?;
        put_freq(&mut w, self.sample_rate)?;
        if self.channel_configuration > 15 {
            return Err(AacError::Unencodable {
                what: "channelConfiguration",
                value: self.channel_configuration.into(),
            });
        }
        w.bits(4, self.channel_configuration.into());
        if self.extension_object_type.is_some() {
            put_freq(
                &mut w,
                self.extension_sample_rate.unwrap_or(self.sample_rate),
            )?;
            put_type(&mut w, self.object_type)?;
        }
        // GASpecificConfig: frameLengthFlag, dependsOnCoreCoder, extensionFlag.
        w.bits(3, 0);
        Ok(Bytes::from(w.finish()))
    }

    /// Output sample rate: the SBR rate with explicit HE-AAC signalling, else the core rate.
    pub fn output_sample_rate(&self) -> u32 {
        self.extension_sample_rate.unwrap_or(self.sample_rate)
    }

    /// Channel count from `channelConfiguration` (ISO/IEC 14496-3 Table 1.19 and its
    /// amendments); `None` for 0 (program config element) and reserved values.
    pub fn channels(&self) -> Option<u8> {
        match self.channel_configuration {
            1..=6 => Some(self.channel_configuration),
            7 => Some(8),
            11 => Some(7),
            12 | 14 => Some(8),
            13 => Some(24),
            _ => None,
        }
    }
}

/// An ADTS fixed+variable header (ISO/IEC 14496-3 1.A.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdtsHeader {
    /// `protection_absent`: false when a 16-bit CRC follows the 7 header bytes.
    pub protection_absent: bool,
    /// `profile_ObjectType` + 1, i.e. the MPEG-4 audioObjectType (1 to 4).
    pub object_type: u8,
    /// `sampling_frequency_index`.
    pub frequency_index: u8,
    /// `channel_configuration`.
    pub channel_configuration: u8,
    /// `aac_frame_length`: header, CRC and raw data together.
    pub frame_length: u16,
}

impl AdtsHeader {
    /// Parses the first 7 bytes of `data`.
    pub fn parse(data: &[u8]) -> Result<Self, AacError> {
        if data.len() < 7 {
            return Err(AacError::AdtsTruncated { len: data.len() });
        }
        if data[0] != 0xff || data[1] & 0xf0 != 0xf0 {
            return Err(AacError::AdtsSyncword);
        }
        let protection_absent = data[1] & 1 == 1;
        let object_type = (data[2] >> 6) + 1;
        let frequency_index = (data[2] >> 2) & 0xf;
        if frequency_index > 12 {
            return Err(AacError::ReservedFrequencyIndex {
                index: frequency_index,
                offset: 2,
            });
        }
        let channel_configuration = ((data[2] & 1) << 2) | (data[3] >> 6);
        let frame_length =
            (u16::from(data[3] & 3) << 11) | (u16::from(data[4]) << 3) | (u16::from(data[5]) >> 5);
        let h = AdtsHeader {
            protection_absent,
            object_type,
            frequency_index,
            channel_configuration,
            frame_length,
        };
        if frame_length < h.header_len() {
            return Err(AacError::AdtsFrameLength {
                frame_length,
                header_len: h.header_len(),
            });
        }
        Ok(h)
    }

    /// Header length: 7, or 9 with CRC.
    pub fn header_len(&self) -> u16 {
        if self.protection_absent {
            7
        } else {
            9
        }
    }

    /// The AudioSpecificConfig this header implies.
    pub fn to_config(&self) -> AudioSpecificConfig {
        let rate = SAMPLE_RATES
            .get(usize::from(self.frequency_index))
            .copied()
            .unwrap_or(0);
        AudioSpecificConfig::new(self.object_type, rate, self.channel_configuration)
    }

    /// A 7-byte header (no CRC) for a raw AAC frame of `payload_len` bytes.
    pub fn for_frame(asc: &AudioSpecificConfig, payload_len: usize) -> Result<[u8; 7], AacError> {
        let frame_length = payload_len + 7;
        if frame_length > 0x1fff {
            return Err(AacError::Unencodable {
                what: "aac_frame_length",
                value: frame_length as u32,
            });
        }
        if !(1..=4).contains(&asc.object_type) || asc.frequency_index > 12 {
            return Err(AacError::Unencodable {
                what: "ADTS audioObjectType/frequency",
                value: asc.object_type.into(),
            });
        }
        let fl = frame_length as u32;
        let ch = u32::from(asc.channel_configuration & 7);
        let mut w = BitWriter::new();
        w.bits(12, 0xfff);
        w.bits(1, 0); // MPEG-4
        w.bits(2, 0); // layer
        w.bits(1, 1); // protection_absent
        w.bits(2, u32::from(asc.object_type - 1));
        w.bits(4, asc.frequency_index.into());
        w.bits(1, 0);
        w.bits(3, ch);
        w.bits(4, 0); // original/copy, home, copyright bits
        w.bits(13, fl);
        w.bits(11, 0x7ff); // buffer fullness: VBR
        w.bits(2, 0); // one raw data block
        let v = w.finish();
        let mut out = [0u8; 7];
        out.copy_from_slice(&v[..7]);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lc_48k_stereo() {
        let asc = AudioSpecificConfig::parse(&[0x11, 0x90]).unwrap();
        assert_eq!(asc.object_type, 2);
        assert_eq!(asc.sample_rate, 48000);
        assert_eq!(asc.channels(), Some(2));
        assert_eq!(asc.encode().unwrap(), Bytes::from_static(&[0x11, 0x90]));
        let asc = AudioSpecificConfig::parse(&[0x12, 0x10]).unwrap();
        assert_eq!((asc.sample_rate, asc.channels()), (44100, Some(2)));
    }

    #[test]
    fn escapes_and_he_aac() {
        // Object type 31+ escape (42 = USAC), explicit 24-bit frequency 37800 Hz, mono.
        let c = AudioSpecificConfig {
            object_type: 42,
            frequency_index: 15,
            sample_rate: 37800,
            channel_configuration: 1,
            extension_object_type: None,
            extension_sample_rate: None,
        };
        let bytes = c.encode().unwrap();
        assert_eq!(AudioSpecificConfig::parse(&bytes).unwrap(), c);
        // HE-AAC v1 explicit: SBR, 24 kHz core, stereo, 48 kHz extension, AAC LC core.
        let he = AudioSpecificConfig::parse(&[0x2b, 0x11, 0x88, 0x00]).unwrap();
        assert_eq!(he.extension_object_type, Some(5));
        assert_eq!(he.object_type, 2);
        assert_eq!(he.sample_rate, 24000);
        assert_eq!(he.output_sample_rate(), 48000);
        assert_eq!(
            AudioSpecificConfig::parse(&he.encode().unwrap()).unwrap(),
            he
        );
    }

    #[test]
    fn bad_configs() {
        assert!(AudioSpecificConfig::parse(&[]).is_err());
        assert!(AudioSpecificConfig::parse(&[0x11]).is_err());
        // Frequency index 13.
        assert_eq!(
            AudioSpecificConfig::parse(&[0x16, 0x90]),
            Err(AacError::ReservedFrequencyIndex {
                index: 13,
                offset: 0
            })
        );
        // Explicit frequency truncated.
        assert!(AudioSpecificConfig::parse(&[0x17, 0x80]).is_err());
    }

    #[test]
    fn adts_round_trip() {
        let asc = AudioSpecificConfig::parse(&[0x11, 0x90]).unwrap();
        let h = AdtsHeader::for_frame(&asc, 300).unwrap();
        let p = AdtsHeader::parse(&h).unwrap();
        assert_eq!(p.frame_length, 307);
        assert_eq!(p.to_config(), asc);
        assert_eq!(
            AdtsHeader::parse(&h[..6]),
            Err(AacError::AdtsTruncated { len: 6 })
        );
        assert_eq!(AdtsHeader::parse(&[0; 7]), Err(AacError::AdtsSyncword));
    }
}
