//! A payload made of shared byte slices.
//!
//! A protocol message often arrives in several pieces (RTMP chunks, TS packets, RTP packets).
//! Rather than copy the pieces into one buffer, a [`ByteRope`] keeps the `Bytes` slices cut out
//! of the receive buffers. Cloning a rope or slicing a range of it only bumps refcounts.

use bytes::Bytes;

/// An ordered list of `Bytes` slices that together form one logical payload.
///
/// Empty slices are never stored.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ByteRope {
    parts: Vec<Bytes>,
    len: usize,
}

impl std::fmt::Debug for ByteRope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteRope")
            .field("len", &self.len)
            .field("parts", &self.parts.len())
            .finish()
    }
}

impl From<Bytes> for ByteRope {
    fn from(b: Bytes) -> Self {
        let mut r = ByteRope::new();
        r.push(b);
        r
    }
}

impl From<Vec<u8>> for ByteRope {
    fn from(v: Vec<u8>) -> Self {
        Bytes::from(v).into()
    }
}

impl ByteRope {
    /// An empty rope.
    pub const fn new() -> Self {
        ByteRope {
            parts: Vec::new(),
            len: 0,
        }
    }

    /// An empty rope with room for `n` slices.
    pub fn with_capacity(n: usize) -> Self {
        ByteRope {
            parts: Vec::with_capacity(n),
            len: 0,
        }
    }

    /// Appends a slice (ignored when empty).
    pub fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.parts.push(b);
        }
    }

    /// Appends all slices of another rope.
    pub fn append(&mut self, other: &ByteRope) {
        for p in &other.parts {
            self.push(p.clone());
        }
    }

    /// Total number of bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the rope holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slices, in order.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// Consumes the rope, returning its slices.
    pub fn into_parts(self) -> Vec<Bytes> {
        self.parts
    }

    /// The byte at `index`, if any.
    pub fn get(&self, mut index: usize) -> Option<u8> {
        for p in &self.parts {
            if index < p.len() {
                return Some(p[index]);
            }
            index -= p.len();
        }
        None
    }

    /// The sub-rope `start..start + len`, by refcount; `None` when out of bounds.
    pub fn slice(&self, start: usize, len: usize) -> Option<ByteRope> {
        let end = start.checked_add(len)?;
        if end > self.len {
            return None;
        }
        let mut out = ByteRope::new();
        let mut pos = 0usize;
        for p in &self.parts {
            let p_start = pos;
            let p_end = pos + p.len();
            pos = p_end;
            if p_end <= start {
                continue;
            }
            if p_start >= end {
                break;
            }
            let from = start.max(p_start) - p_start;
            let to = end.min(p_end) - p_start;
            out.push(p.slice(from..to));
        }
        Some(out)
    }

    /// Copies the whole rope into one contiguous `Bytes`.
    ///
    /// Free when the rope has a single slice. Meant for small control payloads (commands,
    /// codec configuration), never for media.
    pub fn to_contiguous(&self) -> Bytes {
        match self.parts.len() {
            0 => Bytes::new(),
            1 => self.parts[0].clone(),
            _ => {
                let mut v = Vec::with_capacity(self.len);
                for p in &self.parts {
                    v.extend_from_slice(p);
                }
                Bytes::from(v)
            }
        }
    }

    /// A reader positioned at the start of the rope.
    pub fn reader(&self) -> RopeReader<'_> {
        RopeReader { rope: self, pos: 0 }
    }
}

/// Error of a [`RopeReader`] read past the end of its rope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("need {needed} more bytes at offset {offset}")]
pub struct ShortRead {
    /// Where the read started.
    pub offset: usize,
    /// How many bytes were missing.
    pub needed: usize,
}

/// A bounds-checked big-endian reader over a [`ByteRope`].
#[derive(Debug, Clone)]
pub struct RopeReader<'a> {
    rope: &'a ByteRope,
    pos: usize,
}

