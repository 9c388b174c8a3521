//! 31-bit packet sequence numbers and 26-bit message numbers, which wrap (SRT spec 3.1).

use std::cmp::Ordering;
use std::fmt;

/// A packet sequence number: 31 bits that wrap around. Two numbers compare by the shorter
/// way round the circle, so comparisons are only meaningful within a quarter of the space,
/// which the flow window guarantees.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNo(u32);

impl SeqNo {
    /// The largest sequence number.
    pub const MAX: u32 = 0x7FFF_FFFF;

    /// `value` masked to 31 bits.
    pub const fn new(value: u32) -> SeqNo {
        SeqNo(value & Self::MAX)
    }

    /// The raw 31-bit value.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The number after this one.
    pub const fn next(self) -> SeqNo {
        self.add(1)
    }

    /// This number plus `n`, wrapping.
    pub const fn add(self, n: u32) -> SeqNo {
        SeqNo::new(self.0.wrapping_add(n))
    }

    /// This number minus `n`, wrapping.
    pub const fn sub(self, n: u32) -> SeqNo {
        SeqNo::new(self.0.wrapping_sub(n))
    }

    /// `self - other` the short way round: positive when `self` is after `other`.
    pub const fn diff(self, other: SeqNo) -> i32 {
        // Shift the 31-bit difference into the top bits so the sign comes out right.
        ((self.0.wrapping_sub(other.0) << 1) as i32) >> 1
    }
}

impl PartialOrd for SeqNo {
    fn partial_cmp(&self, other: &SeqNo) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SeqNo {
    fn cmp(&self, other: &SeqNo) -> Ordering {
        self.diff(*other).cmp(&0)
    }
}

impl fmt::Debug for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The largest message number (26 bits); message numbers start at 1 and wrap to 1.
pub const MSG_NO_MAX: u32 = 0x03FF_FFFF;

/// The message number after `n` (1..=MSG_NO_MAX, skipping 0).
pub const fn next_msg_no(n: u32) -> u32 {
    if n >= MSG_NO_MAX {
        1
    } else {
        n + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_orders_across_the_wrap() {
        let last = SeqNo::new(SeqNo::MAX);
        assert_eq!(last.next(), SeqNo::new(0));
        assert!(last < SeqNo::new(0));
        assert_eq!(SeqNo::new(3).diff(last), 4);
        assert_eq!(last.diff(SeqNo::new(3)), -4);
        assert_eq!(SeqNo::new(5).sub(7), SeqNo::new(SeqNo::MAX - 1));
        assert_eq!(next_msg_no(MSG_NO_MAX), 1);
    }
}
