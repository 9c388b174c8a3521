//! The receiving half of a live session: the reorder buffer, loss detection and TSBPD
//! delivery (SRT spec 4.5 "Timestamp-Based Packet Delivery", 4.6 "Too-Late Packet Drop",
//! 4.8.2 "Packet Retransmission (NAKs)").

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::packet::LossRange;
use crate::seq::SeqNo;

/// One position of the receive window.
#[derive(Debug)]
enum Slot {
    /// Not received yet; the loss was last reported at `last_nak`.
    Missing { last_nak: Instant },
    /// The sender gave it up (DROPREQ): skip it without waiting.
    Dropped,
    /// Received, waiting for its delivery time.
    Present(Received),
}

#[derive(Debug)]
struct Received {
    payload: Bytes,
    /// Sender timestamp, unwrapped to 64 bits (microseconds).
    ts: u64,
}

/// What [`Receiver::insert`] made of a packet.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// A new packet, in order or filling nothing.
    New,
    /// A packet that filled a reported loss.
    Recovered,
    /// Already delivered, dropped or received.
    Duplicate,
    /// Older than what was already delivered or given up.
    Belated,
    /// Beyond the flow window: dropped.
    Overflow,
}

/// Unwraps the 32-bit microsecond timestamps (they wrap every ~71.6 minutes).
#[derive(Debug, Default)]
struct TimestampUnwrap {
    last: Option<u64>,
}

impl TimestampUnwrap {
    fn unwrap(&mut self, ts: u32) -> u64 {
        const WRAP: u64 = 1 << 32;
        let Some(last) = self.last else {
            self.last = Some(u64::from(ts));
            return u64::from(ts);
        };
        let base = last & !(WRAP - 1);
        // The candidate nearest to the last one seen: retransmissions may be a little older.
        let mut v = base | u64::from(ts);
        if v + WRAP / 2 < last {
            v += WRAP;
        } else if v > last + WRAP / 2 && v >= WRAP {
            v -= WRAP;
        }
        if v > last {
            self.last = Some(v);
        }
        v
    }
}

/// The receive window.
#[derive(Debug)]
pub(crate) struct Receiver {
    /// Sequence number of `slots[0]`: everything before it was delivered or given up.
    base: SeqNo,
    slots: VecDeque<Slot>,
    missing: usize,
    capacity: usize,
    /// Local time at which the sender's clock read zero (the TSBPD base).
    peer_start: Instant,
    latency: Duration,
    timestamps: TimestampUnwrap,
}

impl Receiver {
    pub(crate) fn new(
        initial: SeqNo,
        capacity: usize,
        peer_start: Instant,
        latency: Duration,
    ) -> Receiver {
        Receiver {
            base: initial,
            slots: VecDeque::new(),
            missing: 0,
            capacity: capacity.max(32),
            peer_start,
            latency,
            timestamps: TimestampUnwrap::default(),
        }
    }

    /// Stores a data packet; new gaps it reveals are appended to `losses`.
    pub(crate) fn insert(
        &mut self,
        now: Instant,
        seq: SeqNo,
        ts: u32,
        payload: Bytes,
        losses: &mut Vec<LossRange>,
    ) -> Arrival {
        let offset = seq.diff(self.base);
        if offset < 0 {
            return Arrival::Belated;
        }
        let offset = offset as usize;
        if offset >= self.capacity {
            return Arrival::Overflow;
        }
        let ts = self.timestamps.unwrap(ts);
        let packet = Received { payload, ts };
        if offset < self.slots.len() {
            let slot = &mut self.slots[offset];
            return match slot {
                Slot::Missing { .. } => {
                    *slot = Slot::Present(packet);
                    self.missing -= 1;
                    Arrival::Recovered
                }
                Slot::Dropped | Slot::Present(_) => Arrival::Duplicate,
            };
        }
        if offset > self.slots.len() {
            let first = self.base.add(self.slots.len() as u32);
            losses.push(LossRange {
                first,
                last: seq.sub(1),
            });
            let gap = offset - self.slots.len();
            self.missing += gap;
            self.slots
                .extend((0..gap).map(|_| Slot::Missing { last_nak: now }));
        }
        self.slots.push_back(Slot::Present(packet));
        Arrival::New
    }

    /// When the packet with unwrapped timestamp `ts` is due.
    fn play_time(&self, ts: u64) -> Instant {
        self.peer_start + Duration::from_micros(ts) + self.latency
    }

    /// Delivers what is due at `now` into `out`; returns how many missing packets were given
    /// up because a later packet was due (too-late drop).
    pub(crate) fn deliver(&mut self, now: Instant, out: &mut Vec<Bytes>) -> u64 {
        let mut dropped = 0;
        loop {
            match self.slots.front() {
                None => return dropped,
                Some(Slot::Dropped) => {
                    self.pop();
                }
                Some(Slot::Present(p)) => {
                    if self.play_time(p.ts) > now {
                        return dropped;
                    }
                    if let Some(Slot::Present(p)) = self.pop() {
                        out.push(p.payload);
                    }
                }
                Some(Slot::Missing { .. }) => {
                    // Give up the gap once the first packet after it is due.
                    let due = self.slots.iter().position(|s| match s {
                        Slot::Present(p) => self.play_time(p.ts) <= now,
                        _ => false,
                    });
                    let Some(until) = due else {
                        return dropped;
                    };
                    for _ in 0..until {
                        if let Some(Slot::Missing { .. }) = self.pop() {
                            dropped += 1;
                        }
                    }
                }
            }
        }
    }

    fn pop(&mut self) -> Option<Slot> {
        let slot = self.slots.pop_front()?;
        if matches!(slot, Slot::Missing { .. }) {
            self.missing -= 1;
        }
        self.base = self.base.next();
        Some(slot)
    }