impl RopeReader<'_> {
    /// Offset of the next byte to read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.rope.len - self.pos
    }

    fn check(&self, n: usize) -> Result<(), ShortRead> {
        if self.remaining() < n {
            Err(ShortRead {
                offset: self.pos,
                needed: n - self.remaining(),
            })
        } else {
            Ok(())
        }
    }

    fn read_be(&mut self, n: usize) -> Result<u64, ShortRead> {
        self.check(n)?;
        let mut v = 0u64;
        for i in 0..n {
            // In bounds: checked above.
            v = (v << 8) | u64::from(self.rope.get(self.pos + i).unwrap_or(0));
        }
        self.pos += n;
        Ok(v)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, ShortRead> {
        Ok(self.read_be(1)? as u8)
    }

    /// Reads a big-endian u16.
    pub fn u16(&mut self) -> Result<u16, ShortRead> {
        Ok(self.read_be(2)? as u16)
    }

    /// Reads a big-endian 24-bit unsigned integer.
    pub fn u24(&mut self) -> Result<u32, ShortRead> {
        Ok(self.read_be(3)? as u32)
    }

    /// Reads a big-endian 24-bit two's complement integer (FLV composition time).
    pub fn i24(&mut self) -> Result<i32, ShortRead> {
        let v = self.u24()?;
        Ok(((v << 8) as i32) >> 8)
    }

    /// Reads a big-endian u32.
    pub fn u32(&mut self) -> Result<u32, ShortRead> {
        Ok(self.read_be(4)? as u32)
    }

    /// Reads a big-endian unsigned integer of 1 to 8 bytes.
    pub fn uint(&mut self, n: usize) -> Result<u64, ShortRead> {
        debug_assert!((1..=8).contains(&n));
        self.read_be(n.clamp(1, 8))
    }

    /// Takes the next `n` bytes as a sub-rope (refcounts, no copy).
    pub fn take(&mut self, n: usize) -> Result<ByteRope, ShortRead> {
        self.check(n)?;
        // In bounds: checked above.
        let r = self.rope.slice(self.pos, n).unwrap_or_default();
        self.pos += n;
        Ok(r)
    }

    /// Takes everything left as a sub-rope.
    pub fn rest(&mut self) -> ByteRope {
        let n = self.remaining();
        self.take(n).unwrap_or_default()
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), ShortRead> {
        self.check(n)?;
        self.pos += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rope(parts: &[&'static [u8]]) -> ByteRope {
        let mut r = ByteRope::new();
        for p in parts {
            r.push(Bytes::from_static(p));
        }
        r
    }

    #[test]
    fn reads_across_slices() {
        let r = rope(&[&[1, 2], &[], &[3], &[4, 5, 6]]);
        assert_eq!(r.len(), 6);
        assert_eq!(r.parts().len(), 3);
        let mut rd = r.reader();
        assert_eq!(rd.u24().unwrap(), 0x010203);
        assert_eq!(rd.u16().unwrap(), 0x0405);
        assert_eq!(
            rd.u16(),
            Err(ShortRead {
                offset: 5,
                needed: 1
            })
        );
        assert_eq!(rd.u8().unwrap(), 6);
    }

    #[test]
    fn slice_shares_and_bounds() {
        let r = rope(&[b"abc", b"defg", b"h"]);
        let s = r.slice(2, 4).unwrap();
        assert_eq!(s.to_contiguous(), Bytes::from_static(b"cdef"));
        assert_eq!(s.parts().len(), 2);
        assert!(r.slice(5, 4).is_none());
        assert!(r.slice(usize::MAX, 2).is_none());
        assert_eq!(r.slice(8, 0).unwrap().len(), 0);
    }

    #[test]
    fn signed_24() {
        let r = rope(&[&[0xff, 0xff, 0xfe]]);
        assert_eq!(r.reader().i24().unwrap(), -2);
    }
}
