//! Opus identification header, `OpusHead` (RFC 7845 5.1).
//!
//! ```text
//! "OpusHead" | version u8 (0x0X) | channel count u8 | pre-skip u16le
//! input sample rate u32le | output gain i16le | mapping family u8 | [mapping table]
//! ```

use bytes::{BufMut, Bytes, BytesMut};

/// Errors of the OpusHead parser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpusError {
    /// Fewer than the 19 bytes of the fixed header.
    #[error("OpusHead truncated: {len} of 19 bytes")]
    Truncated {
        /// Bytes available.
        len: usize,
    },
    /// The magic signature is not "OpusHead".
    #[error("OpusHead magic missing at byte 0")]
    BadMagic,
    /// A major version other than 0 (RFC 7845: upper four bits of the version).
    #[error("unsupported OpusHead version {version} at byte 8")]
    BadVersion {
        /// The version byte.
        version: u8,
    },
    /// A channel count of zero.
    #[error("OpusHead channel count 0 at byte 9")]
    ZeroChannels,
    /// Mapping family 0 with more than two channels.
    #[error("OpusHead mapping family 0 with {channels} channels at byte 18")]
    BadMapping {
        /// The channel count.
        channels: u8,
    },
}

/// The fields of an OpusHead that zerocast uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusHead {
    /// Output channel count.
    pub channels: u8,
    /// Samples (at 48 kHz) to drop at the start of the stream.
    pub pre_skip: u16,
    /// The encoder's input sample rate (informational; Opus always decodes at 48 kHz).
    pub input_sample_rate: u32,
    /// Output gain in Q7.8 dB.
    pub output_gain: i16,
    /// Channel mapping family.
    pub mapping_family: u8,
}

impl OpusHead {
    /// The magic signature.
    pub const MAGIC: &'static [u8; 8] = b"OpusHead";

    /// Parses a header; a mapping table after the fixed part is allowed and not read.
    pub fn parse(data: &[u8]) -> Result<Self, OpusError> {
        if data.len() < 19 {
            return Err(OpusError::Truncated { len: data.len() });
        }
        if &data[..8] != Self::MAGIC {
            return Err(OpusError::BadMagic);
        }
        if data[8] >> 4 != 0 {
            return Err(OpusError::BadVersion { version: data[8] });
        }
        let channels = data[9];
        if channels == 0 {
            return Err(OpusError::ZeroChannels);
        }
        let mapping_family = data[18];
        if mapping_family == 0 && channels > 2 {
            return Err(OpusError::BadMapping { channels });
        }
        Ok(OpusHead {
            channels,
            pre_skip: u16::from_le_bytes([data[10], data[11]]),
            input_sample_rate: u32::from_le_bytes([data[12], data[13], data[14], data[15]]),
            output_gain: i16::from_le_bytes([data[16], data[17]]),
            mapping_family,
        })
    }

    /// Serializes a family-0 header (mono or stereo; other families need a mapping table
    /// and are carried as received instead).
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(19);
        b.put_slice(Self::MAGIC);
        b.put_u8(1);
        b.put_u8(self.channels);
        b.put_u16_le(self.pre_skip);
        b.put_u32_le(self.input_sample_rate);
        b.put_i16_le(self.output_gain);
        b.put_u8(self.mapping_family);
        b.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let h = OpusHead {
            channels: 2,
            pre_skip: 312,
            input_sample_rate: 48000,
            output_gain: 0,
            mapping_family: 0,
        };
        let b = h.encode();
        assert_eq!(b.len(), 19);
        assert_eq!(OpusHead::parse(&b).unwrap(), h);
        assert_eq!(
            OpusHead::parse(&b[..18]),
            Err(OpusError::Truncated { len: 18 })
        );
        let mut bad = b.to_vec();
        bad[0] = b'o';
        assert_eq!(OpusHead::parse(&bad), Err(OpusError::BadMagic));
        let mut bad = b.to_vec();
        bad[8] = 0x10;
        assert_eq!(
            OpusHead::parse(&bad),
            Err(OpusError::BadVersion { version: 0x10 })
        );
        let mut bad = b.to_vec();
        bad[9] = 6;
        assert_eq!(
            OpusHead::parse(&bad),
            Err(OpusError::BadMapping { channels: 6 })
        );
    }
}
