//! What the harness reads from a received part (one CMAF chunk): that it is a sequence of
//! whole ISO BMFF boxes with a `moof` and an `mdat`, and the publisher's stamp in the first
//! video frame.
//!
//! The mdat holds the video samples first, as 4-byte-length-prefixed NAL units, and the
//! publisher put its SEI before the coded slices of every frame, so the first occurrence of
//! [`SEI_UUID`] in the part is inside the first video frame's SEI. The SEI is an escaped
//! NAL unit (H.264 §7.4.1: `00 00 03` guards every `00 00 0x`, x ≤ 3), so the 16 bytes
//! after the UUID are read with the emulation-prevention bytes taken out:
//!
//! ```text
//! [len 4][06 05 size uuid(16) | send time ns u64 BE | sequence u64 BE | 80]
//!                              ^ the UUID is searched for; the stamp is un-escaped after it
//! ```

use crate::publisher::{decode_stamp, SEI_UUID};

/// Why a part is not a `moof` + `mdat` chunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartError {
    /// A box header or size is wrong at `offset`.
    #[error("box at byte {offset}: {what}")]
    Invalid {
        /// Offset of the box.
        offset: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// Whole boxes, but not a moof followed by an mdat.
    #[error("no moof followed by an mdat")]
    NoChunk,
}

/// Checks that `part` is a sequence of whole top-level boxes holding a `moof` and, after it,
/// an `mdat`.
pub fn check_chunk(part: &[u8]) -> Result<(), PartError> {
    let mut at = 0usize;
    let mut moof = false;
    let mut chunk = false;
    while at < part.len() {
        let head = part.get(at..at + 8).ok_or(PartError::Invalid {
            offset: at,
            what: "truncated box header",
        })?;
        // Invariant: `head` is 8 bytes, so both ranges exist.
        let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let kind = &head[4..8];
        let size = match size32 {
            0 => part.len() - at,
            1 => {
                let large = part.get(at + 8..at + 16).ok_or(PartError::Invalid {
                    offset: at,
                    what: "truncated largesize",
                })?;
                let mut b = [0u8; 8];
                b.copy_from_slice(large);
                usize::try_from(u64::from_be_bytes(b)).unwrap_or(usize::MAX)
            }
            n => n as usize,
        };
        if size < 8 || size > part.len() - at {
            return Err(PartError::Invalid {
                offset: at,
                what: "size smaller than its header or past the end",
            });
        }
        match kind {
            b"moof" => moof = true,
            b"mdat" if moof => chunk = true,
            _ => {}
        }
        at += size;
    }
    if chunk {
        Ok(())
    } else {
        Err(PartError::NoChunk)
    }
}

/// (send time ns, sequence) from the first latency SEI in `part`, if there is one.
pub fn first_stamp(part: &[u8]) -> Option<(u64, u64)> {
    let at = part.windows(SEI_UUID.len()).position(|w| w == SEI_UUID)?;
    let mut data = [0u8; 16];
    let mut n = 0;
    let mut zeros = 0;
    for &b in &part[at + SEI_UUID.len()..] {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        data[n] = b;
        n += 1;
        if n == data.len() {
            return decode_stamp(&data);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocast_codecs::h264::sei;

    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }

    /// A part as zerocast writes it: moof, then an mdat with one length-prefixed video frame
    /// (AUD, our SEI, a slice) and an AAC frame.
    fn part(ns: u64, seq: u64) -> Vec<u8> {
        let mut stamp = [0u8; 16];
        stamp[..8].copy_from_slice(&ns.to_be_bytes());
        stamp[8..].copy_from_slice(&seq.to_be_bytes());
        let sei_nal = sei::build_user_data_unregistered(&SEI_UUID, &stamp);
        let mut mdat = Vec::new();
        for nal in [&[0x09, 0xf0][..], &sei_nal[..], &[0x41, 0x9a, 0, 0, 1][..]] {
            mdat.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            mdat.extend_from_slice(nal);
        }
        mdat.extend_from_slice(&[0x21, 0x10, 0x04, 0x60]);
        let mut v = bx(b"moof", &bx(b"mfhd", &[0, 0, 0, 0, 0, 0, 0, 1]));
        v.extend(bx(b"mdat", &mdat));
        v
    }

    #[test]
    fn reads_the_stamp_through_emulation_prevention() {
        // seq 42 is 00 00 00 00 00 00 00 2a: the NAL carries 00 00 03 escapes.
        let p = part(1_780_000_000_123_456_789, 42);
        let sei_nal = sei::build_user_data_unregistered(&SEI_UUID, &[0; 16]);
        assert!(
            sei_nal.windows(3).any(|w| w == [0, 0, 3]),
            "test needs escapes"
        );
        assert_eq!(first_stamp(&p), Some((1_780_000_000_123_456_789, 42)));
        assert_eq!(first_stamp(&part(0, 0)), Some((0, 0)));
        assert_eq!(first_stamp(&part(u64::MAX, 3)), Some((u64::MAX, 3)));
        assert!(check_chunk(&p).is_ok());
    }

    #[test]
    fn first_frame_wins() {
        let mut p = part(100, 1);
        p.extend(part(200, 2));
        assert_eq!(first_stamp(&p), Some((100, 1)));
        assert!(check_chunk(&p).is_ok());
    }

    #[test]
    fn unstamped_and_broken_parts() {
        let p = part(5, 5);
        let uuid_at = p.windows(16).position(|w| w == SEI_UUID).unwrap();
        assert_eq!(first_stamp(&p[..uuid_at + 20]), None);
        let mut q = p.clone();
        q[uuid_at] ^= 0xff;
        assert_eq!(first_stamp(&q), None);
        assert!(matches!(
            check_chunk(&p[..p.len() - 1]),
            Err(PartError::Invalid { .. })
        ));
        assert_eq!(check_chunk(&bx(b"mdat", &[1, 2])), Err(PartError::NoChunk));
        assert_eq!(check_chunk(&[]), Err(PartError::NoChunk));
    }
}
