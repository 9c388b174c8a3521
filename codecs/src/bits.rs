//! Bit-level reading and writing for codec headers (H.264/H.265 parameter sets, AAC configs).
//!
//! Codec headers are a few dozen bytes, so the RBSP is made contiguous (and stripped of
//! emulation-prevention bytes) before it is read here; media payloads never come through this
//! module.

/// A bit read past the end of the data, or an Exp-Golomb code longer than 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BitsError {
    /// The data ended; `offset` is the byte holding the first missing bit.
    #[error("bitstream ends at byte {offset} (needed {needed} more bits)")]
    End {
        /// Byte offset of the first missing bit.
        offset: usize,
        /// How many bits were missing.
        needed: usize,
    },
    /// An Exp-Golomb code had more than 31 leading zero bits.
    #[error("exp-Golomb code at byte {offset} has more than 31 leading zeros")]
    ExpGolombTooLong {
        /// Byte offset where the code starts.
        offset: usize,
    },
}

/// A bounds-checked MSB-first bit reader over a byte slice.
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits.
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// A reader at the first bit of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    /// Current position in bits.
    pub fn bit_position(&self) -> usize {
        self.pos
    }

    /// Byte offset of the next bit.
    pub fn byte_offset(&self) -> usize {
        self.pos / 8
    }

    /// Bits left to read.
    pub fn bits_left(&self) -> usize {
        self.data.len() * 8 - self.pos
    }

    /// Reads one bit as a bool.
    pub fn flag(&mut self) -> Result<bool, BitsError> {
        Ok(self.bits(1)? == 1)
    }

    /// Reads `n` bits (0 to 32) as an unsigned integer.
    pub fn bits(&mut self, n: u32) -> Result<u32, BitsError> {
        debug_assert!(n <= 32);
        let n = n.min(32) as usize;
        if self.bits_left() < n {
            return Err(BitsError::End {
                offset: self.byte_offset(),
                needed: n - self.bits_left(),
            });
        }
        let mut v = 0u64;
        for _ in 0..n {
            // In bounds: checked above.
            let byte = self.data[self.pos / 8];
            let bit = (byte >> (7 - (self.pos % 8))) & 1;
            v = (v << 1) | u64::from(bit);
            self.pos += 1;
        }
        Ok(v as u32)
    }

    /// Skips `n` bits.
    pub fn skip(&mut self, n: usize) -> Result<(), BitsError> {
        if self.bits_left() < n {
            return Err(BitsError::End {
                offset: self.byte_offset(),
                needed: n - self.bits_left(),
            });
        }
        self.pos += n;
        Ok(())
    }

    /// Reads an unsigned Exp-Golomb code, `ue(v)` (H.264 9.1).
    pub fn ue(&mut self) -> Result<u32, BitsError> {
        let start = self.byte_offset();
        let mut zeros = 0u32;
        while !self.flag()? {
            zeros += 1;
            if zeros > 31 {
                return Err(BitsError::ExpGolombTooLong { offset: start });
            }
        }
        if zeros == 0 {
            return Ok(0);
        }
        let rest = self.bits(zeros)?;
        // zeros <= 31, so (1 << zeros) - 1 + rest fits in u32.
        Ok(((1u64 << zeros) - 1 + u64::from(rest)) as u32)
    }

    /// Reads a signed Exp-Golomb code, `se(v)` (H.264 9.1.1).
    pub fn se(&mut self) -> Result<i32, BitsError> {
        let k = i64::from(self.ue()?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        Ok(v as i32)
    }
}

/// An MSB-first bit writer (used by tests and header builders).
#[derive(Debug, Clone, Default)]
pub struct BitWriter {
    out: Vec<u8>,
    used: u8,
}

impl BitWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the low `n` bits of `v` (n up to 32).
    pub fn bits(&mut self, n: u32, v: u32) {
        for i in (0..n.min(32)).rev() {
            let bit = ((u64::from(v) >> i) & 1) as u8;
            if self.used == 0 {
                self.out.push(0);
            }
            if let Some(last) = self.out.last_mut() {
                *last |= bit << (7 - self.used);
            }
            self.used = (self.used + 1) % 8;
        }
    }

    /// Writes one bit.
    pub fn flag(&mut self, b: bool) {
        self.bits(1, u32::from(b));
    }

    /// Writes `ue(v)`.
    pub fn ue(&mut self, v: u32) {
        let x = u64::from(v) + 1;
        let len = 64 - x.leading_zeros();
        self.bits(len - 1, 0);
        for i in (0..len).rev() {
            self.bits(1, ((x >> i) & 1) as u32);
        }
    }

    /// Writes `se(v)`.
    pub fn se(&mut self, v: i32) {
        let v = i64::from(v);
        let k = if v > 0 { 2 * v - 1 } else { -2 * v };
        self.ue(k as u32);
    }

    /// Appends RBSP trailing bits (a one, then zeros to the byte boundary) and returns the bytes.
    pub fn finish_rbsp(mut self) -> Vec<u8> {
        self.bits(1, 1);
        self.out
    }

    /// Returns the bytes, padding the last one with zeros.
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// Removes emulation-prevention bytes (`00 00 03` -> `00 00`) from a NAL unit (H.264 7.4.1).
pub fn remove_emulation_prevention(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0usize;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Inserts emulation-prevention bytes so that no `00 00 0x` (x <= 3) appears in the output.
pub fn add_emulation_prevention(rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + rbsp.len() / 64 + 1);
    let mut zeros = 0usize;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_round_trip() {
        let mut w = BitWriter::new();
        let vals = [0u32, 1, 2, 3, 7, 254, 65535, u32::MAX - 1];
        for v in vals {
            w.ue(v);
        }
        for v in [0i32, 1, -1, 5, -77, 100_000] {
            w.se(v);
        }
        let buf = w.finish_rbsp();
        let mut r = BitReader::new(&buf);
        for v in vals {
            assert_eq!(r.ue().unwrap(), v);
        }
        for v in [0i32, 1, -1, 5, -77, 100_000] {
            assert_eq!(r.se().unwrap(), v);
        }
    }

    #[test]
    fn errors_not_panics() {
        let mut r = BitReader::new(&[0, 0, 0, 0, 0]);
        assert_eq!(r.ue(), Err(BitsError::ExpGolombTooLong { offset: 0 }));
        let mut r = BitReader::new(&[0x01]);
        assert!(matches!(r.ue(), Err(BitsError::End { offset: 1, .. })));
        let mut r = BitReader::new(&[]);
        assert!(r.bits(32).is_err());
    }

    #[test]
    fn emulation_prevention_round_trip() {
        let raw = [0u8, 0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 0, 0, 4, 0, 0];
        let esc = add_emulation_prevention(&raw);
        assert_eq!(
            esc,
            [0, 0, 3, 0, 0, 3, 1, 0, 0, 3, 2, 0, 0, 3, 3, 0, 0, 4, 0, 0]
        );
        assert_eq!(remove_emulation_prevention(&esc), raw);
    }
}