    /// The next moment something may become deliverable.
    pub(crate) fn next_delivery(&self) -> Option<Instant> {
        // The first present packet decides: before it there are only gaps, which wait for it.
        self.slots.iter().find_map(|s| match s {
            Slot::Present(p) => Some(self.play_time(p.ts)),
            _ => None,
        })
    }

    /// The sequence number up to which everything arrived (the ACK point).
    pub(crate) fn ack_point(&self) -> SeqNo {
        let received = self
            .slots
            .iter()
            .position(|s| matches!(s, Slot::Missing { .. }))
            .unwrap_or(self.slots.len());
        self.base.add(received as u32)
    }

    /// Losses not reported within `interval`, as ranges (at most `max` of them), marking
    /// them reported at `now`.
    pub(crate) fn losses_due(
        &mut self,
        now: Instant,
        interval: Duration,
        max: usize,
        out: &mut Vec<LossRange>,
    ) {
        if self.missing == 0 {
            return;
        }
        let base = self.base;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Slot::Missing { last_nak } = slot else {
                continue;
            };
            if now.saturating_duration_since(*last_nak) < interval {
                continue;
            }
            *last_nak = now;
            let seq = base.add(i as u32);
            if let Some(r) = out.last_mut().filter(|r| r.last.next() == seq) {
                r.last = seq;
            } else if out.len() >= max {
                return;
            } else {
                out.push(LossRange {
                    first: seq,
                    last: seq,
                });
            }
        }
    }

    /// The sender gave up `first..=last`: stop waiting for them.
    pub(crate) fn drop_range(&mut self, first: SeqNo, last: SeqNo) {
        let span = last.diff(first);
        if !(0..self.capacity as i32).contains(&span) {
            return;
        }
        for i in 0..=span as u32 {
            let offset = first.add(i).diff(self.base);
            if offset < 0 {
                continue;
            }
            let offset = offset as usize;
            if offset >= self.capacity {
                break;
            }
            if offset >= self.slots.len() {
                // Not even seen yet: reserve it as given up.
                while self.slots.len() < offset {
                    self.slots.push_back(Slot::Missing {
                        last_nak: self.peer_start,
                    });
                    self.missing += 1;
                }
                self.slots.push_back(Slot::Dropped);
                continue;
            }
            if let Slot::Missing { .. } = self.slots[offset] {
                self.slots[offset] = Slot::Dropped;
                self.missing -= 1;
            }
        }
    }

    /// Packets held (received and waiting, or missing).
    pub(crate) fn buffered(&self) -> usize {
        self.slots.len()
    }

    /// Free room in the window, for the ACK.
    pub(crate) fn available(&self) -> usize {
        self.capacity - self.slots.len().min(self.capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(n: u8) -> Bytes {
        Bytes::from(vec![n; 4])
    }

    #[test]
    fn gap_reported_recovered_then_delivered_in_order() {
        let t0 = Instant::now();
        let mut r = Receiver::new(SeqNo::new(10), 64, t0, Duration::from_millis(100));
        let mut losses = Vec::new();
        assert_eq!(
            r.insert(t0, SeqNo::new(10), 0, payload(0), &mut losses),
            Arrival::New
        );
        assert_eq!(
            r.insert(t0, SeqNo::new(13), 30_000, payload(3), &mut losses),
            Arrival::New
        );
        assert_eq!(
            losses,
            vec![LossRange {
                first: SeqNo::new(11),
                last: SeqNo::new(12)
            }]
        );
        assert_eq!(r.ack_point(), SeqNo::new(11));
        assert_eq!(
            r.insert(t0, SeqNo::new(11), 10_000, payload(1), &mut losses),
            Arrival::Recovered
        );
        assert_eq!(
            r.insert(t0, SeqNo::new(11), 10_000, payload(1), &mut losses),
            Arrival::Duplicate
        );
        let mut out = Vec::new();
        assert_eq!(r.deliver(t0 + Duration::from_millis(99), &mut out), 0);
        assert!(out.is_empty());
        assert_eq!(r.deliver(t0 + Duration::from_millis(110), &mut out), 0);
        assert_eq!(out.len(), 2, "10 and 11 delivered, 12 still awaited");
        // 13 falls due while 12 is still missing: 12 is given up.
        assert_eq!(r.deliver(t0 + Duration::from_millis(130), &mut out), 1);
        assert_eq!(out.len(), 3);
        assert_eq!(
            r.insert(t0, SeqNo::new(12), 20_000, payload(2), &mut losses),
            Arrival::Belated
        );
    }

    #[test]
    fn timestamps_unwrap_across_the_32_bit_wrap() {
        let mut u = TimestampUnwrap::default();
        assert_eq!(u.unwrap(u32::MAX - 10), u64::from(u32::MAX - 10));
        assert_eq!(u.unwrap(5), (1u64 << 32) + 5);
        // A retransmission from before the wrap.
        assert_eq!(u.unwrap(u32::MAX - 20), u64::from(u32::MAX - 20));
    }

    #[test]
    fn window_is_bounded_and_drop_requests_skip_gaps() {
        let t0 = Instant::now();
        let mut r = Receiver::new(SeqNo::new(0), 32, t0, Duration::ZERO);
        let mut losses = Vec::new();
        assert_eq!(
            r.insert(t0, SeqNo::new(40), 0, payload(0), &mut losses),
            Arrival::Overflow
        );
        r.insert(t0, SeqNo::new(3), 0, payload(3), &mut losses);
        r.drop_range(SeqNo::new(0), SeqNo::new(2));
        assert_eq!(r.missing, 0);
        let mut out = Vec::new();
        r.deliver(t0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(r.buffered(), 0);
    }
}
